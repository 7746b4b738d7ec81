"""Ray compatibility of actors: small programs written the way Ray's core docs and typical
user code use actors, each run under Ray 2.60 and under shmray, kept here as tests. The
comment above a test says what Ray printed for the same program."""
from __future__ import annotations

import asyncio
import atexit
import os
import threading
import time

import pytest

import shmray
from shmray.exceptions import RayActorError, RayTaskError

pytestmark = pytest.mark.timeout(60)


@shmray.remote
def slow_value(x, seconds):
    time.sleep(seconds)
    return x


@shmray.remote
def square(x):
    return x * x


@shmray.remote
class Resources:
    def assigned(self):
        return shmray.get_runtime_context().get_assigned_resources()

    def name(self):
        return shmray.get_runtime_context().get_actor_name()

    def namespace(self):
        return shmray.get_runtime_context().namespace

    def f(self, a, b=2):
        return a


# ------------------------------------------------------------ differences found

# Ray 2.60: a method called with no arguments where its signature needs one raises
# TypeError("missing a required argument: 'a'") at .remote(), as every other call
# that does not fit does. shmray checks only calls that pass arguments.
def test_a_method_called_without_its_required_argument_fails_at_the_call(ray):
    r = Resources.remote()
    with pytest.raises(TypeError, match="missing a required argument"):
        r.f.remote()
    with pytest.raises(TypeError, match="missing a required argument"):
        r.f.remote(b=1)
    assert ray.get(r.f.remote(1)) == 1


# Ray 2.60: inside an actor, get_assigned_resources() is what the actor holds for life:
# {'CPU': 1.0} for num_cpus=1, {'CPU': 0.5} for 0.5, {'memory': 1000.0} for memory=1000,
# and {} for a default actor (which holds nothing) and for num_cpus=0.
def test_assigned_resources_inside_an_actor_are_what_it_holds(ray):
    assert ray.get(Resources.remote().assigned.remote()) == {}
    assert ray.get(Resources.options(num_cpus=0).remote().assigned.remote()) == {}
    for options, expected in [({"num_cpus": 1}, {"CPU": 1.0}), ({"num_cpus": 0.5}, {"CPU": 0.5}),
                              ({"memory": 1000}, {"memory": 1000.0})]:
        a = Resources.options(**options).remote()
        try:
            assert ray.get(a.assigned.remote()) == expected
        finally:
            ray.kill(a)  # (it holds a CPU: the tests after it need both)


# Ray 2.60: @ray.method(max_task_retries=N) and h.m.options(max_task_retries=N) are
# accepted, and a call lost with its process runs again on the restarted actor
# ("survived"). shmray refuses both with ValueError (only num_returns and
# concurrency_group / num_returns and name are accepted).
def test_max_task_retries_per_method(ray, tmp_path):
    marker = str(tmp_path / "died")

    @ray.remote(max_restarts=-1)
    class Flaky:
        @shmray.method(max_task_retries=3)
        def once_dies(self):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            return "survived"

        def plain(self, tag):
            if not os.path.exists(marker + tag):
                open(marker + tag, "w").close()
                os._exit(1)
            return "plain survived"

    f = Flaky.remote()
    assert ray.get(f.once_dies.remote(), timeout=30) == "survived"
    assert ray.get(f.plain.options(max_task_retries=2).remote("b"), timeout=30) == \
        "plain survived"


# Ray 2.60: h.m.options(enable_task_events=False) is accepted (and the call runs);
# shmray raises ValueError "Invalid option keyword(s) ['enable_task_events']".
def test_method_options_enable_task_events(ray):
    r = Resources.remote()
    assert ray.get(r.f.options(enable_task_events=False).remote(5)) == 5


# Ray 2.60: an actor created with .options(namespace="other") is *registered* under
# that namespace, but code running in it sees the job's namespace:
# get_runtime_context().namespace is the driver's, and get_actor / list_named_actors
# inside it look in the job's namespace (shmray gets those two right already).
def test_namespace_inside_an_actor_is_the_jobs(ray):
    job_ns = shmray.get_runtime_context().namespace
    a = Resources.options(name="compat-ns", namespace="compat-other").remote()
    try:
        assert ray.get(a.namespace.remote()) == job_ns
    finally:
        ray.kill(a)


# Ray 2.60: get_actor_name() inside an actor that has no name returns '' (None only
# outside actors).
def test_get_actor_name_of_an_unnamed_actor_is_empty(ray):
    named = Resources.options(name="compat-named").remote()
    assert ray.get(named.name.remote()) == "compat-named"
    assert shmray.get_runtime_context().get_actor_name() is None
    assert ray.get(Resources.remote().name.remote()) == ""


# ------------------------------------------------------------ same as Ray (kept so)

@shmray.remote
class Log:
    def __init__(self):
        self.items = []

    def append(self, x):
        self.items.append(x)
        return len(self.items)

    def items_(self):
        return list(self.items)


@shmray.remote
def append_from_task(handle, x):
    return shmray.get(handle.append.remote(x))


def test_a_call_waiting_for_its_argument_does_not_hold_back_other_callers(ray):
    # Ray's "Actor Task Execution Order": order holds per submitter only
    log = Log.remote()
    blocked = log.append.remote(slow_value.remote("blocked", 1.5))
    time.sleep(0.2)
    assert ray.get(append_from_task.remote(log, "from-task")) == 1
    assert ray.get(blocked) == 2
    assert ray.get(log.items_.remote()) == ["from-task", "blocked"]


def test_async_actor_gate_gather_and_awaiting_another_actor(ray):
    @ray.remote
    class Gate:
        def __init__(self, n):
            self.event = asyncio.Event()
            self.n = n
            self.arrived = 0

        async def enter(self, i):  # passes only when all n calls run at once
            self.arrived += 1
            if self.arrived == self.n:
                self.event.set()
            await self.event.wait()
            return i

        async def count(self):
            return self.arrived

    @ray.remote
    class Aggregator:
        async def sum_squares(self, n):
            return sum(await asyncio.gather(*[square.remote(i) for i in range(n)]))

        async def via_other(self, other):
            return await other.count.remote()

        async def wait_refs(self, n):
            done, pending = await asyncio.wait(
                [asyncio.ensure_future(square.remote(i)) for i in range(n)])
            return sorted(d.result() for d in done), len(pending)

        async def blocking_get(self, x):
            return shmray.get(square.remote(x))

        def sync_method(self):
            return "sync-ok"

    g = Gate.remote(5)
    assert ray.get([g.enter.remote(i) for i in range(5)], timeout=30) == [0, 1, 2, 3, 4]
    agg = Aggregator.remote()
    assert ray.get(agg.sum_squares.remote(10)) == 285
    assert ray.get(agg.via_other.remote(g)) == 5
    assert ray.get(agg.wait_refs.remote(4)) == ([0, 1, 4, 9], 0)
    assert ray.get(agg.blocking_get.remote(3)) == 9
    assert ray.get(agg.sync_method.remote()) == "sync-ok"

    async def driver():
        return await asyncio.gather(*[g.enter.remote(i) for i in range(3)])

    assert asyncio.run(driver()) == [0, 1, 2]


def test_signal_actor_releases_blocked_tasks(ray):
    # Ray's "Using an actor to synchronize other tasks and actors" pattern
    @ray.remote(num_cpus=0)
    class Signal:
        def __init__(self):
            self.ev = asyncio.Event()
            self.waiters = 0

        def send(self):
            self.ev.set()

        async def wait(self):
            self.waiters += 1
            await self.ev.wait()

        async def n_waiting(self):
            return self.waiters

    @ray.remote
    def gated(sig, i):
        shmray.get(sig.wait.remote())
        return i * 10

    sig = Signal.remote()
    refs = [gated.remote(sig, i) for i in range(4)]
    deadline = time.monotonic() + 20
    while ray.get(sig.n_waiting.remote()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    ready, _ = ray.wait(refs, timeout=0.3)
    assert ready == []
    ray.get(sig.send.remote())
    assert ray.get(refs, timeout=30) == [0, 10, 20, 30]


def test_max_concurrency_by_options_runs_calls_on_threads(ray):
    @ray.remote
    class Meeting:
        def __init__(self):
            self.barrier = threading.Barrier(3, timeout=10)

        def meet(self, i):
            self.barrier.wait()  # passes only when 3 calls run at once
            return i

        def on_main_thread(self):
            return threading.current_thread() is threading.main_thread()

    m = Meeting.options(max_concurrency=3).remote()
    assert ray.get([m.meet.remote(i) for i in range(3)], timeout=30) == [0, 1, 2]
    assert ray.get(m.on_main_thread.remote()) is False
    assert ray.get(Meeting.remote().on_main_thread.remote()) is True


def test_atexit_handlers_run_after_exit_actor(ray, tmp_path):
    path = str(tmp_path / "atexit")

    @ray.remote
    class Quitter:
        def __init__(self):
            atexit.register(lambda: open(path, "a").write("atexit\n"))

        def quit(self):
            shmray.actor.exit_actor()

    q = Quitter.remote()
    with pytest.raises(RayActorError):
        ray.get(q.quit.remote(), timeout=10)
    deadline = time.monotonic() + 5
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open(path).read() == "atexit\n"


def test_exit_actor_in_an_async_actor(ray):
    @ray.remote
    class AsyncQuitter:
        async def quit(self):
            shmray.actor.exit_actor()

        async def ping(self):
            return "pong"

    a = AsyncQuitter.remote()
    assert ray.get(a.ping.remote()) == "pong"
    with pytest.raises(RayActorError):
        ray.get(a.quit.remote(), timeout=10)
    with pytest.raises(RayActorError):
        ray.get(a.ping.remote(), timeout=10)


def test_num_returns_mismatch_fails_the_call_only(ray):
    @ray.remote
    class Splitter:
        @shmray.method(num_returns=2)
        def halves(self, xs):
            return xs[:len(xs) // 2], xs[len(xs) // 2:]

        @shmray.method(num_returns=2)
        async def two(self):
            return "x", "y"

        def pair(self):
            return 1, 2

    s = Splitter.remote()
    a, b = s.halves.remote([1, 2, 3, 4, 5])
    assert ray.get([a, b]) == [[1, 2], [3, 4, 5]]
    assert ray.get(list(s.two.remote())) == ["x", "y"]
    refs = s.pair.options(num_returns=3).remote()
    with pytest.raises(RayTaskError) as info:
        ray.get(refs)
    assert isinstance(info.value, ValueError)
    assert ray.get(s.pair.remote()) == (1, 2)


def test_inheritance_static_class_private_and_varargs_methods(ray):
    class Base:
        def __init__(self):
            self.log = []

        def record(self, x):
            self.log.append(x)
            return len(self.log)

        def history(self):
            return self.log

        def _private(self):
            return "private"

        @staticmethod
        def helper(x):
            return x + 1000

        @classmethod
        def kind(cls):
            return cls.__name__

    @ray.remote
    class Child(Base):
        def __init__(self, tag):
            super().__init__()
            self.tag = tag

        def record(self, x):
            return super().record(f"{self.tag}:{x}")

        def f(self, a, b=2, *args, c=3, **kw):
            return a, b, args, c, sorted(kw.items())

    c = Child.remote("t")
    assert ray.get([c.record.remote(i) for i in range(3)]) == [1, 2, 3]
    assert ray.get(c.history.remote()) == ["t:0", "t:1", "t:2"]
    assert ray.get(c._private.remote()) == "private"
    assert ray.get(c.helper.remote(1)) == 1001
    assert ray.get(c.kind.remote()) == "Child"
    assert ray.get(c.f.remote(1, 5, 6, 7, c=9, z=1)) == (1, 5, (6, 7), 9, [("z", 1)])
    assert ray.get(c.f.remote(a=4, b=5)) == (4, 5, (), 3, [])


def test_functional_remote_and_zero_cpu_actors_beyond_the_cpus(ray):
    class Plain:
        def __init__(self, v):
            self.v = v

        def value(self):
            return self.v

    assert ray.get(ray.remote(Plain).remote(3).value.remote()) == 3
    zero = ray.remote(num_cpus=0, max_restarts=1)(Plain)
    actors = [zero.remote(i) for i in range(6)]
    assert ray.get([a.value.remote() for a in actors], timeout=30) == list(range(6))


def test_actors_create_actors_return_handles_and_call_themselves(ray):
    @ray.remote
    class Leaf:
        def __init__(self, v):
            self.v = v

        def value(self):
            return self.v

    @ray.remote
    class Tree:
        def __init__(self):
            self.children = [Leaf.remote(i) for i in range(3)]

        def total(self):
            return sum(shmray.get([c.value.remote() for c in self.children]))

        def kids(self):
            return self.children

        def poke_self(self):  # fire and forget on itself: no deadlock
            shmray.get_runtime_context().current_actor.total.remote()
            return "poked"

    t = Tree.remote()
    assert ray.get(t.total.remote()) == 3
    assert ray.get([k.value.remote() for k in ray.get(t.kids.remote())]) == [0, 1, 2]
    assert ray.get(t.poke_self.remote()) == "poked"
    assert ray.get(t.total.remote()) == 3
    r = Leaf.remote(41).value.remote()
    assert ray.get(Leaf.remote(r).value.remote()) == 41  # a ref as constructor argument


def test_refs_made_in_an_actor_outlive_the_call(ray):
    @ray.remote
    class Holder:
        def make_ref(self, x):
            return shmray.put(x * 3)

        def refs(self, n):
            return [shmray.put(i) for i in range(n)]

        def consume(self, ref_list):
            return sum(shmray.get(ref_list))

    h = Holder.remote()
    inner = ray.get(h.make_ref.remote(5))
    assert isinstance(inner, shmray.ObjectRef) and ray.get(inner) == 15
    lst = ray.get(h.refs.remote(4))
    assert ray.get(lst) == [0, 1, 2, 3]
    assert ray.get(Holder.remote().consume.remote(lst)) == 6


def test_ray_ready_of_slow_constructors_and_named_get_if_exists(fresh):
    fresh.init(num_cpus=2, namespace="compat-app")
    assert fresh.get_runtime_context().namespace == "compat-app"

    @fresh.remote
    class SlowStart:
        def __init__(self, s):
            time.sleep(s)
            self.ready = True

        def is_ready(self):
            return self.ready

    actors = [SlowStart.remote(0.3) for _ in range(3)]
    ready, _ = fresh.wait([a.__ray_ready__.remote() for a in actors], num_returns=3,
                          timeout=30)
    assert len(ready) == 3
    made = SlowStart.options(name="made-here", get_if_exists=True).remote(0)
    assert fresh.get(made.is_ready.remote())
    assert fresh.util.list_named_actors() == ["made-here"]
    assert fresh.util.list_named_actors(all_namespaces=True) == \
        [{"name": "made-here", "namespace": "compat-app"}]


class Flake(Exception):
    pass


# Ray 2.60: an actor call that raises an exception its retry_exceptions names runs
# again on the same actor, up to max_task_retries (the method's, else the actor's);
# other exceptions fail it at once.
def test_retry_exceptions_of_actor_methods(ray):
    @ray.remote(max_task_retries=2)
    class Flaky:
        def __init__(self):
            self.attempts = {}

        def _attempt(self, key):
            self.attempts[key] = self.attempts.get(key, 0) + 1
            return self.attempts[key]

        @shmray.method(retry_exceptions=[Flake])
        def third_time_lucky(self):
            n = self._attempt("lucky")
            if n < 3:
                raise Flake(n)
            return n

        @shmray.method(retry_exceptions=[Flake])
        def wrong_kind(self):
            self._attempt("wrong")
            raise KeyError("not retried")

        def always(self):
            raise Flake(self._attempt("always"))

        def count(self, key):
            return self.attempts.get(key, 0)

    f = Flaky.remote()
    assert ray.get(f.third_time_lucky.remote(), timeout=30) == 3
    with pytest.raises(KeyError):
        ray.get(f.wrong_kind.remote(), timeout=30)
    assert ray.get(f.count.remote("wrong")) == 1
    with pytest.raises(Flake):  # not retried: the call's options name no exceptions
        ray.get(f.always.remote(), timeout=30)
    with pytest.raises(Flake):  # 1 + 1 retry
        ray.get(f.always.options(retry_exceptions=True, max_task_retries=1).remote(),
                timeout=30)
    assert ray.get(f.count.remote("always")) == 3
    with pytest.raises(ValueError, match="Invalid option keyword bogus for actor methods"):
        f.always.options(bogus=1)
    with pytest.raises(ValueError, match="max_task_retries"):
        shmray.method(max_task_retries="x")
