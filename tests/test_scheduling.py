"""Resources and scheduling (issue 4): the accounting limits concurrency exactly,
GPUs pack per device and each worker keeps one device set, the introspection API.

Concurrency is read from the tasks' own start/end times (CLOCK_MONOTONIC is one
clock for every process): how many ran at once, never how long anything took."""
from __future__ import annotations

import collections
import os
import shutil
import tempfile
import time

import pytest

from shmray.exceptions import TaskUnschedulableError

HOLD = 0.3  # each task holds its resources this long after the meeting, so that overlaps show
MEET_TIMEOUT = 30.0


def _hold(meet):
    """Hold the task's resources. With `meet` = (directory, n): first wait until n
    tasks have started (n: the most that may run at once), so that they all overlap
    however long a new worker takes to start; a scheduler that lets fewer run at once
    leaves the wait to time out, and the intervals show it."""
    if meet is not None:
        directory, n = meet
        open(os.path.join(directory, f"{os.getpid()}-{time.monotonic_ns()}"), "w").close()
        deadline = time.monotonic() + MEET_TIMEOUT
        while len(os.listdir(directory)) < n and time.monotonic() < deadline:
            time.sleep(0.005)
    time.sleep(HOLD)


def _interval(meet=None):
    start = time.monotonic()
    _hold(meet)
    return start, time.monotonic(), None


def most_at_once(intervals) -> int:
    """The largest number of (start, end, ...) intervals open at the same moment."""
    edges = sorted([(s, 1) for s, _, *_ in intervals] + [(e, -1) for _, e, *_ in intervals])
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


_meetings = []  # directories made by meeting(), removed after each test


def meeting(peak):
    """A fresh meeting directory for one batch of tasks, `peak` of which may run at once."""
    _meetings.append(tempfile.mkdtemp(prefix="shmray-test-meet-"))
    return _meetings[-1], peak


@pytest.fixture(autouse=True)
def _remove_meetings():
    yield
    while _meetings:
        shutil.rmtree(_meetings.pop(), ignore_errors=True)


def run_all(ray, n, peak, **options):
    """Run n tasks of which `peak` may run at once; their (start, end, ...) intervals."""
    task = ray.remote(**options)(_interval) if options else ray.remote(_interval)
    meet = meeting(peak)
    return ray.get([task.remote(meet) for _ in range(n)], timeout=120)


def test_whole_cpus_limit_concurrency(fresh):
    fresh.init(num_cpus=4)
    assert most_at_once(run_all(fresh, 6, 2, num_cpus=2)) == 2
    assert most_at_once(run_all(fresh, 6, 1, num_cpus=3)) == 1


def test_fractional_and_zero_cpus(fresh):
    fresh.init(num_cpus=1)
    assert most_at_once(run_all(fresh, 6, 4, num_cpus=0.25)) == 4
    assert most_at_once(run_all(fresh, 4, 2, num_cpus=0.5)) == 2
    # num_cpus=0 holds no CPU: these run beside a task that takes the only one
    meet = meeting(3)
    blocker = fresh.remote(num_cpus=1)(_interval).remote(meet)
    free = [fresh.remote(num_cpus=0)(_interval).remote(meet) for _ in range(2)]
    assert most_at_once(fresh.get([blocker, *free], timeout=60)) == 3


def test_memory_is_a_scheduling_resource(fresh):
    fresh.init(num_cpus=4)
    total = fresh.cluster_resources()["memory"]
    assert most_at_once(run_all(fresh, 4, 2, num_cpus=0.5, memory=int(total * 0.4))) == 2


def test_custom_resources(fresh):
    fresh.init(num_cpus=4, resources={"slot": 2, "license": 1})
    assert most_at_once(run_all(fresh, 4, 2, num_cpus=0.5, resources={"slot": 1})) == 2
    assert most_at_once(run_all(fresh, 3, 1, num_cpus=0.5, resources={"license": 1})) == 1
    assert most_at_once(run_all(fresh, 4, 4, num_cpus=0.5, resources={"slot": 0.5})) == 4


def _gpu_task(meet=None):
    import shmray

    start = time.monotonic()
    _hold(meet)
    return (start, time.monotonic(), os.environ.get("CUDA_VISIBLE_DEVICES"),
            shmray.get_gpu_ids(), os.getpid())


def test_fractional_gpus_fill_one_device_before_the_next(fresh):
    fresh.init(num_cpus=4, num_gpus=2)  # no GPU here: scheduling works all the same
    half = fresh.remote(num_gpus=0.5, num_cpus=0.5)(_gpu_task)
    meet = meeting(3)
    got = fresh.get([half.remote(meet) for _ in range(3)], timeout=120)
    assert most_at_once(got) == 3
    assert sorted(r[2] for r in got) == ["0", "0", "1"]
    assert sorted(tuple(r[3]) for r in got) == [(0,), (0,), (1,)]
    quarter = fresh.remote(num_gpus=0.25, num_cpus=0.5)(_gpu_task)
    meet = meeting(5)
    got = fresh.get([quarter.remote(meet) for _ in range(5)], timeout=120)
    assert most_at_once(got) == 5
    assert collections.Counter(r[2] for r in got) == {"0": 4, "1": 1}


def test_whole_gpus_get_whole_devices(fresh):
    fresh.init(num_cpus=4, num_gpus=2)
    one = fresh.remote(num_gpus=1, num_cpus=0.5)(_gpu_task)
    meet = meeting(2)
    got = fresh.get([one.remote(meet) for _ in range(3)], timeout=120)
    assert most_at_once(got) == 2  # a third GPU does not exist
    assert sorted(r[2] for r in got[:2]) == ["0", "1"]
    both = fresh.remote(num_gpus=2, num_cpus=0.5)(_gpu_task)
    start, end, visible, ids, _ = fresh.get(both.remote(), timeout=60)
    assert visible == "0,1" and ids == [0, 1]


def test_a_worker_keeps_one_device_set(fresh):
    fresh.init(num_cpus=2, num_gpus=2)
    variants = [fresh.remote(num_gpus=g, num_cpus=0.5)(_gpu_task) for g in (0, 0.5, 1, 2)]
    refs = [variants[i % 4].remote() for i in range(24)]
    seen = collections.defaultdict(set)
    for _, _, visible, _, pid in fresh.get(refs, timeout=120):
        seen[pid].add(visible)
    assert all(len(sets) == 1 for sets in seen.values()), dict(seen)
    cpu_only = [v for sets in seen.values() for v in sets if v == ""]
    assert cpu_only, "CPU tasks on a node with GPUs see CUDA_VISIBLE_DEVICES=''"


def test_gpu_ids_follow_the_drivers_visible_devices(fresh, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    fresh.init(num_cpus=2)
    assert fresh.cluster_resources()["GPU"] == 2
    one = fresh.remote(num_gpus=1)(_gpu_task)
    assert sorted(r[2] for r in fresh.get([one.remote(), one.remote()], timeout=60)) == ["3", "5"]
    fresh.shutdown()
    with pytest.raises(ValueError, match="more GPUs than CUDA_VISIBLE_DEVICES"):
        fresh.init(num_cpus=2, num_gpus=3)


def test_a_gpu_request_without_gpus_fails_fast(fresh, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # this node has none
    fresh.init(num_cpus=2)
    with pytest.warns(UserWarning, match=r"\{GPU: 1\}"):
        ref = fresh.remote(num_gpus=1)(_gpu_task).remote()
    with pytest.raises(TaskUnschedulableError, match=r"requires \{GPU: 1\} but this node has "
                                                     r"\{GPU: 0\}"):
        fresh.get(ref, timeout=10)


def test_assigned_resources_and_accelerator_ids(fresh):
    fresh.init(num_cpus=2, num_gpus=1, resources={"slot": 1})

    @fresh.remote(num_cpus=0.5, num_gpus=0.5, resources={"slot": 0.5})
    def context():
        ctx = fresh.get_runtime_context()
        return (ctx.get_assigned_resources(), ctx.get_accelerator_ids(), ctx.get_task_id(),
                ctx.get_worker_id(), ctx.get_job_id(), ctx.get_node_id())

    assigned, accelerators, task_id, worker_id, job_id, node_id = fresh.get(context.remote())
    assert assigned == {"CPU": 0.5, "GPU": 0.5, "slot": 0.5}
    assert accelerators == {"GPU": ["0"]}
    assert task_id and worker_id != fresh.get_runtime_context().get_worker_id()
    assert job_id == fresh.get_runtime_context().get_job_id()
    assert node_id == fresh.get_runtime_context().get_node_id()
    assert fresh.get_runtime_context().get_assigned_resources() == {}


def test_introspection_keys_follow_ray(fresh):
    fresh.init(num_cpus=2, num_gpus=1, resources={"slot": 3}, object_store_memory=10**9)
    total = fresh.cluster_resources()
    assert total["CPU"] == 2 and total["GPU"] == 1 and total["slot"] == 3
    assert total["object_store_memory"] == 10**9 and total["memory"] > 0
    assert total["node:127.0.0.1"] == 1 and total["node:__internal_head__"] == 1
    free = fresh.available_resources()
    assert set(free) == set(total) and free["CPU"] == 2
    node = fresh.nodes()[0]
    assert node["Alive"] and node["Resources"] == total
    # the node's own resource works as an affinity request, as in Ray
    here = fresh.remote(resources={"node:127.0.0.1": 0.01})(_interval)
    start, end, _ = fresh.get(here.remote(), timeout=60)
    assert end > start


def test_available_resources_while_tasks_hold_them(fresh, tmp_path):
    fresh.init(num_cpus=2, num_gpus=1)
    flag = tmp_path / "release"

    @fresh.remote(num_cpus=1, num_gpus=0.5)
    def hold():
        while not flag.exists():
            time.sleep(0.01)

    ref = hold.remote()
    deadline = time.monotonic() + 30
    while fresh.available_resources().get("GPU", 0) != 0.5 and time.monotonic() < deadline:
        time.sleep(0.01)
    free = fresh.available_resources()
    assert free["GPU"] == 0.5 and free["CPU"] == 1
    flag.touch()
    fresh.get(ref, timeout=30)
    assert fresh.available_resources()["GPU"] == 1


def test_a_deep_tree_of_nested_tasks_completes(fresh):
    fresh.init(num_cpus=2)

    @fresh.remote
    def fib(n):
        if n < 2:
            return n
        return sum(fresh.get([fib.remote(n - 1), fib.remote(n - 2)]))

    assert fresh.get(fib.remote(16), timeout=100) == 987


@pytest.mark.parametrize("options, message", [
    ({"num_gpus": 1.5}, "'num_gpus' above 1 must be a whole number"),
    ({"num_cpus": -1}, "'num_cpus' must be non-negative"),
    ({"memory": "1GB"}, "'memory' must be a number"),
    ({"resources": {"GPU": 1}}, "instead of 'CPU' and 'GPU'"),
    ({"resources": {"slot": -2}}, "must be non-negative"),
    ({"num_returns": "lazy"}, "\"streaming\" or \"dynamic\""),
    ({"num_returns": -1}, "between 0 and 65535"),
    ({"max_retries": -2}, "'max_retries' must be >= -1"),
    ({"scheduling_strategy": "NEAREST"}, "scheduling_strategy must be one of"),
    ({"num_cpu": 1}, r"Invalid option keyword num_cpu for remote functions. Valid ones are"),
])
def test_the_options_table_rejects_bad_values_at_once(ray, options, message):
    def f():
        return 1

    with pytest.raises(ValueError, match=message):
        ray.remote(**options)(f)
    with pytest.raises(ValueError, match=message):
        ray.remote(f).options(**options)
