"""Ray's ``ray.util.debug`` helpers for logging a message once per key:
``log_once``, ``disable_log_once_globally``, ``enable_periodic_logging``,
``reset_log_once``. Per process (a worker has its own)."""
from __future__ import annotations

import threading
import time

PERIOD_SECONDS = 60.0  # with periodic logging, every key logs again after this long

_lock = threading.Lock()
_logged = set()
_disabled = False
_periodic = False
_period_started = time.monotonic()


def log_once(key) -> bool:
    """True the first time it is called with `key` in this process, then False (with
    periodic logging on, True again once a period has passed; never once disabled)."""
    global _period_started
    with _lock:
        if _disabled:
            return False
        if _periodic and time.monotonic() - _period_started > PERIOD_SECONDS:
            _logged.clear()
            _period_started = time.monotonic()
        if key in _logged:
            return False
        _logged.add(key)
        return True


def disable_log_once_globally():
    """log_once() returns False from now on, for every key."""
    global _disabled
    _disabled = True


def enable_periodic_logging():
    """log_once() returns True again for each key every PERIOD_SECONDS."""
    global _periodic
    _periodic = True


def reset_log_once(key=None):
    """Forget that `key` (every key if None) was logged."""
    with _lock:
        if key is None:
            _logged.clear()
        else:
            _logged.discard(key)


__all__ = ["log_once", "disable_log_once_globally", "enable_periodic_logging",
           "reset_log_once"]
