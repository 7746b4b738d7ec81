"""Experimental helpers, as under ``ray.experimental``: ``tqdm_ray`` (progress bars from
tasks and actors, drawn in the driver's terminal).

``tqdm_ray`` is loaded when first used (``shmray.experimental.tqdm_ray`` or ``from
shmray.experimental import tqdm_ray``): it needs the optional ``tqdm`` package, and a
worker that never draws a bar never loads it.
"""
import importlib

_SUBMODULES = ("tqdm_ray",)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))


__all__ = list(_SUBMODULES)
