"""Which session a state query reads, and its snapshot (shmray._snapshot's data).

    address None / "auto" ─► this process's session:
        the driver  ─► Session.snapshot() (what it writes to its status area when asked)
        in a task   ─► the status area of the worker's session (_status_area: the
                       request word bumped, snapshot.json read once the driver served it)
        no session here ─► the newest live session on this machine (as `shmray status`)
    address "<driver pid>" / "<tag>" / "<session directory>" ─► that live session's
        status area, as `shmray status --session`

Reading never joins the session nor changes it (the driver's housekeeping answers).
"""
from __future__ import annotations

import math

from ... import _context, _status_area
from .exception import RayStateApiException

AUTO = "auto"


def snapshot(address, timeout) -> dict:
    """The snapshot of the session `address` names (see the module docstring)."""
    if address is not None and not isinstance(address, str):
        raise TypeError(f"address must be a string or None, got {type(address).__name__}")
    rt = _context.runtime
    if address in (None, AUTO) and rt is not None:
        return _own(rt, timeout)
    try:
        info, _ = _status_area.find_session(None if address in (None, AUTO) else address)
    except _status_area.NoSession as e:
        raise ConnectionError(f"{e} The state API reads a live shmray session on this "
                              f"machine: address is its driver pid, its tag, or 'auto'.") from None
    if rt is not None and rt.is_driver and info["prefix"] == getattr(rt, "prefix", None):
        return _own(rt, timeout)
    return _fetched(info, timeout)


def _own(rt, timeout) -> dict:
    if rt.is_driver:
        take = getattr(rt, "snapshot", None)
        if take is None:  # (init(local_mode=True): every task runs in this process)
            raise RuntimeError("the state API reads a session's status area; a program "
                               "in local mode (init(local_mode=True)) has none")
        return take()
    prefix = rt.config["session_prefix"]  # a worker's (a task's or an actor's)
    for info in _status_area.list_sessions():
        if info["prefix"] == prefix:
            return _fetched(info, timeout)
    raise ConnectionError("the session of this task has ended")


def check_timeout(timeout) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
            not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _fetched(info: dict, timeout) -> dict:
    snap, fresh = _status_area.fetch_snapshot(info, timeout)
    if not fresh or snap is None:
        raise RayStateApiException(
            f"The session of driver pid {info['driver_pid']} did not answer within "
            f"{timeout:g} s (its driver busy outside shmray, or ended)")
    return snap
