"""Generator tasks (Ray 2.x semantics): a remote generator function returns an
ObjectRefGenerator at once and its items reach the caller as they are yielded;
errors, worker deaths, cancel, backpressure, dynamic returns, async iteration, wait on
generators, actor generator methods, and a generator consumed inside a task."""
from __future__ import annotations

import asyncio
import os
import pickle
import time

import numpy as np
import pytest

import shmray
from shmray.exceptions import (GetTimeoutError, ObjectLostError, RayTaskError,
                               TaskCancelledError, WorkerCrashedError)

pytestmark = pytest.mark.timeout(60)


@shmray.remote
def count_to(n):
    for i in range(n):
        yield i


@shmray.remote
def waits_for_file(path):
    yield "before"
    while not os.path.exists(path):  # a real wait: goes on only when the caller says so
        time.sleep(0.01)
    yield "after"


@shmray.remote
def fails_after(n):
    for i in range(n):
        yield i
    raise KeyError(f"failed after {n}")


def _wait_for(predicate, seconds=20.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_items_come_in_order_and_the_iteration_ends(ray):
    gen = count_to.remote(200)
    assert isinstance(gen, shmray.ObjectRefGenerator)
    assert [ray.get(ref) for ref in gen] == list(range(200))
    with pytest.raises(StopIteration):
        next(gen)
    assert ray.get(list(count_to.remote(5))) == [0, 1, 2, 3, 4]
    assert list(count_to.remote(0)) == []


def test_an_item_is_readable_while_the_generator_still_runs(ray, tmp_path):
    go_on = str(tmp_path / "go-on")
    gen = waits_for_file.remote(go_on)
    first = next(gen)  # the generator is blocked after it: this must not wait for the end
    assert ray.get(first, timeout=10) == "before"
    assert not gen.is_finished() and not gen.next_ready()
    with pytest.raises(GetTimeoutError):
        gen._next(0.2)
    open(go_on, "w").close()
    assert ray.get(next(gen), timeout=10) == "after"
    with pytest.raises(StopIteration):
        next(gen)
    assert gen.is_finished() and gen.next_ready()
    assert ray.get(gen.completed()) is None


def test_an_error_after_n_items_is_the_n_plus_first_then_the_end(ray):
    gen = fails_after.remote(3)
    assert [ray.get(next(gen)) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(RayTaskError) as info:
        ray.get(next(gen))
    assert isinstance(info.value, KeyError) and "failed after 3" in str(info.value)
    with pytest.raises(StopIteration):
        next(gen)
    with pytest.raises(KeyError):  # completed() raises the task's error
        ray.get(gen.completed())


def test_a_worker_death_is_retried_and_delivered_items_are_not_repeated(ray, tmp_path):
    marker = str(tmp_path / "died-once")

    @ray.remote(max_retries=1)
    def dies_once():
        for i in range(6):
            if i == 3 and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            yield i

    assert [ray.get(r) for r in dies_once.remote()] == list(range(6))

    @ray.remote(max_retries=0)
    def dies_always():
        yield "one"
        os._exit(1)

    gen = dies_always.remote()
    assert ray.get(next(gen)) == "one"
    with pytest.raises(WorkerCrashedError):
        ray.get(next(gen))
    with pytest.raises(StopIteration):
        next(gen)


def test_cancel_stops_the_generator_in_its_worker(ray, tmp_path):
    progress = tmp_path / "progress"

    @ray.remote
    def endless(path):
        i = 0
        while True:
            with open(path, "w") as f:
                f.write(str(i))
            yield i
            i += 1
            time.sleep(0.01)

    gen = endless.remote(str(progress))
    assert ray.get(next(gen)) == 0
    ray.cancel(gen)
    seen = []
    with pytest.raises(TaskCancelledError):
        for ref in gen:
            seen.append(ray.get(ref))
    assert seen == list(range(1, len(seen) + 1))
    with pytest.raises(StopIteration):
        next(gen)
    stopped_at = progress.read_text()
    time.sleep(0.2)
    assert progress.read_text() == stopped_at  # it runs no more
    assert ray.get(count_to.options(num_cpus=2).remote(2).completed(), timeout=20) is None


def test_backpressure_pauses_the_producer_and_holds_memory_flat(ray, tmp_path):
    produced = tmp_path / "produced"
    size = 1 << 20

    @ray.remote(_generator_backpressure_num_objects=2)
    def producer(path, n):
        for i in range(n):
            yield np.full(size, i, dtype=np.uint8)
            with open(path, "w") as f:
                f.write(str(i + 1))

    store = shmray._context.runtime.store
    before = store.shm_bytes
    gen = producer.remote(str(produced), 12)
    consumed = 0
    for ref in gen:
        consumed += 1
        time.sleep(0.05)  # a slow consumer: the producer waits for it
        made = int(produced.read_text()) if produced.exists() else 0
        assert made <= consumed + 2, (made, consumed)
        assert store.shm_bytes - before < 4 * size  # the 2 items not consumed, and this one
        assert ray.get(ref)[0] == consumed - 1
        del ref
    assert consumed == 12


def test_dynamic_returns_one_ref_to_the_refs_of_the_items(ray):
    @ray.remote(num_returns="dynamic")
    def split(n):
        for i in range(n):
            yield i * i

    ref = split.remote(5)
    assert isinstance(ref, shmray.ObjectRef)
    items = ray.get(ref)
    assert isinstance(items, shmray.DynamicObjectRefGenerator) and len(items) == 5
    assert ray.get(list(items)) == [0, 1, 4, 9, 16]

    @ray.remote(num_returns="dynamic")
    def breaks():
        yield "kept"
        raise ValueError("in the middle")

    refs = list(ray.get(breaks.remote()))
    assert ray.get(refs[0]) == "kept"
    with pytest.raises(ValueError, match="in the middle"):
        ray.get(refs[1])


def test_num_returns_n_on_a_generator_function_gives_n_refs(ray):
    a, b, c = count_to.options(num_returns=3).remote(3)
    assert ray.get([a, b, c]) == [0, 1, 2]
    with pytest.raises(ValueError, match="2 objects"):
        ray.get(count_to.options(num_returns=3).remote(2)[0])


def test_async_iteration(ray):
    async def consume():
        out = [await ref async for ref in count_to.remote(4)]
        gen = count_to.remote(1)
        first = await gen.__anext__()
        with pytest.raises(StopAsyncIteration):
            await gen.__anext__()
        return out + [await first]

    assert asyncio.run(consume()) == [0, 1, 2, 3, 0]


def test_wait_takes_generators_and_refs(ray, tmp_path):
    go_on = str(tmp_path / "go-on")
    gen = waits_for_file.remote(go_on)
    ray.get(next(gen))  # its next item waits for the file
    quick = count_to.remote(1)
    ref = ray.put("there")
    ready, not_ready = ray.wait([gen, quick, ref], num_returns=2, timeout=10)
    assert ready == [quick, ref] and not_ready == [gen]
    ready, _ = ray.wait([gen], timeout=0.1)
    assert ready == []
    open(go_on, "w").close()
    ready, _ = ray.wait([gen], timeout=10)
    assert ready == [gen]
    assert ray.get(next(gen)) == "after"
    with pytest.raises(ValueError, match="unique"):
        ray.wait([gen, gen])


def test_large_items_are_shared_memory_mapped_by_the_reader(ray):
    @ray.remote
    def arrays(n, mb):
        for i in range(n):
            yield np.full(mb << 20, i, dtype=np.uint8)

    for i, ref in enumerate(arrays.remote(3, 8)):
        value = ray.get(ref)
        assert value.nbytes == 8 << 20 and value[0] == i and value[-1] == i
        assert not value.flags.owndata  # a mapping of the item's segment, not a copy


def test_a_generator_cannot_be_pickled_or_passed(ray):
    gen = count_to.remote(2)
    with pytest.raises(TypeError, match="cannot be pickled or passed"):
        pickle.dumps(gen)

    @ray.remote
    def takes(x):
        return x

    with pytest.raises(TypeError, match="cannot be pickled or passed"):
        takes.remote(gen)
    assert ray.get(list(gen)) == [0, 1]


def test_a_dropped_generator_frees_its_items_and_stops_its_task(ray, tmp_path):
    progress = tmp_path / "progress"

    @ray.remote(num_cpus=2)
    def forever(path):
        i = 0
        while True:
            yield np.zeros(1 << 20, dtype=np.uint8)
            i += 1
            with open(path, "w") as f:
                f.write(str(i))

    store = shmray._context.runtime.store
    gen = forever.options(_generator_backpressure_num_objects=4).remote(str(progress))
    _wait_for(lambda: store.shm_bytes >= 4 << 20)  # 4 items, then it pauses
    time.sleep(0.1)
    assert int(progress.read_text()) == 3  # (in the 4th yield, paused)
    del gen
    # the task ends (it held both CPUs: a task that needs them runs), its items go
    assert ray.get(count_to.options(num_cpus=2).remote(1).completed(), timeout=20) is None
    _wait_for(lambda: store.shm_bytes < 1 << 20)


def test_a_task_consumes_waits_on_and_cancels_a_generator(ray, tmp_path):
    @ray.remote
    def total(n):
        return sum(shmray.get(ref) for ref in count_to.remote(n))

    @ray.remote
    def first_two_then_drop(n):
        gen = count_to.remote(n)
        return [shmray.get(next(gen)), shmray.get(next(gen))]

    @ray.remote
    def waits_then_cancels(path):
        gen = waits_for_file.remote(path)  # (the file never comes: only a cancel ends it)
        ready, _ = shmray.wait([gen], timeout=10)
        first = shmray.get(next(gen))
        shmray.cancel(gen)
        try:
            shmray.get(next(gen))
        except TaskCancelledError:
            return first, ready == [gen], "cancelled"

    assert ray.get(total.remote(50)) == sum(range(50))
    assert ray.get(first_two_then_drop.remote(1000)) == [0, 1]
    assert ray.get(waits_then_cancels.options(num_cpus=0).remote(
        str(tmp_path / "never")), timeout=30) == ("before", True, "cancelled")


def test_actor_generator_methods_sync_threaded_and_async(ray, tmp_path):
    go_on = str(tmp_path / "go-on")

    @ray.remote
    class Source:
        def items(self, n):
            for i in range(n):
                yield i

        def gated(self, path):
            yield "before"
            while not os.path.exists(path):
                time.sleep(0.01)
            yield "after"

        async def async_items(self, n):
            for i in range(n):
                await asyncio.sleep(0)
                yield i * 2

        async def async_fails(self):
            yield 1
            raise RuntimeError("async boom")

    s = Source.remote()
    assert ray.get(list(s.items.remote(5))) == list(range(5))
    gen = s.gated.remote(go_on)
    assert ray.get(next(gen), timeout=10) == "before"
    open(go_on, "w").close()
    assert ray.get(next(gen), timeout=10) == "after"
    assert ray.get(list(s.async_items.remote(4))) == [0, 2, 4, 6]
    gen = s.async_fails.remote()
    assert ray.get(next(gen)) == 1
    with pytest.raises(RuntimeError, match="async boom"):
        ray.get(next(gen))
    assert ray.get(list(s.items.remote(3))) == [0, 1, 2]  # (a sync one in an async actor)

    @ray.remote(max_concurrency=2)
    class Threaded:
        def items(self, n):
            yield from range(n)

    assert ray.get(list(Threaded.remote().items.remote(3))) == [0, 1, 2]

    @ray.remote
    class Dyn:
        @shmray.method(num_returns="dynamic")
        def parts(self, n):
            yield from range(n)

    assert ray.get(list(ray.get(Dyn.remote().parts.remote(3)))) == [0, 1, 2]


def test_options_are_checked(ray):
    with pytest.raises(ValueError, match="num_returns"):
        count_to.options(num_returns="lazy")
    with pytest.raises(ValueError, match="_generator_backpressure_num_objects"):
        count_to.options(_generator_backpressure_num_objects="x")

    @ray.remote(num_returns="streaming")
    def not_a_generator():
        return 5

    with pytest.raises(TypeError, match="must be a generator function"):
        ray.get(next(not_a_generator.remote()))


def test_a_long_fast_stream_loses_nothing(ray):
    # the consumer races the loop storing the items (no lock on its path): every item
    # must be there, counted, and freed after
    store = shmray._context.runtime.store
    for _ in range(3):
        gen = count_to.remote(20_000)
        assert sum(ray.get(ref) for ref in gen) == sum(range(20_000))
    drained = count_to.remote(5_000)
    ray.get(drained.completed())  # all stored before a single one is read
    assert sum(ray.get(ref) for ref in drained) == sum(range(5_000))
    del gen, drained
    _wait_for(lambda: not shmray._context.runtime.generators.streams)
    assert not [o for o in store.values if o & 0xFFFF == 0xFFFF]  # no item left


def test_shutdown_with_generators_running_leaves_nothing(fresh, gone):
    fresh.init(num_cpus=2)

    @fresh.remote(_generator_backpressure_num_objects=2)
    def big_items():
        while True:
            yield np.ones(1 << 20, dtype=np.uint8)  # (paused after 2: items in shm)

    @fresh.remote
    class Source:
        def items(self):
            while True:
                yield os.getpid()
                time.sleep(0.01)

    gen, stream = big_items.remote(), Source.remote().items.remote()
    assert fresh.get(next(gen)).nbytes == 1 << 20
    actor_pid = fresh.get(next(stream))
    pids = [w.pid for w in shmray._context.runtime.pool.workers] + [actor_pid]
    fresh.shutdown()
    assert gone(pids)
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"shmray_{os.getpid()}_")]
    with pytest.raises(ObjectLostError):  # (as a ref of the old session: a new one has
        next(gen)                         # none of its objects)
