"""The lane (csrc/lane*.c) in a session: the common task's submission, placement,
queue, Done and refs in C. It must do what the Python it stands for does
(Session._submit_in_python, TaskTable.add, the Dispatcher, Scheduler.place and
_pipeline, MessageLoop.on_done, ObjectStore.process_refs), take only the common case,
and hand everything else to that Python. (The compact forms, ids and get's reads in
C, without a session: test_lane_forms.py.)
"""
from __future__ import annotations

import pickle
import time

import numpy as np
import pytest

import shmray
from shmray import _crecords, _serialization as ser

from conftest import first_args_of, settled

pytestmark = pytest.mark.timeout(120)


@shmray.remote
def ident(x):
    return x


@shmray.remote
def nothing():
    return None


@shmray.remote(max_calls=1)
def once(x):
    return x


@shmray.remote
def nap(seconds):
    time.sleep(seconds)
    return seconds


def python_way(session, monkeypatch):
    """The specs that TaskTable.add saw (the Python way), as a list kept up to date."""
    return first_args_of(monkeypatch, session.tasks, "add")


def test_the_lane_takes_the_common_task(session, monkeypatch):
    shmray.get([ident.remote(i) for i in range(200)])  # verdict known, function shipped
    seen = python_way(session, monkeypatch)
    refs = [ident.remote(i) for i in range(3000)]
    assert shmray.get(refs) == list(range(3000))
    assert seen == []
    assert not session.tasks.tasks and not session.store.pending


def test_every_other_case_goes_the_python_way(session, monkeypatch):
    seen = python_way(session, monkeypatch)
    with pytest.warns(UserWarning, match="can never run"):
        never = ident.options(resources={"nowhere": 1}).remote(7)
    other = [
        ident.options(num_returns=2).remote([1, 2]),
        once.remote(3),
        ident.options(scheduling_strategy="SPREAD").remote(4),
        ident.options(retry_exceptions=[KeyError]).remote(5),
        ident.options(runtime_env={"env_vars": {"A": "1"}}).remote(6),
        never,
        ident.remote(shmray.put(8)),  # a ref among the arguments
        ident.remote([shmray.put(9)]),  # a ref inside them
    ]
    assert len(seen) == len(other)
    assert shmray.get(other[0]) == [1, 2]
    assert shmray.get(other[1:5]) == [3, 4, 5, 6]
    with pytest.raises(shmray.exceptions.TaskUnschedulableError):
        shmray.get(other[5], timeout=10)
    assert shmray.get(other[6]) == 8
    assert shmray.get(other[7]) == [9]  # (nested refs resolved: DESIGN.md)


def test_a_user_serializer_in_force_reaches_each_worker_before_the_lanes_tasks(session):
    class Point:
        def __init__(self, x):
            self.x = x

    shmray.util.register_serializer(Point, serializer=lambda p: p.x,
                                    deserializer=lambda x: ("point", x))
    try:
        from shmray import _custom_serializers

        key = _custom_serializers.shipment.key
        done = {w: w.tasks_done for w in session.pool.workers}
        assert shmray.get([ident.remote(Point(i)) for i in range(200)]) == \
            [("point", i) for i in range(200)]
        # a worker that lacked the table got it from the Python (send_task), first
        ran = [w for w in session.pool.workers if w.tasks_done > done.get(w, 0)]
        assert ran and all(key in w.fns for w in ran)
    finally:
        shmray.util.deregister_serializer(Point)
    assert shmray.get([ident.remote(i) for i in range(100)]) == list(range(100))


def test_the_lane_pipelines_as_the_scheduler_does(session):
    shmray.get([ident.remote(i) for i in range(100)])  # ident's duration measured
    blockers = [nap.remote(0.5) for _ in range(2)]     # every worker busy
    deadline = time.monotonic() + 10
    while session.ledger.available["CPU"] > 0.5 and time.monotonic() < deadline:
        time.sleep(0.01)
    with session.lock:
        ref = session.lane.submit(ident._fn_id, "ident", ident._options,
                                  ser.to_stored(((41,), {}), None))
        spec = session.tasks.tasks[ref._id]
        assert spec.worker is not None, "the lane did not place a task behind a busy worker"
        # the worker Scheduler._pipeline picks now, the lane's next one: the other
        workers = [w for w in session.pool.workers if w.env is None]  # (plain ones)
        picked = session.scheduler._pipeline(spec, workers)
        assert picked is not spec.worker
    refs = [ident.remote(i) for i in range(40)]
    loads = sorted(len(w.inflight) for w in workers)
    assert loads[-1] - loads[0] <= 1  # the least loaded first, as _pipeline does
    assert shmray.get(refs) == list(range(40))
    assert shmray.get(blockers) == [0.5, 0.5]
    assert shmray.get(ref) == 41


def test_batches_are_sent_in_c_as_the_dispatcher_sends_them(session):
    # lane_send.c: Dispatcher.send_batch and push_batches for compact batches: the
    # same messages, the same unwoken counts; a batch with another kind of task in it
    # is the Python's (no compact form).
    from shmray._driver.dispatch import TASK_BATCH, WAKE_BATCH

    shmray.get([ident.remote(i) for i in range(100)])
    blockers = [nap.remote(0.5) for _ in range(2)]  # every worker busy, its ring unread
    deadline = time.monotonic() + 10
    while session.ledger.available["CPU"] > 0.5 and time.monotonic() < deadline:
        time.sleep(0.01)
    workers = [w for w in session.pool.workers if w.env is None]

    def submit(value):  # (.remote() takes the session's lock: here it is held)
        return session.lane.submit(ident._fn_id, "ident", ident._options,
                                   ser.to_stored(((value,), {}), None))

    with session.lock:
        refs = [submit(i) for i in range(5 * TASK_BATCH)]  # a burst: batched
        assert sum(len(w.inflight) - 1 for w in workers) == 5 * TASK_BATCH
        assert any(session.dispatch.unwoken.values())  # (pushed without a wake)
        assert all(n < WAKE_BATCH for n in session.dispatch.unwoken.values())
        # an array's pickle has an out-of-band buffer: its record is not compact, and
        # its batch is the Python's to send
        refs += [submit(np.arange(3)) for _ in range(len(workers))]
        if session.lane.burst:  # (so batched, not sent: a slow build may be slower)
            assert any(w.batch for w in workers)
        session.lane.push_batches(False)
        assert not session.dispatch.batched and not any(w.batch for w in workers)
        assert not session.dispatch.unwoken  # all woken
    values = shmray.get(refs)
    assert values[:5 * TASK_BATCH] == list(range(5 * TASK_BATCH))
    assert all(list(v) == [0, 1, 2] for v in values[5 * TASK_BATCH:])
    assert shmray.get(blockers) == [0.5, 0.5]


def test_the_lane_places_on_the_warmest_idle_worker(session):
    shmray.get([ident.remote(i) for i in range(50)])
    deadline = time.monotonic() + 10
    while session.ledger.available["CPU"] < 2.0 and time.monotonic() < deadline:
        time.sleep(0.01)
    with session.lock:
        idle = [w for w in session.pool.workers if w.env is None and w.gpus == ()
                and not w.inflight and not w.rpcs and not w.retiring]
        warmest = max(idle, key=lambda w: w.idle_since)  # Scheduler.place's choice
        ref = session.lane.submit(ident._fn_id, "ident", ident._options,
                                  ser.to_stored(((7,), {}), None))
        spec = session.tasks.tasks[ref._id]
        assert spec.worker is warmest and warmest.charge == spec.request
        assert session.ledger.available["CPU"] == 1.0  # (charged as ResourceLedger.charge)
    assert shmray.get(ref) == 7


def test_nothing_is_left_behind_and_counters_agree(session):
    finished = session.tasks.finished
    done = sum(w.tasks_done for w in session.pool.workers)
    shmray.get([nothing.remote() for _ in range(5000)])
    assert session.tasks.finished - finished == 5000
    assert sum(w.tasks_done for w in session.pool.workers) - done == 5000
    for _ in range(5000):
        nothing.remote()  # dropped at once
    assert settled(session, lambda: not session.store.values and not session.tasks.tasks
                   and not session.store.pending and not session.store._local)
    assert settled(session, lambda: session.ledger.available.get("CPU") == 2.0)
    assert all(not w.inflight and w.charge is None and not w.batch
               for w in session.pool.workers)
    # (the lane keeps these within a call, and writes them back at its end)
    assert 0 <= session.scheduler.fn_mean[nothing._fn_id] < 0.05
    assert 0 <= session.scheduler.recent_mean < 0.05
    assert type(session.tasks.finished) is int


def test_the_lane_survives_the_stores_compaction(session):
    refs = [nothing.remote() for _ in range(60_000)]
    shmray.get(refs)
    del refs
    with session.lock:
        session.store.process_refs()
        session.store.compact()
    assert shmray.get([ident.remote(i) for i in range(1000)]) == list(range(1000))


def test_the_lanes_arguments_are_checked(session):
    with pytest.raises(TypeError):
        _crecords.Lane()
    with pytest.raises(TypeError):
        _crecords.Lane(store=1, task_table=2, scheduler=3, pool=4, ledger=5, dispatch=6,
                       common={}, spec_type=int, ref_type=shmray.ObjectRef,
                       none_stored=ser.NONE, pipeline_seconds=0.002, pipeline_max=64,
                       smoothing=0.2, eps=1e-9, pop_any=len, burst_gap=1e-4, task_batch=16)
    lane = session.lane
    with pytest.raises(TypeError):
        lane.submit(1, 2)
    with pytest.raises(TypeError):
        lane.done(None)
    assert lane.submit(ident._fn_id, "ident", object(), ser.NO_ARGS) is None  # not common
    assert lane.done(session.pool.workers[0], pickle.dumps((1,))) is False


def test_drain_checks_its_arguments(session):
    with pytest.raises(TypeError):
        session.lane.drain([], None, (), 1)
    with session.lock:
        workers, rings = session.pool.snapshot
        assert session.lane.drain(rings, session.control.doorbell, workers, 0) == 0


def test_drops_the_lane_counts_and_those_it_hands_to_the_store(session, monkeypatch):
    calls = []
    for name in ("_release", "_free", "_generator_unheld"):
        method = getattr(session.store, name)
        monkeypatch.setattr(session.store, name,
                            lambda *a, _m=method, _n=name: (calls.append(_n), _m(*a))[1])

    def dropped(make):
        calls.clear()
        ref = make()
        shmray.get(ref)
        with session.lock:  # (a drop is processed at the next settle: do it now)
            session.lane.process_refs()
        oid = ref._id if not isinstance(ref, list) else None
        del ref
        with session.lock:
            session.lane.process_refs()
            assert oid is None or oid not in session.store.values
        return list(calls)

    assert dropped(lambda: ident.remote(5)) == []             # inline: all in C
    assert dropped(lambda: shmray.put(bytes(1 << 20))) == ["_release"]  # a segment
    inner = shmray.put(1)
    assert dropped(lambda: ident.remote([inner])) == []       # (resolved: DESIGN.md)
    assert dropped(lambda: shmray.put([inner]))[0] == "_free"  # refs inside the value
    twice = ident.remote(3)
    alias = shmray.ObjectRef(twice._id)  # two refs: the first drop only counts down
    del twice
    with session.lock:
        session.lane.process_refs()
        assert session.store._local[alias._id] == 1
    assert shmray.get(alias) == 3


def test_the_queue_in_c_and_where_the_python_goes_on(session, monkeypatch):
    shmray.get([ident.remote(i) for i in range(100)])  # ident's duration measured
    python_dispatch = []
    dispatch_queued = session.dispatch.dispatch_queued
    monkeypatch.setattr(session.dispatch, "dispatch_queued",
                        lambda *a: (python_dispatch.append(a), dispatch_queued(*a))[1])
    blockers = [nap.remote(0.3) for _ in range(2)]
    deadline = time.monotonic() + 10
    while session.ledger.available["CPU"] > 0.5 and time.monotonic() < deadline:
        time.sleep(0.01)
    refs = [ident.remote(i) for i in range(400)]  # 2 pipelines of 64, the rest queued
    with session.lock:
        queued = sum(len(q) for q in session.scheduler.ready.values())
        assert queued >= 400 - 2 * 64
        stale = session.scheduler.stale
    shmray.cancel(refs[-1])  # taken out of the queue: a stale entry, dropped in C
    odd = ident.options(retry_exceptions=[KeyError]).remote("odd")  # not the lane's
    more = [ident.remote(i) for i in range(400, 450)]
    assert shmray.get(refs[:-1]) == list(range(399))
    with pytest.raises(shmray.exceptions.TaskCancelledError):
        shmray.get(refs[-1])
    assert shmray.get(more) == list(range(400, 450)) and shmray.get(odd) == "odd"
    assert shmray.get(blockers) == [0.3, 0.3]
    assert python_dispatch, "the Python goes on at a task that is not the lane's"
    with session.lock:
        assert session.scheduler.stale == stale and not session.scheduler.ready


# ------------------------------------------------------------------ the short way
# A simple task's Done handled in C (Lane.drain) must leave the session exactly as the
# long way (MessageLoop.on_done, TaskTable.finish, ObjectStore.put) does: results, the
# callbacks waiting on them, futures, refs dropped early, counters, resources.
@shmray.remote
def plus_one(x):
    return x + 1


def test_results_and_the_tasks_waiting_on_them(session):
    firsts = [ident.remote(i) for i in range(2000)]
    seconds = [plus_one.remote(r) for r in firsts]  # each waits on a simple task's result
    assert shmray.get(seconds) == [i + 1 for i in range(2000)]
    assert shmray.get(firsts) == list(range(2000))


def test_futures_of_simple_tasks_resolve(session):
    futures = [ident.remote(i).future() for i in range(500)]
    assert [f.result(timeout=30) for f in futures] == list(range(500))


def test_refs_dropped_before_the_result_leave_nothing_stored(session):
    assert settled(session, lambda: not session.store.values and not session.tasks.tasks)
    for _ in range(3):
        for i in range(3000):
            nothing.remote()  # the ref is dropped at once: the result is released
    keep = [nothing.remote() for _ in range(100)]
    shmray.get(keep)
    del keep
    assert settled(session, lambda: not session.store.values and not session.tasks.tasks
                   and not session.store.pending)


def test_counters_and_resources_come_back(session):
    finished = session.tasks.finished
    shmray.get([nothing.remote() for _ in range(5000)])
    assert session.tasks.finished - finished == 5000
    assert settled(session, lambda: session.ledger.available.get("CPU") == 2.0)
    assert shmray.available_resources()["CPU"] == 2.0
    assert all(not w.inflight and w.charge is None for w in session.pool.workers)


def test_errors_and_large_results_still_go_the_long_way(session):
    @shmray.remote
    def fail(i):
        raise ValueError(f"no {i}")

    @shmray.remote
    def big(i):
        return bytes(2_000_000) + bytes([i])

    refs = [fail.remote(i) for i in range(20)] + [big.remote(i) for i in range(5)]
    for i, r in enumerate(refs[:20]):
        with pytest.raises(ValueError, match=f"no {i}"):
            shmray.get(r)
    assert [shmray.get(r)[-1] for r in refs[20:]] == list(range(5))


def test_simple_tasks_do_take_the_short_way(session, monkeypatch):
    long_way = []
    finish = session.tasks.finish
    monkeypatch.setattr(session.tasks, "finish",
                        lambda spec, *a, **k: (long_way.append(spec), finish(spec, *a, **k)))
    refs = [ident.remote(i) for i in range(2000)]
    assert shmray.get(refs) == list(range(2000))
    assert long_way == []
    with pytest.raises(ValueError):
        shmray.get(fails.remote())  # (an error: the long way)
    assert len(long_way) == 1


@shmray.remote
def fails():
    raise ValueError("no")


def test_remote_in_c_holds_a_ctrl_c_to_its_end_and_works_from_threads(session):
    from shmray._driver.interrupts import sections

    shmray.get(nothing.remote())  # (the options' verdict known: the next call is C's)
    sections.pending = True  # a Ctrl-C that came while the call was in its section
    with pytest.raises(KeyboardInterrupt):
        nothing.remote()
    assert not sections.pending and sections.depth == 0
    # the task was submitted whole, and ends: nothing of it is left
    assert settled(session, lambda: not session.tasks.tasks and not session.store.pending)
    import threading
    out = []
    threads = [threading.Thread(target=lambda: out.append(shmray.get(nothing.remote())))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert out == [None] * 4


def test_remote_in_c_takes_the_common_call_and_leaves_every_other_to_python(session,
                                                                             monkeypatch):
    # RemoteBase.remote (csrc/remote_call.c) takes f.remote() straight to the lane;
    # whatever it does not take, RemoteFunction._remote (the Python) does, whole.
    from shmray import _context
    from shmray._remote_function import RemoteFunction

    python = []
    remote = RemoteFunction._remote
    monkeypatch.setattr(RemoteFunction, "_remote",
                        lambda rf, *a, **k: (python.append((rf._name, a, k)), remote(rf, *a, **k))[1])

    @shmray.remote
    def seven():
        return 7

    assert shmray.get(seven.remote()) == 7  # the first call ships the function: Python
    assert len(python) == 1
    assert shmray.get([seven.remote() for _ in range(300)]) == [7] * 300
    assert len(python) == 1  # the rest: C, no Python frame
    assert shmray.get(ident.remote(3)) == 3  # arguments
    assert shmray.get(seven.options(scheduling_strategy="SPREAD").remote()) == 7  # not plain
    assert len(python) == 3
    with pytest.raises(TypeError, match="missing a required argument"):
        ident.remote()  # a function that takes arguments, called without
    with pytest.raises(TypeError, match="too many positional arguments"):
        seven.remote(1)
    assert [p[0] for p in python[3:]] == [ident._name, seven._name]

    class Runtime:  # another runtime than the lane's session (a forked process's, say)
        def submit(self, rf, args, kwargs, options):
            submitted.append(rf._name)
            return session.submit(rf, args, kwargs, options)

    submitted = []
    monkeypatch.setattr(_context, "runtime", Runtime())
    ref = seven.remote()
    monkeypatch.undo()
    assert shmray.get(ref) == 7
    assert submitted == [seven._name] and len(python) == 6
    with pytest.raises(TypeError, match="set_lane"):
        _crecords.set_lane(object())


def test_remote_in_c_after_shutdown_starts_a_session_as_the_python_does(fresh):
    @shmray.remote
    def one():
        return 1

    fresh.init(num_cpus=1)
    assert fresh.get([one.remote() for _ in range(20)]) == [1] * 20
    old = shmray._context.get_runtime()
    fresh.shutdown()
    assert fresh.get(one.remote()) == 1  # auto-init, as in Ray: a new session
    assert fresh.is_initialized() and shmray._context.get_runtime() is not old


def test_the_lanes_specs_are_untracked_and_shutdown_ends_their_cycles(fresh):
    # A million queued specs must not make every full collection walk them all, so the
    # lane's are never garbage-collected: their cycle with their worker (spec.worker,
    # worker.inflight) must end by itself, here at a shutdown with tasks still running.
    import gc

    from shmray._worker_pool import WorkerHandle

    fresh.init(num_cpus=2)
    session = shmray._context.get_runtime()
    fresh.get([nap.remote(0) for _ in range(10)])  # verdict known, function shipped
    refs = [nap.remote(0.5) for _ in range(20)]   # some running, some queued
    specs = [session.tasks.tasks[ref._id] for ref in refs]
    assert not any(gc.is_tracked(s) for s in specs)
    assert any(s.worker is not None for s in specs)
    pids = {w.pid for w in session.pool.workers}
    del specs, refs, session
    fresh.shutdown()
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is WorkerHandle and o.pid in pids]
