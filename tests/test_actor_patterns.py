"""What real programs do with actors, end to end: a progress tracker, a parameter
server, a work queue, a model held in memory; and actors with GPUs (fake devices here;
cupy through IPC where a GPU is) and runtime environments."""
from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

import shmray
from shmray import _resources

pytestmark = pytest.mark.timeout(90)

_GPU_MISSING = _resources.cupy_gpus()[1]  # None when cupy and a GPU are here


def test_a_progress_tracker_updated_by_tasks(ray):
    @ray.remote
    class Progress:
        def __init__(self, total):
            self.total, self.done = total, 0

        def report(self, n=1):
            self.done += n

        def fraction(self):
            return self.done / self.total

    @ray.remote
    def work(i, tracker):
        tracker.report.remote()
        return i * i

    tracker = Progress.remote(20)
    assert sum(ray.get([work.remote(i, tracker) for i in range(20)])) == sum(i * i for i in range(20))
    # the reports were sent before each task's result; the tracker sees them all
    assert ray.get(tracker.fraction.remote()) == 1.0


def test_a_parameter_server_with_workers(ray):
    @ray.remote
    class ParameterServer:
        def __init__(self, dim):
            self.weights = np.zeros(dim)

        def push(self, gradient):
            self.weights += gradient
            return self.weights

        def pull(self):
            return self.weights

    @ray.remote
    def worker(ps, steps):
        for _ in range(steps):
            weights = shmray.get(ps.pull.remote())
            shmray.get(ps.push.remote(np.ones_like(weights)))
        return steps

    ps = ParameterServer.remote(1000)
    assert ray.get([worker.remote(ps, 10) for _ in range(3)]) == [10, 10, 10]
    weights = ray.get(ps.pull.remote())
    assert weights.shape == (1000,) and (weights == 30).all()
    weights[0] = -1  # writable, copy-on-write (DESIGN.md decision 5): the server's is intact
    assert ray.get(ps.pull.remote())[0] == 30


def test_a_work_queue_drained_by_consumers(ray):
    @ray.remote
    class Queue:
        def __init__(self, items):
            self.items = list(items)

        def take(self):
            return self.items.pop(0) if self.items else None

    @ray.remote
    def consumer(queue):
        got = []
        while (item := shmray.get(queue.take.remote())) is not None:
            got.append(item)
        return got

    q = Queue.remote(range(100))
    parts = ray.get([consumer.remote(q) for _ in range(3)])
    assert sorted(x for part in parts for x in part) == list(range(100))


def test_a_model_held_in_memory_serves_many_requests(ray):
    @ray.remote
    class Model:
        def __init__(self, weights_ref):
            self.weights = weights_ref  # resolved for __init__: the array itself
            self.loads = 1

        def predict(self, batch):
            return batch @ self.weights

        def times_loaded(self):
            return self.loads

    weights = np.arange(12.0).reshape(4, 3)
    model = Model.remote(shmray.put(weights))
    batches = [np.ones((2, 4)) * i for i in range(5)]
    out = ray.get([model.predict.remote(b) for b in batches])
    for b, o in zip(batches, out):
        np.testing.assert_array_equal(o, b @ weights)
    assert ray.get(model.times_loaded.remote()) == 1


def test_an_async_actor_as_a_rate_limited_service(ray):
    @ray.remote
    class Service:
        def __init__(self):
            self.inflight = self.peak = 0

        async def handle(self, x):
            self.inflight += 1
            self.peak = max(self.peak, self.inflight)
            await asyncio.sleep(0.01)
            self.inflight -= 1
            return x + 1

        async def stream(self, n):  # an async generator: its items together (for now)
            for i in range(n):
                await asyncio.sleep(0)
                yield i

        def peak_seen(self):
            return self.peak

    s = Service.options(max_concurrency=8).remote()
    assert ray.get([s.handle.remote(i) for i in range(64)]) == list(range(1, 65))
    assert 1 < ray.get(s.peak_seen.remote()) <= 8
    assert [ray.get(r) for r in s.stream.remote(3)] == [0, 1, 2]  # (streamed)


def test_actors_get_their_own_gpus_for_life(fresh):
    fresh.init(num_cpus=2, num_gpus=2)  # fake devices: only the scheduling is tested

    @fresh.remote(num_gpus=1)
    class OnGpu:
        def devices(self):
            return os.environ["CUDA_VISIBLE_DEVICES"], fresh.get_gpu_ids()

    @fresh.remote(num_gpus=0.5)
    class Half:
        def devices(self):
            return os.environ["CUDA_VISIBLE_DEVICES"]

    a, b = OnGpu.remote(), OnGpu.remote()
    seen = fresh.get([a.devices.remote(), b.devices.remote()], timeout=60)
    assert sorted(d for d, _ in seen) == ["0", "1"]
    assert all(ids == [int(d)] for d, ids in seen)
    assert fresh.available_resources().get("GPU", 0) == 0
    # no device left for a third: it waits (placed once one is freed)
    c = Half.remote()
    ref = c.devices.remote()
    with pytest.raises(shmray.exceptions.GetTimeoutError):
        fresh.get(ref, timeout=0.5)
    fresh.kill(a)
    assert fresh.get(ref, timeout=60) in ("0", "1")
    assert fresh.available_resources().get("GPU") == 0.5


@pytest.mark.skipif(_GPU_MISSING is not None,
                    reason=f"cupy IPC needs cupy and a GPU: {_GPU_MISSING}")
def test_actors_share_a_cupy_array_through_ipc(fresh):
    import cupy

    fresh.init(num_cpus=2, num_gpus=1)

    @fresh.remote(num_gpus=0.5)
    class Producer:
        def make(self, n):
            self.x = cupy.arange(n, dtype=cupy.float32)
            return fresh.put(self.x), os.getpid()

    @fresh.remote(num_gpus=0.5)
    class Consumer:
        def total(self, box):
            y = fresh.get(box[0])
            return float(y.sum()), type(y).__name__, os.getpid()

    n = 1 << 20
    p, c = Producer.remote(), Consumer.remote()
    inner, producer_pid = fresh.get(p.make.remote(n), timeout=60)
    total, kind, consumer_pid = fresh.get(c.total.remote([inner]), timeout=60)
    assert consumer_pid != producer_pid and kind == "ndarray"
    assert total == pytest.approx(float(n) * (n - 1) / 2, rel=1e-3)


def test_an_actor_in_a_runtime_env(fresh, tmp_path):
    fresh.init(num_cpus=2)
    (tmp_path / "helper_mod_for_actor.py").write_text("VALUE = 'from py_modules'\n")

    @fresh.remote(runtime_env={"env_vars": {"ACTOR_FLAVOUR": "mint"},
                               "py_modules": [str(tmp_path / "helper_mod_for_actor.py")]})
    class InEnv:
        def look(self):
            import helper_mod_for_actor
            return os.environ.get("ACTOR_FLAVOUR"), helper_mod_for_actor.VALUE

    @fresh.remote
    class Plain:
        def look(self):
            return os.environ.get("ACTOR_FLAVOUR")

    assert fresh.get(InEnv.remote().look.remote(), timeout=60) == ("mint", "from py_modules")
    assert fresh.get(Plain.remote().look.remote(), timeout=60) is None


def test_a_bad_runtime_env_is_refused_at_the_class(fresh):
    with pytest.raises(ValueError, match="working_dir"):
        @fresh.remote(runtime_env={"working_dir": "/no/such/directory"})
        class Nowhere:
            def ping(self):
                return 1
