"""The public functions: init, shutdown, remote, get, put, wait and friends.

Arguments are validated here, once, with Ray's messages; the runtime behind
(``_context.runtime``: the driver's or, inside a task, the worker's) trusts them.
"""
from __future__ import annotations

import functools
import numbers
import os
import sys
import warnings

from . import _context, _options, _remote_function, _runtime_env, _shm, actor as _actor
from ._generator import ObjectRefGenerator
from ._crecords import first_other
from ._object_ref import ObjectRef
from ._init_context import context_of
from ._runtime_context import RuntimeContext

# Ray init() arguments that mean nothing on one node: accepted, warned about once.
_INIT_IGNORED = {
    "labels": None, "include_dashboard": None, "dashboard_host": None,
    "dashboard_port": None, "job_config": None, "configure_logging": True,
    "logging_level": None, "logging_format": None, "logging_config": None,
    "enable_resource_isolation": False, "cgroup_path": None, "system_reserved_cpu": None,
    "system_reserved_memory": None, "proxy_server_url": None, "_enable_object_reconstruction":
    False, "_plasma_directory": None, "object_spilling_directory": None,
    "_node_ip_address": None, "_driver_object_store_memory": None, "_memory": None,
    "_redis_username": None, "_redis_password": None, "_temp_dir": None,
    "_metrics_export_port": None, "_system_config": None, "_tracing_startup_hook": None,
    "_node_name": None, "_skip_env_hook": False,
}
_REINIT_MESSAGE = ("Maybe you called ray.init twice by accident? This error can be suppressed "
                   "by passing in 'ignore_reinit_error=True' or by calling 'ray.shutdown()' "
                   "prior to 'ray.init()'.")


# What an init() argument may ask for that shmray does anyway: accepted, no warning.
_INIT_ALREADY_SO = {"include_dashboard": False}  # (no dashboard)


def init(address=None, *, num_cpus=None, num_gpus=None, resources=None, object_store_memory=None,
         ignore_reinit_error=False, log_to_driver=True, runtime_env=None,
         resolve_nested_refs=True, namespace=None, local_mode=False, **kwargs):
    """Start a session on this machine (Ray's ``init``), or with an `address` (or
    RAY_ADDRESS) connect to that Ray cluster through the real ray (see _cluster);
    returns a RayContext."""
    unknown = [k for k in kwargs if k not in _INIT_IGNORED]
    if unknown:
        raise TypeError(f"init() got unexpected keyword argument(s): {', '.join(unknown)}")
    if address is None:
        address = os.environ.get("RAY_ADDRESS") or None
    if address not in (None, "local"):
        given = [k for k, v in (("num_cpus", num_cpus), ("num_gpus", num_gpus),
                                ("resources", resources),
                                ("object_store_memory", object_store_memory)) if v is not None]
        if given:  # (Ray refuses them there; the same program runs on both)
            warnings.warn(f"init() connects to the Ray cluster at {address!r}, whose "
                          f"resources are its own: {', '.join(given)} ignored", stacklevel=2)
        from . import _cluster  # here: only the cluster path loads it (and ray)

        return _start(lambda: _cluster.connect(address, namespace, runtime_env,
                                               ignore_reinit_error,
                                               {"log_to_driver": log_to_driver, **kwargs}),
                      ignore_reinit_error)
    ignored = [k for k, v in kwargs.items() if v != _INIT_IGNORED[k]
               and not (k in _INIT_ALREADY_SO and v is _INIT_ALREADY_SO[k])]
    if ignored:
        warnings.warn(f"shmray runs on one node and ignores these init() arguments: "
                      f"{', '.join(ignored)}", stacklevel=2)
    if _context.runtime is not None:
        return _start(None, ignore_reinit_error)
    _check_init_quantities(num_cpus, num_gpus, resources, object_store_memory)
    if namespace is not None and (not isinstance(namespace, str) or not namespace):
        raise TypeError(f"namespace must be a non-empty str, got {namespace!r}")
    runtime_env = _runtime_env.normalize(runtime_env)  # the job's: every task inherits it
    if local_mode:  # every task in this process (see _local)
        from ._local import LocalRuntime
        from ._resources import node_totals

        return _start(lambda: LocalRuntime(
            node_totals(num_cpus, num_gpus, resources, object_store_memory=object_store_memory),
            namespace, bool(resolve_nested_refs), runtime_env), ignore_reinit_error)
    from ._driver.session import Session  # here: a worker imports this module, not the driver
    return _start(lambda: Session(
        num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
        object_store_memory=object_store_memory, log_to_driver=bool(log_to_driver),
        resolve_nested_refs=bool(resolve_nested_refs), runtime_env=runtime_env,
        namespace=namespace), ignore_reinit_error)


def _start(make, ignore_reinit_error):
    """The runtime make() returns, as the process's one (under the init lock: one, whatever
    other threads' first calls do meanwhile); RuntimeError if one runs already."""
    with _context.init_lock:
        if _context.runtime is not None:
            if ignore_reinit_error:
                return context_of(_context.runtime)
            raise RuntimeError(_REINIT_MESSAGE)
        _context.runtime = make()
    return context_of(_context.runtime)


def _cluster_runtime():
    """The Ray-cluster path's runtime, if the program runs on one (RAY_ADDRESS set and
    nothing started yet: the session auto-init would start is the cluster's)."""
    rt = _context.runtime
    if rt is None and os.environ.get("RAY_ADDRESS"):
        rt = _context.get_runtime()
    return rt if rt is not None and rt.is_cluster else None


def _on_cluster(fn):
    """On the Ray-cluster path the call is Ray's own (the refs and handles are Ray's)."""
    @functools.wraps(fn)
    def api(*args, **kwargs):
        cluster = _cluster_runtime()
        if cluster is not None:
            return cluster.call(fn.__name__, *args, **kwargs)
        return fn(*args, **kwargs)
    return api


def _check_init_quantities(num_cpus, num_gpus, resources, object_store_memory):
    """init's numbers, checked before anything is created: ValueError naming the one
    that is not a finite, non-negative number (or that the machine cannot hold)."""
    for name, v in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)
                              or not _options.finite(v) or v < 0):
            raise ValueError(f"{name} must be a finite, non-negative number, got {v!r}")
    if resources is not None:
        if not isinstance(resources, dict):
            raise TypeError(f"resources must be a dict, got {type(resources).__name__}")
        for k, v in resources.items():
            if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, numbers.Real) \
                    or not _options.finite(v) or v < 0:
                raise ValueError(f"resources must map names to finite, non-negative numbers, "
                                 f"got {k!r}: {v!r}")
    if object_store_memory is not None:
        if isinstance(object_store_memory, bool) or not isinstance(object_store_memory, int) \
                or object_store_memory <= 0:
            raise ValueError(f"object_store_memory must be a positive int (bytes), got "
                             f"{object_store_memory!r}")
        from ._resources import object_store_memory_error  # a driver module: not at import
        err = object_store_memory_error(object_store_memory)
        if err:
            raise ValueError(err)


def _auto_init():
    ray = sys.modules.get("ray")
    if ray is not None and hasattr(ray, "is_initialized") and ray.__name__ == "ray" \
            and ray.is_initialized():  # in a Ray worker (a cluster actor): the cluster's
        from . import _cluster
        _context.runtime = _cluster.ClusterRuntime(ray)
        return
    init()


_context.auto_init = _auto_init


def shutdown():
    """Stop the session: workers exit, shared memory is unlinked. Safe to call twice."""
    with _context.init_lock:  # not while another thread's init is half done
        rt = _context.runtime
        if rt is not None and rt.is_driver:
            rt.shutdown()
        _context.runtime = None if rt is None or rt.is_driver else rt


def is_initialized() -> bool:
    return _context.runtime is not None


def remote(*args, **kwargs):
    """``@remote`` or ``@remote(num_cpus=..., ...)``: make a function a task, or a
    class an actor class."""
    if len(args) == 1 and not kwargs and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("The @remote decorator must be applied either with no arguments and "
                        "no parentheses, for example '@remote', or it must be applied using "
                        "only keyword arguments, for example '@remote(num_returns=2)'")
    return lambda target: _make_remote(target, kwargs)


def _make_remote(target, options):
    if isinstance(target, type):
        return _actor.make(target, options)
    return _remote_function.make(target, options)


@_on_cluster
def kill(actor, *, no_restart=True):
    """End an actor now (Ray's ``kill``): its process is killed, the call it runs and
    the calls queued fail with ActorDiedError; with no_restart=False it restarts if its
    max_restarts allows. A detached or named actor's name is free again."""
    if not isinstance(actor, _actor.ActorHandle):
        raise ValueError(f"ray.kill() only supported for actors. For tasks, try "
                         f"ray.cancel(). Got: {type(actor)}.")
    _context.get_runtime().kill_actor(actor._state.actor_id, bool(no_restart))


@_on_cluster
def get_actor(name, namespace=None):
    """The handle of the live actor named `name` (ValueError if there is none)."""
    if not isinstance(name, str) or not name:
        raise ValueError("Please supply a non-empty value to get_actor")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be None or a string, got {type(namespace)}")
    handle = _context.get_runtime().get_actor(name, namespace)
    if handle is None:
        where = f"namespace {namespace!r}" if namespace else "the current namespace"
        raise ValueError(f"Failed to look up actor with name '{name}' in {where}. This "
                         f"could because 1. You are trying to look up a named actor you "
                         f"didn't create. 2. The named actor died. 3. You did not use a "
                         f"namespace matching the namespace of the actor.")
    return handle


def _check_timeout(timeout):
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"'timeout' must be a number of seconds or None, got {timeout!r}")
    if not _options.finite(timeout):  # NaN would wait or not depending on the refs' state
        raise ValueError(f"'timeout' must be a finite number of seconds (or None to wait "
                         f"without limit), got {timeout!r}")
    if timeout < 0:
        raise ValueError(f"The 'timeout' argument must be nonnegative. Received {timeout}")
    return float(timeout)


def get(object_refs, *, timeout=None):
    """The value(s) of an ObjectRef or a list of them; waits up to `timeout` seconds."""
    rt = _context.runtime
    if rt is None or rt.is_cluster:  # (not started, or on a Ray cluster: see _cluster)
        cluster = _cluster_runtime()
        if cluster is not None:
            return cluster.call("get", object_refs, timeout=timeout)
        rt = _context.get_runtime()
    timeout = _check_timeout(timeout)
    if type(object_refs) is ObjectRef:
        return rt.get([object_refs], timeout)[0]
    # Inside a task whose nested refs were resolved, what it passes here may be their
    # values already: they pass through (DESIGN.md decision 2). The driver never
    # receives resolved values, so there a value is a mistake, reported as Ray does.
    passes_values = rt.resolve_nested and not rt.is_driver
    if isinstance(object_refs, list):
        if not passes_values:
            other = first_other(object_refs, ObjectRef)  # (in C: no bytecode per ref)
            if other >= 0:
                raise TypeError(f"Attempting to call `get` on the value "
                                f"{object_refs[other]!r}, which is not an ray.ObjectRef.")
        return rt.get(object_refs, timeout)
    if not passes_values:
        raise ValueError(f"Invalid type of object refs, {type(object_refs)}, is given. "
                         "'object_refs' must either be an ObjectRef or a list of ObjectRefs. ")
    return object_refs


@_on_cluster
def put(value):
    """Store `value` and return its ObjectRef."""
    if isinstance(value, ObjectRef):  # (in a task too)
        raise TypeError("Calling 'put' on an ObjectRef is not allowed. If you really want to "
                        "do this, you can wrap the ObjectRef in a list and call 'put' on it.")
    return _context.get_runtime().put(value)


def wait(object_refs, *, num_returns=1, timeout=None, fetch_local=True):
    """Split refs into (ready, not ready) once num_returns are ready or timeout passes."""
    cluster = _cluster_runtime()
    if cluster is not None:
        return cluster.call("wait", object_refs, num_returns=num_returns, timeout=timeout,
                            fetch_local=fetch_local)
    if type(object_refs) is ObjectRef:
        raise TypeError("wait() expected a list of ray.ObjectRef, got a single ray.ObjectRef "
                        f"{object_refs}")
    if not isinstance(object_refs, list):
        raise TypeError(f"wait() expected a list of ray.ObjectRef, got {type(object_refs)}")
    timeout = _check_timeout(timeout)
    rt = _context.get_runtime()
    refs = [r for r in object_refs if type(r) in _WAITABLE]
    if len(refs) != len(object_refs) and (rt.is_driver or not rt.resolve_nested):
        bad = next(r for r in object_refs if type(r) not in _WAITABLE)
        raise TypeError(f"wait() expected a list of ray.ObjectRef, got list containing "
                        f"{type(bad)}")
    if not object_refs:
        return [], []
    if len(set(refs)) != len(refs):
        raise ValueError("Wait requires a list of unique object refs.")
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns <= 0:
        raise ValueError(f"Invalid number of objects to return {num_returns}.")
    if num_returns > len(object_refs):
        raise ValueError("num_returns cannot be greater than the number of objects provided "
                         "to ray.wait.")
    if len(refs) != len(object_refs):
        return _wait_with_values(rt, object_refs, refs, num_returns, timeout, fetch_local)
    return rt.wait(object_refs, num_returns, timeout, bool(fetch_local))


_WAITABLE = (ObjectRef, ObjectRefGenerator)  # (a generator: ready when its next item is)


def _wait_with_values(rt, items, refs, num_returns, timeout, fetch_local):
    """wait() inside a task over refs and values already resolved for it (DESIGN.md
    decision 2): the values are ready; the runtime waits on the refs only, for as
    many as the values leave to find."""
    need = num_returns - (len(items) - len(refs))
    ready_refs = set(rt.wait(refs, need, timeout, bool(fetch_local))[0]) if need > 0 else ()
    ready, not_ready = [], []
    for x in items:
        is_ready = type(x) not in _WAITABLE or x in ready_refs
        (ready if is_ready and len(ready) < num_returns else not_ready).append(x)
    return ready, not_ready


@_on_cluster
def cancel(object_ref, *, force=False, recursive=True):
    """Cancel the task that makes `object_ref` (Ray's ``cancel``): not started yet, it
    never runs; running, it gets KeyboardInterrupt (force=True kills its worker).
    `get` then raises TaskCancelledError; a cancelled task is never retried.
    recursive=True also cancels the tasks it submitted."""
    if type(object_ref) not in _WAITABLE:
        raise TypeError("ray.cancel() only supported for object refs. For actors, try "
                        f"ray.kill(), got {type(object_ref).__name__}")
    if type(object_ref) is ObjectRefGenerator:
        object_ref = object_ref._ref  # (its task's own return)
    _context.get_runtime().cancel(object_ref, bool(force), bool(recursive))


@_on_cluster
def cluster_resources() -> dict:
    return _context.get_runtime().cluster_resources()


@_on_cluster
def available_resources() -> dict:
    return _context.get_runtime().available_resources()


@_on_cluster
def nodes() -> list:
    rt = _context.get_runtime()
    return [{"NodeID": rt.node_id, "Alive": True, "NodeManagerAddress": "127.0.0.1",
             "Resources": rt.cluster_resources()}]


@_on_cluster
def timeline(filename=None):
    """Ray's ``timeline``: Chrome-trace events of the tasks that ran (the latest
    10,000) and of those running now (until now), one complete event per task on a
    track per worker. With `filename`, the events are written there as JSON (open it
    in chrome://tracing or Perfetto) and None is returned; else the list of events is."""
    rt = _context.runtime
    if rt is None:
        raise RuntimeError("Ray has not been started yet. You can start Ray with 'ray.init()'.")
    events = rt.timeline()
    if filename is None:
        return events
    import json  # (here: start-up does not need it)

    with open(os.fspath(filename), "w") as f:
        json.dump(events, f)
    return None


@_on_cluster
def get_gpu_ids() -> list:
    return list(_context.get_runtime().gpu_ids)


@_on_cluster
def get_runtime_context() -> RuntimeContext:
    return RuntimeContext(_context.get_runtime())


def cleanup_dead_sessions() -> list:
    """Unlink shared memory left by sessions whose driver died; returns the names."""
    return _shm.reclaim_dead_sessions()
