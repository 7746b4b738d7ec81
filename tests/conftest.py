"""Shared fixtures, and the suite-wide leak check: after the last test no shmray
worker process and no shmray shared-memory segment may remain."""
from __future__ import annotations

import os
import signal
import time

import pytest

import shmray
from shmray import _shm


@pytest.fixture(scope="module")
def ray():
    """A two-CPU session shared by a test module; shut down afterwards."""
    shmray.init(num_cpus=2)
    yield shmray
    shmray.shutdown()


@pytest.fixture(scope="module")
def session(ray):
    """The driver's Session of the module's `ray` session: its components."""
    return shmray._context.get_runtime()


def first_args_of(monkeypatch, obj, name) -> list:
    """The first argument of each call of obj.name from now on, as a list kept up to date
    (the method still runs: which way a task or call took, seen from the real one)."""
    seen = []
    method = getattr(obj, name)
    monkeypatch.setattr(obj, name,
                        lambda first, *a, **k: (seen.append(first), method(first, *a, **k))[1])
    return seen


def settled(session, predicate, timeout=10.0) -> bool:
    """Wait until `predicate()` holds under the session's lock, the refs dropped so far
    counted; whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session.lock:
            session.store.process_refs()
            if predicate():
                return True
        time.sleep(0.01)
    return False


def wait_gone(pids, seconds=5.0) -> bool:
    """Wait until none of `pids` runs (a zombie counts as gone); whether that happened."""
    deadline = time.monotonic() + seconds
    while any(_shm.pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not any(_shm.pid_alive(p) for p in pids)


@pytest.fixture
def gone():
    """wait_gone, for tests: ``assert gone([pid])``."""
    return wait_gone


@pytest.fixture
def fresh():
    """A private session per test (for tests that change init options)."""
    if shmray.is_initialized():
        shmray.shutdown()
    yield shmray
    shmray.shutdown()


def _owner_pid(name):
    try:
        return int(name.split("_")[1])
    except (IndexError, ValueError):
        return None


def _ours(pid):
    """Was `pid` this test run (the pytest process or a driver it started, now gone)?
    Segments of other live processes belong to someone else's session."""
    return pid is None or pid == os.getpid() or not _shm.pid_alive(pid)  # (a zombie: gone)


def _leftovers():
    segs = [n for n in os.listdir("/dev/shm")
            if n.startswith("shmray_") and n not in _before and _ours(_owner_pid(n))]
    root = _shm.sessions_root()
    dirs = [d for d in (os.listdir(root) if os.path.isdir(root) else ())
            if d.startswith("session_") and d != "session_latest" and d not in _before
            and _ours(_owner_pid(d))]
    return segs + dirs, [pid for pid, driver in worker_processes() if _ours(driver)]


def worker_processes():
    """(pid, driver pid) of every live shmray worker."""
    return _shm.worker_processes()


_before = set()


def pytest_sessionstart(session):
    # A suite started in the background by a shell (`cmd &`, some CI runners) ignores
    # SIGINT, and so would every driver it starts: the Ctrl-C tests need Python's own
    # handling of it, as in a terminal.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _before.update(n for n in os.listdir("/dev/shm") if n.startswith("shmray_"))
    root = _shm.sessions_root()
    _before.update(os.listdir(root) if os.path.isdir(root) else ())


def pytest_sessionfinish(session, exitstatus):
    shmray.shutdown()
    deadline = time.monotonic() + 3
    segs, procs = _leftovers()
    while (segs or procs) and time.monotonic() < deadline:
        time.sleep(0.1)
        segs, procs = _leftovers()
    if segs or procs:
        print(f"\nLEAK after the test suite: segments={segs} processes={procs}")
        session.exitstatus = 1
