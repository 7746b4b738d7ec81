"""How workers start: forked from a single-threaded driver at init, spawned
otherwise; either way named after their driver, with fresh random state, and
without repeating what the driver had buffered."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest

from conftest import worker_processes


def _cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")


def _worker_pids(ray):
    @ray.remote
    def pid():
        return os.getpid()

    return set(ray.get([pid.remote() for _ in range(20)]))


def test_workers_fork_from_a_single_threaded_driver():
    # In a fresh interpreter: this one may have initialised CUDA (the GPU tests), and a
    # driver that did spawns its workers (a fork could not use CUDA).
    script = textwrap.dedent("""
        import os, sys, threading
        import shmray as ray
        from shmray._shm import worker_processes
        assert threading.active_count() == 1
        ray.init(num_cpus=2)

        @ray.remote
        def pid():
            return os.getpid()

        pids = set(ray.get([pid.remote() for _ in range(20)]))
        def cmdline(pid):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read()
        def ppid(pid):
            with open(f"/proc/{pid}/stat") as f:
                return int(f.read().rsplit(")", 1)[1].split()[1])
        for p in pids:
            assert cmdline(p) == cmdline(os.getpid()), cmdline(p)  # the driver's own
            assert ppid(p) == os.getpid()
        assert {p for p, driver in worker_processes() if driver == os.getpid()} >= pids
        ray.shutdown()
        print("forked", len(pids))
    """)
    env = {k: v for k, v in os.environ.items() if k != "SHMRAY_START_METHOD"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "forked"


def test_workers_spawn_when_asked(fresh, monkeypatch):
    monkeypatch.setenv("SHMRAY_START_METHOD", "spawn")
    fresh.init(num_cpus=2)
    for pid in _worker_pids(fresh):
        assert b"import sys, shmray._worker as w; w.main(sys.argv)" in _cmdline(pid)


def test_workers_spawn_while_another_thread_runs(fresh, monkeypatch):
    # Forking while another thread may hold a lock (malloc's, logging's) could
    # leave that lock held forever in the child.
    monkeypatch.delenv("SHMRAY_START_METHOD", raising=False)
    release = threading.Event()
    other = threading.Thread(target=release.wait, args=(30,))
    other.start()
    try:
        fresh.init(num_cpus=2)
        for pid in _worker_pids(fresh):
            assert b"import sys, shmray._worker as w; w.main(sys.argv)" in _cmdline(pid)
    finally:
        release.set()
        other.join()


def test_unknown_start_method_is_rejected_before_anything_starts(fresh, monkeypatch):
    monkeypatch.setenv("SHMRAY_START_METHOD", "forkserver")
    before = set(os.listdir("/dev/shm"))
    with pytest.raises(ValueError, match="SHMRAY_START_METHOD must be one of"):
        fresh.init(num_cpus=2)
    assert not fresh.is_initialized()
    assert set(os.listdir("/dev/shm")) - before == set()
    assert not [p for p, driver in worker_processes() if driver == os.getpid()]


def test_forked_workers_do_not_share_numpy_random_state(fresh, monkeypatch):
    np = pytest.importorskip("numpy")
    monkeypatch.delenv("SHMRAY_START_METHOD", raising=False)
    np.random.seed(1234)  # the state every fork would copy
    fresh.init(num_cpus=2)

    @fresh.remote
    def draw():
        import time

        time.sleep(0.02)  # long enough that both workers take some
        return os.getpid(), float(np.random.random())

    by_worker = {}
    for pid, value in fresh.get([draw.remote() for _ in range(20)]):
        by_worker.setdefault(pid, set()).add(value)
    assert len(by_worker) == 2, by_worker
    first, second = by_worker.values()
    assert not first & second  # copies of one state would draw the same numbers


def test_output_the_driver_buffered_is_printed_once(tmp_path):
    script = tmp_path / "buffered.py"
    script.write_text(textwrap.dedent("""
        import sys
        import shmray as ray
        sys.stdout.write("written before init;")  # sits in the stdout buffer (a pipe)
        ray.init(num_cpus=2)

        @ray.remote
        def one():
            return 1

        assert ray.get([one.remote() for _ in range(10)]) == [1] * 10
        ray.shutdown()
    """))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["SHMRAY_START_METHOD"] = "fork"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("written before init;") == 1, proc.stdout
