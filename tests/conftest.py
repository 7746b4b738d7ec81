"""Shared fixtures, and the suite-wide leak check: after the last test no shmray
worker process and no shmray shared-memory segment may remain."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

import shmray


@pytest.fixture(scope="module")
def ray():
    """A two-CPU session shared by a test module; shut down afterwards."""
    shmray.init(num_cpus=2)
    yield shmray
    shmray.shutdown()


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
    return pid == os.getpid() or not os.path.exists(f"/proc/{pid}")


def _leftovers():
    segs = [n for n in os.listdir("/dev/shm")
            if n.startswith("shmray_") and n not in _before and _ours(_owner_pid(n))]
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    procs = [line.strip() for line in ps.splitlines()
             if "shmray._worker" in line and _worker_driver(line) is not None
             and _ours(_worker_driver(line))]
    return segs, procs


def _worker_driver(ps_line):
    marker = '"driver_pid": '
    i = ps_line.find(marker)
    if i < 0:
        return None
    return int(ps_line[i + len(marker):].split(",", 1)[0])


_before = set()


def pytest_sessionstart(session):
    _before.update(n for n in os.listdir("/dev/shm") if n.startswith("shmray_"))


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
