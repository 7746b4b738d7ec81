"""What a pool's caller holds: AsyncResult (apply_async), MapResult (map_async,
starmap_async), IMapIterator and IMapUnorderedIterator (imap, imap_unordered).

    pool method ──► a job ──next_call()──► Call records, one per chunk (dispatcher thread)
    dispatcher thread ──call_done(index, ok, value)──► the job: callbacks, then ready
    caller ──get(timeout) / next(timeout)──► waits on the job

A job is filled only by its pool's result-handling thread; its callbacks run there,
before the job is ready (so `wait()` returning means the callback has run, as in the
stdlib). The job's condition guards what callers read; no callback runs under it.
"""
from __future__ import annotations

import collections
import itertools
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing import TimeoutError
from multiprocessing.pool import MaybeEncodingError, RemoteTraceback
from typing import Any, Callable, Optional

from ._chunk import APPLY, Failure


@dataclass(eq=False)
class Call:
    """One chunk of a job: one task (or actor call) running `func` over `items`. Its job
    has next_call() (map and imap: the dispatcher takes chunks from it), call_done()
    and fail()."""
    job: Any
    index: int                     # the chunk's position in its job
    func: Optional[Callable]       # None for apply (each item has its function)
    mode: int                      # _chunk.MAP, STARMAP or APPLY
    items: Optional[list]          # None when `error` is set
    error: Optional[BaseException] = None  # the job's iterable raised before this chunk
    shared_keys: tuple = ()        # (set by the dispatcher) the arrays it put for this call
    slot: Any = None               # (set by the slots) where it runs


def exception_of(failure: Failure) -> BaseException:
    """The exception a Failure stands for, its cause the worker's traceback (as the
    stdlib raises a worker's exception)."""
    if failure.error is None:  # it could not travel: the stdlib's MaybeEncodingError
        return MaybeEncodingError(failure.unpicklable, failure.description)
    failure.error.__cause__ = RemoteTraceback(failure.traceback)
    return failure.error


def _report_callback_error(kind: str):
    """A callback that raised: said on stderr; the pool's thread and the result go on."""
    print(f"Exception in the {kind} of a shmray.util.multiprocessing.Pool result:",
          file=sys.stderr)
    traceback.print_exc()


class _Job:
    """What every pool result has: readiness, success, the value or the first error."""

    def __init__(self, callback=None, error_callback=None):
        self._callback = callback
        self._error_callback = error_callback
        self._event = threading.Event()
        self._success = True
        self._value = None

    # ---------------------------------------------------------------- the caller's
    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: Optional[float] = None) -> None:
        self._event.wait(timeout)

    def get(self, timeout: Optional[float] = None):
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError
        if self._success:
            return self._value
        raise self._value

    # ------------------------------------------------------- the dispatcher thread's
    def fail(self, error: BaseException) -> None:
        """The pool ended (terminate, session gone) before this job did."""
        self._finish(False, error)

    def _finish(self, success: bool, value) -> None:
        if self._event.is_set():
            return
        self._success, self._value = success, value
        callback = self._callback if success else self._error_callback
        self._callback = self._error_callback = None
        if callback is not None:
            try:
                callback(value)
            except Exception:
                _report_callback_error("callback" if success else "error_callback")
        self._event.set()


class AsyncResult(_Job):
    """apply_async's result: one call, which the dispatcher runs in an ApplyBatch."""

    def __init__(self, func, args: tuple, kwargs: dict, callback=None, error_callback=None):
        super().__init__(callback, error_callback)
        self.call_item = (func, args, kwargs)


class ApplyBatch:
    """apply_async calls waiting together, run as one chunk (one task): each call's
    outcome goes to its own AsyncResult."""

    def __init__(self, results: list):
        self.results = results
        self.seconds = None  # what the calls took in the worker, once ended

    def call(self) -> Call:
        items = [r.call_item for r in self.results]
        for r in self.results:
            r.call_item = None  # (the chunk holds them now)
        return Call(self, 0, None, APPLY, items)

    def split(self, items: list) -> list:
        """One batch per call, given back its item (a batch that could not be handed
        out: each call goes alone, and only a call that cannot fails)."""
        for r, item in zip(self.results, items):
            r.call_item = item
        return [ApplyBatch([r]) for r in self.results]

    def call_done(self, index, ok, value):
        if not ok:  # the chunk could not run (its worker died, its arguments unpicklable)
            for r in self.results:
                r._finish(False, value)
            return
        self.seconds, outcomes = value
        for r, (ok, v) in zip(self.results, outcomes):
            r._finish(ok, v if ok else exception_of(v))

    def fail(self, error):
        for r in self.results:
            r._finish(False, error)


class MapResult(AsyncResult):
    """map_async's and starmap_async's result: the items in chunks, results in order.
    Ready once every chunk has ended, failed or not (the stdlib's rule: no fail-fast,
    so that nothing still runs for a result already raised)."""

    def __init__(self, func, mode: int, items, chunksize: int, callback=None,
                 error_callback=None, error: BaseException = None):
        _Job.__init__(self, callback, error_callback)  # (no call item of its own)
        self._func, self._mode = func, mode
        self._items = items
        self._chunksize = chunksize
        self._values = [None] * len(items)
        self._chunks = -(-len(items) // chunksize)
        self._handed_out = 0
        self._left = self._chunks
        self._error = error  # the iterable raised while listed: the only chunk is that error
        if error is not None:
            self._chunks = self._left = 1

    def next_call(self):
        i = self._handed_out
        if i >= self._chunks:
            if self._chunks == 0:  # nothing to run: ready now (in this thread, with callback)
                self._finish(True, self._values)
            return None
        self._handed_out += 1
        if self._error is not None:
            return Call(self, 0, self._func, self._mode, None, error=self._error)
        start = i * self._chunksize
        return Call(self, i, self._func, self._mode, self._items[start:start + self._chunksize])

    def call_done(self, index, ok, value):
        if ok:
            start = index * self._chunksize
            self._values[start:start + len(value)] = value
        elif self._success:
            self._success, self._error = False, value  # the first error is the one raised
        self._left -= 1
        if self._left == 0:
            self._items = self._func = None  # (the arguments are not kept past the end)
            self._finish(self._success, self._values if self._success else self._error)


class IMapIterator:
    """imap's iterator: the iterable is read a chunk at a time as workers free up;
    results come back in the iterable's order. An error (the function's, or the
    iterable's own) is raised where its chunk's results would be, and the iterator
    goes on with the next chunk."""

    def __init__(self, func, mode: int, iterable, chunksize: int):
        self._func, self._mode = func, mode
        self._source = iter(iterable)
        self._chunksize = chunksize
        self._handed_out = 0           # (the dispatcher thread's alone)
        self._cond = threading.Condition(threading.Lock())
        self._total = None             # chunks, once the iterable is exhausted
        self._ended = self._new_store()  # chunks ended and not yet consumed
        self._pending = collections.deque()  # results of the chunk being consumed
        self._consumed = 0             # chunks consumed

    def __iter__(self):
        return self

    # ---------------------------------------------------------------- the caller's
    def next(self, timeout: Optional[float] = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._pending:
                    return self._pending.popleft()
                chunk = self._take()
                if chunk is not None:
                    ok, value = chunk
                    self._consumed += 1
                    if not ok:
                        raise value
                    self._pending.extend(value)
                    continue
                if self._total is not None and self._consumed >= self._total:
                    raise StopIteration
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                self._cond.wait(remaining)

    __next__ = next

    # ------------------------------------------------------- the dispatcher thread's
    def next_call(self) -> Optional[Call]:
        if self._source is None:
            return None
        index = self._handed_out
        try:  # the user's iterator: read here, under no lock
            items = list(itertools.islice(self._source, self._chunksize))
        except Exception as e:
            self._end_source(index + 1)
            return Call(self, index, self._func, self._mode, None, error=e)
        if not items:
            self._end_source(index)
            return None
        self._handed_out += 1
        return Call(self, index, self._func, self._mode, items)

    def _end_source(self, total: int):
        self._source = None
        self._handed_out = total
        with self._cond:
            self._total = total
            self._cond.notify_all()

    def call_done(self, index: int, ok: bool, value) -> None:
        with self._cond:
            self._store(index, (ok, value))
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """The pool ended first: every chunk not yet ended raises `error`, in its place."""
        self._source = None
        with self._cond:
            if self._total is None:
                self._total = self._handed_out
            for index in self._not_ended(self._total):
                self._store(index, (False, error))
            self._cond.notify_all()

    # ---------------------------------- the order of results (under the condition)
    @staticmethod
    def _new_store():
        return {}  # chunk index -> (ok, value)

    def _store(self, index, outcome):
        self._ended[index] = outcome

    def _not_ended(self, total: int) -> list:
        return [i for i in range(self._consumed, total) if i not in self._ended]

    def _take(self):
        """The next chunk in the iterable's order, if it has ended."""
        return self._ended.pop(self._consumed, None)


class IMapUnorderedIterator(IMapIterator):
    """imap_unordered's iterator: the chunks' results in the order they end."""

    @staticmethod
    def _new_store():
        return collections.deque()  # (index, (ok, value)) in the order chunks ended

    def _store(self, index, outcome):
        self._ended.append((index, outcome))

    def _not_ended(self, total: int) -> list:
        # (which ones does not matter here: only how many)
        return [None] * (total - self._consumed - len(self._ended))

    def _take(self):
        return self._ended.popleft()[1] if self._ended else None
