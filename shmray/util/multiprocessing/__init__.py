"""``shmray.util.multiprocessing``: Ray's ``ray.util.multiprocessing`` (``Pool``, and the
stdlib's ``TimeoutError`` and ``JoinableQueue`` beside it, as Ray exports them).

The names load on first use: a worker process imports this package to run a pool's
chunks (``_chunk``), and must not pay for the pool's driver side.
"""
import importlib

_EXPORTS = {"Pool": ("shmray.util.multiprocessing.pool", "Pool"),
            "TimeoutError": ("multiprocessing", "TimeoutError"),
            "JoinableQueue": ("multiprocessing", "JoinableQueue")}

__all__ = ["Pool", "TimeoutError", "JoinableQueue"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
