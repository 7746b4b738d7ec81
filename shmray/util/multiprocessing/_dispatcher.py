"""A pool's result-handling thread: it hands chunks to the slots as they have room,
collects the chunks that end, fills the jobs and runs their callbacks.

    caller ──inbox: job, CLOSE, TERMINATE──► dispatcher thread
      jobs, first come first served ──next_call()──► Call ──large arrays put once──►
      slots.submit ──► a task (or actor call) ──► shmray.wait ──► get ──►
      job.call_done (its callbacks run here) ──► the call's arrays released

Everything a pool tracks (jobs, running chunks, arrays put) belongs to this thread:
callers reach it through the inbox only, so no lock is held around user code (the
callbacks, the user's iterable, the pickling of arguments). The thread holds no
reference to the Pool object, which can therefore be collected (and then ends it).
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from multiprocessing.pool import MaybeEncodingError, RemoteTraceback

import shmray
from shmray.exceptions import RayActorError, RaySystemError, RayTaskError

from ._chunk import Chunk, Failure
from ._results import ApplyBatch, AsyncResult, exception_of
from ._shared_args import worth_lifting

# What callers post, beside jobs:
CLOSE, TERMINATE = "close the pool", "terminate the pool"
KEEP_ARRAYS, FORGET_ARRAYS = "keep the arrays put", "forget the arrays put when idle"
# While chunks run, the thread waits in shmray.wait and reads its inbox between waits:
# at most this long, while a slot has room for a job that may come in meanwhile...
POLL_WITH_ROOM = 0.001
# ... and this long while every slot is busy (only close or terminate can come).
POLL_FULL = 0.02
TERMINATED = "The pool was terminated (Pool.terminate()) before this task ended."
# apply_async calls waiting beyond the free slots go in batches, one task each, of
# about this many seconds of calls (by the calls' measured mean), at most this many:
APPLY_BATCH_SECONDS = 0.002
APPLY_BATCH_MAX = 256


class Dispatcher:
    def __init__(self, slots, shared):
        self.slots = slots            # TaskSlots or ActorSlots
        self.shared = shared          # SharedArgs
        self.inbox = queue.SimpleQueue()
        self._jobs = deque()          # jobs with chunks not handed out yet
        self._apply_seconds = None    # an apply_async call's mean duration in a worker
        self._closing = False
        self._keep_arrays = False     # (joblib: one Parallel call's arrays, put once)
        self._stopped = False         # the thread reads no more: nothing may be posted
        self.error = None             # what stopped the thread, if not close or terminate
        self._post_lock = threading.Lock()  # (post vs the last read of the inbox)
        self.thread = threading.Thread(target=self._main, name="shmray.util.Pool results",
                                       daemon=True)
        self.thread.start()

    # ----------------------------------------------------------- from other threads
    def post(self, message) -> bool:
        """Give the thread a job, CLOSE or TERMINATE; False once it has stopped."""
        with self._post_lock:
            if self._stopped:
                return False
            self.inbox.put(message)
            return True

    def abandon(self) -> None:
        """From a collected Pool's __del__: terminate, taking no lock (SimpleQueue.put
        may be called from __del__, even while this thread is inside post())."""
        self.inbox.put(TERMINATE)

    def terminate(self) -> None:
        self.post(TERMINATE)  # (nothing to do if the thread has stopped already)
        self.join()

    def join(self) -> None:
        if threading.current_thread() is not self.thread:  # (a callback ending its pool)
            self.thread.join()

    # ------------------------------------------------------------------ the thread
    def _main(self):
        error, closed = None, False
        try:
            closed = self._loop()
        except BaseException as e:  # the session ended under the pool, or a bug here:
            error = self.error = e  # every job still waited for raises it
        finally:
            with self._post_lock:
                self._stopped = True
            if not closed:
                self._end(error)

    def _loop(self) -> bool:
        """Until TERMINATE (False) or, once closed, the last chunk's end (True)."""
        slots = self.slots
        while True:
            idle = not slots.running and not self._jobs and not self._closing
            if self._read_inbox(block=idle):
                return False
            self._hand_out()
            if slots.running:
                self._collect()
            elif self._closing and not self._jobs:
                ending = slots.stop()
                if ending:  # join() returns once the pool's actors have exited
                    shmray.wait(ending, num_returns=len(ending))
                return True

    def _read_inbox(self, block: bool) -> bool:
        """Take what callers posted (waiting for it if `block`); True on TERMINATE."""
        while True:
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                if not block:
                    return False
                if not self._keep_arrays:  # idle: the caller may change them before
                    self.shared.forget_idle()  # its next call
                message = self.inbox.get()
            block = False
            if message is TERMINATE:
                return True
            if message is CLOSE:
                self._closing = True
            elif message is KEEP_ARRAYS or message is FORGET_ARRAYS:
                self._keep_arrays = message is KEEP_ARRAYS
            else:
                self._jobs.append(message)

    def _hand_out(self):
        jobs, slots = self._jobs, self.slots
        while jobs and slots.has_room():
            job = jobs[0]
            if type(job) is AsyncResult:
                self._submit(self._take_applies().call())
                continue
            call = job.next_call()  # (imap: the user's iterable is read here)
            if call is None:
                jobs.popleft()
            elif call.error is not None:  # the iterable raised: that chunk's result
                job.call_done(call.index, False, call.error)
            else:
                self._submit(call)

    def _take_applies(self) -> ApplyBatch:
        """The apply_async calls at the head of the queue to run as one task: one alone
        while there are free slots for them all (or before their duration is known),
        else a share of them sized to last about APPLY_BATCH_SECONDS."""
        jobs, size = self._jobs, 1
        if self._apply_seconds is not None and self.slots.batch_applies:
            room = self.slots.room()
            limit = room * APPLY_BATCH_MAX
            waiting = 0
            for job in jobs:
                if type(job) is not AsyncResult or waiting >= limit:
                    break
                waiting += 1
            by_time = int(APPLY_BATCH_SECONDS / max(self._apply_seconds, 1e-7))
            size = max(1, min(APPLY_BATCH_MAX, by_time, -(-waiting // room)))
        results = [jobs.popleft()]
        while len(results) < size and jobs and type(jobs[0]) is AsyncResult:
            results.append(jobs.popleft())
        return ApplyBatch(results)

    def _submit(self, call):
        items = given = call.items
        refs, call.items = (), None  # (the chunk holds them now)
        try:
            if worth_lifting(call.mode, items[0], self.shared.min_bytes):
                items, refs, call.shared_keys = self.shared.lift(call.mode, items)
            self.slots.submit(call, Chunk(call.mode, items, bool(refs)), refs)
        except RaySystemError:
            raise
        except Exception as e:  # an argument that cannot be pickled, the store full
            self.shared.release(call.shared_keys)
            if type(call.job) is ApplyBatch and len(call.job.results) > 1:
                for alone in call.job.split(given):  # only the culprit's call fails
                    self._submit(alone.call())
                return
            call.job.call_done(call.index, False, e)

    def _collect(self):
        running = list(self.slots.running)
        poll = POLL_WITH_ROOM if self.slots.has_room() else POLL_FULL
        ready, _ = shmray.wait(running, num_returns=1, timeout=poll)
        if ready and len(running) > 1:  # (and every other one that has ended too)
            ready, _ = shmray.wait(running, num_returns=len(running), timeout=0)
        for ref in ready:
            self._call_ended(ref)

    def _call_ended(self, ref):
        error = None
        try:
            value = shmray.get(ref)
        except RaySystemError:
            raise
        except Exception as e:
            error = e
        call = self.slots.finished(ref, error)
        if error is not None:
            ok, value = False, _pool_error(error, call)
        elif type(value) is Failure:
            ok, value = False, exception_of(value)
        else:
            ok = True
        self.shared.release(call.shared_keys)
        call.job.call_done(call.index, ok, value)
        if type(call.job) is ApplyBatch and call.job.seconds is not None:
            mean = call.job.seconds / len(call.job.results)
            old = self._apply_seconds
            self._apply_seconds = mean if old is None else 0.8 * old + 0.2 * mean

    def _end(self, error):
        """The thread's last act on terminate (or `error`): the workers stopped, every
        job not ended fails (its error_callback run here), the arrays let go."""
        try:
            self.slots.kill()
        except Exception:
            pass  # (the session is gone, and its workers with it)
        jobs = dict.fromkeys(call.job for call in self.slots.running.values())
        jobs.update(dict.fromkeys(self._jobs))
        while True:  # (and jobs posted since the last read)
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                break
            if not isinstance(message, str):  # (the messages are texts; jobs are not)
                jobs[message] = None
        self.slots.running.clear()
        self._jobs.clear()
        self.shared.clear()
        reason = error if isinstance(error, Exception) else RayActorError(error_msg=TERMINATED)
        for job in jobs:
            job.fail(reason)


def _pool_error(error: Exception, call) -> Exception:
    """What a chunk's caller sees for a chunk that could not run to its end."""
    if isinstance(error, RayActorError) and error.actor_init_failed:
        # The initializer raised: its own exception, as a function's would be.
        cause = getattr(error, "cause", None)
        if isinstance(cause, RayTaskError) and isinstance(cause.cause, BaseException):
            exc = cause.cause
            exc.__cause__ = RemoteTraceback(cause.traceback_str)
            return exc
        return error
    if isinstance(error, RayTaskError) and isinstance(error.cause, TypeError):
        # The function returned, but the chunk's results could not be pickled to come
        # back (the stdlib's MaybeEncodingError; an apply's are checked one by one in
        # the worker, see _chunk).
        name = getattr(call.func, "__qualname__", repr(call.func))
        return MaybeEncodingError(error.cause, f"the results of a chunk of {name}")
    return error
