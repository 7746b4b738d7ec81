"""shmray.util.ActorPool against real actors: map and map_unordered, submit and the
get_next family with Ray's errors, timeouts that skip a call, the idle set (has_free,
pop_idle, push), pending submits, and an actor that dies leaving the pool."""
from __future__ import annotations

import os

import pytest

from shmray import exceptions
from shmray.util.actor_pool import ActorPool

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def classes(ray):
    @ray.remote
    class Doubler:
        def double(self, v):
            return 2 * v

        def who(self, v):
            return v, os.getpid()

        def pair(self, v):
            return v, -v

        def die(self, v):
            os._exit(1)

    @ray.remote
    class Gate:
        """An async actor: wait() returns once open() was called (no sleeps)."""

        def __init__(self):
            import asyncio
            self.opened = asyncio.Event()

        async def wait(self):
            await self.opened.wait()

        def open(self):
            self.opened.set()

    @ray.remote
    class Waiter:
        def wait_then(self, gate, v):
            import shmray
            shmray.get(gate.wait.remote())
            return v

        def echo(self, v):
            return v

    return Doubler, Gate, Waiter


def test_map_returns_results_in_order_using_every_actor(ray, classes):
    Doubler = classes[0]
    actors = [Doubler.remote(), Doubler.remote()]
    pool = ActorPool(actors)
    results = list(pool.map(lambda a, v: a.who.remote(v), range(10)))
    assert [v for v, _ in results] == list(range(10))
    assert len({pid for _, pid in results}) == 2  # both actors took work
    assert pool.has_free() and not pool.has_next()


def test_map_unordered_returns_every_result_once(ray, classes):
    pool = ActorPool([classes[0].remote(), classes[0].remote()])
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), range(12))) == \
        [2 * v for v in range(12)]


def test_submit_and_get_next_follow_submission_order(ray, classes):
    pool = ActorPool([classes[0].remote()])
    for v in (1, 2, 3):
        pool.submit(lambda a, v: a.double.remote(v), v)
    assert not pool.has_free()  # one actor busy, two submits waiting for it
    assert pool.has_next()
    assert [pool.get_next(), pool.get_next(), pool.get_next()] == [2, 4, 6]
    assert not pool.has_next()
    with pytest.raises(StopIteration, match="No more results to get"):
        pool.get_next()
    with pytest.raises(StopIteration, match="No more results to get"):
        pool.get_next_unordered()


def test_get_next_after_get_next_unordered_is_refused(ray, classes):
    _, Gate, Waiter = classes
    gate = Gate.remote()
    pool = ActorPool([Waiter.remote(), Waiter.remote()])
    pool.submit(lambda a, v: a.wait_then.remote(gate, v), "first")  # held at the gate
    pool.submit(lambda a, v: a.echo.remote(v), "second")
    assert pool.get_next_unordered() == "second"
    with pytest.raises(ValueError, match="It is not allowed to call get_next\\(\\) after "
                                         "get_next_unordered\\(\\)"):
        pool.get_next()
    gate.open.remote()
    assert pool.get_next_unordered() == "first"
    pool.submit(lambda a, v: a.echo.remote(v), "third")
    assert pool.get_next() == "third"  # a submit after them is in order again


def test_get_next_timeout_raises_and_keeps_the_call(ray, classes):
    _, Gate, Waiter = classes
    gate = Gate.remote()
    pool = ActorPool([Waiter.remote()])
    pool.submit(lambda a, v: a.wait_then.remote(gate, v), "late")
    with pytest.raises(TimeoutError, match="Timed out waiting for result"):
        pool.get_next(timeout=0.05)
    with pytest.raises(TimeoutError, match="Timed out waiting for result"):
        pool.get_next_unordered(timeout=0.05)
    assert pool.has_next()  # still owed
    gate.open.remote()
    assert pool.get_next(timeout=30) == "late"
    assert pool.has_free()


def test_get_next_ignore_if_timedout_skips_the_call(ray, classes):
    _, Gate, Waiter = classes
    gate = Gate.remote()
    pool = ActorPool([Waiter.remote()])
    pool.submit(lambda a, v: a.wait_then.remote(gate, v), "skipped")
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next(timeout=0.05, ignore_if_timedout=True)
    assert not pool.has_next() and pool.has_free()  # the actor is back in the pool
    # Its next call queues behind the skipped one (an actor's calls run in order).
    pool.submit(lambda a, v: a.echo.remote(v), "next")
    gate.open.remote()
    assert pool.get_next() == "next"


def test_get_next_unordered_ignore_if_timedout_skips_the_oldest(ray, classes):
    _, Gate, Waiter = classes
    gate = Gate.remote()
    pool = ActorPool([Waiter.remote(), Waiter.remote()])
    pool.submit(lambda a, v: a.wait_then.remote(gate, v), "first")
    pool.submit(lambda a, v: a.wait_then.remote(gate, v), "second")
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next_unordered(timeout=0.05, ignore_if_timedout=True)
    gate.open.remote()
    assert pool.get_next_unordered() == "second"
    assert not pool.has_next()


def test_a_new_map_drops_results_not_taken(ray, classes):
    pool = ActorPool([classes[0].remote(), classes[0].remote()])
    pool.submit(lambda a, v: a.double.remote(v), 100)
    pool.submit(lambda a, v: a.double.remote(v), 200)
    assert list(pool.map(lambda a, v: a.double.remote(v), [1, 2])) == [2, 4]


def test_idle_actors_pop_push_and_pending_submits(ray, classes):
    Doubler = classes[0]
    a1, a2 = Doubler.remote(), Doubler.remote()
    pool = ActorPool([a1])
    pool.submit(lambda a, v: a.double.remote(v), 1)
    assert pool.pop_idle() is None and not pool.has_free()
    pool.submit(lambda a, v: a.double.remote(v), 2)  # waits: no idle actor
    pool.push(a2)                                    # ... and goes to the pushed one
    assert pool.get_next() == 2 and pool.get_next() == 4
    with pytest.raises(ValueError, match="Actor already belongs to current ActorPool"):
        pool.push(a1)
    taken = {pool.pop_idle(), pool.pop_idle()}
    assert taken == {a1, a2} and pool.pop_idle() is None
    pool.submit(lambda a, v: a.double.remote(v), 3)  # an empty pool: it waits
    assert not pool.has_next()
    pool.push(a1)
    assert pool.get_next() == 6


def test_a_list_of_refs_is_one_result(ray, classes):
    pool = ActorPool([classes[0].remote(), classes[0].remote()])
    fn = lambda a, v: [a.double.remote(v), a.double.remote(v + 1)]  # noqa: E731
    assert list(pool.map(fn, [1, 10])) == [[2, 4], [20, 22]]
    assert sorted(pool.map_unordered(fn, [1, 10])) == [[2, 4], [20, 22]]


def test_fn_not_returning_a_ref_is_refused(ray, classes):
    pool = ActorPool([classes[0].remote()])
    with pytest.raises(TypeError, match="must return an ObjectRef"):
        pool.submit(lambda a, v: v, 1)
    assert pool.has_free() and not pool.has_next()  # the actor was not lost
    with pytest.raises(TypeError, match="expects fn"):
        pool.submit("not callable", 1)
    with pytest.raises(TypeError, match="list of actor handles"):
        ActorPool(5)


def test_a_dead_actor_leaves_the_pool(ray, classes):
    Doubler = classes[0]
    doomed, healthy = Doubler.remote(), Doubler.remote()
    pool = ActorPool([healthy, doomed])  # (the last idle actor is taken first)
    pool.submit(lambda a, v: a.die.remote(v), 1)
    with pytest.raises(exceptions.ActorDiedError):
        pool.get_next()
    assert pool.pop_idle() is healthy and pool.pop_idle() is None
    pool.push(healthy)
    assert list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3])) == [2, 4, 6]


def test_a_task_error_returns_the_actor(ray, classes):
    pool = ActorPool([classes[0].remote()])
    pool.submit(lambda a, v: a.double.remote(v), None)  # 2 * None raises in the actor
    with pytest.raises(TypeError):
        pool.get_next()
    assert pool.has_free()
    assert list(pool.map(lambda a, v: a.double.remote(v), [5])) == [10]
