"""The session's status area: what `shmray status` reads without joining the session.

    worker ── state, current task, since when, tasks done ──► its channel segment's tail
              (a few words written per task: nothing to send, nobody to wake)
    driver ── counters and a heartbeat, every housekeeping round ──► control segment,
              after the doorbell
    driver ── snapshot.json (objects, tasks, functions), when asked ──► session directory
    CLI    ── maps both segments read-only, bumps the control's request word to ask for
              a snapshot, waits a moment for `served` to catch up, reads it all

The session directory (<tmp>/shmray-sessions/session_<pid>_<tag>/) holds
session.json, the snapshot, and spilled or file-backed objects; session_latest next
to it points to the newest. A snapshot is written only when asked for, so a session nobody looks at
pays only the per-task words and the housekeeping counters.
"""
from __future__ import annotations

import json
import os
import re
import struct
import sys
import time

from . import _ring, _shm
from ._crecords import StatusWordsBase

MAGIC = 0x53544154_53485259  # "SHRYSTAT"
VERSION = 2  # 2: the actor counters (a CLI of one version refuses the other's words)

# ---------------------------------------------------------------- worker words
# u64 words at _ring.CHANNEL_STATUS_OFFSET of a worker's channel segment (a task's begin
# writes state, task lo and hi, fn id and since; csrc/status_words.c)
W_PID, W_CORE, W_STATE, W_TASK_LO, W_TASK_HI, W_FN, W_SINCE, W_DONE = range(8)
STARTING, IDLE, RUNNING, BLOCKED = 0, 1, 2, 3
STATE_NAMES = {STARTING: "starting", IDLE: "idle", RUNNING: "running", BLOCKED: "blocked in get"}
NO_CORE = 0xFFFFFFFFFFFFFFFF

_MASK = (1 << 64) - 1


# A record of a task a worker ran, in its channel's history ring (slot = its number
# modulo _ring.HISTORY_SLOTS; W_DONE counts them): task id, function id, start and end
# (CLOCK_MONOTONIC ns), attempt, outcome, the exception's type name if it failed.
_RECORD = struct.Struct("=5QHB21s")
FINISHED, FAILED = 0, 1
assert _RECORD.size == _ring.HISTORY_RECORD


class WorkerStatus(StatusWordsBase):
    """A worker's words and task records, written by the worker itself as it works
    (the driver, the bottleneck of small tasks, keeps no per-task history). `begin`
    and `end` (once each per task) are C: csrc/status_words.c writes this layout."""

    def __init__(self, mm, pid: int, core):
        super().__init__(mm, _ring.CHANNEL_STATUS_OFFSET, _ring.CHANNEL_HISTORY_OFFSET,
                         _ring.HISTORY_SLOTS)
        self._mm = mm
        self._at = _ring.CHANNEL_STATUS_OFFSET
        self._words = memoryview(mm)[self._at:self._at + _ring.CHANNEL_STATUS_BYTES].cast("Q")
        self._words[W_PID] = pid
        self._words[W_CORE] = NO_CORE if core is None else core
        self._words[W_STATE] = IDLE

    def save(self) -> bytes:
        """The words of the task running now (a help task runs on top of it)."""
        return bytes(self._words[W_STATE:W_SINCE + 1].cast("B"))

    def restore(self, saved: bytes, task_id, fn_id, start, end, attempt, error):
        """A help task ended: recorded, and back to the task under it."""
        self.end(task_id, fn_id, start, end, attempt, error)
        self._mm[self._at + 8 * W_STATE:self._at + 8 * (W_SINCE + 1)] = saved

    def blocked(self, yes: bool):
        self._words[W_STATE] = BLOCKED if yes else RUNNING


def read_history(mm, pid: int) -> list:
    """The task records in a worker's channel, oldest first, as (task id, fn id,
    attempt, (pid, start ns, end ns), error type or None) (the driver's own form)."""
    (done,) = struct.unpack_from("=Q", mm, _ring.CHANNEL_STATUS_OFFSET + 8 * W_DONE)
    rows = []
    for k in range(max(0, done - _ring.HISTORY_SLOTS), done):
        lo, hi, fn_id, start, end, attempt, outcome, error = _RECORD.unpack_from(
            mm, _ring.CHANNEL_HISTORY_OFFSET + k % _ring.HISTORY_SLOTS * _ring.HISTORY_RECORD)
        rows.append((lo | hi << 64, fn_id, attempt, (pid, start, end),
                     error.rstrip(b"\0").decode(errors="replace") if outcome == FAILED
                     else None))
    return rows


def read_worker(mm) -> dict:
    w = struct.unpack_from("=8Q", mm, _ring.CHANNEL_STATUS_OFFSET)
    return {"pid": w[W_PID], "core": None if w[W_CORE] == NO_CORE else w[W_CORE],
            "state": STATE_NAMES.get(w[W_STATE], "unknown"),
            "task_id": f"{w[W_TASK_LO] | (w[W_TASK_HI] << 64):032x}" if w[W_STATE] >= RUNNING
            else None,
            "fn_id": w[W_FN] if w[W_STATE] >= RUNNING else None,
            "since_ns": w[W_SINCE] if w[W_STATE] >= RUNNING else None,
            "tasks_done": w[W_DONE]}


# ---------------------------------------------------------------- driver words
# u64 words at _ring.CONTROL_STATUS_OFFSET of the control segment
COUNTERS = ("workers", "blocked_workers", "tasks_submitted", "tasks_finished", "tasks_failed",
            "tasks_queued", "tasks_waiting_for_inputs", "tasks_running", "objects",
            "shm_bytes", "capacity", "spilled", "spilled_bytes",
            "actor_workers", "actors_pending", "actors_alive", "actors_restarting")
(C_MAGIC, C_VERSION, C_PID, C_STARTED_US, C_REQUEST, C_SERVED, C_HEARTBEAT,
 C_COUNTERS) = range(8)
_COUNTERS = struct.Struct(f"={len(COUNTERS)}Q")
assert 8 * C_COUNTERS + _COUNTERS.size <= _ring.CONTROL_STATUS_BYTES


class DriverStatus:
    """The control segment's status words, written by the driver."""

    def __init__(self, mm, pid: int, started: float):
        self._mm = mm
        self._words = memoryview(mm)[_ring.CONTROL_STATUS_OFFSET:
                                     _ring.CONTROL_STATUS_OFFSET + _ring.CONTROL_STATUS_BYTES
                                     ].cast("Q")
        self._words[C_PID] = pid
        self._words[C_STARTED_US] = int(started * 1e6)
        self._words[C_VERSION] = VERSION
        self._words[C_MAGIC] = MAGIC

    def publish(self, counters: tuple):
        _COUNTERS.pack_into(self._mm, _ring.CONTROL_STATUS_OFFSET + 8 * C_COUNTERS, *counters)
        self._words[C_HEARTBEAT] = time.monotonic_ns()

    def requested(self):
        """The number of a reader's request for a snapshot not served yet, or None."""
        request = self._words[C_REQUEST]
        return None if request == self._words[C_SERVED] else request

    def served(self, request: int):
        """The snapshot written now answers requests up to `request`."""
        self._words[C_SERVED] = request


def read_driver(mm) -> dict:
    words = struct.unpack_from(f"={C_COUNTERS}Q", mm, _ring.CONTROL_STATUS_OFFSET)
    if words[C_MAGIC] != MAGIC or words[C_VERSION] != VERSION:
        raise ValueError("not a shmray status area of this version")
    counters = _COUNTERS.unpack_from(mm, _ring.CONTROL_STATUS_OFFSET + 8 * C_COUNTERS)
    return {"driver_pid": words[C_PID], "started": words[C_STARTED_US] / 1e6,
            "heartbeat_ns": words[C_HEARTBEAT], **dict(zip(COUNTERS, counters))}


def ask_for_snapshot(mm) -> int:
    """Bump the request word (the CLI maps the control segment for this alone)."""
    at = _ring.CONTROL_STATUS_OFFSET + 8 * C_REQUEST
    (n,) = struct.unpack_from("=Q", mm, at)
    struct.pack_into("=Q", mm, at, (n + 1) & _MASK)
    return (n + 1) & _MASK


def snapshot_served(mm, request: int) -> bool:
    (served,) = struct.unpack_from("=Q", mm, _ring.CONTROL_STATUS_OFFSET + 8 * C_SERVED)
    return (served - request) & _MASK < 1 << 63  # served >= request, across wrap-around


# ------------------------------------------------------------ session directory
ROOT_NAME = "shmray"
LATEST = "session_latest"
SESSION_FILE = "session.json"
SNAPSHOT_FILE = "snapshot.json"


def write_session_file(directory: str, info: dict):
    """Create the session's directory with session.json, and point session_latest at it."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    _write_json(os.path.join(directory, SESSION_FILE), info)
    latest = os.path.join(os.path.dirname(directory), LATEST)
    tmp = f"{latest}.{os.getpid()}"
    try:
        os.symlink(os.path.basename(directory), tmp)
        os.replace(tmp, latest)
    except OSError:
        pass


def remove_session_directory(directory: str):
    """At shutdown: the directory, and session_latest if it points there."""
    import shutil  # (here: start-up does not need it, nor what it imports)

    shutil.rmtree(directory, ignore_errors=True)
    latest = os.path.join(os.path.dirname(directory), LATEST)
    try:
        if os.readlink(latest) == os.path.basename(directory):
            os.unlink(latest)
    except OSError:
        pass


def write_snapshot(directory: str, snapshot: dict):
    _write_json(os.path.join(directory, SNAPSHOT_FILE), snapshot)


def _write_json(path: str, data: dict):
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(tmp, path)


def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def list_sessions() -> list[dict]:
    """session.json of every live session on this machine, newest first."""
    root = _shm.sessions_root()
    found = []
    try:
        entries = os.listdir(root)
    except FileNotFoundError:
        return []
    for entry in entries:
        if not entry.startswith(_shm.SESSION_DIR_PREFIX) or entry == LATEST:
            continue
        info = read_json(os.path.join(root, entry, SESSION_FILE))
        if info and _shm.pid_alive(info["driver_pid"]) and \
                os.path.exists(os.path.join(_shm.SHM_DIR, info["control"])):
            info["directory"] = os.path.join(root, entry)
            found.append(info)
    return sorted(found, key=lambda i: -i["started"])


def python_description() -> str:
    return f"{sys.implementation.name} {sys.version.split()[0]}"


# ------------------------------------------------------------------- reading
class NoSession(Exception):
    """No live session matches: the message says so in one line."""


def find_session(selector=None) -> tuple[dict, list]:
    """The session to look at: the one `selector` names (its driver pid, its tag, or
    its directory), else the newest; returns (session info, every live session)."""
    sessions = list_sessions()
    if not sessions:
        raise NoSession("No shmray session is running on this machine "
                        "(a session lives from shmray.init() to shutdown()).")
    if selector is None:
        return sessions[0], sessions
    for info in sessions:
        if selector in (str(info["driver_pid"]), info["tag"], info["directory"],
                        os.path.basename(info["directory"])):
            return info, sessions
    raise NoSession(f"No live shmray session matches {selector!r}; running: "
                    + ", ".join(f"pid {i['driver_pid']} (tag {i['tag']})" for i in sessions))


def read_live(info: dict) -> dict:
    """The driver's counters and every worker's words, as they are now."""
    mm = _shm.map_readonly(info["control"])
    try:
        driver = read_driver(mm)
    finally:
        mm.close()
    channel = re.compile(re.escape(info["prefix"]) + r"c(\d+)$")
    workers = []
    for name in _shm.list_names(info["prefix"]):
        match = channel.match(name)
        if not match:
            continue
        try:
            mm = _shm.map_readonly(name)
        except OSError:  # the worker exited just now
            continue
        try:
            if len(mm) >= _ring.CHANNEL_BYTES:
                row = read_worker(mm)
                row["index"] = int(match.group(1))
                row["rss_bytes"] = _rss(row["pid"])
                workers.append(row)
        finally:
            mm.close()
    workers.sort(key=lambda w: w["index"])
    return {"driver": driver, "workers": workers, "monotonic_ns": time.monotonic_ns()}


def _rss(pid: int):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def fetch_snapshot(info: dict, timeout: float = 2.0) -> tuple[dict | None, bool]:
    """Ask the driver for a snapshot and wait up to `timeout` s for it. Returns
    (snapshot, fresh): an older snapshot (or None) with fresh=False when the driver
    does not answer in time (stuck in a long call that holds the GIL, say)."""
    path = os.path.join(info["directory"], SNAPSHOT_FILE)
    try:
        mm = _shm.attach(info["control"], _ring.CONTROL_BYTES)
    except OSError:
        return read_json(path), False
    try:
        request = ask_for_snapshot(mm)
        deadline = time.monotonic() + timeout
        while not snapshot_served(mm, request):
            if time.monotonic() > deadline:
                return read_json(path), False
            time.sleep(0.005)
    finally:
        mm.close()
    return read_json(path), True
