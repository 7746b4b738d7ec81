"""What a worker's tasks start ends with the session (issue 15, items 12 and 21), and
the CLI's bad input (item 20).

- processes a task starts (subprocess.Popen, in the worker's group or a session of
  their own, or orphaned by a shell) end at shutdown(), when their worker dies, and
  when the driver is killed;
- a process forked inside a task never touches the worker's rings: it exits when the
  user's function returns or raises, the API refuses to run in it, its prints go to
  the worker's stdout;
- a worker does not inherit the driver's faulthandler (no "Fatal Python error" from a
  worker's crash on the driver's stderr);
- the CLI answers bad arguments and unwritable paths with one line, no traceback.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import worker_processes
from shmray import _shm
from shmray.exceptions import WorkerCrashedError

pytestmark = pytest.mark.timeout(90)


# ------------------------------------------------------------------ helpers
def _running(pid: int) -> bool:
    """Is `pid` a live process (a zombie, killed and not reaped by init, is not)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_gone(pids, within=30.0) -> list:
    """The pids still running after waiting up to `within` seconds for all to end (a
    SIGKILL is delivered asynchronously: no timing is asserted, only the outcome)."""
    deadline = time.monotonic() + within
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [p for p in pids if _running(p)]


def _kill(pids):
    """Leave nothing behind when a test fails."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _start_sleepers():
    """Runs in a task: `sleep` in the worker's group, one in a session of its own, and
    one orphaned by its shell (its parent gone: reparented away from the worker)."""
    same = subprocess.Popen(["sleep", "300"])
    own = subprocess.Popen(["sleep", "300"], start_new_session=True)
    shell = subprocess.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"],
                           capture_output=True, text=True, check=True)
    same.returncode = own.returncode = 0  # (no ResourceWarning: they are meant to run on)
    return [same.pid, own.pid, int(shell.stdout)]


# ---------------------------------------------------- item 12: descendants
def test_processes_started_by_a_task_end_with_shutdown(fresh):
    fresh.init(num_cpus=1)
    pids = fresh.get(fresh.remote(_start_sleepers).remote())
    try:
        assert all(_running(p) for p in pids)
        fresh.shutdown()
        assert _wait_gone(pids) == []
    finally:
        _kill(pids)


def test_processes_started_by_a_task_still_running_end_with_shutdown(fresh, tmp_path):
    """Its worker is busy: shutdown() kills it, and its descendants first, those that
    left its process group too."""
    fresh.init(num_cpus=1)
    record = tmp_path / "pids"

    @fresh.remote
    def start_then_run(path):
        with open(path + ".tmp", "w") as f:
            f.write(" ".join(map(str, _start_sleepers())))
        os.rename(path + ".tmp", path)
        time.sleep(300)

    start_then_run.remote(str(record))
    deadline = time.monotonic() + 60
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    pids = [int(p) for p in record.read_text().split()]
    try:
        fresh.shutdown()
        assert _wait_gone(pids) == []
    finally:
        _kill(pids)


def test_processes_started_by_a_task_end_when_its_worker_dies(fresh, tmp_path):
    fresh.init(num_cpus=1)
    record = tmp_path / "pids"

    @fresh.remote(max_retries=0)
    def start_then_die(path):
        with open(path, "w") as f:
            f.write(" ".join(map(str, _start_sleepers())))
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(WorkerCrashedError):
        fresh.get(start_then_die.remote(str(record)))
    pids = [int(p) for p in record.read_text().split()]
    try:
        # Those in the worker's process group (the shell's orphan too) go with it; one
        # that left the group (start_new_session) outlives a worker killed by SIGKILL
        # (nothing links it to the worker any more), and is killed below.
        assert _wait_gone([pids[0], pids[2]]) == []
        assert fresh.get(fresh.remote(lambda: 7).remote()) == 7  # its replacement works
    finally:
        _kill(pids)


DRIVER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[1])
    import shmray as ray
    from test_worker_processes import _start_sleepers
    ray.init(num_cpus=1)
    worker, pids = ray.get(ray.remote(lambda: (os.getpid(), _start_sleepers())).remote())
    print(worker, *pids, flush=True)
    sys.stdin.read()  # until killed
""")


def test_processes_started_by_a_task_end_when_the_driver_is_killed(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.Popen([sys.executable, str(script), os.path.dirname(__file__)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pids = []
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 4 and all(_running(p) for p in pids)
        proc.kill()  # SIGKILL: the worker notices its driver is gone, and ends them all
        proc.wait(timeout=30)
        assert _wait_gone(pids) == []
    finally:
        proc.kill()
        proc.wait()
        _kill(pids)
        _shm.reclaim_dead_sessions()  # the killed driver's segments


# ---------------------------------------------------- item 12: os.fork() in a task
def _fork_and(child, wait=30.0):
    """Runs in a task: fork; the child runs `child()` and then returns from the task's
    function (or raises); the parent returns the child's exit code (None: it did not
    end within `wait` seconds, and was killed)."""
    pid = os.fork()
    if pid == 0:
        return child()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _returns():
    print("hello from the forked child", flush=True)
    return "the child's value"


def _raises():
    raise ValueError("the forked child's error")


def _uses_the_api():
    import shmray
    try:
        shmray.put(1)
    except RuntimeError as e:
        assert "forked inside a task" in str(e)
        return "refused"
    os._exit(9)


def test_a_child_forked_in_a_task_ends_when_the_function_returns_or_raises(fresh, capfd):
    fresh.init(num_cpus=1)
    fork_and = fresh.remote(_fork_and)
    square = fresh.remote(lambda x: x * x)
    for child, code in ((_returns, 0), (_raises, 1), (_uses_the_api, 0)):
        assert fresh.get(fork_and.remote(child)) == code, child.__name__
        # The worker's rings are intact: one reader, one writer, no stray Done.
        assert fresh.get([square.remote(i) for i in range(50)]) == [i * i for i in range(50)]
    assert len({pid for pid, driver in worker_processes() if driver == os.getpid()}) == 1
    out, err = capfd.readouterr()
    assert "hello from the forked child" in out
    assert "ValueError: the forked child's error" in err


def _pool_in_a_task(n):
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(2) as pool:
        return pool.map(_noisy_square, range(n))


def _noisy_square(x):
    print("pool child", x)
    return x * x


def test_a_fork_pool_in_a_task_leaves_the_worker_intact(fresh):
    fresh.init(num_cpus=1)
    assert fresh.get(fresh.remote(_pool_in_a_task).remote(20)) == [i * i for i in range(20)]
    square = fresh.remote(lambda x: x * x)
    assert fresh.get([square.remote(i) for i in range(50)]) == [i * i for i in range(50)]


# ------------------------------------------------------------ item 21: faulthandler
CRASH = textwrap.dedent("""
    import faulthandler, resource
    faulthandler.enable()  # as pytest does
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
    import shmray as ray
    from shmray.exceptions import WorkerCrashedError
    ray.init(num_cpus=1)

    @ray.remote(max_retries=0)
    def crash():
        import ctypes
        ctypes.string_at(0)

    try:
        ray.get(crash.remote())
    except WorkerCrashedError as e:
        print("CRASHED", e, flush=True)
    ray.shutdown()
""")


def test_a_crashing_worker_prints_no_fatal_python_error(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(CRASH)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONFAULTHANDLER", "SHMRAY_START_METHOD")}  # a forked worker
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "CRASHED" in out.stdout and "SIGSEGV" in out.stdout
    assert "Fatal Python error" not in out.stderr, out.stderr


# ------------------------------------------------------------ item 20: the CLI
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "shmray", *args], capture_output=True,
                          text=True, timeout=60)


def _one_line_error(out, status):
    assert out.returncode == status, out
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, \
        out.stderr
    assert out.stdout == ""


def test_cli_bad_arguments_print_one_line(fresh):
    fresh.init(num_cpus=1)  # a live session: the commands would get past finding one
    mine = ("--session", str(os.getpid()))
    for args in (["status", "--watch", "-1"], ["status", "--watch", "0"],
                 ["status", "--watch", "nan"], ["status", "--watch", "inf"],
                 ["status", "--watch", "soon"], ["list", "tasks", "--limit", "0"],
                 ["list", "things"], ["no-such-command"]):
        out = _cli(*args, *mine)
        _one_line_error(out, 2)
        assert "error:" in out.stderr and "--help" in out.stderr


def test_cli_timeline_to_an_unwritable_path_prints_one_line(fresh, tmp_path):
    fresh.init(num_cpus=1)
    assert fresh.get(fresh.remote(lambda: 1).remote()) == 1
    mine = ("--session", str(os.getpid()))
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for path in ("/nonexistent/x.json", str(tmp_path), str(a_file / "x.json")):
        out = _cli("timeline", path, *mine)
        _one_line_error(out, 1)
        assert out.stderr.startswith(f"Cannot write the timeline to {path}:")
    out = _cli("timeline", str(tmp_path / "ok.json"), *mine)  # and a good path still works
    assert out.returncode == 0 and "1 task(s) written" in out.stdout, out.stderr
