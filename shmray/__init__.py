"""shmray: Ray's Tasks API on one machine, over shared memory.

    import shmray as ray

    @ray.remote
    def f(x):
        return x * 2

    print(ray.get([f.remote(i) for i in range(4)]))
"""
from . import exceptions, util
from ._api import (RayContext, RuntimeContext, available_resources, cancel, cluster_resources,
                   get, get_gpu_ids, get_runtime_context, init, is_initialized, nodes, put,
                   remote, shutdown, timeline, wait)
from ._object_ref import ObjectRef
from ._remote_function import RemoteFunction

__version__ = "0.1.0"

__all__ = [
    "init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "cancel",
    "available_resources", "cluster_resources", "nodes", "get_gpu_ids", "get_runtime_context",
    "timeline", "ObjectRef", "RemoteFunction", "RayContext", "RuntimeContext", "exceptions", "util",
    "__version__",
]
