"""The short way a simple task's Done takes in the driver (MessageLoop.on_done, its
steps inlined) must leave the session exactly as the long way does: results, the
callbacks waiting on them, futures, refs dropped early, counters, resources."""
from __future__ import annotations

import time

import pytest

import shmray

pytestmark = pytest.mark.timeout(120)


@shmray.remote
def ident(x):
    return x


@shmray.remote
def nothing():
    return None


@shmray.remote
def plus_one(x):
    return x + 1


def settled(session, predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session.lock:
            session.store.process_refs()
            if predicate():
                return True
        time.sleep(0.01)
    return False


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
