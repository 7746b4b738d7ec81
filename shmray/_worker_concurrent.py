"""The calls of a threaded or async actor (see _worker_actor): they run on other threads
than the main one, or on an event loop.

    threaded (max_concurrency > 1) ─► ThreadedCalls: a pool of that many threads; the
                                      main thread reads the ring and hands calls over
    async (any `async def` method)  ─► AsyncCalls: one event loop thread, at most
                                       max_concurrency calls at once; a cancel cancels
                                       the call's asyncio task
    a call's get ─► ConcurrentRuntime._rpc: the thread reading the ring reads its reply
                    (itself, if it is that thread)
    `await ref`   ─► a thread of its own gets it (AWAIT_THREADS at once)

An async actor's ring is read by its event loop thread, once the creation has run on
the main thread: the loop waits on the ring (RingSelector) rather than in epoll, so a
call wakes the thread that runs it, and nothing else. While a call has registered
file descriptors of its own (asyncio's sockets, pipes...), the loop waits in epoll and
the main thread reads the ring for it, as it did before the creation.

Imported only by such actors: asyncio and thread pools cost memory and start-up.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import selectors
import threading
import time
from collections import deque

from . import _ring, _worker_generators
from ._crecords import pack_done
from ._object_ref import _hooks
from ._protocol import REPLY, done_record
from ._worker_runtime import WorkerRuntime
from ._worker_actor import RingHandedOver
from ._worker_tasks import _execute, call_arguments, cancelled, failed, pack_results

AWAIT_THREADS = 64  # refs awaited at once by an actor's calls (more wait their turn)
MAIN, LOOP = "main", "loop"  # which thread of an async actor reads its ring
IDLE_LOOK = 1.0  # seconds a reader waits on the ring at most (serve()'s own): then it
                 # tells the driver of the refs dropped meanwhile (a garbage collection)


def start(rt, host, max_concurrency: int, is_async: bool):
    """Make `rt` the runtime of a concurrent actor; returns its calls' executor."""
    executor = AsyncCalls(rt, max_concurrency) if is_async else ThreadedCalls(rt, max_concurrency)
    # The running call's identity moves from plain attributes to context variables (a
    # class of its own, so tasks pay nothing for it).
    rt.__class__ = ConcurrentRuntime
    rt.ring_reader = threading.main_thread()  # (an async actor's loop, after the creation)
    rt._receivers[REPLY] = rt._on_reply  # (bound when it was a WorkerRuntime)
    rt.run_one = host.run_concurrent
    getters = concurrent.futures.ThreadPoolExecutor(AWAIT_THREADS,
                                                    thread_name_prefix="shmray-await")
    _hooks.future = lambda ref: getters.submit(lambda: rt.get([ref], None)[0])
    return executor


class ConcurrentRuntime(WorkerRuntime):
    """A worker whose actor runs calls on other threads (or in asyncio tasks): what
    identifies the running call is per context, and a call's get waits for its reply
    while the main thread alone reads the ring."""

    _name = contextvars.ContextVar("shmray_call_name", default=None)
    _task = contextvars.ContextVar("shmray_call_task", default=None)
    _lent = contextvars.ContextVar("shmray_call_lent", default=None)
    _request = contextvars.ContextVar("shmray_call_request", default=())
    _replied = threading.Condition()

    current_name = property(lambda self: self._name.get(), lambda self, v: self._name.set(v))
    current_task_id = property(lambda self: self._task.get(),
                               lambda self, v: self._task.set(v))
    lent = property(lambda self: self._lent.get(), lambda self, v: self._lent.set(v))
    current_request = property(lambda self: self._request.get(),
                               lambda self, v: self._request.set(v))

    def _rpc(self, request):
        if threading.current_thread() is self.ring_reader:
            return super()._rpc(request)  # it reads the ring itself meanwhile
        req_id = next(self._req_ids)
        self._waiting.add(req_id)
        try:
            self.send(request(req_id))
            with self._replied:
                while req_id not in self._replies:
                    self._replied.wait()
                return self._replies.pop(req_id)
        finally:
            self._waiting.discard(req_id)

    def _on_reply(self, blocked, kind, req_id, payload):
        with self._replied:
            if req_id in self._waiting:
                self._replies[req_id] = payload
                self._replied.notify_all()
        return False


def _enter(rt, task):
    """A call (a Task record's fields) starts in this thread or asyncio task: its
    identity set for the API, the worker's status words showing it (the latest of those
    running). Returns its function, its name and its start (ns)."""
    task_id, fn_id, _, _, _, lent, request = task[:7]
    fn, name = rt.fns[fn_id]
    rt.current_name, rt.current_task_id, rt.lent = name, task_id, lent
    rt.current_request = request
    start = time.monotonic_ns()
    with rt.status_lock:
        rt.status.begin(task_id, fn_id, start)
    return fn, name, start


def _send_done(rt, task_id, fn_id, start, attempt, result):
    outcome, inner, gpu, error, retryable = result
    end = time.monotonic_ns()
    with rt.status_lock:
        rt.status.end(task_id, fn_id, start, end, attempt, error)
    # A small inline result, nothing else to say: the compact form (as run_task sends;
    # the driver handles it in C when it is the first call in line, else in Python)
    data = pack_done(task_id, outcome, start, end, inner, gpu, retryable,
                     rt.results.max_message)
    rt.send(data if data is not None else _ring.encode(
        done_record(task_id, outcome, start, end, inner, gpu, retryable), rt.results,
        rt.spill_prefix))


class ThreadedCalls:
    """A threaded actor's calls: up to max_concurrency at once, on a thread pool."""

    def __init__(self, rt, max_concurrency):
        self.rt = rt
        rt.status_lock = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_concurrency,
                                                          thread_name_prefix="shmray-actor")

    def submit(self, task):
        self.pool.submit(self._run, task)

    def created(self):
        pass  # (the main thread goes on reading the ring)

    def cancel_listed(self):
        pass  # a running call of a threaded actor is not interrupted (as in Ray)

    def _run(self, task):
        rt = self.rt
        (task_id, fn_id, num_returns, args_stored, dep_values, *_, attempt, retry_exceptions,
         backpressure) = task
        fn, name, start = _enter(rt, task)
        try:
            result = _execute(rt, fn, name, task_id, num_returns, args_stored, dep_values,
                              retry_exceptions, backpressure)
        except SystemExit as e:  # sys.exit() in a call: the actor ends on purpose
            rt.actor_host.exit(f"sys.exit({e.code!r}) in {name}")
        except BaseException as e:  # (a KeyboardInterrupt not from a cancel, a user's
            result = failed(name, e, retry_exceptions)  # BaseException): this call's error
        _send_done(rt, task_id, fn_id, start, attempt, result)


class AsyncCalls:
    """An async actor's calls: asyncio tasks on one event loop thread, at most
    max_concurrency running at once; a cancel cancels the call's asyncio task.

    Its ring is read by the main thread until the creation has run (MAIN), then by
    the loop thread, in the loop's waits (LOOP: see wait), and by the main thread
    again while the loop has file descriptors of its own to wait on (see standby).
    Every call starts in the order it came: the main thread hands its calls over in
    `submitted`, the loop thread keeps those it reads in the runtime's backlog, and
    `start_pending` starts the first before the second, each in order."""

    def __init__(self, rt, max_concurrency):
        self.rt = rt
        rt.status_lock = threading.Lock()
        self.ring = rt._tasks
        self.spin = rt.spin
        self.submitted = deque()    # calls the main thread read, not started yet
        self.mode = MAIN
        self.state = threading.Condition()  # mode changes, main_reading, ended
        self.handed_over = False    # the creation has run (see created)
        self.main_reading = False   # the main thread is in its reading loop (standby)
        self.ended = False          # an Exit came: the process ends
        self.seen = 0               # the ring's wake count when the loop last looked
        self.selector = RingSelector(self)
        self.loop = ActorLoop(self.ring, self.selector)
        self.own_fds = len(self.selector.get_map())  # (the loop's wake-up pipe)
        self.limit = asyncio.Semaphore(max_concurrency)
        self.running = {}  # task id -> asyncio.Task (loop thread only)
        self.thread = threading.Thread(target=self.loop.run_forever, name="shmray-actor-loop",
                                       daemon=True)
        self.thread.start()

    def submit(self, task):
        """(main thread) A call it read from the ring: the loop starts it."""
        self.submitted.append(task)
        self.loop.call_soon_threadsafe(self.start_pending)

    def start_pending(self):
        """(loop thread) Start the calls handed over, then, in LOOP, those it read (in
        MAIN the main thread owns the backlog: it hands its calls over in order)."""
        for calls in (self.submitted, self.rt._backlog if self.mode is LOOP else ()):
            while calls:
                task = calls.popleft()
                self.running[task[0]] = self.loop.create_task(self._run(task))

    def created(self):
        """(main thread) The creation has run: the loop thread reads the ring from now
        on, the calls the main thread read first; the main thread stands by."""
        backlog = self.rt._backlog
        while backlog:
            self.submit(backlog.popleft())
        with self.state:
            self.seen = self.ring.wake_count
            self.handed_over = True
            self.mode = LOOP
            self.rt.ring_reader = self.thread
        self.loop.call_soon_threadsafe(self.start_pending)  # (wakes it: it reads from now on)
        raise RingHandedOver(self.standby)

    def cancel_listed(self):
        """(signal handler, main thread) A cancel came: the listed calls' tasks end."""
        self.loop.call_soon_threadsafe(self._cancel_listed)

    def _cancel_listed(self):
        rt = self.rt
        for task_id, t in list(self.running.items()):
            if rt.is_cancelled(task_id):
                t.cancel()

    # ------------------------------------------------ who reads the ring
    def wait(self, select, timeout):
        """(loop thread) The event loop's wait, its selector's `select` (epoll's): in
        LOOP, for the messages that come (calls started, replies and functions taken)
        or a callback from another thread (ActorLoop interrupts the ring's wait), up to
        `timeout`; epoll is asked only when something wrote to the loop's wake-up pipe,
        its one file descriptor. A loop with more waits in epoll, the main thread
        reading the ring for it (MAIN), until it has none again."""
        foreign = len(self.selector.get_map()) > self.own_fds
        if self.mode is LOOP and foreign:
            self._give_ring_to_main()
        elif self.mode is MAIN and self.handed_over and not foreign:
            self._take_ring_from_main()
        if self.mode is MAIN or self.ended:
            return select(timeout)
        self._read(timeout)
        if self.loop.pipe_written:
            self.loop.pipe_written = False
            return select(0)
        return []

    def _read(self, timeout):
        """(loop thread, LOOP) Take the messages in the ring, waiting up to `timeout`
        for the first if no call is to start; start the calls they bring."""
        ring, rt = self.ring, self.rt
        wait = 0 if self.submitted or rt._backlog else timeout
        if wait != 0:  # (before it may sleep, as serve() does)
            wait = IDLE_LOOK if wait is None else min(wait, IDLE_LOOK)
            if rt._created or rt._dropped or rt._escaped:
                rt.send_ref_changes()
        while not self.ended:
            data = ring.pop(timeout=wait, spin=self.spin if wait != 0 else 0.0, since=self.seen)
            if data is None:
                break
            if rt.receive(_ring.decode(data), blocked=False):  # an Exit
                self._end()
            wait = 0
        # A callback queued from now on moves the count: the next wait ends at once.
        self.seen = ring.wake_count
        self.start_pending()

    def _give_ring_to_main(self):
        """(loop thread) The loop must wait in epoll: the main thread reads the ring."""
        self.start_pending()  # (what it read goes first)
        with self.state:
            self.mode = MAIN
            self.rt.ring_reader = threading.main_thread()
            self.state.notify_all()

    def _take_ring_from_main(self):
        """(loop thread) Back to LOOP, once the main thread has stopped reading."""
        with self.state:
            self.mode = LOOP
            self.ring.interrupt()  # (the main thread's wait ends)
            while self.main_reading:
                self.state.wait()
            self.rt.ring_reader = self.thread
            self.seen = self.ring.wake_count

    def standby(self):
        """(main thread, after the creation) Wait for the actor's end (an Exit), reading
        the ring while the loop has file descriptors of its own (MAIN) as serve() does,
        its calls handed to the loop. Signals still come to this thread (a cancel)."""
        rt, ring = self.rt, self.ring
        while True:
            with self.state:
                while self.mode is LOOP and not self.ended:
                    self.state.wait()
                if self.ended:
                    return
                self.main_reading = True
                seen = ring.wake_count
            try:
                while self.mode is MAIN:
                    if rt._created or rt._dropped or rt._escaped:
                        rt.send_ref_changes()
                    data = ring.pop(timeout=IDLE_LOOK, spin=0.0, since=seen)
                    seen = ring.wake_count
                    if data is not None:
                        if rt.receive(_ring.decode(data), blocked=False):
                            self._end()
                            return
                        while rt._backlog:
                            self.submit(rt._backlog.popleft())
            finally:
                with self.state:
                    self.main_reading = False
                    self.state.notify_all()

    def _end(self):
        """An Exit came: the main thread leaves standby() and the process ends."""
        with self.state:
            self.ended = True
            self.state.notify_all()

    async def _run(self, task):
        rt = self.rt
        (task_id, fn_id, num_returns, args_stored, dep_values, *_, attempt, retry_exceptions,
         backpressure) = task
        fn, name, start = _enter(rt, task)
        try:
            async with self.limit:
                if rt.cancel_posted() and rt.is_cancelled(task_id):
                    raise asyncio.CancelledError
                args, kwargs = call_arguments(args_stored, dep_values)
                result = fn(*args, **kwargs)
                if num_returns < 0:  # a generator's items streamed (or listed)
                    result = await _worker_generators.run_async(
                        rt, result, num_returns, task_id, backpressure, name)
                    num_returns = 1
                elif inspect.isawaitable(result):
                    result = await result
                elif inspect.isasyncgen(result):  # num_returns=N: its N items
                    result = [x async for x in result]
            result = (*pack_results(rt, result, num_returns, task_id), None, False)
        except asyncio.CancelledError:
            result = cancelled(task_id)
        except SystemExit as e:
            rt.actor_host.exit(f"sys.exit({e.code!r}) in {name}")
        except BaseException as e:  # (any other: this call's error, never a lost call)
            result = failed(name, e, retry_exceptions)
        finally:
            self.running.pop(task_id, None)
        _send_done(rt, task_id, fn_id, start, attempt, result)


class ActorLoop(asyncio.SelectorEventLoop):
    """An async actor's event loop: a callback queued from another thread (an awaited
    ref's getter, run_in_executor, a cancel) wakes it wherever it waits, on the ring
    (an interrupt: see AsyncCalls.wait) or in epoll (its wake-up pipe)."""

    def __init__(self, ring, selector):
        super().__init__(selector)
        self._ring = ring
        self.pipe_written = False  # its wake-up pipe may hold bytes: epoll must be asked

    def call_soon_threadsafe(self, callback, *args, context=None):
        handle = super().call_soon_threadsafe(callback, *args, context=context)
        self.pipe_written = True
        self._ring.interrupt()
        return handle


class RingSelector(selectors.EpollSelector):
    """An async actor's selector: its loop waits in AsyncCalls.wait."""

    def __init__(self, calls):
        super().__init__()
        self.calls = calls

    def select(self, timeout=None):
        return self.calls.wait(super().select, timeout)
