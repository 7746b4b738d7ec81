"""shmray.util.multiprocessing.Pool against the stdlib pool's behaviour (the patterns of
CPython's Lib/test/_test_multiprocessing.py pool tests) and Ray's Pool's arguments, with
real worker processes: tasks of the session, or one actor per process slot."""
from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
import pickle
import threading
import time
import weakref
from multiprocessing.pool import MaybeEncodingError, RemoteTraceback

import numpy as np
import pytest

import shmray
from shmray.exceptions import ActorDiedError, RayActorError, WorkerCrashedError
from shmray.util.multiprocessing import Pool, TimeoutError

pytestmark = pytest.mark.timeout(60)


# -- what the workers run (module level: the workers import this module) -------------

def sqr(x, wait=0.0):
    time.sleep(wait)
    return x * x


def mul(x, y):
    return x * y


def identity(x):
    return x


def pid_of(_=None):
    return os.getpid()


def wait_for(path, value=None):
    """Block until `path` exists (the test creates it): a task that runs exactly as long
    as the test wants, with no guessed durations."""
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)
    return value


def raise_if_zero(x, gate=None):
    if x == 0:
        raise ValueError("zero")
    if gate is not None:
        wait_for(gate)
    return x


class SayWhenError(ValueError):
    pass


def exception_throwing_generator(total, when):
    if when == -1:
        raise SayWhenError("Somebody said when")
    for i in range(total):
        if i == when:
            raise SayWhenError("Somebody said when")
        yield i


def raising():
    raise KeyError("key")


def raise_123():
    raise RuntimeError(123)  # some comment


def unpickleable_result():
    return threading.Lock()


class NeedsTwoArgs(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


def raise_unpicklable_exception():
    raise NeedsTwoArgs(1, 2)


def die(_):
    os._exit(3)


_value = None


def set_value(value, log_dir):
    global _value
    _value = value
    with open(os.path.join(log_dir, str(os.getpid())), "a") as f:
        f.write("init\n")


def read_value(_=None):
    return _value, os.getpid()


def failing_initializer():
    raise ValueError("the initializer failed")


def backing(array) -> str:
    """What holds an array's bytes: the type at the end of its .base chain ('mmap.mmap':
    a mapping of a shared-memory segment; an unpickled copy owns its bytes)."""
    holder = array
    while True:
        inner = holder.obj if isinstance(holder, memoryview) else getattr(holder, "base", None)
        if inner is None:
            return f"{type(holder).__module__}.{type(holder).__qualname__}"
        holder = inner


def describe(array, i=0):
    return backing(array), float(array[i]), os.getpid()


class CountedObject:
    n_instances = 0

    def __new__(cls):
        cls.n_instances += 1
        return object.__new__(cls)

    def __del__(self):
        type(self).n_instances -= 1


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


# -- fixtures -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pool(ray):
    p = Pool(2)
    yield p
    p.terminate()
    p.join()


# -- apply, map, starmap ---------------------------------------------------------------

def test_apply(pool):
    assert pool.apply(sqr, (5,)) == 25
    assert pool.apply(sqr, (), {"x": 3}) == 9
    assert pool.apply(sqr, kwds={"x": 4}) == 16  # (the stdlib's name of kwargs)
    assert pool.apply(mul, [6, 7]) == 42


def test_map_keeps_order_whatever_the_chunksize(pool):
    assert pool.map(sqr, list(range(10))) == [x * x for x in range(10)]
    assert pool.map(sqr, list(range(100)), chunksize=20) == [x * x for x in range(100)]
    assert pool.map(sqr, range(1000), chunksize=7) == [x * x for x in range(1000)]
    assert pool.map(sqr, (x for x in range(50))) == [x * x for x in range(50)]
    assert pool.map(sqr, tuple(range(5)), 1) == [0, 1, 4, 9, 16]


def test_starmap(pool):
    tuples = list(zip(range(100), range(99, -1, -1)))
    assert pool.starmap(mul, tuples[:10]) == list(itertools.starmap(mul, tuples[:10]))
    assert pool.starmap(mul, tuples, chunksize=20) == list(itertools.starmap(mul, tuples))
    assert pool.starmap_async(mul, tuples).get() == list(itertools.starmap(mul, tuples))
    assert pool.starmap(mul, [[2, 3]]) == [6]


def test_map_async_callbacks_run_before_ready(pool):
    calls = []
    pool.map_async(int, ["1"], callback=calls.append, error_callback=calls.append).wait()
    assert calls == [[1]]
    pool.map_async(int, ["a"], callback=calls.append, error_callback=calls.append).wait()
    assert len(calls) == 2 and isinstance(calls[1], ValueError)


def test_callbacks_run_in_the_result_thread_and_may_submit(pool):
    seen = []
    nested = []

    def callback(value):
        seen.append((value, threading.current_thread() is threading.main_thread()))
        nested.append(pool.apply_async(sqr, (value,)))  # no pool lock is held here

    pool.apply_async(sqr, (3,), callback=callback).wait()
    assert seen == [(9, False)]
    assert nested[0].get(timeout=10) == 81


def test_a_callback_that_raises_is_reported_and_the_pool_goes_on(pool, capfd):
    def bad(value):
        raise RuntimeError("callback failed")

    result = pool.apply_async(sqr, (4,), callback=bad)
    assert result.get(timeout=10) == 16 and result.successful()
    assert pool.apply(sqr, (5,)) == 25
    err = capfd.readouterr().err
    assert "callback of a shmray.util.multiprocessing.Pool result" in err
    assert "RuntimeError: callback failed" in err


def test_map_unpicklable_argument_raises_not_hangs(pool):
    with pytest.raises(RuntimeError, match="cannot pickle"):
        pool.map(sqr, [Unpicklable()] * 10)
    assert pool.map(sqr, [2]) == [4]


def test_map_empty_and_chunksize(pool):
    assert pool.map_async(sqr, [], chunksize=1).get(timeout=10) == []
    calls = []
    pool.map_async(sqr, [], callback=calls.append).wait(10)
    assert calls == [[]]
    with pytest.raises(ValueError, match="Chunksize must be 1"):
        pool.map(sqr, [1], chunksize=0)
    with pytest.raises(TypeError, match="chunksize must be an int"):
        pool.map(sqr, [1], chunksize=1.5)


def test_map_handle_iterable_exception(pool):
    for _ in range(2):  # (and again: nothing is left broken)
        with pytest.raises(SayWhenError):
            pool.map(sqr, exception_throwing_generator(1, -1), 1)
    with pytest.raises(SayWhenError):
        pool.map(sqr, exception_throwing_generator(10, 3), 1)

    class SpecialIterable:
        def __iter__(self):
            return self

        def __next__(self):
            raise SayWhenError

        def __len__(self):
            return 1

    for _ in range(2):
        with pytest.raises(SayWhenError):
            pool.map(sqr, SpecialIterable(), 1)


def test_apply_async_timeout_ready_successful(pool, tmp_path):
    gate = str(tmp_path / "gate")
    result = pool.apply_async(wait_for, (gate, 7))
    assert not result.ready()
    with pytest.raises(ValueError, match="not ready"):
        result.successful()
    start = time.monotonic()
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0.1)
    assert 0.09 < time.monotonic() - start < 5
    assert TimeoutError is multiprocessing.TimeoutError
    open(gate, "w").close()
    assert result.get(timeout=30) == 7
    assert result.ready() and result.successful()


def test_function_errors_come_back_as_the_users_type_with_the_remote_traceback(pool):
    with pytest.raises(RuntimeError) as info:
        pool.apply(raise_123)
    exc = info.value
    assert type(exc) is RuntimeError and exc.args == (123,)
    assert isinstance(exc.__cause__, RemoteTraceback)
    assert "raise RuntimeError(123)  # some comment" in exc.__cause__.tb
    assert "_chunk.py" not in exc.__cause__.tb  # (the pool's own frames are left out)
    with pytest.raises(SayWhenError) as info:  # the iterable's own error is not remote
        pool.map(sqr, exception_throwing_generator(1, -1), 1)
    assert info.value.__cause__ is None


def test_async_error_callback(pool):
    got = []
    result = pool.apply_async(raising, error_callback=got.append)
    with pytest.raises(KeyError):
        result.get(timeout=10)
    assert isinstance(got[0], KeyError) and not result.successful()


def test_results_and_exceptions_that_cannot_travel(pool):
    for _ in range(3):
        got = []
        result = pool.apply_async(unpickleable_result, error_callback=got.append)
        with pytest.raises(MaybeEncodingError):
            result.get(timeout=10)
        assert isinstance(got[0], MaybeEncodingError) and got[0].exc and got[0].value
    with pytest.raises(MaybeEncodingError, match="NeedsTwoArgs"):
        pool.apply(raise_unpicklable_exception)
    assert pool.apply(sqr, (3,)) == 9


def test_map_does_not_fail_fast(pool, tmp_path):
    """An error is raised once every chunk has ended (nothing still runs for it)."""
    gate = str(tmp_path / "gate")
    result = pool.starmap_async(raise_if_zero, [(0, gate), (1, gate)], chunksize=1)
    result.wait(0.2)
    assert not result.ready()  # chunk 0 failed, chunk 1 still runs
    open(gate, "w").close()
    with pytest.raises(ValueError, match="zero"):
        result.get(timeout=30)


# -- imap --------------------------------------------------------------------------------

def test_imap(pool):
    assert list(pool.imap(sqr, list(range(10)))) == [x * x for x in range(10)]
    it = pool.imap(sqr, list(range(10)))
    for i in range(10):
        assert next(it) == i * i
    with pytest.raises(StopIteration):
        next(it)
    it = pool.imap(sqr, list(range(1000)), chunksize=100)
    assert [next(it) for _ in range(1000)] == [x * x for x in range(1000)]
    with pytest.raises(StopIteration):
        it.next()


def test_imap_unordered(pool):
    assert sorted(pool.imap_unordered(sqr, list(range(10)))) == [x * x for x in range(10)]
    assert sorted(pool.imap_unordered(sqr, range(1000), chunksize=100)) == \
        [x * x for x in range(1000)]


def test_imap_handle_iterable_exception(pool):
    for _ in range(2):
        it = pool.imap(sqr, exception_throwing_generator(1, -1), 1)
        with pytest.raises(SayWhenError):
            next(it)
    it = pool.imap(sqr, exception_throwing_generator(10, 3), 1)
    assert [next(it) for _ in range(3)] == [0, 1, 4]
    with pytest.raises(SayWhenError):
        next(it)
    with pytest.raises(StopIteration):  # the iterable ended there
        next(it)
    # Seen at the start of the problematic chunk's results.
    for chunksize, good in ((2, 6), (4, 4)):
        it = pool.imap(sqr, exception_throwing_generator(20, 7), chunksize)
        assert [next(it) for _ in range(good)] == [i * i for i in range(good)]
        with pytest.raises(SayWhenError):
            next(it)


def test_imap_unordered_handle_iterable_exception(pool):
    it = pool.imap_unordered(sqr, exception_throwing_generator(1, -1), 1)
    with pytest.raises(SayWhenError):
        next(it)
    for total, when, chunksize in ((10, 3, 1), (20, 7, 2)):
        it = pool.imap_unordered(sqr, exception_throwing_generator(total, when), chunksize)
        expected = [x * x for x in range(total)]
        with pytest.raises(SayWhenError):
            for _ in range(total):
                value = next(it)
                expected.remove(value)


def test_imap_reads_the_iterable_lazily_and_times_out(pool, tmp_path):
    gate = str(tmp_path / "gate")
    read = []

    def source():
        for i in range(1000):
            read.append(i)
            yield gate

    it = pool.imap(wait_for, source())
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=0.1)
    assert 0 < len(read) <= 10  # a few per worker, not the whole iterable
    open(gate, "w").close()
    assert sum(1 for _ in it) == 1000


def test_imap_with_function_errors_goes_on(pool):
    it = pool.imap(raise_if_zero, [1, 0, 2])
    assert next(it) == 1
    with pytest.raises(ValueError, match="zero"):
        next(it)
    assert next(it) == 2


def test_empty_iterables(pool):
    assert pool.map(sqr, []) == []
    assert list(pool.imap(sqr, [])) == []
    assert list(pool.imap_unordered(sqr, [])) == []
    assert pool.map_async(sqr, []).get(timeout=10) == []
    assert pool.starmap(mul, []) == []


# -- arguments at the API edge ------------------------------------------------------------

def test_bad_arguments_are_refused_where_given(ray, pool):
    with pytest.raises(ValueError, match="Processes in the pool must be >0"):
        Pool(0)
    with pytest.raises(ValueError, match="Processes in the pool must be >0"):
        Pool(-1)
    with pytest.raises(TypeError, match="processes must be an int"):
        Pool(1.5)
    with pytest.raises(ValueError, match="only 2 CPUs"):
        Pool(3)  # Ray's rule: at most the session's CPUs
    for value in [0, -1, 0.5, "12"]:
        with pytest.raises(ValueError, match="maxtasksperchild"):
            Pool(2, maxtasksperchild=value)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        Pool(2, initializer=5)
    with pytest.raises(TypeError, match="ray_remote_args must be a dict"):
        Pool(2, ray_remote_args=[("num_cpus", 1)])
    with pytest.raises(ValueError, match="num_cpuz"):
        Pool(2, ray_remote_args={"num_cpuz": 1})
    with pytest.raises(TypeError, match="func must be callable"):
        pool.map(5, [1])
    with pytest.raises(TypeError, match="callback must be callable"):
        pool.apply_async(sqr, (1,), callback=3)
    with pytest.raises(TypeError, match="both kwargs and kwds"):
        pool.apply(sqr, (), {"x": 1}, kwds={"x": 2})
    with pytest.raises(TypeError, match="args must be a tuple"):
        pool.apply(sqr, 5)
    with pytest.raises(NotImplementedError):
        pickle.dumps(pool)
    with pytest.warns(UserWarning, match="'context' argument"):
        Pool(2, context=multiprocessing.get_context("spawn")).terminate()


def test_processes_default_to_the_sessions_cpus(pool):
    assert "pool_size=2" in repr(pool) and "state=RUN" in repr(pool)


# -- lifecycle ----------------------------------------------------------------------------

def test_close_then_join_finishes_the_work(ray):
    p = Pool(2)
    results = [p.apply_async(sqr, (i,)) for i in range(20)]
    mapped = p.map_async(sqr, range(100), chunksize=3)
    with pytest.raises(ValueError, match="Pool is still running"):
        p.join()
    p.close()
    for call in (lambda: p.apply_async(sqr, (1,)), lambda: p.map(sqr, [1]),
                 lambda: p.imap(sqr, [1]), lambda: p.starmap(mul, [(1, 2)])):
        with pytest.raises(ValueError, match="Pool not running"):
            call()
    p.join()
    assert [r.get(timeout=0) for r in results] == [i * i for i in range(20)]
    assert mapped.get(timeout=0) == [i * i for i in range(100)]
    assert shmray.is_initialized()  # the pool ends nothing it did not start


def test_context_manager_terminates(ray):
    values = list(range(10))
    with Pool(2) as p:
        assert p.map_async(sqr, values).get(timeout=10) == [x * x for x in values]
    p.join()
    with pytest.raises(ValueError, match="Pool not running"):
        p.map_async(sqr, values)
    with pytest.raises(ValueError, match="Pool not running"):
        with p:
            pass


def test_terminate_during_work_stops_it(ray, tmp_path):
    gate = str(tmp_path / "never")
    p = Pool(2)
    result = p.map_async(wait_for, [gate] * 1000, chunksize=1)
    started = p.apply_async(sqr, (2,))
    start = time.monotonic()
    p.terminate()
    p.join()
    assert time.monotonic() - start < 10
    with pytest.raises(RayActorError, match="terminated"):
        result.get(timeout=10)
    with pytest.raises(RayActorError):
        started.get(timeout=10)
    with Pool(2) as again:  # the session's workers are there for the next pool
        assert again.map(sqr, [3]) == [9]


def test_terminate_from_a_callback(ray):
    p = Pool(2)
    ended = threading.Event()

    def stop(_):
        p.terminate()  # in the pool's own thread: no deadlock
        ended.set()

    p.apply_async(sqr, (1,), callback=stop)
    assert ended.wait(10)
    p.join()
    with pytest.raises(ValueError, match="Pool not running"):
        p.apply(sqr, (1,))


def test_unclosed_pool_warns_and_ends_when_collected(ray):
    p = Pool(2)
    thread = p._dispatcher.thread
    with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool"):
        del p
        gc.collect()
    thread.join(10)
    assert not thread.is_alive()


def test_release_task_refs(pool):
    objs = [CountedObject() for _ in range(10)]
    refs = [weakref.ref(o) for o in objs]
    results = pool.map(identity, objs)
    del objs, results
    gc.collect()
    assert {r() for r in refs} == {None}
    assert CountedObject.n_instances == 0


# -- workers: death, initializer, maxtasksperchild ------------------------------------

def test_a_worker_that_dies_fails_its_chunk_and_the_pool_goes_on(pool):
    with pytest.raises(WorkerCrashedError, match="3"):
        pool.map(die, [1])
    assert pool.map(sqr, range(4)) == [0, 1, 4, 9]


def test_initializer_runs_once_per_process(ray, tmp_path):
    with Pool(2, initializer=set_value, initargs=(42, str(tmp_path))) as p:
        assert "on actors" in repr(p)
        seen = p.map(read_value, range(40), chunksize=1)
        assert {value for value, _ in seen} == {42}
        pids = {pid for _, pid in seen}
        assert 1 <= len(pids) <= 2
        for pid in pids:  # one initializer call in each process that ran chunks
            with open(tmp_path / str(pid)) as f:
                assert f.read() == "init\n"
        # An actor that dies is replaced, initializer included.
        with pytest.raises(ActorDiedError):
            p.map(die, [1], chunksize=1)
        assert {value for value, _ in p.map(read_value, range(4), chunksize=1)} == {42}


def test_initializer_errors_are_raised_as_the_users_type(ray):
    with Pool(1, initializer=failing_initializer) as p:
        with pytest.raises(ValueError, match="the initializer failed") as info:
            p.map(sqr, [1, 2])
        assert isinstance(info.value.__cause__, RemoteTraceback)


def test_maxtasksperchild_replaces_the_workers(ray):
    p = Pool(2, maxtasksperchild=10)
    results = [p.apply_async(pid_of) for _ in range(60)]
    pids = [r.get(timeout=30) for r in results]
    # 60 calls, each one task, at most 10 per process: 6 processes or more.
    assert len(set(pids)) >= 6
    assert max(pids.count(pid) for pid in set(pids)) <= 10
    p.close()
    p.join()


def test_maxtasksperchild_early_close(ray):
    p = Pool(2, maxtasksperchild=1)
    results = [p.apply_async(sqr, (i,)) for i in range(6)]
    p.close()
    p.join()
    assert [r.get(timeout=0) for r in results] == [i * i for i in range(6)]


# -- large arrays: put once, mapped by the workers -----------------------------------

def test_large_array_arguments_are_put_once_and_mapped(pool):
    big = np.arange(1 << 17, dtype=np.float64)  # 1 MB
    shared = pool._dispatcher.shared
    before = shared.puts
    seen = pool.starmap(describe, [(big, i) for i in range(10)], chunksize=1)
    assert shared.puts - before == 1  # one put for every call that got it
    assert {kind for kind, _, _ in seen} == {"mmap.mmap"}  # a view of shared memory
    assert [value for _, value, _ in seen] == [float(i) for i in range(10)]
    kind, value, _ = pool.apply(describe, (big, 5))
    assert (kind, value) == ("mmap.mmap", 5.0)
    assert [v for _, v, _ in pool.map(describe, [big * 2, big * 3])] == [0.0, 0.0]
    small = np.arange(10)
    assert pool.map(describe, [small])[0][0] != "mmap.mmap"  # small ones travel inline


def test_refs_in_items_are_passed_as_they_are(pool):
    ref = shmray.put(5)
    got = pool.map(identity, [ref, ref])
    assert all(isinstance(r, shmray.ObjectRef) for r in got)
    assert shmray.get(got[0]) == 5


def test_many_small_apply_async_calls(pool):
    results = [pool.apply_async(mul, (i, 2)) for i in range(3000)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(3000)]
    # A batch's calls fail alone: by an exception, or by a result that cannot travel.
    calls = [pool.apply_async(raise_if_zero, (i % 3,)) if i % 5 else
             pool.apply_async(unpickleable_result) for i in range(300)]
    outcomes = []
    for r in calls:
        r.wait(30)
        outcomes.append(r.successful())
    assert outcomes == [i % 5 != 0 and i % 3 != 0 for i in range(300)]
    with pytest.raises(MaybeEncodingError):
        calls[0].get()
    calls = [pool.apply_async(identity, (Unpicklable() if i == 7 else i,)) for i in range(300)]
    for r in calls:
        r.wait(30)
    assert [r.successful() for r in calls] == [i != 7 for i in range(300)]
    with pytest.raises(RuntimeError, match="cannot pickle"):
        calls[7].get()


@shmray.remote
def pool_in_a_task(n):
    with Pool(1) as p:
        return p.map(sqr, range(n))


def test_a_pool_inside_a_task(pool):
    # The task's CPU is free while it waits: its pool's chunks get it.
    assert shmray.get(pool_in_a_task.remote(5), timeout=30) == [0, 1, 4, 9, 16]


# -- sessions of their own (last: they end the module's session) ----------------------

def test_the_pool_auto_inits_and_shuts_nothing_down(fresh):
    shmray.shutdown()
    assert not shmray.is_initialized()
    p = Pool(1)
    assert shmray.is_initialized()
    assert shmray.cluster_resources()["CPU"] == 1  # Ray's: a session of `processes` CPUs
    assert p.map(sqr, [1, 2]) == [1, 4]
    p.close()
    p.join()
    assert shmray.is_initialized()


def test_ray_address_local_starts_a_session_here(fresh):
    shmray.shutdown()
    with Pool(1, ray_address="local") as p:
        assert shmray.cluster_resources()["CPU"] == 1
        assert p.apply(sqr, (4,)) == 16


def test_local_mode(fresh):
    shmray.shutdown()
    shmray.init(local_mode=True)
    with Pool(2) as p:
        assert p.map(sqr, range(5)) == [0, 1, 4, 9, 16]
        assert p.apply(sqr, (3,)) == 9
        assert list(p.imap(sqr, range(3))) == [0, 1, 4]
