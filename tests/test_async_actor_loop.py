"""An async actor's event loop thread reads its ring itself (issue 20): a call wakes
the thread that runs it. What must hold whatever thread reads: calls start in the
order they came (across the hand-over from the main thread after the creation, and
across the loop's switches to epoll while a call has file descriptors of its own),
max_concurrency, a get inside a call, callbacks from other threads, cancels, the
end. The speed is bench's (`shmray microbenchmark --filter async-actor`)."""
from __future__ import annotations

import asyncio
import mmap
import os
import threading
import time

import pytest

from shmray import exceptions
from shmray._cring import HEADER_SIZE, Ring


@pytest.fixture(scope="module")
def ray():
    import shmray

    shmray.init(num_cpus=2)
    yield shmray
    shmray.shutdown()


def _slow(ray):
    @ray.remote
    def slow(seconds, value):
        time.sleep(seconds)
        return value
    return slow


class Recorder:
    """An async actor that logs when each call starts."""

    def __init__(self, seconds=0.0):
        time.sleep(seconds)  # (calls queue up meanwhile)
        self.started = []
        self.running = self.most = 0

    async def call(self, i):
        self.started.append(i)
        return i

    async def overlapping(self, i, seconds):
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(seconds)
        self.running -= 1
        return i

    def log(self):
        return self.started, self.most

    async def watching_a_pipe(self, seconds):
        """Registers a file descriptor of its own for `seconds`: the loop waits in
        epoll meanwhile (the main thread reads the ring)."""
        r, w = os.pipe()
        loop = asyncio.get_running_loop()
        got = loop.create_future()
        loop.add_reader(r, lambda: got.set_result(os.read(r, 16)))
        threading.Timer(seconds, os.write, (w, b"written")).start()
        try:
            return await got
        finally:
            loop.remove_reader(r)
            os.close(r)
            os.close(w)

    async def get_inside(self, refs):
        import shmray

        return shmray.get(refs[0])

    async def await_inside(self, seconds):
        import shmray

        return await _slow(shmray).remote(seconds, "awaited")

    async def callback_from_a_thread(self, seconds):
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        threading.Timer(seconds, loop.call_soon_threadsafe, (done.set_result, "called")).start()
        return await done

    async def in_executor(self):
        return await asyncio.get_running_loop().run_in_executor(None, lambda: "executor")

    async def sleep(self, seconds):
        await asyncio.sleep(seconds)
        return "slept"

    async def items(self, n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    async def hold_then_drop(self, seconds):
        """Puts an object; another thread drops its ref `seconds` after this call has
        returned (as a garbage collection may: nothing wakes the loop for it)."""
        import shmray

        self.held = shmray.put(b"held")
        threading.Timer(seconds, self.__dict__.pop, ("held",)).start()
        return self.held._id


def test_calls_start_in_order_across_the_hand_over_after_the_creation(ray):
    actor = ray.remote(Recorder).remote(0.3)  # its __init__ runs while calls queue up
    refs = [actor.call.remote(i) for i in range(300)]
    assert ray.get(refs) == list(range(300))
    started, _ = ray.get(actor.log.remote())
    assert started == list(range(300))


def test_max_concurrency_holds(ray):
    actor = ray.remote(max_concurrency=2)(Recorder).remote()
    assert ray.get([actor.overlapping.remote(i, 0.05) for i in range(8)]) == list(range(8))
    assert ray.get(actor.log.remote())[1] == 2


def test_calls_go_on_while_a_call_watches_a_file_descriptor_and_after(ray):
    actor = ray.remote(Recorder).remote()
    watching = actor.watching_a_pipe.remote(0.5)
    time.sleep(0.1)  # (it waits in epoll now; the main thread reads the ring)
    during = [actor.call.remote(i) for i in range(50)]
    assert ray.get(during, timeout=10) == list(range(50))
    inside = ray.get(actor.get_inside.remote([_slow(ray).remote(0.05, "got")]), timeout=10)
    assert inside == "got"
    assert ray.get(watching, timeout=10) == b"written"
    after = [actor.call.remote(i) for i in range(50, 100)]  # (the loop reads again)
    assert ray.get(after, timeout=10) == list(range(50, 100))
    assert ray.get(actor.log.remote())[0] == list(range(100))


def test_a_get_inside_a_call_and_an_awaited_ref(ray):
    actor = ray.remote(Recorder).remote()
    assert ray.get(actor.get_inside.remote([_slow(ray).remote(0.1, "got")]), timeout=10) == "got"
    assert ray.get(actor.await_inside.remote(0.1), timeout=10) == "awaited"


def test_callbacks_from_other_threads_wake_the_loop_waiting_on_its_ring(ray):
    # Nothing else comes to the ring meanwhile: a lost wake-up would hang the call.
    actor = ray.remote(Recorder).remote()
    assert ray.get(actor.callback_from_a_thread.remote(0.2), timeout=10) == "called"
    assert ray.get(actor.in_executor.remote(), timeout=10) == "executor"
    assert ray.get(actor.sleep.remote(0.2), timeout=10) == "slept"  # (a timer)


def test_an_async_generators_items_stream(ray):
    actor = ray.remote(Recorder).remote()
    assert [ray.get(ref) for ref in actor.items.remote(5)] == list(range(5))


def test_a_cancelled_call_ends_and_the_next_runs(ray):
    actor = ray.remote(Recorder).remote()
    ref = actor.sleep.remote(30)
    time.sleep(0.2)
    ray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=10)
    assert ray.get(actor.call.remote(1), timeout=10) == 1


def test_a_ref_the_idle_actor_drops_is_let_go(ray):
    # No message comes or goes after the drop: the reader reports it when it next looks.
    from shmray import _context

    actor = ray.remote(Recorder).remote()
    oid = ray.get(actor.hold_then_drop.remote(0.2))
    store = _context.runtime.store
    assert oid in store.values
    deadline = time.monotonic() + 10
    while oid in store.values:
        assert time.monotonic() < deadline, "the dropped ref was never reported"
        time.sleep(0.02)


def test_the_actor_ends_when_killed_and_when_it_exits(ray, gone):
    @ray.remote
    class Exits:
        async def pid(self):
            return os.getpid()

        async def leave(self):
            ray.actor.exit_actor()

    killed, leaving = Exits.remote(), Exits.remote()
    pids = ray.get([killed.pid.remote(), leaving.pid.remote()])
    ray.kill(killed)
    with pytest.raises(exceptions.RayActorError):
        ray.get(leaving.leave.remote(), timeout=10)
    assert gone(pids)


# ------------------------------------------------------- the ring's interruptible pop
def test_pop_since_ends_on_an_interrupt_from_another_thread_and_on_data():
    ring = Ring(memoryview(mmap.mmap(-1, HEADER_SIZE + 4096)), create=True)
    seen = ring.wake_count
    threading.Timer(0.1, ring.interrupt).start()
    started = time.monotonic()
    assert ring.pop(timeout=10, since=seen) is None
    assert time.monotonic() - started < 5
    seen = ring.wake_count
    ring.interrupt()  # before the wait: the wait ends at once (none is lost)
    assert ring.pop(timeout=10, since=seen) is None
    threading.Timer(0.1, ring.push, (b"message",)).start()
    assert ring.pop(timeout=10, since=ring.wake_count) == b"message"
    assert ring.pop(timeout=0.05, since=ring.wake_count) is None  # (a timeout)
    ring.push(b"there")
    assert ring.pop(timeout=10, since=seen) == b"there"  # data first, moved count or not
