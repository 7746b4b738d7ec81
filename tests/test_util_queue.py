"""shmray.util.queue.Queue with real actors and tasks: FIFO order, blocking and
non-blocking put/get with timeouts, batches, Empty/Full (the standard library's too),
async put/get, the queue passed into tasks and actors, many producers and consumers at
once (every item delivered exactly once), argument checks, and shutdown."""
from __future__ import annotations

import asyncio
import queue as stdlib_queue

import pytest

import shmray
from shmray.util.queue import Empty, Full, Queue

pytestmark = pytest.mark.timeout(60)


def test_fifo_sizes_and_states(ray):
    q = Queue()
    assert q.empty() and not q.full() and q.qsize() == 0 and len(q) == 0
    for i in range(10):
        q.put(i)
    assert q.size() == q.qsize() == len(q) == 10 and not q.empty()
    assert [q.get() for _ in range(10)] == list(range(10))
    assert q.empty()


def test_a_bounded_queue_refuses_and_times_out(ray):
    q = Queue(maxsize=2)
    q.put("a")
    q.put_nowait("b")
    assert q.full() and q.qsize() == 2
    with pytest.raises(Full):
        q.put_nowait("c")
    with pytest.raises(Full, match="after waiting 0.05 s"):
        q.put("c", timeout=0.05)
    with pytest.raises(stdlib_queue.Full):  # Ray's Full is the standard library's too
        q.put("c", block=False)
    assert [q.get_nowait(), q.get(block=False)] == ["a", "b"]
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(Empty, match="after waiting 0.05 s"):
        q.get(timeout=0.05)
    with pytest.raises(stdlib_queue.Empty):
        q.get(block=False)
    q.put("d", timeout=0)  # a zero timeout with room is a put, not a timeout
    assert q.get(timeout=0) == "d"


def test_batches_go_in_whole_or_not_at_all(ray):
    q = Queue(maxsize=3)
    q.put_nowait_batch([1, 2])
    with pytest.raises(Full, match="Cannot add 2 items"):
        q.put_nowait_batch(iter([3, 4]))
    assert q.qsize() == 2
    q.put_nowait_batch(x for x in [3])
    with pytest.raises(Empty, match="Cannot get 4 items"):
        q.get_nowait_batch(4)
    assert q.get_nowait_batch(0) == []
    assert q.get_nowait_batch(3) == [1, 2, 3]
    unbounded = Queue()
    unbounded.put_nowait_batch(range(1000))
    assert unbounded.get_nowait_batch(1000) == list(range(1000))


def test_bad_arguments_are_refused_at_the_call(ray):
    with pytest.raises(TypeError, match="maxsize must be an int"):
        Queue(maxsize="3")
    with pytest.raises(TypeError, match="actor_options must be a dict"):
        Queue(actor_options=[("num_cpus", 0)])
    with pytest.raises(ValueError, match="valid"):  # an unknown actor option, named
        Queue(actor_options={"no_such_option": 1})
    q = Queue()
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.put(1, timeout=-1)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.get(timeout=-0.5)
    with pytest.raises(TypeError, match="'timeout' must be a number"):
        q.get(timeout="1")
    with pytest.raises(TypeError, match="Argument 'items' must be an Iterable"):
        q.put_nowait_batch(5)
    with pytest.raises(TypeError, match="Argument 'num_items' must be an int"):
        q.get_nowait_batch(1.5)
    with pytest.raises(ValueError, match="'num_items' must be nonnegative"):
        q.get_nowait_batch(-1)
    assert q.empty()  # nothing was put by the refused calls


def test_a_get_waiting_in_a_task_receives_a_later_put(ray):
    @ray.remote
    def get_one(q):
        return q.get(timeout=30)

    @ray.remote
    def put_one(q, item):
        q.put(item)

    q = Queue()
    waiting = get_one.remote(q)
    ready, _ = shmray.wait([waiting], timeout=0.2)
    assert not ready  # nothing to get yet: it waits
    shmray.get(put_one.remote(q, "woken"))
    assert shmray.get(waiting, timeout=30) == "woken"


def test_a_blocked_put_is_woken_by_a_get(ray):
    @ray.remote
    def put_two(q):
        q.put(1)
        q.put(2)  # blocks: maxsize 1, until the driver takes the first
        return "both in"

    q = Queue(maxsize=1)
    ref = put_two.remote(q)
    assert q.get(timeout=30) == 1
    assert q.get(timeout=30) == 2
    assert shmray.get(ref) == "both in"


def test_async_put_and_get_in_the_driver(ray):
    q = Queue(maxsize=1)

    async def main():
        await q.put_async("x")
        with pytest.raises(Full):
            await q.put_async("y", block=False)
        with pytest.raises(Full):
            await q.put_async("y", timeout=0.05)
        got = await q.get_async()
        with pytest.raises(Empty):
            await q.get_async(timeout=0.05)
        with pytest.raises(Empty):
            await q.get_async(block=False)
        with pytest.raises(ValueError):
            await q.get_async(timeout=-1)
        return got

    assert asyncio.run(main()) == "x"


def test_a_cancelled_async_get_takes_no_item(ray):
    q = Queue()
    assert q.size() == 0  # (the actor is up: a cancel signals a started process)

    async def main():
        getter = asyncio.ensure_future(q.get_async())
        done, _ = await asyncio.wait([getter], timeout=0.2)
        assert not done  # waiting in the actor
        getter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await getter

    asyncio.run(main())
    q.put("kept")  # not taken by the cancelled call
    assert q.get(timeout=5) == "kept"


def test_the_queue_works_inside_sync_and_async_actors(ray):
    @ray.remote
    class Producer:
        def __init__(self, q):
            self.q = q

        def produce(self, items):
            for item in items:
                self.q.put(item)
            return len(items)

    @ray.remote
    class AsyncConsumer:
        async def consume(self, q, n):
            return [await q.get_async(timeout=30) for _ in range(n)]

    q = Queue(maxsize=3)
    consumer = AsyncConsumer.remote()
    got = consumer.consume.remote(q, 8)
    assert shmray.get(Producer.remote(q).produce.remote(list(range(8)))) == 8
    assert shmray.get(got) == list(range(8))  # one producer: FIFO order kept


def test_many_producers_and_consumers_deliver_each_item_once(ray):
    """Tasks and actors put and get at once through a small queue (so puts block on a
    full queue and gets on an empty one): every item arrives exactly once."""
    n_producers, per_producer = 4, 60
    total = n_producers * per_producer

    @ray.remote
    def produce(q, start):
        for i in range(start, start + per_producer):
            q.put(i)

    @ray.remote
    class ActorProducer:
        def produce(self, q, start):
            for i in range(start, start + per_producer):
                q.put(i, timeout=30)

    @ray.remote
    def consume(q, done):
        got = []
        while True:
            item = q.get(timeout=30)
            if item is None:
                done.put(got)
                return len(got)
            got.append(item)

    @ray.remote
    class ActorConsumer:
        async def consume(self, q, done):
            got = []
            while (item := await q.get_async(timeout=30)) is not None:
                got.append(item)
            await done.put_async(got)

    q, done = Queue(maxsize=5), Queue()
    consumers = [consume.remote(q, done), consume.remote(q, done)]
    actor_consumer = ActorConsumer.remote()
    consumers.append(actor_consumer.consume.remote(q, done))
    producers = [produce.remote(q, i * per_producer) for i in range(n_producers - 1)]
    producers.append(ActorProducer.remote().produce.remote(q, (n_producers - 1) * per_producer))
    # The driver consumes too, while the others run.
    mine = [q.get(timeout=30) for _ in range(10)]
    shmray.get(producers, timeout=60)
    for _ in range(len(consumers)):
        q.put(None)  # one end marker per consumer
    shmray.get(consumers, timeout=60)
    delivered = mine + [item for _ in consumers for item in done.get(timeout=30)]
    assert sorted(delivered) == list(range(total))  # each exactly once
    assert q.empty() and done.empty()


def test_a_named_queue_actor_and_its_options(ray):
    q = Queue(actor_options={"name": "the-queue", "num_cpus": 0})
    q.put("via name")
    assert shmray.get(shmray.get_actor("the-queue").get.remote(None)) == "via name"


def test_shutdown_ends_the_actor(ray):
    for force in (False, True):
        q = Queue()
        q.put(1)
        handle = q.actor
        q.shutdown(force=force)
        with pytest.raises(shmray.exceptions.RayActorError):
            shmray.get(handle.qsize.remote(), timeout=30)
        with pytest.raises(RuntimeError, match="shut down"):
            q.put(2)
        q.shutdown()  # twice is fine
