"""shmray: Ray's API (tasks and actors) on one machine, over shared memory.

    import shmray as ray

    @ray.remote
    def f(x):
        return x * 2

    print(ray.get([f.remote(i) for i in range(4)]))
"""
import importlib

from . import actor, exceptions
from ._api import (RuntimeContext, available_resources, cancel, cluster_resources,
                   get, get_actor, get_gpu_ids, get_runtime_context, init, is_initialized, kill,
                   nodes, put, remote, shutdown, timeline, wait)
from ._generator import DynamicObjectRefGenerator, ObjectRefGenerator
from ._init_context import RayContext
from ._ids import ActorID, JobID, NodeID, TaskID, WorkerID
from ._object_ref import ObjectRef
from ._remote_function import RemoteFunction
from .actor import ActorClass, ActorHandle, method

ObjectID = ObjectRef  # (Ray's other name for it)

# Imported when first used (``shmray.util``, ``from shmray import runtime_env``): a plain
# ``import shmray``, and every worker, starts without them (cloudpickle alone takes
# about a third of what ``import shmray`` took; see bench/README.md's W7).
_ON_FIRST_USE = ("cloudpickle", "experimental", "runtime_env", "util")

__version__ = "0.1.0"

__all__ = [
    "init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "cancel",
    "available_resources", "cluster_resources", "nodes", "get_gpu_ids", "get_runtime_context",
    "timeline", "ObjectRef", "RemoteFunction", "RayContext", "RuntimeContext", "exceptions", "util",
    "__version__", "kill", "get_actor", "method", "actor", "ActorClass", "ActorHandle",
    "ObjectRefGenerator", "DynamicObjectRefGenerator", "cloudpickle", "runtime_env", "NodeID",
    "JobID", "WorkerID", "ActorID", "TaskID", "ObjectID", "experimental",
]


def __getattr__(name):
    if name in _ON_FIRST_USE:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_ON_FIRST_USE))
