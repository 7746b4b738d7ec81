"""The actor workloads' code (W10-W13): the class every engine runs as an actor, the caller
tasks of W12, and multiprocessing's nearest thing to an actor.

Like _tasks, this module imports neither shmray nor Ray at the top: Ray's workers import it by
name to find the actor class and the caller tasks (shmray's are forked with it loaded), and a
peer's process must not load shmray. The caller tasks are handed the engine's module name and
import it in the worker, as _tasks.timed_get does.

multiprocessing has no actors. What a user writes instead is a process of its own that owns
an instance and runs the method calls it reads from a pipe, in order, writing each result back
on another: ManualActor. It stands in the Pool column of W10-W13.
"""
from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import statistics
import threading
import time
from multiprocessing import shared_memory

import numpy as np

from _tasks import attach


class Echo:
    """The actor of W10-W13. Its methods do next to nothing: what is measured is the call."""

    def f(self):
        return None

    def consume(self, array):
        """W13: read one element of the array it was handed, and say what holds its bytes."""
        return backing(array), float(array[0, 0])

    def consume_shm(self, name, shape, dtype):
        """W13, the pool peers' way: attach a shared-memory segment by name, view it as an
        array, read one element, detach."""
        shm = attach(name)
        array = np.ndarray(shape, dtype, buffer=shm.buf)
        result = self.consume(array)
        del array  # the view first: close() refuses while a view exports the buffer
        shm.close()
        return result


def consume(array):
    """W13 as a task (the 'tasks' column): the same body as Echo.consume."""
    return backing(array), float(array[0, 0])


def backing(array) -> str:
    """What holds an array's bytes: the type of the last object of its .base chain, memoryviews
    followed to the object they view. 'mmap.mmap': a mapping of shared memory (shmray, a
    multiprocessing SharedMemory); Ray's plasma store shows as a buffer type of ray._raylet; a
    copy shows as 'builtins.bytes' (unpickled) or 'numpy.ndarray' (an array owning its memory)."""
    holder = array
    while True:
        inner = holder.obj if isinstance(holder, memoryview) else getattr(holder, "base", None)
        if inner is None:
            return f"{type(holder).__module__}.{type(holder).__qualname__}"
        holder = inner


MAPPED = "mmap.mmap"   # what shmray's and SharedMemory's arrays are views of


def is_a_copy(kind: str) -> bool:
    """Whether backing() says the array's bytes were copied into this process's own memory."""
    return kind in ("builtins.bytes", "builtins.bytearray", "numpy.ndarray")


# -- W12's callers: a task that is handed an actor handle and calls it --------------------

def sync_calls(module_name, handle, n):
    """n calls of handle.f, each waited for before the next (get(h.f.remote()) in a loop)."""
    get = importlib.import_module(module_name).get
    f = handle.f
    for _ in range(n):
        get(f.remote())
    return n


def batch_calls(module_name, handle, n):
    """n calls of handle.f submitted, then every result fetched in one get."""
    engine = importlib.import_module(module_name)
    f = handle.f
    return len(engine.get([f.remote() for _ in range(n)]))


# -- timing two batches in alternate rounds ------------------------------------------------

def time_batches_alternating(benchmark, batch, other, n, warm_up, rounds):
    """_tasks.time_batches of batch(n), and before each of its rounds, outside its clock, one
    other(n) timed here. On this VM the same batch moves by tens of percent from one second to
    the next, and a ratio of figures taken in alternate rounds is less exposed to that than one
    of figures from two tests in a row. Returns the median seconds of other(n)."""
    other(warm_up)
    seconds = []

    def timed_other():
        start = time.perf_counter()
        other(n)
        seconds.append(time.perf_counter() - start)

    batch(warm_up)
    benchmark.pedantic(batch, (n,), setup=timed_other, rounds=rounds, iterations=1)
    return statistics.median(seconds)


# -- shmray and Ray: actors started for one test, and gone after it -----------------------

@contextlib.contextmanager
def running_actors(engine, count):
    """`count` Echo actors on a running RayLike engine, each ready (a first call returned, so
    their processes are up and the class is shipped before any clock starts). Killed at the
    end: an actor left behind would hold a process into the next test (and W8's count)."""
    handles = [engine.actor(Echo) for _ in range(count)]
    try:
        engine.get([h.f.remote() for h in handles])
        yield handles
    finally:
        for h in handles:
            engine.kill(h)


# -- multiprocessing: ManualActor ----------------------------------------------------------

def _serve(instance, requests, replies):
    """The manual actor's process: run each call read from `requests`, in order, and write its
    outcome to `replies`, until told to stop (None). An exception is sent back, not raised
    here: the caller would otherwise wait for its reply for ever."""
    while True:
        call = requests.recv()
        if call is None:
            return
        method, args = call
        try:
            outcome = True, getattr(instance, method)(*args)
        except Exception as e:  # noqa: BLE001 (the caller raises it)
            outcome = False, e
        replies.send(outcome)


class ManualActor:
    """A process of its own holding `instance`, called through two one-way pipes. Forked (the
    instance is never pickled: a CallLoop holds another ManualActor's pipe ends). Results come
    back in call order, as an actor's do."""

    def __init__(self, instance):
        ctx = multiprocessing.get_context("fork")
        requests_in, self._requests = ctx.Pipe(duplex=False)
        self._replies, replies_out = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_serve, args=(instance, requests_in, replies_out),
                                   daemon=True)
        self.process.start()
        requests_in.close()   # the actor's ends, now in its process only
        replies_out.close()

    def send(self, method, *args):
        self._requests.send((method, args))

    def recv(self):
        """The next call's result (an exception it raised is raised here)."""
        return _result(self._replies.recv())

    def call(self, method, *args):
        """One synchronous call."""
        self.send(method, *args)
        return self.recv()

    def call_all(self, calls):
        """Every (method, args) of `calls` sent, then every result read (in order). The
        requests go out from a thread while this one reads: a pipe holds 64 KB, so an actor
        whose replies are not being read stops, and a caller writing all its requests first
        would then wait for it for ever (multiprocessing.Queue's feeder thread does the same)."""
        sender = threading.Thread(target=self._send_all, args=(calls,))
        sender.start()
        recv = self.recv
        results = [recv() for _ in calls]
        sender.join()
        return results

    def _send_all(self, calls):
        send = self._requests.send
        for call in calls:
            send(call)

    def stop(self):
        try:
            self._requests.send(None)
        except OSError:   # (gone already)
            pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._requests.close()
        self._replies.close()


def _result(outcome):
    ok, value = outcome
    if not ok:
        raise value
    return value


class CallLoop:
    """W12's caller, the multiprocessing way: a manual actor of its own whose methods call
    another manual actor directly (its pipe ends are inherited when it forks)."""

    def __init__(self, target: ManualActor):
        self.target = target

    def sync_calls(self, n):
        call = self.target.call
        for _ in range(n):
            call("f")
        return n

    def batch_calls(self, n):
        return len(self.target.call_all([("f", ())] * n))


@contextlib.contextmanager
def manual_actors(instances):
    """A ManualActor for each of `instances`, stopped (and its process joined) at the end."""
    actors = []
    try:
        for instance in instances:
            actors.append(ManualActor(instance))
        yield actors
    finally:
        for a in actors:
            a.stop()


@contextlib.contextmanager
def shared_array(array):
    """The pool peers' stored array for W13: a SharedMemory segment holding a copy; its name,
    shape and dtype are what a call carries. Unlinked at the end."""
    shm = shared_memory.SharedMemory(create=True, size=array.nbytes)
    try:
        np.ndarray(array.shape, array.dtype, buffer=shm.buf)[:] = array  # view dropped at once
        yield shm.name, array.shape, array.dtype.str
    finally:
        shm.close()
        shm.unlink()
