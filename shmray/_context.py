"""The process's current runtime: the driver's, a worker's, or none yet.

``shmray._api`` installs ``auto_init`` so that the first ``.remote()`` or ``get``
in a driver starts a session, as Ray does; a worker sets ``runtime`` at start-up.
"""
from __future__ import annotations

import threading

runtime = None
auto_init = None
actor_classes = {}  # class id -> the class of an ActorClass made here (its methods' signatures)
# init() and the auto-init of concurrent first calls: exactly one session starts.
init_lock = threading.RLock()


def get_runtime():
    rt = runtime
    if rt is None:
        if auto_init is None:
            raise RuntimeError("shmray is not initialized; call shmray.init() first")
        with init_lock:
            if runtime is None:  # another thread's first call may have started it
                auto_init()
        rt = runtime
    return rt
