"""What ``get_runtime_context()`` returns: this node, job, task and actor, as the running
process's runtime knows them."""
from __future__ import annotations

import os

class RuntimeContext:
    """What ``get_runtime_context()`` returns: ids of this node, job and task."""

    def __init__(self, rt):
        self._rt = rt

    def get_node_id(self) -> str:
        return self._rt.node_id

    def get_job_id(self) -> str:
        return self._rt.job_id

    def get_task_id(self):
        tid = self._rt.current_task_id
        return None if tid is None else f"{tid:032x}"

    def get_worker_id(self) -> str:
        return f"{os.getpid():08x}"

    def get_actor_id(self):
        """The hex id of the actor this runs in (None outside actors)."""
        aid = self._rt.actor_id
        return None if aid is None else f"{aid:032x}"

    def get_actor_name(self):
        """The actor's name ('' for an unnamed one; None outside actors)."""
        host = self._rt.actor_host
        return None if host is None else host.handle.name or ""

    @property
    def current_actor(self):
        """The handle of the actor this runs in (RuntimeError outside actors)."""
        host = self._rt.actor_host
        if host is None:
            raise RuntimeError("This method is only available in an actor.")
        return host.self_handle()

    @property
    def namespace(self) -> str:
        """The job's namespace (also in an actor registered in another one, as Ray)."""
        return self._rt.namespace

    @property
    def runtime_env(self) -> dict:
        """The runtime_env the current task runs in (the job's in the driver)."""
        return self._rt.runtime_env

    def get_assigned_resources(self) -> dict:
        """The resources the running task holds, or in an actor what the actor holds
        for life ({} in the driver)."""
        host = self._rt.actor_host
        return dict(self._rt.current_request if host is None else host.held)

    def get_accelerator_ids(self) -> dict:
        """The accelerator ids the running task may use, as strings (Ray's form)."""
        return {"GPU": [str(i) for i in self._rt.gpu_ids]}

    @property
    def was_current_actor_reentrant(self):
        return False
