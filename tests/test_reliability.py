"""What an adversarial trial broke (issue 15, items 1, 5, 6, 10): cancelled tasks that
still ran, a deep recursion of nested tasks that killed the session, init with far
more CPUs than cores, concurrent first calls that made several sessions."""
from __future__ import annotations

import os
import threading
import time

import pytest

import shmray
from shmray import _context, _shm


@pytest.mark.timeout(120)
def test_cancelled_tasks_queued_on_busy_workers_never_run(fresh, tmp_path):
    """Item 1: 100 short tasks queued on the rings of busy workers, all cancelled:
    none runs (a worker had room for 8 cancel notices; 81 of them ran)."""
    fresh.init(num_cpus=2)

    @fresh.remote
    def mark(i, directory):
        if directory is not None:
            open(os.path.join(directory, str(i)), "w").close()
        return i

    @fresh.remote
    def busy(seconds):
        time.sleep(seconds)

    # a short function (its measured mean): its tasks queue behind busy workers
    assert len(fresh.get([mark.remote(i, None) for i in range(200)])) == 200
    blockers = [busy.remote(1.5) for _ in range(2)]
    time.sleep(0.2)  # both workers busy: the short tasks queue on their rings
    ran = tmp_path / "ran"
    ran.mkdir()
    refs = [mark.remote(i, str(ran)) for i in range(100)]
    rt = _context.runtime
    with rt.lock:
        on_rings = sum(len(w.inflight) - 1 for w in rt.pool.workers)
    assert on_rings >= 64, "the test needs tasks pushed to the workers' rings"
    for ref in refs:
        fresh.cancel(ref)
    for ref in refs:
        with pytest.raises(shmray.exceptions.TaskCancelledError):
            fresh.get(ref, timeout=30)
    fresh.get(blockers, timeout=30)
    assert fresh.get(mark.remote("after", str(tmp_path)), timeout=30) == "after"
    assert os.listdir(ran) == []


@pytest.mark.timeout(240)
def test_a_recursion_of_nested_tasks_too_deep_fails_cleanly(fresh):
    """Item 5: 8,000 nested tasks deep ends in RayTaskError(RecursionError) and the
    session goes on (5,000 deep used to leave every worker blocked forever); 3,000
    deep still works."""
    fresh.init(num_cpus=2)

    @fresh.remote
    def depth(n):
        return 0 if n == 0 else fresh.get(depth.remote(n - 1)) + 1

    with pytest.raises(shmray.exceptions.RayTaskError) as info:
        fresh.get(depth.remote(8000), timeout=180)
    assert isinstance(info.value, RecursionError)
    assert "nested tasks" in str(info.value)
    assert len(str(info.value)) < 50_000  # nested errors do not pile up their texts
    assert fresh.get(depth.remote(3000), timeout=120) == 3000
    assert fresh.get(depth.remote(10), timeout=30) == 10


@pytest.mark.timeout(120)
def test_init_with_far_more_cpus_than_cores_starts_workers_as_needed(fresh):
    """Item 6: init(num_cpus=100000) returns at once (it started 100,000 workers one
    by one) and tasks run, with workers started as they need them."""
    start = time.monotonic()
    fresh.init(num_cpus=100000)
    assert time.monotonic() - start < 30
    rt = _context.runtime
    assert len(rt.pool.workers) <= max(64, len(os.sched_getaffinity(0)))
    assert fresh.cluster_resources()["CPU"] == 100000

    @fresh.remote
    def square(x):
        return x * x

    assert fresh.get([square.remote(i) for i in range(500)], timeout=60) == [
        i * i for i in range(500)]
    assert fresh.available_resources()["CPU"] == 100000


@pytest.mark.timeout(120)
def test_concurrent_first_calls_start_exactly_one_session(fresh):
    """Item 10: eight threads calling .remote() before any init() made eight
    sessions, seven of which outlived shutdown(); auto-init makes exactly one."""
    assert not fresh.is_initialized()

    @fresh.remote
    def ident(x):
        return x

    barrier = threading.Barrier(8)
    seen = []

    def first_call(i):
        barrier.wait()
        ref = ident.remote(i)
        seen.append((id(_context.runtime), fresh.get(ref, timeout=60)))

    threads = [threading.Thread(target=first_call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert sorted(v for _, v in seen) == list(range(8))
    assert len({rt for rt, _ in seen}) == 1
    sessions = {driver for _, driver in _shm.worker_processes() if driver == os.getpid()}
    prefixes = {n.split("_")[2] for n in os.listdir("/dev/shm")
                if n.startswith(f"shmray_{os.getpid()}_")}
    assert len(sessions) == 1 and len(prefixes) == 1
    fresh.shutdown()
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"shmray_{os.getpid()}_")]


@pytest.mark.timeout(60)
def test_the_result_of_a_cancelled_task_is_freed(fresh):
    """A cancelled task that returns anyway (it caught the KeyboardInterrupt) leaves
    no segment: nobody can read its result (it stayed until shutdown)."""
    import numpy as np

    fresh.init(num_cpus=1)
    rt = _context.runtime

    @fresh.remote
    def stubborn():
        try:
            time.sleep(20)
        except KeyboardInterrupt:
            pass
        return np.ones(4 << 20, dtype=np.uint8)

    ref = stubborn.remote()
    time.sleep(0.5)
    fresh.cancel(ref)
    with pytest.raises(shmray.exceptions.TaskCancelledError):
        fresh.get(ref, timeout=30)
    worker_segments = [n for n in os.listdir("/dev/shm")
                       if n.startswith(rt.object_prefix + "w")]
    assert worker_segments == []
