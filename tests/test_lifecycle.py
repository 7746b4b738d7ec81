"""Cancellation and max_calls (issue 5): cancel drops a queued task, interrupts a
running one (force kills its worker), never retries it, and reaches the tasks it
submitted; a worker that ran a function max_calls times is replaced."""
from __future__ import annotations

import collections
import mmap
import os
import subprocess
import sys
import time

import posix_ipc
import pytest

from shmray import _context
from shmray.exceptions import ObjectStoreFullError, TaskCancelledError


def _wait_for(path, timeout=30):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)


@pytest.mark.timeout(60)
def test_cancel_a_queued_task_it_never_runs(fresh, tmp_path):
    fresh.init(num_cpus=1)
    gate = str(tmp_path / "gate")

    @fresh.remote
    def block():
        _wait_for(gate)
        return "done"

    @fresh.remote
    def leave_a_trace(path):
        open(path, "w").close()

    running = block.remote()
    trace = str(tmp_path / "ran")
    queued = leave_a_trace.remote(trace)  # one CPU: it waits behind `block`
    fresh.cancel(queued)
    with pytest.raises(TaskCancelledError, match="was cancelled"):
        fresh.get(queued, timeout=10)
    open(gate, "w").close()
    assert fresh.get(running, timeout=30) == "done"
    assert fresh.get(leave_a_trace.remote(str(tmp_path / "later")), timeout=30) is None
    assert not os.path.exists(trace)


@pytest.mark.timeout(60)
def test_cancel_a_running_task_interrupts_it(ray, tmp_path):
    started = str(tmp_path / "started")

    @ray.remote(max_retries=3)
    def sleeper():
        open(started, "w").close()
        time.sleep(60)  # the KeyboardInterrupt wakes it
        return "slept"

    ref = sleeper.remote()
    _wait_for(started)
    begun = time.monotonic()
    ray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=30)
    assert time.monotonic() - begun < 30  # not the 60 s sleep
    assert ray.get(ray.remote(lambda: "still fine").remote(), timeout=30) == "still fine"


@pytest.mark.timeout(60)
def test_a_task_that_catches_the_interrupt_still_ends_cancelled(ray, tmp_path):
    started = str(tmp_path / "started")

    @ray.remote
    def stubborn():
        open(started, "w").close()
        try:
            time.sleep(60)
        except KeyboardInterrupt:
            return "caught it"

    ref = stubborn.remote()
    _wait_for(started)
    ray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=30)


@pytest.mark.timeout(60)
def test_cancel_a_task_blocked_in_get(ray, tmp_path):
    started, gate = str(tmp_path / "started"), str(tmp_path / "gate")

    @ray.remote
    def child():
        _wait_for(gate)
        return 1

    @ray.remote
    def parent():
        ref = child.remote()
        open(started, "w").close()
        return ray.get(ref)

    ref = parent.remote()
    _wait_for(started)
    ray.cancel(ref, recursive=False)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=30)
    open(gate, "w").close()
    assert ray.get([ray.remote(lambda i: i).remote(i) for i in range(10)], timeout=30) == \
        list(range(10))


@pytest.mark.timeout(60)
def test_force_cancel_kills_the_worker_and_is_not_retried(ray, tmp_path):
    attempts = tmp_path / "attempts"

    @ray.remote(max_retries=5)
    def stuck():
        with open(attempts, "a") as f:
            f.write(f"{os.getpid()}\n")
        while True:
            try:
                time.sleep(60)
            except KeyboardInterrupt:
                pass  # ignores the polite cancel

    ref = stuck.remote()
    _wait_for(str(attempts))
    pid = int(attempts.read_text().split()[0])
    ray.cancel(ref, force=True)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=30)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.01)
    time.sleep(0.3)  # a retry, if there were one, would have started by now
    assert len(attempts.read_text().split()) == 1
    assert ray.get(ray.remote(lambda: 2).remote(), timeout=30) == 2


@pytest.mark.timeout(60)
def test_recursive_cancel_reaches_the_children(ray, tmp_path):
    started = tmp_path / "children"

    @ray.remote
    def child(i):
        with open(started, "a") as f:
            f.write(f"{i}\n")
        time.sleep(60)

    @ray.remote
    def parent():
        refs = [child.remote(i) for i in range(2)]
        return ray.get(refs)

    ref = parent.remote()
    deadline = time.monotonic() + 30
    while (not started.exists() or len(started.read_text().split()) < 2) and \
            time.monotonic() < deadline:
        time.sleep(0.01)
    begun = time.monotonic()
    ray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=30)
    # The children were cancelled too: the workers are free again well before 60 s.
    assert ray.get([ray.remote(lambda i: i).remote(i) for i in range(4)], timeout=30) == \
        [0, 1, 2, 3]
    assert time.monotonic() - begun < 30


def test_cancel_of_a_finished_task_or_a_put_changes_nothing(ray):
    ref = ray.remote(lambda: 5).remote()
    assert ray.get(ref) == 5
    ray.cancel(ref)
    assert ray.get(ref) == 5
    obj = ray.put("kept")
    ray.cancel(obj)
    assert ray.get(obj) == "kept"
    with pytest.raises(TypeError, match="only supported for object refs"):
        ray.cancel("not a ref")


def test_max_calls_replaces_the_worker(fresh):
    fresh.init(num_cpus=2)

    @fresh.remote(max_calls=3)
    def pid():
        return os.getpid()

    pids = fresh.get([pid.remote() for _ in range(15)], timeout=60)
    counts = collections.Counter(pids)
    assert max(counts.values()) <= 3 and len(counts) >= 5
    retired = [p for p, n in counts.items() if n == 3]  # the others still serve
    deadline = time.monotonic() + 10  # every retired worker exits
    while any(_state(p) not in ("gone", "Z") for p in retired) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_state(p) in ("gone", "Z") for p in retired), \
        {p: _state(p) for p in retired}
    # the replacements serve other functions as before
    assert fresh.get(fresh.remote(lambda: "ok").remote(), timeout=30) == "ok"


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _more_than_shm_has():
    """A zero-copy array larger than /dev/shm's free space (a sparse anonymous map)."""
    np = pytest.importorskip("numpy")
    st = os.statvfs("/dev/shm")
    # MAP_NORESERVE (Linux's 0x4000; not in Python's mmap before 3.13): the kernel's
    # overcommit check would refuse a private map this large, by what else runs now.
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0x4000)
    return np.frombuffer(mmap.mmap(-1, st.f_bavail * st.f_frsize + 4096, flags=flags),
                         dtype=np.uint8)


def test_an_object_larger_than_free_shared_memory_is_a_clear_error(ray):
    with pytest.raises(ObjectStoreFullError, match="bytes free|larger than the object store"):
        ray.put(_more_than_shm_has())  # the store's own limit is checked first

    @ray.remote
    def too_big():
        return _more_than_shm_has()

    with pytest.raises(ObjectStoreFullError, match="bytes free") as info:
        ray.get(too_big.remote(), timeout=60)
    assert "too_big" in str(info.value)  # a RayTaskError naming the task
    assert ray.get(ray.remote(lambda: "alive").remote(), timeout=30) == "alive"


def test_cleanup_command_removes_only_dead_sessions(ray):
    assert ray.get(ray.put("a live session")) == "a live session"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(gone.stdout)
    dead = f"shmray_{dead_pid}_deadbeef_ctl"
    posix_ipc.SharedMemory("/" + dead, posix_ipc.O_CREX, size=4096).close_fd()
    live = sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"shmray_{os.getpid()}_"))
    assert live  # this session's own segments
    out = subprocess.run([sys.executable, "-m", "shmray", "cleanup"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"removed /dev/shm/{dead}" in out.stdout
    assert not os.path.exists(f"/dev/shm/{dead}")
    assert all(os.path.exists(f"/dev/shm/{n}") for n in live)


@pytest.mark.timeout(60)
def test_shutdown_does_not_wait_for_running_tasks(fresh, tmp_path):
    fresh.init(num_cpus=2)
    started = tmp_path / "started"

    @fresh.remote
    def long_task():
        with open(started, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(60)

    refs = [long_task.remote() for _ in range(2)]
    deadline = time.monotonic() + 30
    while (not started.exists() or len(started.read_text().split()) < 2) and \
            time.monotonic() < deadline:
        time.sleep(0.01)
    pids = [int(p) for p in started.read_text().split()]
    prefix = _context.runtime.prefix
    begun = time.monotonic()
    fresh.shutdown()
    assert time.monotonic() - begun < 10  # not the tasks' 60 s
    assert all(_state(p) in ("gone", "Z") for p in pids)
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]
    fresh.init(num_cpus=1)  # and a new session starts at once
    assert fresh.get(fresh.remote(lambda: "again").remote(), timeout=30) == "again"
    del refs


@pytest.mark.timeout(60)
def test_cancel_before_the_batch_is_sent_frees_the_workers_resources(fresh, tmp_path):
    fresh.init(num_cpus=2)
    gate = str(tmp_path / "gate")

    @fresh.remote
    def hold():
        _wait_for(gate)

    @fresh.remote
    def quick():
        return "quick"

    running = hold.remote()
    batched = quick.remote()  # right after: a burst, so it waits in its worker's batch
    fresh.cancel(batched)
    with pytest.raises(TaskCancelledError):
        fresh.get(batched, timeout=10)
    assert fresh.get(quick.remote(), timeout=10) == "quick"  # the freed CPU runs it now
    open(gate, "w").close()
    fresh.get(running, timeout=30)
