"""The Ray-cluster path: ``init(address=...)`` (or RAY_ADDRESS) runs the program on a real
Ray cluster, through the real ``ray`` package (``pip install 'shmray[cluster]'``).

    shmray.init("auto" | "ray://host:10001" | "host:6379") ─► ray.init(...) ─► ClusterRuntime
    f.remote(...) of a shmray RemoteFunction ─► a ray.remote of its function, made once per
        options ─► Ray's ObjectRef (or ObjectRefGenerator)
    C.remote(...) of a shmray ActorClass ─► a ray.remote of the class ─► Ray's ActorHandle
    get/put/wait/cancel/kill/... ─► _api hands them to this runtime ─► Ray's own, with
        Ray's errors raised as shmray.exceptions' (a task's error is still also an
        instance of the user's exception class)

The program means the same on both: refs one level inside list/tuple/dict arguments are
resolved before the task's body runs (DESIGN.md decision 2), by a wrapper that runs in
Ray's worker (and makes shmray's calls there run on the cluster too). Ray's workers need
shmray importable: on one machine they share the driver's environment; on a real
cluster install it on every node (or pass it in the runtime_env's py_modules).
"""
from __future__ import annotations

import functools
import inspect
import socket
import sys

from . import _context, exceptions
from ._protocol import DYNAMIC, STREAMING
from .util.scheduling_strategies import (NodeAffinitySchedulingStrategy,
                                         PlacementGroupSchedulingStrategy)

_RETURNS = {STREAMING: "streaming", DYNAMIC: "dynamic"}


def connect(address, namespace, runtime_env, ignore_reinit_error, kwargs):
    """ray.init() on the cluster at `address` (None: RAY_ADDRESS); the ClusterRuntime."""
    aliased = sys.modules.get("ray")
    if aliased is not None and aliased.__name__ == "shmray":
        raise RuntimeError(f"init(address={address!r}) connects to a Ray cluster through the "
                           f"real ray, but `import ray` is shmray in this process (`shmray "
                           f"run`, `pytest --shmray`): run the program with python itself, "
                           f"its `import shmray as ray` goes to the cluster.")
    try:
        import ray
    except ImportError:
        raise ImportError(f"init(address={address!r}) runs the program on a Ray cluster "
                          f"through the real `ray` package, which is not installed: "
                          f"pip install 'shmray[cluster]'") from None
    _check_reachable(address)
    try:
        ray.init(address=address, namespace=namespace, runtime_env=runtime_env or None,
                 ignore_reinit_error=ignore_reinit_error, **kwargs)
    except ConnectionError as e:
        raise ConnectionError(f"Could not connect to a Ray cluster at address={address!r}: "
                              f"{e}") from None
    return ClusterRuntime(ray, address)


def _check_reachable(address, seconds=5.0):
    """A ConnectionError naming `address` if nothing listens there (Ray itself retries
    an unreachable address for minutes). "auto" is Ray's to find."""
    if address == "auto":
        return
    where = address.split("://", 1)[-1]
    host, _, port = where.rpartition(":")
    if not port.isdigit():
        return  # (a form Ray knows and this does not: Ray tells)
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=seconds).close()
    except OSError as e:
        raise ConnectionError(f"Could not connect to a Ray cluster at address={address!r}: "
                              f"nothing answers at {host or '127.0.0.1'}:{port} ({e})") from None


class ClusterRuntime:
    """What shmray's API does when the program runs on a Ray cluster (`_api` hands each
    call here before its own checks: the refs and handles are Ray's)."""

    is_driver = True
    is_cluster = True

    def __init__(self, ray, address=None):
        self.ray = ray
        self.address = address
        self.resolve_nested = True
        self._remote = {}           # (fn id or class id, id(options)) -> (options, Ray's)

    # ------------------------------------------------------------ tasks and actors
    def submit(self, rf, args, kwargs, options):
        return self._ray_remote(rf._fn_id, rf._function, options).remote(*args, **kwargs)

    def create_actor(self, actor_class, args, kwargs, options):
        return self._ray_remote(actor_class._class_id, actor_class._cls, options,
                                actor=True).remote(*args, **kwargs)

    def _ray_remote(self, key, target, options, actor=False):
        made = self._remote.get((key, id(options)))
        if made is None or made[0] is not options:
            made = self._remote[(key, id(options))] = (
                options, self.ray.remote(**ray_options(options, actor))(
                    target if actor else resolving(target)))
        return made[1]

    # ------------------------------------------------------------ the API
    def call(self, name, *args, **kwargs):
        """Ray's own `name` (get, put, wait, cancel, kill, get_actor, ...), its errors
        raised as shmray's."""
        try:
            return functools.reduce(getattr, name.split("."), self.ray)(*args, **kwargs)
        except self.ray.exceptions.RayError as e:
            raise translated(e, self.ray) from None

    def shutdown(self):
        self.ray.shutdown()


def ray_options(options, actor: bool) -> dict:
    """shmray's options (TaskOptions, ActorOptions) as ray.remote's keywords."""
    made = {}
    for field in options.FIELDS:
        value = getattr(options, field)
        if field in ("scheduling_strategy_node_id", "request") or value is None:
            continue
        if field == "num_returns":
            value = _RETURNS.get(value, value)
        elif field == "scheduling_strategy":
            value = _strategy(options, value)
            if value is None:
                continue
        elif field == "resources":
            value = dict(value) or None
        elif field == "retry_exceptions" and isinstance(value, tuple):
            value = list(value)
        elif field == "max_task_retries" and not actor:
            continue
        if value is not None:
            made[field] = value
    return made


def _strategy(options, value):
    if isinstance(value, NodeAffinitySchedulingStrategy):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as Ray

        return Ray(value.node_id, soft=value.soft)
    if isinstance(value, PlacementGroupSchedulingStrategy):  # (its group is Ray's)
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy as Ray

        return Ray(value.placement_group, value.placement_group_bundle_index,
                   value.placement_group_capture_child_tasks)
    if value == "NODE_AFFINITY":
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as Ray

        return Ray(options.scheduling_strategy_node_id, soft=False)
    return None if value == "DEFAULT" else value


def resolving(fn):
    """`fn` as Ray's worker runs it: shmray's calls in it go to the cluster, and refs one
    level inside list/tuple/dict arguments are resolved first (as shmray does)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            for item in fn(*_resolved(args), **_resolved_kwargs(kwargs)):
                yield item  # (not `yield from`: Ray's executor sends values in)
        return generator

    @functools.wraps(fn)
    def task(*args, **kwargs):
        return fn(*_resolved(args), **_resolved_kwargs(kwargs))
    return task


def _in_worker():
    import ray

    if _context.runtime is None:  # shmray's calls in this Ray worker: on the cluster
        _context.runtime = ClusterRuntime(ray)
    return ray


def _resolved(args):
    ray = _in_worker()
    return tuple(_one_level(ray, a) for a in args)


def _resolved_kwargs(kwargs):
    ray = _in_worker()
    return {k: _one_level(ray, v) for k, v in kwargs.items()}


def _one_level(ray, value):
    refs = ray.ObjectRef
    if isinstance(value, (list, tuple)) and any(isinstance(x, refs) for x in value):
        got = [ray.get(x) if isinstance(x, refs) else x for x in value]
        return type(value)(got) if type(value) in (list, tuple) else got
    if isinstance(value, dict) and any(isinstance(x, refs) for x in value.values()):
        return {k: ray.get(x) if isinstance(x, refs) else x for k, x in value.items()}
    return value


def translated(error, ray):
    """Ray's error as shmray's: a task's error a shmray RayTaskError (also of the cause's
    class); the others the shmray class of the same name, its message kept."""
    if isinstance(error, ray.exceptions.RayTaskError):
        fields = vars(error)  # (Ray's dual error class reads unknown names off its cause)
        cause = fields.get("cause") or error
        if isinstance(cause, ray.exceptions.RayError) and cause is not error:
            return translated(cause, ray)  # (a cancel: TaskCancelledError, raised in it)
        return exceptions.RayTaskError(fields.get("function_name", "task"),
                                       fields.get("traceback_str") or str(error),
                                       cause).as_instanceof_cause()
    cls = getattr(exceptions, type(error).__name__, None)
    if not (isinstance(cls, type) and issubclass(cls, exceptions.RayError)):
        cls = exceptions.RayError
    sub = _with_message.get(cls)
    if sub is None:  # (shmray's classes build their message from their own fields)
        sub = _with_message[cls] = type(cls.__name__, (cls,), {
            "__str__": lambda self: self.args[0], "__module__": cls.__module__})
    made = sub.__new__(sub)
    Exception.__init__(made, str(error))
    return made


_with_message = {}  # shmray error class -> its subclass that shows a given message
