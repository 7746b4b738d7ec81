"""Bugs an outside read of the driver found (issue 14), each reproduced: these tests
failed before the redesign."""
from __future__ import annotations

import gc
import threading
import time
import warnings
import weakref

import pytest

import shmray
from shmray import _context


def test_a_future_callback_may_call_shmray_without_deadlocking(fresh):
    """A done-callback is user code: it runs outside every internal lock, so it may
    put, submit and get (it used to hang the session: the pump held the lock)."""
    fresh.init(num_cpus=2)

    @fresh.remote
    def double(x):
        return 2 * x

    called = threading.Event()
    seen = []

    def callback(future):
        ref = fresh.put(future.result() + 1)  # took the runtime's lock: deadlock
        seen.append(fresh.get(double.remote(ref)))
        called.set()

    fut = double.remote(20).future()
    fut.add_done_callback(callback)
    assert called.wait(30), "the callback never finished (deadlock)"
    assert seen == [82]
    ready = fresh.put(5).future()  # already there: the callback runs at once
    ready.add_done_callback(lambda f: seen.append(fresh.get(fresh.put(f.result()))))
    assert seen == [82, 5]


class _SlowDiscard(set):
    """`pending` whose removals take a while: what a preempted thread looks like."""

    def discard(self, oid):
        super().discard(oid)
        time.sleep(0.02)


def test_get_never_sees_a_result_between_pending_and_stored(fresh):
    """get() reads the store without the lock; the store used to drop an id from
    `pending` before it stored the value, and a get in between raised ObjectLostError."""
    fresh.init(num_cpus=2)

    @fresh.remote
    def ident(i):
        time.sleep(0.01)
        return i

    store = _context.runtime.store
    store.pending = _SlowDiscard(store.pending)
    refs = [ident.remote(i) for i in range(40)]
    for i, ref in enumerate(refs):  # the background thread stores the results meanwhile
        while ref._id in store.pending:
            time.sleep(0.0005)
        assert fresh.get(ref, timeout=30) == i


@pytest.mark.timeout(300)
def test_more_than_256_workers_run_tasks(fresh, tmp_path):
    """The C rings took at most 256 rings: with more workers every get failed."""
    fresh.init(num_cpus=260)
    meeting = tmp_path

    @fresh.remote
    def pid(i):
        import os
        import time
        open(os.path.join(meeting, str(i)), "w").close()
        deadline = time.monotonic() + 120
        while len(os.listdir(meeting)) < 260 and time.monotonic() < deadline:
            time.sleep(0.05)  # the first 260 meet: they run at once, a worker each
        return os.getpid()

    pids = fresh.get([pid.remote(i) for i in range(300)], timeout=240)
    assert len(set(pids[:260])) == 260
    assert _context.runtime.scheduler.max_workers <= 260 + 256  # extras are capped


def test_a_shut_down_session_is_freed(fresh):
    """Nothing keeps a session alive once it is shut down (a module global did)."""
    fresh.init(num_cpus=1)

    @fresh.remote
    def one():
        return 1

    assert fresh.get(one.remote()) == 1
    assert one.remote().future().result(timeout=30) == 1
    ref = weakref.ref(_context.runtime)
    fresh.shutdown()
    gc.collect()
    assert ref() is None


def test_the_infeasible_warning_points_at_the_callers_line(fresh):
    fresh.init(num_cpus=1)

    @fresh.remote(num_cpus=64)
    def huge():
        return 1

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = huge.remote()
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert caught[0].filename == __file__, caught[0].filename
    with pytest.raises(shmray.exceptions.TaskUnschedulableError):
        fresh.get(ref)


def test_get_in_another_thread_ends_when_the_session_shuts_down(fresh):
    """A get without a timeout raises RaySystemError when another thread shuts the
    session down (it used to wait forever)."""
    fresh.init(num_cpus=1)

    @fresh.remote
    def forever():
        time.sleep(60)

    ref = forever.remote()
    errors = []
    t = threading.Thread(target=lambda: errors.append(_raised(fresh.get, ref)))
    t.start()
    time.sleep(0.3)
    fresh.shutdown()
    t.join(10)
    assert not t.is_alive()
    assert isinstance(errors[0], shmray.exceptions.RaySystemError), errors


def _raised(fn, *args):
    try:
        fn(*args)
    except BaseException as e:  # what the thread saw
        return e
    return None
