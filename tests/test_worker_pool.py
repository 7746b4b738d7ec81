"""How workers start: forked from a single-threaded driver at init, spawned
otherwise; either way named after their driver, with fresh random state, and
without repeating what the driver had buffered."""
from __future__ import annotations

import os
import shutil
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


_HOW_WORKERS_STARTED = textwrap.dedent("""
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
    assert {p for p, driver in worker_processes() if driver == os.getpid()} >= pids
    for p in pids:
        assert ppid(p) == os.getpid()
        # a fork runs the driver's own command line
        print("fork" if cmdline(p) == cmdline(os.getpid()) else "spawn")
    ray.shutdown()
""")


def _how_workers_start(prelude=""):
    """How the workers of a fresh driver started ("fork" or "spawn", one per worker):
    in a fresh interpreter, since this one may have initialised CUDA (the GPU tests)."""
    env = {k: v for k, v in os.environ.items() if k != "SHMRAY_START_METHOD"}
    out = subprocess.run([sys.executable, "-c", prelude + _HOW_WORKERS_STARTED],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_workers_fork_from_a_single_threaded_driver():
    assert _how_workers_start() == {"fork"}


def _stand_in_libcuda(tmp_path, status):
    """A libcuda.so.1 whose cuDeviceGetCount answers `status` (0: CUDA initialised,
    3: CUDA_ERROR_NOT_INITIALIZED), as a line that loads it into a driver."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build a stand-in libcuda")
    source = tmp_path / "cuda.c"
    source.write_text(f"int cuDeviceGetCount(int *n) {{ *n = 1; return {status}; }}\n")
    lib = tmp_path / "libcuda.so.1"
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(lib),
                    str(source)], check=True, timeout=60)
    return f"import ctypes; ctypes.CDLL({str(lib)!r})\n"


def test_workers_spawn_when_the_driver_initialised_cuda(tmp_path):
    # A fork of a process that initialised CUDA cannot use CUDA (every call fails).
    assert _how_workers_start(_stand_in_libcuda(tmp_path, 0)) == {"spawn"}


def test_workers_fork_when_cuda_is_loaded_but_not_initialised(tmp_path):
    # (importing cupy or torch loads libcuda; only using a device initialises it)
    assert _how_workers_start(_stand_in_libcuda(tmp_path, 3)) == {"fork"}


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
