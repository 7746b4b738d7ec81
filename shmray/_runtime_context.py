"""What ``get_runtime_context()`` returns: this node, job, task and actor, as the running
process's runtime knows them, in Ray's forms (hex strings; None where Ray has none,
such as the task id in the driver)."""
from __future__ import annotations

import os
import re
import warnings

from . import _placement, _shm
from ._ids import ActorID, JobID, NodeID, TaskID, WorkerID


# A resource of a placement group's bundle (see _placement): "<name>_group_[<i>_]<id>".
_GROUP_RESOURCE = re.compile(r"^(.+)_group_(?:\d+_)?[0-9a-f]+$")


def _deprecated(old: str, new: str):
    warnings.warn(f"get_runtime_context().{old} is deprecated: use {new} instead",
                  DeprecationWarning, stacklevel=3)


class RuntimeContext:
    """What ``get_runtime_context()`` returns: ids of this node, job and task."""

    def __init__(self, rt):
        self._rt = rt

    # ------------------------------------------------------------ ids, as hex
    def get_node_id(self) -> str:
        return self._rt.node_id

    def get_job_id(self) -> str:
        return self._rt.job_id

    def get_task_id(self):
        """The running task's (or actor call's) id; None in the driver."""
        tid = self._rt.current_task_id
        return None if tid is None else f"{tid:032x}"

    def get_worker_id(self) -> str:
        """This process's id: 28 bytes, as Ray's, the node's first and the pid last
        (unique on the node while the session lasts)."""
        return self._rt.node_id[:48] + f"{os.getpid():08x}"

    def get_actor_id(self):
        """The hex id of the actor this runs in (None outside actors)."""
        aid = self._rt.actor_id
        return None if aid is None else f"{aid:032x}"

    def get_actor_name(self):
        """The actor's name ('' for an unnamed one; None outside actors)."""
        host = self._rt.actor_host
        return None if host is None else host.handle.name or ""

    def get_temp_dir(self) -> str:
        """Where this node's sessions keep their files (status, spilled objects)."""
        return _shm.sessions_root()

    # ------------------------------------------------------------ Ray's older forms
    @property
    def node_id(self) -> NodeID:
        _deprecated("node_id", "get_node_id()")
        return NodeID.from_hex(self.get_node_id())

    @property
    def job_id(self) -> JobID:
        _deprecated("job_id", "get_job_id()")
        return JobID.from_hex(self.get_job_id())

    @property
    def task_id(self):
        _deprecated("task_id", "get_task_id()")
        tid = self.get_task_id()
        return None if tid is None else TaskID.from_hex(tid)

    @property
    def actor_id(self):
        _deprecated("actor_id", "get_actor_id()")
        aid = self.get_actor_id()
        return None if aid is None else ActorID.from_hex(aid)

    @property
    def worker_id(self) -> WorkerID:
        return WorkerID.from_hex(self.get_worker_id())

    def get(self) -> dict:
        """The ids as a dict of id objects (Ray's deprecated form)."""
        _deprecated("get()", "the get_*_id() methods")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            out = {"job_id": self.job_id, "node_id": self.node_id, "namespace": self.namespace}
            if self.task_id is not None:
                out["task_id"] = self.task_id
            if self.actor_id is not None:
                out["actor_id"] = self.actor_id
        return out

    # ------------------------------------------------------------ actors
    @property
    def current_actor(self):
        """The handle of the actor this runs in (RuntimeError outside actors)."""
        host = self._rt.actor_host
        if host is None:
            raise RuntimeError("This method is only available in an actor.")
        return host.self_handle()

    @property
    def was_current_actor_reentrant(self):
        return False

    # ------------------------------------------------------------ job and resources
    @property
    def namespace(self) -> str:
        """The job's namespace (also in an actor registered in another one, as Ray)."""
        return self._rt.namespace

    @property
    def runtime_env(self):  # -> RuntimeEnv
        """The runtime_env the current task runs in (the job's in the driver)."""
        from .runtime_env import RuntimeEnv  # (here: `import shmray` leaves it for later)

        return RuntimeEnv(_validate=False, **self._rt.runtime_env)

    def get_runtime_env_string(self) -> str:
        import json  # (here: start-up does not need it)

        return json.dumps(self._rt.runtime_env, sort_keys=True)

    def _held(self) -> tuple:
        host = self._rt.actor_host
        return tuple(self._rt.current_request if host is None else host.held)

    def get_assigned_resources(self) -> dict:
        """The resources the running task holds, or in an actor what the actor holds
        for life ({} in the driver). In a placement group, under their own names (as
        Ray: {"CPU": 1.0}, not the bundle's resource names)."""
        out = {}
        for name, amount in self._held():
            found = _GROUP_RESOURCE.match(name)
            if found is None:
                out[name] = amount
            elif found.group(1) != "bundle":  # (the sliver that ties a task to its group)
                out[found.group(1)] = amount
        return out

    def get_placement_group_id(self):
        """The hex id of the placement group the running task or actor is in, or None."""
        found = _placement.group_of(self._held())
        return None if found is None else found[0]

    def get_accelerator_ids(self) -> dict:
        """The accelerator ids the running task may use, as strings (Ray's form)."""
        return {"GPU": [str(i) for i in self._rt.gpu_ids]}

    def get_resource_ids(self) -> dict:
        _deprecated("get_resource_ids()", "get_accelerator_ids()")
        return self.get_accelerator_ids()
