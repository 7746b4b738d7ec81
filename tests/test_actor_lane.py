"""The actor lane (csrc/actor_call.c, csrc/actor_method.c) in a session: an actor's
common call (the driver's, no arguments, plain options, to an ALIVE actor with nothing
in line) submitted and ended in C, and `handle.f` / `.remote()` in C. It must do what
the Python it stands for does (ActorHandle._missing, ActorMethod._remote,
Session._submit_in_python, TaskTable.add, the ActorTable, Dispatcher.send_task,
MessageLoop.on_done, TaskTable.finish), take only the common call, and hand every other
to that Python, in order.
"""
from __future__ import annotations

import gc
import threading
import time

import pytest

import shmray
from shmray import _crecords
from shmray.exceptions import ActorDiedError

from conftest import first_args_of, settled, wait_gone

pytestmark = pytest.mark.timeout(120)


@shmray.remote
class Log:
    def __init__(self):
        self.calls = []

    def tick(self):
        self.calls.append("tick")
        return len(self.calls)

    def add(self, x):
        self.calls.append(x)
        return len(self.calls)

    def seen(self):
        return list(self.calls)

    def fail(self):
        raise KeyError("no")

    def pair(self):
        return 1, 2


@shmray.remote
def slow(x, seconds):
    time.sleep(seconds)
    return x


def taken_by_python(session, monkeypatch):
    """The specs that TaskTable.add saw (the Python way)."""
    return first_args_of(monkeypatch, session.tasks, "add")


def ended_by_python(session, monkeypatch):
    """The specs that TaskTable.finish saw (the long way)."""
    return first_args_of(monkeypatch, session.tasks, "finish")


def test_the_lane_takes_the_common_call_whole(ray, session, monkeypatch):
    log = Log.remote()
    assert shmray.get(log.tick.remote()) == 1  # (created; the no-argument shape checked)
    actor = session.actors.by_id[log._state.actor_id]
    before = actor.calls_done
    python, long_way = taken_by_python(session, monkeypatch), ended_by_python(session, monkeypatch)
    refs = [log.tick.remote() for _ in range(3000)]
    assert shmray.get(refs) == list(range(2, 3002))
    assert python == [] and long_way == []
    assert actor.calls_done == before + 3000
    # nothing left: the task table, the store's expectations, the worker's charge
    assert not session.tasks.tasks and not session.store.pending
    assert not actor.worker.inflight and actor.worker.charge is None
    assert session.available_resources()["CPU"] == pytest.approx(2.0)


def test_every_other_call_goes_the_python_way_in_submission_order(ray, session, monkeypatch):
    log = Log.remote()
    python = taken_by_python(session, monkeypatch)
    first = log.tick.remote()  # still being created: the Python
    assert len(python) == 1
    shmray.get(first)
    slow_input = slow.remote("late", 0.3)
    refs = [log.add.remote(slow_input),  # waits for its input: the later calls wait too
            log.tick.remote(), log.tick.remote(),
            log.add.remote(5),            # arguments
            log.pair.options(num_returns=2).remote()[0],  # two returns
            log.tick.remote()]
    shmray.get(refs)
    assert shmray.get(log.seen.remote()) == ["tick", "late", "tick", "tick", 5, "tick"]
    names = [s.name for s in python if s.actor is not None]
    assert names[:1] == ["Log.tick"] and "Log.add" in names and "Log.pair" in names
    # behind the waiting call, the no-argument ones took the Python way (in line)
    assert sum(1 for s in python if s.name == "Log.tick") >= 3


def test_errors_and_large_results_go_the_long_way(ray, session, monkeypatch):
    log = Log.remote()
    shmray.get(log.tick.remote())
    long_way = ended_by_python(session, monkeypatch)
    with pytest.raises(KeyError):
        shmray.get(log.fail.remote())
    assert len(long_way) == 1
    assert shmray.get([log.tick.remote() for _ in range(100)]) == list(range(2, 102))
    assert len(long_way) == 1


def test_a_dead_actors_calls_fail_as_in_python(ray, session):
    log = Log.remote()
    shmray.get(log.tick.remote())
    shmray.kill(log)
    with pytest.raises(ActorDiedError):
        shmray.get(log.tick.remote(), timeout=30)


def test_an_actor_ends_after_its_lanes_calls_once_its_last_handle_goes(ray, session):
    log = Log.remote()
    shmray.get(log.tick.remote())
    pid = session.actors.by_id[log._state.actor_id].pid
    refs = [log.tick.remote() for _ in range(2000)]
    del log
    assert shmray.get(refs) == list(range(2, 2002))  # every call ran first
    assert wait_gone([pid], 10)


def test_an_async_actor_ends_its_calls_out_of_order(ray, session):
    @shmray.remote
    class Sleeper:
        async def nap(self):
            import asyncio
            await asyncio.sleep(0.001)
            return "ok"

    s = Sleeper.remote()
    assert shmray.get([s.nap.remote() for _ in range(300)]) == ["ok"] * 300
    assert not session.tasks.tasks


def test_calls_from_threads_and_from_tasks(ray, session):
    log = Log.remote()
    shmray.get(log.tick.remote())
    out = []
    threads = [threading.Thread(target=lambda: out.append(
        shmray.get([log.tick.remote() for _ in range(200)]))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(n for got in out for n in got) == list(range(2, 802))

    @shmray.remote
    def call_inside(handle):  # another runtime (a worker's): the Python way there
        return shmray.get(handle.tick.remote())

    assert shmray.get(call_inside.remote(log)) == 802


def test_a_ctrl_c_during_the_call_comes_after_it_is_made_whole(ray, session):
    from shmray._driver.interrupts import sections

    log = Log.remote()
    shmray.get(log.tick.remote())
    sections.pending = True  # a Ctrl-C that came while the call was in its section
    with pytest.raises(KeyboardInterrupt):
        log.tick.remote()
    assert not sections.pending and sections.depth == 0
    assert shmray.get(log.tick.remote()) == 3  # the interrupted call ran whole
    assert settled(session, lambda: not session.tasks.tasks and not session.store.pending)


def test_handle_attributes_in_c(ray):
    log = Log.remote()
    with pytest.raises(AttributeError, match="'Log' object has no attribute 'nope'"):
        log.nope
    assert not hasattr(log, "nope")
    assert isinstance(log._state, tuple) and log._ray_token is not None
    log.__dict__["tick"] = "shadowed"  # an instance attribute comes first, as in Python
    assert log.tick == "shadowed"
    del log.__dict__["tick"]
    assert shmray.get(log.tick.remote()) == 1
    with pytest.raises(TypeError, match="Actor methods cannot be called directly"):
        log.tick()
    with pytest.raises(TypeError, match="takes 0 positional arguments|too many positional"):
        log.tick.remote(1)
    with pytest.raises(TypeError, match="missing a required argument"):
        log.add.remote()  # (a method that takes arguments, called without)
    assert shmray.get(log.add.options(name="named").remote(3)) == 2
    bare = shmray.actor.ActorHandle.__new__(shmray.actor.ActorHandle)  # (never initialised)
    with pytest.raises(AttributeError, match="has no attribute 'tick'"):
        bare.tick


def test_the_c_parts_check_their_arguments(ray, session):
    with pytest.raises(TypeError, match="ActorMethodBase"):
        _crecords.set_method_type(int)
    with pytest.raises(TypeError, match="call\\(actor_id, fn_id, name, options\\)"):
        session.lane.call(1, 2)
    assert session.lane.call(12345, 1, "x", object()) is None  # not plain options: nothing


def test_shutdown_ends_the_cycles_of_the_lanes_calls(fresh):
    from shmray._worker_pool import WorkerHandle

    @shmray.remote
    class Napper:
        def nap(self):
            time.sleep(0.05)

    fresh.init(num_cpus=1)
    session = shmray._context.get_runtime()
    n = Napper.remote()
    fresh.get(n.nap.remote())
    refs = [n.nap.remote() for _ in range(20)]  # one running, the rest queued on it
    specs = [session.tasks.tasks[ref._id] for ref in refs]
    assert not any(gc.is_tracked(s) for s in specs)
    pids = {w.pid for w in session.pool.workers}
    del specs, refs, session, n
    fresh.shutdown()
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is WorkerHandle and o.pid in pids]
