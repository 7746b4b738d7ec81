"""Fault tolerance: a crash matrix, retries, Ctrl-C and kill -9 of the driver, a stress run.

Each attempt of a task appends one byte to a file in tmp_path, so the tests count the
attempts a task really made (its worker may be long dead by then). Helpers a worker
calls while (un)pickling are module-level: a worker imports this module to find them.
"""
from __future__ import annotations

import os
import queue
import random
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import worker_processes
from shmray import _shm
from shmray._warm_reserve import RESERVE_MARK
from shmray.exceptions import RayError, RayTaskError, WorkerCrashedError

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------ helpers

class Boom(Exception):
    """The application error the tests raise."""


class Retryable(Exception):
    pass


class RetryableChild(Retryable):
    pass


class NotListed(Exception):
    pass


def _attempt(path) -> int:
    """Record one attempt in `path`; return its number (1 for the first)."""
    with open(path, "ab") as f:
        f.write(b"x")
    return os.path.getsize(path)


def _attempts(path) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0


# How each way to fail shows in the WorkerCrashedError, for the ways that end the process.
DEATHS = {"sys.exit": "exit code 3", "os._exit": "exit code 7", "SIGSEGV": "SIGSEGV",
          "SIGKILL": "SIGKILL"}
WAYS = ("raise",) + tuple(DEATHS)


def _fail(way, message):
    """Fail the way asked, in this process."""
    if way == "raise":
        raise Boom(message)
    if way == "sys.exit":
        sys.exit(3)
    if way == "os._exit":
        os._exit(7)
    if way == "SIGSEGV":
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
        os.kill(os.getpid(), signal.SIGSEGV)
    elif way == "SIGKILL":
        os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError(f"still alive after {way}")


def _unpickle_then_fail(path, way):
    """Runs where the argument is unpickled: in the worker, before the task body."""
    n = _attempt(path)
    _fail(way, f"unpickling the argument, attempt {n}")


class FailsToUnpickle:
    """An argument that pickles fine in the driver and fails when the worker unpickles it."""

    def __init__(self, path, way):
        self.path, self.way = path, way

    def __reduce__(self):
        return (_unpickle_then_fail, (self.path, self.way))


class FailsToPickle:
    """A return value that fails while the worker pickles it."""

    def __init__(self, way, message):
        self.way, self.message = way, message

    def __reduce__(self):
        _fail(self.way, self.message)


def _explode_in_driver(message):
    raise Boom(message)


class FailsInDriver:
    """A return value the worker pickles fine (it unpickles nothing of it) and the
    driver fails to unpickle, at get."""

    def __init__(self, message):
        self.message = message

    def __reduce__(self):
        return (_explode_in_driver, (self.message,))


def _check_still_works(ray):
    @ray.remote
    def still():
        return "still working"

    assert ray.get(still.remote(), timeout=30) == "still working"


# --------------------------------------------------------------- crash matrix

STAGES = ("argument unpickle", "task body", "result pickle", "result unpickle in driver")
CASES = [(stage, way) for stage in STAGES[:3] for way in WAYS] + [(STAGES[3], "raise")]


@pytest.mark.parametrize("stage,way", CASES, ids=[f"{s}-{w}" for s, w in CASES])
def test_crash_matrix(ray, tmp_path, stage, way):
    attempts = str(tmp_path / "attempts")

    @ray.remote(max_retries=2)
    def victim(stage, way, attempts, arg=None):
        n = _attempt(attempts)
        if stage == "task body":
            _fail(way, f"in the body, attempt {n}")
        if stage == "result pickle":
            return FailsToPickle(way, f"pickling the result, attempt {n}")
        if stage == "result unpickle in driver":
            return FailsInDriver(f"unpickling the result, attempt {n}")
        return "should have failed"

    if stage == "argument unpickle":  # the attempt is counted by the unpickling itself
        ref = victim.remote(stage, way, str(tmp_path / "body"), FailsToUnpickle(attempts, way))
    else:
        ref = victim.remote(stage, way, attempts)

    if stage == "result unpickle in driver":
        # The worker succeeded: not a task error, not retried, and the driver lives on.
        with pytest.raises(Exception) as info:
            ray.get(ref, timeout=30)
        assert isinstance(info.value, (Boom, RayError)), repr(info.value)
        assert "unpickling the result, attempt 1" in str(info.value)
        with pytest.raises(Exception, match="unpickling the result"):  # the same, again
            ray.get(ref, timeout=30)
        assert ray.wait([ref], timeout=0) == ([ref], [])  # wait does not unpickle it
        assert "unpickling the result" in str(ref.future().exception(timeout=30))
        assert _attempts(attempts) == 1
    elif way == "raise":  # an application error: no retry without retry_exceptions
        with pytest.raises(Boom) as info:  # an instance of the user's class...
            ray.get(ref, timeout=30)
        err = info.value
        assert isinstance(err, RayTaskError)  # ...and a RayTaskError naming the task
        assert err.function_name.endswith("victim")
        assert "attempt 1" in str(err)
        assert _attempts(attempts) == 1
    else:  # the worker died: retried max_retries times, then WorkerCrashedError
        with pytest.raises(WorkerCrashedError) as info:
            ray.get(ref, timeout=30)
        assert DEATHS[way] in str(info.value)
        assert _attempts(attempts) == 3
    if stage == "argument unpickle":
        assert _attempts(str(tmp_path / "body")) == 0  # the body never ran
    _check_still_works(ray)


# -------------------------------------------------------------------- retries

def test_max_retries_zero_never_retries_a_death(ray, tmp_path):
    attempts = str(tmp_path / "attempts")

    @ray.remote(max_retries=0)
    def dies(path):
        _attempt(path)
        os._exit(7)

    with pytest.raises(WorkerCrashedError, match="exit code 7"):
        ray.get(dies.remote(attempts), timeout=30)
    assert _attempts(attempts) == 1
    _check_still_works(ray)


def test_default_max_retries_is_three_after_a_death(ray, tmp_path):
    attempts = str(tmp_path / "attempts")

    @ray.remote
    def dies(path):
        _attempt(path)
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(WorkerCrashedError, match="SIGKILL"):
        ray.get(dies.remote(attempts), timeout=30)
    assert _attempts(attempts) == 4


def test_max_retries_minus_one_retries_deaths_until_success(ray, tmp_path):
    attempts = str(tmp_path / "attempts")

    @ray.remote(max_retries=-1)
    def dies_three_times(path):
        n = _attempt(path)
        if n == 1:
            os._exit(7)
        if n == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        if n == 3:
            os._exit(1)
        return n

    assert ray.get(dies_three_times.remote(attempts), timeout=30) == 4
    assert _attempts(attempts) == 4


def test_max_retries_minus_one_retries_exceptions_until_success(ray, tmp_path):
    attempts = str(tmp_path / "attempts")

    @ray.remote(max_retries=-1, retry_exceptions=True)
    def raises_three_times(path):
        n = _attempt(path)
        if n <= 3:
            raise Boom(f"attempt {n}")
        return n

    assert ray.get(raises_three_times.remote(attempts), timeout=30) == 4
    assert _attempts(attempts) == 4


def test_retry_exceptions_true_gives_the_last_attempts_error(ray, tmp_path):
    attempts = str(tmp_path / "attempts")

    @ray.remote(max_retries=2, retry_exceptions=True)
    def always_raises(path):
        raise Boom(f"attempt {_attempt(path)}")

    with pytest.raises(Boom) as info:
        ray.get(always_raises.remote(attempts), timeout=30)
    assert _attempts(attempts) == 3
    assert info.value.cause.args == ("attempt 3",)
    assert "attempt 3" in str(info.value) and "attempt 1" not in str(info.value)


def test_retry_exceptions_with_max_retries_zero_does_not_retry(ray, tmp_path):
    attempts = str(tmp_path / "attempts")

    @ray.remote(max_retries=0, retry_exceptions=True)
    def raises(path):
        raise Boom(f"attempt {_attempt(path)}")

    with pytest.raises(Boom, match="attempt 1"):
        ray.get(raises.remote(attempts), timeout=30)
    assert _attempts(attempts) == 1


def test_retry_exceptions_list_retries_only_the_listed_types(ray, tmp_path):
    @ray.remote(max_retries=2, retry_exceptions=[Retryable])
    def raises(path, cls, succeed_at):
        n = _attempt(path)
        if n < succeed_at:
            raise cls(f"attempt {n}")
        return n

    listed, child, other, exhausted = (str(tmp_path / name) for name in
                                       ("listed", "child", "other", "exhausted"))
    assert ray.get(raises.remote(listed, Retryable, 3), timeout=30) == 3
    assert ray.get(raises.remote(child, RetryableChild, 2), timeout=30) == 2  # a subclass
    with pytest.raises(NotListed, match="attempt 1"):
        ray.get(raises.remote(other, NotListed, 3), timeout=30)
    with pytest.raises(Retryable) as info:
        ray.get(raises.remote(exhausted, Retryable, 99), timeout=30)
    assert info.value.cause.args == ("attempt 3",)
    assert [_attempts(p) for p in (listed, child, other, exhausted)] == [3, 2, 1, 3]


def test_deaths_and_exceptions_share_one_retry_budget(ray, tmp_path):
    @ray.remote(max_retries=2, retry_exceptions=True)
    def flaky(path, plan):
        n = _attempt(path)
        if plan[n - 1] == "die":
            os._exit(7)
        raise Boom(f"attempt {n}")

    die_first, die_last = str(tmp_path / "die_first"), str(tmp_path / "die_last")
    with pytest.raises(Boom) as info:
        ray.get(flaky.remote(die_first, ["die", "raise", "raise"]), timeout=30)
    assert info.value.cause.args == ("attempt 3",)
    with pytest.raises(WorkerCrashedError, match="exit code 7"):
        ray.get(flaky.remote(die_last, ["raise", "raise", "die"]), timeout=30)
    assert _attempts(die_first) == 3 and _attempts(die_last) == 3


def test_a_crash_fails_the_tasks_that_depend_on_it(ray):
    @ray.remote(max_retries=0)
    def dies():
        os._exit(7)

    @ray.remote
    def plus_one(x):
        return x + 1

    with pytest.raises(WorkerCrashedError, match="exit code 7"):
        ray.get(plus_one.remote(plus_one.remote(dies.remote())), timeout=30)


def test_tasks_queued_behind_a_dying_task_run_once_and_are_not_charged(ray, tmp_path):
    # Once the function is known to be short, a burst of calls is batched to busy
    # workers, so tasks wait behind the dying one in its worker. They never started:
    # they run elsewhere, exactly once, although max_retries=0.
    @ray.remote(max_retries=0)
    def step(i, path, die=False):
        _attempt(os.path.join(path, str(i)))
        if die:
            time.sleep(0.2)  # while the rest of the burst queues up behind it
            os._exit(7)
        return i

    warm = tmp_path / "warm"
    warm.mkdir()
    assert ray.get([step.remote(i, str(warm)) for i in range(50)], timeout=30) == list(range(50))
    refs = [step.remote(0, str(tmp_path), True)]
    refs += [step.remote(i, str(tmp_path)) for i in range(1, 300)]
    with pytest.raises(WorkerCrashedError, match="exit code 7"):
        ray.get(refs[0], timeout=30)
    assert ray.get(refs[1:], timeout=30) == list(range(1, 300))
    assert [_attempts(str(tmp_path / str(i))) for i in range(300)] == [1] * 300


def test_a_worker_killed_while_blocked_in_get_is_retried(ray, tmp_path):
    attempts = str(tmp_path / "attempts")

    @ray.remote
    def child(parent_pid, marker):
        if not os.path.exists(marker):  # the first time only: kill the waiting parent
            open(marker, "w").close()
            os.kill(parent_pid, signal.SIGKILL)
            time.sleep(0.5)
        return "child"

    @ray.remote(max_retries=1)
    def parent(path, marker):
        n = _attempt(path)
        return n, ray.get(child.remote(os.getpid(), marker))

    assert ray.get(parent.remote(attempts, str(tmp_path / "killed")), timeout=30) == (2, "child")
    _check_still_works(ray)


# ----------------------------------------------------------- bad data, driver side

def test_unpicklable_argument_nested_in_a_list_fails_at_remote(ray):
    @ray.remote
    def takes(items):
        return len(items)

    with pytest.raises(TypeError, match=r"argument 0 of task .*takes.*_thread\.lock"):
        takes.remote([1, 2, threading.Lock()])
    with pytest.raises(TypeError, match=r"keyword argument 'items' of task .*takes.*lock"):
        takes.remote(items={"ok": 1, "bad": threading.Lock()})
    assert ray.get(takes.remote([1, 2, 3]), timeout=30) == 3


def test_unpicklable_return_value_is_a_task_error_naming_the_task(ray):
    @ray.remote
    def returns_a_lock():
        return [1, threading.Lock()]

    @ray.remote(num_returns=2)
    def second_is_bad():
        return 1, threading.Lock()

    with pytest.raises(RayTaskError) as info:
        ray.get(returns_a_lock.remote(), timeout=30)
    assert info.value.function_name.endswith("returns_a_lock")
    assert "returns_a_lock" in str(info.value) and "lock" in str(info.value)
    refs = second_is_bad.remote()
    for ref in refs:
        with pytest.raises(RayTaskError, match="second_is_bad"):
            ray.get(ref, timeout=30)
    _check_still_works(ray)


def test_unpicklable_exception_is_still_reported(ray):
    class HoldsALock(Exception):
        def __init__(self):
            super().__init__("holding a lock")
            self.lock = threading.Lock()

    @ray.remote
    def raises_it():
        raise HoldsALock()

    with pytest.raises(RayError) as info:
        ray.get(raises_it.remote(), timeout=30)
    assert "HoldsALock" in str(info.value) and "holding a lock" in str(info.value)
    _check_still_works(ray)


# ------------------------------------------------------------- stress

@pytest.mark.timeout(120)
def test_stress_random_errors_and_deaths(ray, tmp_path):
    n, n_raise, n_die = 20_000, 1_000, 24
    seed = int(os.environ.get("SHMRAY_STRESS_SEED", "20261127"))
    print(f"stress seed: {seed} (set SHMRAY_STRESS_SEED to rerun with another)")
    rng = random.Random(seed)
    plan = [0] * n  # 0: returns its index, 1: raises, 2: kills its worker once, then returns
    for i in rng.sample(range(n), n_raise + n_die)[:n_raise]:
        plan[i] = 1
    for i in rng.sample([i for i in range(n) if plan[i] == 0], n_die):
        plan[i] = 2
    markers = tmp_path / "died"
    markers.mkdir()
    log = str(tmp_path / "runs")

    @ray.remote(max_retries=3)
    def work(i, action, markers, log):
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, b"%d\n" % i)  # one short O_APPEND write: whole lines
        finally:
            os.close(fd)
        if action == 1:
            raise Boom(f"task {i} fails")
        if action == 2:
            marker = os.path.join(markers, str(i))
            if not os.path.exists(marker):  # dies the first time only
                open(marker, "w").close()
                os._exit(1)
        return i

    refs = [work.remote(i, plan[i], str(markers), log) for i in range(n)]
    assert len(set(refs)) == n
    ready, not_ready = ray.wait(refs, num_returns=n, timeout=90)
    assert not not_ready, f"{len(not_ready)} of {n} tasks never finished (seed {seed})"
    values, wrong = set(), []
    for i, ref in enumerate(refs):
        try:
            value = ray.get(ref, timeout=10)
        except Boom as e:
            if plan[i] != 1 or f"task {i} fails" not in str(e):
                wrong.append((i, plan[i], repr(e)[:200]))
            continue
        except Exception as e:
            wrong.append((i, plan[i], repr(e)[:200]))
            continue
        if plan[i] == 1 or value != i or value in values:
            wrong.append((i, plan[i], value))
        values.add(value)
    assert not wrong, f"seed {seed}: {len(wrong)} wrong results, first ones: {wrong[:10]}"
    assert values == {i for i in range(n) if plan[i] != 1}
    assert sorted(os.listdir(markers)) == sorted(str(i) for i in range(n) if plan[i] == 2)
    runs = [0] * n
    with open(log) as f:
        for line in f:
            runs[int(line)] += 1
    twice = [(i, plan[i], r) for i, r in enumerate(runs) if r != (2 if plan[i] == 2 else 1)]
    assert not twice, f"seed {seed}: tasks run the wrong number of times: {twice[:10]}"
    _check_still_works(ray)


# ------------------------------------------------- Ctrl-C and kill -9 of a driver

class _Driver:
    """A driver script in a subprocess; threads collect its stdout (line by line) and stderr."""

    def __init__(self, code, *args, cwd=None, stdin=None):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *map(str, args)], cwd=cwd,
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.out, self.err = [], []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, True),
                                          daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, False),
                                          daemon=True)]
        for t in self._readers:
            t.start()

    def _read(self, stream, is_stdout):
        for line in stream:
            if is_stdout:
                self.out.append(line)
                self.lines.put(line.rstrip("\n"))
            else:
                self.err.append(line)
        if is_stdout:
            self.lines.put(None)

    def expect(self, prefix, timeout=30):
        """The next stdout line, which must start with `prefix`."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            line = "(nothing)"
        assert line is not None and line.startswith(prefix), (
            f"expected {prefix!r}, got {line!r}; stderr so far: {''.join(self.err)}")
        return line

    def finish(self, timeout=30):
        rc = self.proc.wait(timeout)
        for t in self._readers:
            t.join(5)
        return rc, "".join(self.out), "".join(self.err)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for t in self._readers:
            t.join(5)
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass


def _segments(pid):
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"shmray_{pid}_"))


def _fixed_segments(pid):
    """The session's segments but its warm ones, which its reserve makes and renames
    (free) on its own while it is idle (see shmray._warm_reserve)."""
    return [n for n in _segments(pid)
            if not n.endswith(RESERVE_MARK) and not n.rpartition(_shm.FREE_MARK)[2].isdigit()]


def _workers_of(pid):
    return [w for w, driver in worker_processes() if driver == pid]


def _poll(condition, seconds):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def _wait_for_files(paths, seconds=30):
    assert _poll(lambda: all(os.path.exists(p) for p in paths), seconds), (
        f"tasks never started: {[p for p in paths if not os.path.exists(p)]}")


def _main_thread_sleeps(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "S"
    except OSError:
        return False


CTRL_C_DRIVER = """
    import os, sys, time
    import shmray as ray
    ray.init(num_cpus=2)

    @ray.remote
    def long(marker):
        open(marker, "w").close()
        time.sleep(120)

    @ray.remote
    def add_one(x):
        return x + 1

    ref = long.remote(sys.argv[1])
    try:
        print("BLOCKED", os.getpid(), flush=True)
        ray.get(ref)
        print("NOT INTERRUPTED", flush=True)
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
    print("AFTER", ray.get(add_one.remote(41), timeout=30), flush=True)
"""


def test_ctrl_c_in_get_interrupts_it_and_the_session_goes_on(tmp_path):
    marker = tmp_path / "long_started"
    driver = _Driver(CTRL_C_DRIVER, marker, cwd=tmp_path)
    try:
        pid = int(driver.expect("BLOCKED").split()[1])
        _wait_for_files([marker])
        assert _workers_of(pid)
        # Its main thread asleep: in get, waiting for the long task.
        assert _poll(lambda: _main_thread_sleeps(pid), 10)
        os.kill(pid, signal.SIGINT)
        rc, out, err = driver.finish(timeout=30)
    finally:
        driver.kill()
    assert rc == 0, err
    assert out.splitlines()[1:] == ["INTERRUPTED", "AFTER 42"], (out, err)
    assert _poll(lambda: not _workers_of(pid) and not _segments(pid), 3), (
        f"left behind: workers {_workers_of(pid)}, segments {_segments(pid)}")


KILLED_DRIVER = """
    import os, sys, time
    import shmray as ray
    ray.init(num_cpus=2)

    @ray.remote
    def long(marker):
        open(marker, "w").close()
        time.sleep(120)

    big = ray.put(bytes(1 << 20))  # a segment of its own
    refs = [long.remote(os.path.join(sys.argv[1], str(i))) for i in range(4)]
    print("RUNNING", os.getpid(), flush=True)
    ray.get(refs)
"""

LIVE_DRIVER = """
    import os, sys
    import shmray as ray
    ray.init(num_cpus=1)

    @ray.remote
    def double(x):
        return 2 * x

    big = ray.put(bytes(1 << 20))  # a segment of its own
    assert ray.get(double.remote(1)) == 2
    print("LIVE", os.getpid(), flush=True)
    sys.stdin.readline()  # until the test says go
    print("RESULT", ray.get(double.remote(21), timeout=30), len(ray.get(big)), flush=True)
"""


def test_kill_9_of_the_driver_ends_its_workers_and_init_reclaims_its_segments(tmp_path):
    live = _Driver(LIVE_DRIVER, cwd=tmp_path, stdin=subprocess.PIPE)
    killed = None
    try:
        live_pid = int(live.expect("LIVE").split()[1])
        live_segments = _fixed_segments(live_pid)
        live_workers = _workers_of(live_pid)
        assert live_segments and live_workers

        killed = _Driver(KILLED_DRIVER, tmp_path, cwd=tmp_path)
        pid = int(killed.expect("RUNNING").split()[1])
        _wait_for_files([tmp_path / "0", tmp_path / "1"])  # both workers busy
        assert len(_workers_of(pid)) >= 2 and _segments(pid)
        killed.kill()  # SIGKILL: no atexit, no shutdown
        assert _poll(lambda: not _workers_of(pid), 2.5), (
            f"workers of the killed driver still alive: {_workers_of(pid)}")

        # The next init, in another process, reclaims the dead session's segments
        # and leaves the live session's alone.
        reclaim = subprocess.run(
            [sys.executable, "-c", "import shmray; shmray.init(num_cpus=1); shmray.shutdown()"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert reclaim.returncode == 0, reclaim.stderr
        assert _segments(pid) == []
        assert set(live_segments) <= set(_fixed_segments(live_pid))
        assert set(live_workers) <= set(_workers_of(live_pid))

        live.proc.stdin.write("go\n")
        live.proc.stdin.flush()
        assert live.expect("RESULT") == f"RESULT 42 {1 << 20}"
        rc, out, err = live.finish(timeout=30)
        assert rc == 0, err
    finally:
        live.kill()
        if killed is not None:
            killed.kill()
    assert _poll(lambda: not _workers_of(live_pid) and not _segments(live_pid), 3)


# ------------------------------------------ the first workers are forked from the driver

@pytest.mark.parametrize("way", list(DEATHS))
def test_a_death_in_a_worker_forked_at_init_names_its_cause(fresh, tmp_path, way):
    # The workers started by init() are forks of the driver (README); replacements are
    # fresh interpreters, so the matrix above mostly sees those. Here the one attempt
    # runs in a forked worker: the error must name the same exit code or signal.
    fresh.init(num_cpus=1)
    attempts = str(tmp_path / "attempts")

    @fresh.remote(max_retries=0)
    def dies(way, path):
        _fail(way, f"attempt {_attempt(path)}")

    with pytest.raises(WorkerCrashedError) as info:
        fresh.get(dies.remote(way, attempts), timeout=30)
    assert DEATHS[way] in str(info.value)
    assert _attempts(attempts) == 1
    _check_still_works(fresh)
