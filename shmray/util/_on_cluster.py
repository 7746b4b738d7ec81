"""On the Ray-cluster path (see shmray._cluster) ``shmray.util.X`` is Ray's own
``ray.util.X``: the refs, handles and groups there are Ray's, so are the helpers
that take them. Each helper asks here when it is used (not when imported: a program
imports before it calls ``init``)."""
from __future__ import annotations

import importlib


def ray_counterpart(module: str, name: str):
    """Ray's ``<module>.<name>`` (module as "ray.util.queue") when this program runs on a
    Ray cluster, else None."""
    from .._api import _cluster_runtime  # (at call time: _api imports shmray.util)

    if _cluster_runtime() is None:
        return None
    return getattr(importlib.import_module(module), name)
