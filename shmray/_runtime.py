"""The contract of a process's runtime: what ``shmray.get/put/wait/remote/...`` ask of it.

Two runtimes keep it: the driver's Session (_driver.session), and a worker's
WorkerRuntime (_worker_runtime), which asks the driver over its ring. `_api`
validates the arguments once, with Ray's messages, and calls these methods
without knowing which runtime is behind them.
"""
from __future__ import annotations

import abc


class Runtime(abc.ABC):
    is_driver: bool
    node_id: str
    resolve_nested: bool       # refs one level inside list/tuple/dict arguments are resolved
    gpu_ids: tuple = ()        # the GPU ids the running task may use (none in the driver)
    current_task_id = None     # the running task's id (None in the driver)
    current_request = ()       # the running task's resources, as (name, amount) pairs
    namespace = None           # the job's namespace
    is_cluster = False         # (the Ray-cluster path's runtime is not one of these)
    actor_id = None            # the actor this process is (None: the driver, a task's)
    actor_host = None

    @property
    @abc.abstractmethod
    def job_id(self) -> str:
        """The session's job id (the driver's pid, in hex)."""

    @property
    @abc.abstractmethod
    def runtime_env(self) -> dict:
        """The runtime_env the current task runs in (the job's in the driver)."""

    @abc.abstractmethod
    def submit(self, rf, args: tuple, kwargs: dict, options):
        """Run `rf` (a RemoteFunction) with `options`; its ObjectRef(s), or None."""

    @abc.abstractmethod
    def get(self, refs: list, timeout):
        """The values of `refs` (items that are not refs pass through)."""

    @abc.abstractmethod
    def put(self, value):
        """Store `value`; its ObjectRef."""

    @abc.abstractmethod
    def wait(self, refs: list, num_returns: int, timeout, fetch_local: bool):
        """(ready, not ready), as Ray's wait."""

    @abc.abstractmethod
    def generator_next(self, task_id: int, index: int, timeout):
        """The ref of item `index` of a streaming generator task, or None after its last
        (GetTimeoutError after `timeout` seconds)."""

    @abc.abstractmethod
    def cancel(self, ref, force: bool, recursive: bool):
        """Cancel the task that makes `ref`."""

    @abc.abstractmethod
    def cluster_resources(self) -> dict:
        ...

    @abc.abstractmethod
    def available_resources(self) -> dict:
        ...

    @abc.abstractmethod
    def timeline(self) -> list:
        """Chrome-trace events of the tasks that ran."""

    @abc.abstractmethod
    def gpu_host_copy(self, oid) -> dict:
        """Host copies of a GPU object's arrays, for a process without its device."""

    # ------------------------------------------------------------ actors
    @abc.abstractmethod
    def create_actor(self, actor_class, args: tuple, kwargs: dict, options):
        """Create an actor of `actor_class` (shmray.actor.ActorClass); its ActorHandle."""

    @abc.abstractmethod
    def submit_call(self, handle, fn_id: int, args: tuple, kwargs: dict, options):
        """Call method `fn_id` of the handle's actor; its ObjectRef(s), or None."""

    @abc.abstractmethod
    def kill_actor(self, actor_id: int, no_restart: bool):
        ...

    @abc.abstractmethod
    def get_actor(self, name: str, namespace):
        """The handle of the live actor of that name, or None."""

    @abc.abstractmethod
    def named_actors(self, all_namespaces: bool) -> list:
        ...

    @abc.abstractmethod
    def placement_group_op(self, what: str, arg):
        """A placement group operation (see _protocol.PgAsk for `what`)."""
