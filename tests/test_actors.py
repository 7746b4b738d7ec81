"""Actors (Ray's actor API) against real actor processes: creation, calls in order,
state, options, handles as values, names, lifetime, concurrency, resources."""
from __future__ import annotations

import asyncio
import os
import threading
import time

import numpy as np
import pytest

import shmray
from shmray.exceptions import (ActorAlreadyExistsError, ActorDiedError, GetTimeoutError,
                               PendingCallsLimitExceeded, RayActorError, RayTaskError,
                               TaskUnschedulableError)

pytestmark = pytest.mark.timeout(60)


@shmray.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def inc(self, k=1):
        self.n += k
        return self.n

    def get(self):
        return self.n

    def pid(self):
        return os.getpid()

    def slow_echo(self, x, seconds):
        time.sleep(seconds)
        return x

    @shmray.method(num_returns=2)
    def pair(self):
        return self.n, -self.n

    def fail(self):
        raise KeyError("boom")


@shmray.remote
def call_counter(handle, times):
    return [shmray.get(handle.inc.remote()) for _ in range(times)]


@shmray.remote
def make_counter_inside():
    c = Counter.remote(100)
    return shmray.get(c.inc.remote(5))


@shmray.remote
def slow_value(x, seconds):
    time.sleep(seconds)
    return x


def test_calls_run_in_order_and_keep_state(ray):
    c = Counter.remote(10)
    assert ray.get([c.inc.remote() for _ in range(50)]) == list(range(11, 61))
    assert ray.get(c.get.remote()) == 60


def test_an_actor_is_a_process_of_its_own(ray):
    a, b = Counter.remote(), Counter.remote()
    pa, pb = ray.get([a.pid.remote(), b.pid.remote()])
    assert pa != pb and os.getpid() not in (pa, pb)


def test_num_returns_by_decorator_and_by_options(ray):
    c = Counter.remote(3)
    x, y = c.pair.remote()
    assert ray.get([x, y]) == [3, -3]
    refs = c.inc.options(num_returns=1).remote()
    assert ray.get(refs) == 4
    assert c.get.options(num_returns=0).remote() is None


def test_direct_calls_raise_rays_type_errors(ray):
    with pytest.raises(TypeError, match=r"Actors cannot be instantiated directly"):
        Counter()
    c = Counter.remote()
    with pytest.raises(TypeError, match=r"Actor methods cannot be called directly"):
        c.inc()
    with pytest.raises(AttributeError):
        c.no_such_method


def test_arguments_are_checked_at_the_call(ray):
    with pytest.raises(TypeError, match="Counter.remote"):
        Counter.remote(1, 2, 3)
    c = Counter.remote()
    with pytest.raises(TypeError, match="Counter.inc.remote"):
        c.inc.remote(1, 2)
    with pytest.raises(TypeError, match="Counter.inc.remote"):
        c.inc.remote(nope=1)


def test_unknown_options_raise_with_the_valid_ones(ray):
    with pytest.raises(ValueError, match="Invalid option keyword max_calls for actors"):
        Counter.options(max_calls=2)
    with pytest.raises(ValueError, match="lifetime"):
        Counter.options(lifetime="forever")
    with pytest.raises(ValueError, match="Invalid option keyword"):
        Counter.remote().inc.options(num_cpus=1)
    with pytest.raises(ValueError, match="get_if_exists"):
        Counter.options(get_if_exists=True)


def test_a_method_error_fails_that_call_only(ray):
    c = Counter.remote()
    with pytest.raises(KeyError) as info:
        ray.get(c.fail.remote())
    assert isinstance(info.value, RayTaskError)
    assert "boom" in str(info.value)
    assert ray.get(c.inc.remote()) == 1


def test_a_call_waiting_for_its_argument_holds_back_the_later_ones(ray):
    c = Counter.remote()
    slow = slow_value.remote(5, 0.5)
    first = c.inc.remote(slow)       # waits for `slow`
    second = c.inc.remote(1)         # must run after `first`
    assert ray.get([first, second]) == [5, 6]


def test_refs_nested_in_arguments_and_large_arrays(ray):
    @ray.remote
    class Holder:
        def total(self, arrays):
            return float(sum(a.sum() for a in arrays))

        def keep(self, array):
            self.array = array
            return array.shape

    h = Holder.remote()
    big = np.ones(2_000_000)
    ref = ray.put(big)
    assert ray.get(h.keep.remote(ref)) == (2_000_000,)
    assert ray.get(h.total.remote([ref, ray.put(np.ones(10))])) == 2_000_010.0


def test_handles_are_values_passed_to_tasks(ray):
    c = Counter.remote()
    assert ray.get(call_counter.remote(c, 3)) == [1, 2, 3]
    assert ray.get(c.get.remote()) == 3
    # returned from a task, and put
    assert ray.get(ray.get(ray.put(c)).inc.remote()) == 4


def test_actors_created_inside_tasks(ray):
    assert ray.get(make_counter_inside.remote()) == 105


def test_handles_passed_to_other_actors(ray):
    @ray.remote
    class Caller:
        def __init__(self, target):
            self.target = target

        def poke(self, k):
            return shmray.get(self.target.inc.remote(k))

    c = Counter.remote()
    callers = [Caller.remote(c) for _ in range(2)]
    assert sorted(ray.get([x.poke.remote(1) for x in callers])) == [1, 2]


def test_named_actors_get_actor_and_list(ray):
    c = Counter.options(name="named-counter").remote(7)
    same = ray.get_actor("named-counter")
    assert ray.get(same.inc.remote()) == 8
    assert "named-counter" in shmray.util.list_named_actors()
    assert {"name": "named-counter", "namespace": shmray.get_runtime_context().namespace} \
        in shmray.util.list_named_actors(all_namespaces=True)
    with pytest.raises(ValueError, match="already taken") as info:
        Counter.options(name="named-counter").remote()
    assert isinstance(info.value, ActorAlreadyExistsError)
    again = Counter.options(name="named-counter", get_if_exists=True).remote(0)
    assert ray.get(again.get.remote()) == 8
    with pytest.raises(ValueError, match="Failed to look up actor"):
        ray.get_actor("no-such-actor")
    ray.kill(c)
    with pytest.raises(ValueError):
        ray.get_actor("named-counter")


def test_namespaces_keep_names_apart(ray):
    a = Counter.options(name="ns-counter", namespace="one").remote(1)
    b = Counter.options(name="ns-counter", namespace="two").remote(2)
    assert ray.get(ray.get_actor("ns-counter", namespace="one").get.remote()) == 1
    assert ray.get(ray.get_actor("ns-counter", namespace="two").get.remote()) == 2
    ray.kill(a)
    ray.kill(b)


def test_get_actor_inside_a_task(ray):
    keep = Counter.options(name="seen-from-task").remote(41)  # (a handle holds it, as in Ray)

    @ray.remote
    def use():
        return shmray.get(shmray.get_actor("seen-from-task").inc.remote())

    assert ray.get(use.remote()) == 42
    ray.kill(keep)


def test_an_actor_ends_when_its_last_handle_goes(ray, gone):
    c = Counter.remote()
    pid = ray.get(c.pid.remote())
    del c
    assert gone([pid])


def test_an_actor_lives_while_a_task_holds_its_handle(ray, gone):
    c = Counter.remote()
    pid = ray.get(c.pid.remote())
    ref = call_counter.remote(c, 2)
    del c
    assert ray.get(ref) == [1, 2]
    assert gone([pid])


def test_pending_calls_finish_before_an_unreferenced_actor_ends(ray):
    c = Counter.remote()
    ref = c.slow_echo.remote("done", 0.3)
    del c
    assert ray.get(ref) == "done"


def test_a_detached_actor_survives_its_handles(ray):
    Counter.options(lifetime="detached", name="detached-one").remote(5)
    time.sleep(0.2)
    h = ray.get_actor("detached-one")
    assert ray.get(h.inc.remote()) == 6
    ray.kill(h)
    with pytest.raises(ValueError):  # its name is free at once
        ray.get_actor("detached-one")


def test_a_named_actor_ends_with_its_last_handle_as_in_ray(ray, gone):
    c = Counter.options(name="short-lived").remote()
    pid = ray.get(c.pid.remote())
    del c
    assert gone([pid])
    with pytest.raises(ValueError, match="Failed to look up actor"):
        ray.get_actor("short-lived")


def test_kill_fails_running_and_queued_calls(ray):
    c = Counter.remote()
    ray.get(c.pid.remote())
    running = c.slow_echo.remote(1, 30)
    queued = c.inc.remote()
    time.sleep(0.2)
    start = time.monotonic()
    ray.kill(c)
    for ref in (running, queued):
        with pytest.raises(ActorDiedError, match="killed"):
            ray.get(ref, timeout=10)
    assert time.monotonic() - start < 5
    with pytest.raises(ActorDiedError):
        ray.get(c.inc.remote(), timeout=10)


def test_ray_terminate_runs_after_queued_calls(ray):
    c = Counter.remote()
    calls = [c.inc.remote() for _ in range(3)]
    c.__ray_terminate__.remote()
    assert ray.get(calls) == [1, 2, 3]
    with pytest.raises(ActorDiedError, match="on purpose"):
        ray.get(c.inc.remote(), timeout=10)


def test_exit_actor_from_inside(ray):
    @ray.remote
    class Quitter:
        def quit(self):
            shmray.actor.exit_actor()

        def ping(self):
            return "pong"

    q = Quitter.remote()
    assert ray.get(q.ping.remote()) == "pong"
    with pytest.raises(RayActorError):
        ray.get(q.quit.remote(), timeout=10)
    with pytest.raises(ActorDiedError, match="exit_actor"):
        ray.get(q.ping.remote(), timeout=10)
    with pytest.raises(TypeError, match="non-actor"):
        shmray.actor.exit_actor()


def test_runtime_context_inside_an_actor(ray):
    @ray.remote
    class Introspect:
        def ids(self):
            ctx = shmray.get_runtime_context()
            return ctx.get_actor_id(), ctx.current_actor

    a = Introspect.remote()
    actor_id, handle = ray.get(a.ids.remote())
    assert actor_id == a._actor_id.hex()
    assert handle == a
    assert shmray.get_runtime_context().get_actor_id() is None


def test_threaded_actor_runs_calls_at_once(ray):
    @ray.remote(max_concurrency=4)
    class Sleeper:
        def nap(self, seconds):
            time.sleep(seconds)
            return threading.get_ident()

        def task_id(self):
            return shmray.get_runtime_context().get_task_id()

    s = Sleeper.remote()
    ray.get(s.nap.remote(0))
    start = time.monotonic()
    idents = ray.get([s.nap.remote(0.5) for _ in range(4)])
    assert time.monotonic() - start < 1.5
    assert len(set(idents)) > 1
    ref = s.task_id.remote()
    assert ray.get(ref) == ref.task_id()


def test_a_sync_actor_runs_one_call_at_a_time(ray):
    c = Counter.remote()
    ray.get(c.pid.remote())
    start = time.monotonic()
    ray.get([c.slow_echo.remote(i, 0.2) for i in range(3)])
    assert time.monotonic() - start >= 0.6


def test_async_actor_overlaps_awaiting_calls(ray):
    @ray.remote
    class AsyncWorker:
        def __init__(self):
            self.seen = 0

        async def wait_and_count(self, seconds):
            await asyncio.sleep(seconds)
            self.seen += 1
            return self.seen

        async def get_ref(self, ref_list):  # (a ref nested in a list arrives resolved)
            assert ref_list == [9]
            return await slow_value.remote(10, 0.1)

        def sync_method(self):
            return "sync"

    a = AsyncWorker.remote()
    assert ray.get(a.sync_method.remote()) == "sync"
    start = time.monotonic()
    results = ray.get([a.wait_and_count.remote(0.5) for _ in range(20)])
    assert time.monotonic() - start < 2.5
    assert sorted(results) == list(range(1, 21))
    assert ray.get(a.get_ref.remote([slow_value.remote(9, 0.1)])) == 10


def test_async_actor_call_can_be_cancelled(ray):
    @ray.remote
    class AsyncSleeper:
        async def sleep(self, seconds):
            await asyncio.sleep(seconds)
            return "slept"

    a = AsyncSleeper.remote()
    ref = a.sleep.remote(30)
    time.sleep(0.3)
    ray.cancel(ref)
    with pytest.raises(shmray.exceptions.TaskCancelledError):
        ray.get(ref, timeout=10)
    assert ray.get(a.sleep.remote(0)) == "slept"
    with pytest.raises(ValueError, match="force=True is not supported for actor tasks"):
        ray.cancel(a.sleep.remote(1), force=True)


def test_max_concurrency_bounds_async_calls(ray):
    @ray.remote(max_concurrency=2)
    class Bounded:
        def __init__(self):
            self.now = self.peak = 0

        async def work(self):
            self.now += 1
            self.peak = max(self.peak, self.now)
            await asyncio.sleep(0.05)
            self.now -= 1

        async def peak_seen(self):
            return self.peak

    b = Bounded.remote()
    ray.get([b.work.remote() for _ in range(10)])
    assert ray.get(b.peak_seen.remote()) == 2


def test_max_pending_calls(ray):
    c = Counter.options(max_pending_calls=2).remote()
    ray.get(c.get.remote())
    first = c.slow_echo.remote(1, 0.5)
    second = c.inc.remote()
    with pytest.raises(PendingCallsLimitExceeded):
        c.inc.remote()
    assert ray.get([first, second]) == [1, 1]


def test_resources_are_held_for_life(fresh):
    fresh.init(num_cpus=2)
    holder = Counter.options(num_cpus=2).remote()
    fresh.get(holder.get.remote())
    assert fresh.available_resources().get("CPU", 0) == 0
    blocked = slow_value.remote(1, 0)
    with pytest.raises(GetTimeoutError):
        fresh.get(blocked, timeout=0.5)
    fresh.kill(holder)
    assert fresh.get(blocked, timeout=10) == 1
    # Ray's default: 1 CPU to place, none held while it lives
    plain = [Counter.remote() for _ in range(4)]
    fresh.get([p.get.remote() for p in plain])
    assert fresh.available_resources().get("CPU") == 2


def test_a_request_never_met_fails_fast(fresh):
    fresh.init(num_cpus=2)
    with pytest.warns(UserWarning, match="can never run"):
        g = Counter.options(num_gpus=1).remote()
    with pytest.raises(TaskUnschedulableError):
        fresh.get(g.get.remote(), timeout=5)


def test_generator_methods_stream_or_return_their_num_returns(ray):
    @ray.remote
    class Gen:
        def items(self, n):
            for i in range(n):
                yield i

        @shmray.method(num_returns=3)
        def three(self):
            yield from range(3)

    g = Gen.remote()
    assert ray.get(list(g.items.remote(4))) == [0, 1, 2, 3]
    assert ray.get(g.three.remote()) == [0, 1, 2]


def test_calls_of_a_threaded_actor_get_refs_at_once(ray):
    @ray.remote(max_concurrency=3)
    class Gatherer:
        def fetch(self, seconds):
            return shmray.get(slow_value.remote(seconds, seconds))

    g = Gatherer.remote()
    ray.get(g.fetch.remote(0))
    start = time.monotonic()
    assert ray.get([g.fetch.remote(0.4) for _ in range(3)]) == [0.4] * 3
    assert time.monotonic() - start < 1.1  # three gets waited at once, each on its thread


def test_a_sync_actor_blocked_in_get_keeps_its_calls_in_order(ray):
    @ray.remote
    class Waiter:
        def __init__(self):
            self.log = []

        def wait_for(self, seconds):
            self.log.append(shmray.get(slow_value.remote("slow", seconds)))

        def note(self, x):
            self.log.append(x)

        def history(self):
            return self.log

    w = Waiter.remote()
    w.wait_for.remote(0.3)
    for i in range(3):
        w.note.remote(i)
    assert ray.get(w.history.remote()) == ["slow", 0, 1, 2]
