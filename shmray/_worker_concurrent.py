"""The calls of a threaded or async actor (see _worker_actor): the main thread keeps
reading the ring, the calls run elsewhere.

    threaded (max_concurrency > 1) ─► ThreadedCalls: a pool of that many threads
    async (any `async def` method)  ─► AsyncCalls: one event loop thread, at most
                                       max_concurrency calls at once; a cancel cancels
                                       the call's asyncio task
    a call's get ─► ConcurrentRuntime._rpc: waits for the reply the main thread reads
    `await ref`   ─► a thread of its own gets it (AWAIT_THREADS at once)

Imported only by such actors: asyncio and thread pools cost memory and start-up.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import threading
import time

from . import _ring, _worker_generators
from ._object_ref import _hooks
from ._protocol import REPLY, done_record
from ._worker_runtime import WorkerRuntime
from ._worker_tasks import _execute, call_arguments, cancelled, failed, pack_results

AWAIT_THREADS = 64  # refs awaited at once by an actor's calls (more wait their turn)


def start(rt, host, max_concurrency: int, is_async: bool):
    """Make `rt` the runtime of a concurrent actor; returns its calls' executor."""
    executor = AsyncCalls(rt, max_concurrency) if is_async else ThreadedCalls(rt, max_concurrency)
    # The running call's identity moves from plain attributes to context variables (a
    # class of its own, so tasks pay nothing for it).
    rt.__class__ = ConcurrentRuntime
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
        if threading.current_thread() is threading.main_thread():
            return super()._rpc(request)  # (__init__: it reads the ring itself)
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
    rt.send(_ring.encode(done_record(task_id, outcome, start, end, inner, gpu, retryable),
                         rt.results, rt.spill_prefix))


class ThreadedCalls:
    """A threaded actor's calls: up to max_concurrency at once, on a thread pool."""

    def __init__(self, rt, max_concurrency):
        self.rt = rt
        rt.status_lock = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_concurrency,
                                                          thread_name_prefix="shmray-actor")

    def submit(self, task):
        self.pool.submit(self._run, task)

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
    max_concurrency running at once; a cancel cancels the call's asyncio task."""

    def __init__(self, rt, max_concurrency):
        self.rt = rt
        rt.status_lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.limit = asyncio.Semaphore(max_concurrency)
        self.running = {}  # task id -> asyncio.Task (loop thread only)
        threading.Thread(target=self.loop.run_forever, name="shmray-actor-loop",
                         daemon=True).start()

    def submit(self, task):
        self.loop.call_soon_threadsafe(self._start, task)

    def _start(self, task):
        self.running[task[0]] = self.loop.create_task(self._run(task))

    def cancel_listed(self):
        """(signal handler, main thread) A cancel came: the listed calls' tasks end."""
        self.loop.call_soon_threadsafe(self._cancel_listed)

    def _cancel_listed(self):
        rt = self.rt
        for task_id, t in list(self.running.items()):
            if rt.is_cancelled(task_id):
                t.cancel()

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
