"""The process's current runtime: the driver's, a worker's, or none yet.

``shmray._api`` installs ``auto_init`` so that the first ``.remote()`` or ``get``
in a driver starts a session, as Ray does; a worker sets ``runtime`` at start-up.
"""
from __future__ import annotations

runtime = None
auto_init = None


def get_runtime():
    rt = runtime
    if rt is None:
        if auto_init is None:
            raise RuntimeError("shmray is not initialized; call shmray.init() first")
        auto_init()
        rt = runtime
    return rt
