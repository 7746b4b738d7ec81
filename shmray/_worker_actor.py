"""An actor inside its worker process: its instance, its methods, how its calls run.

    Become ─► ActorHost: the constructor and the methods in the worker's function
              table (rt.fns, by the ids shmray.actor.method_id gives them)
    the creation Task ─► construct(), on the main thread (the first thing it runs)
    calls (Task records, in order) ─► max_concurrency 1: run_task on the main thread,
        one at a time, as tasks run
      └► threaded (max_concurrency > 1): a pool of that many threads; async (any
         `async def` method): one event loop thread, at most max_concurrency calls
         at once; the main thread keeps reading the ring (replies to the calls' gets
         included: see ConcurrentRuntime)
    exit_actor(), __ray_terminate__, sys.exit() ─► ActorExiting, then the process ends
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import os
import sys
import threading
import time
import traceback

from . import _ring
from ._object_ref import ObjectRef, _hooks
from ._protocol import ACTOR_EXITING, REPLY, ActorExiting, done_record
from ._worker_runtime import WorkerRuntime
from ._worker_tasks import _execute, call_arguments, cancelled, failed, pack_results, run_task
from .actor import READY, TERMINATE, ActorHandle, HandleState
from .exceptions import ActorDiedError, RayTaskError

AWAIT_THREADS = 64  # refs awaited at once by an actor's calls (more wait their turn)


class ActorHost:
    def __init__(self, rt, actor_id, class_id, methods, max_concurrency, is_async, handle):
        self.rt = rt
        self.actor_id = actor_id
        self.class_id = class_id
        self.cls, _ = rt.fns[class_id]  # (its Func came first)
        self.handle = HandleState(*handle)
        self.methods = methods
        self.instance = None
        self._self_handle = None
        name = self.handle.class_name
        rt.fns[class_id] = (self.construct, f"{name}.__init__")
        for fn_id, method in methods:  # until __init__ has run (see construct)
            rt.fns[fn_id] = (self._unconstructed, f"{name}.{method}")
        self.executor = None
        if is_async:
            self.executor = AsyncCalls(rt, max_concurrency)
        elif max_concurrency > 1:
            self.executor = ThreadedCalls(rt, max_concurrency)
        if self.executor is not None:
            # Calls run on other threads: the running call's identity moves from plain
            # attributes to context variables (a class of its own, so tasks pay nothing).
            rt.__class__ = ConcurrentRuntime
            rt._receivers[REPLY] = rt._on_reply  # (bound when it was a WorkerRuntime)
            rt.run_one = self.run_concurrent
            # `await ref` in a call: a thread gets it (the ring stays the main thread's).
            self._getters = concurrent.futures.ThreadPoolExecutor(
                AWAIT_THREADS, thread_name_prefix="shmray-await")
            _hooks.future = self.future_of

    def construct(self, *args, **kwargs):
        try:
            self.instance = self.cls(*args, **kwargs)
        except Exception as e:
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next))
            cause = RayTaskError(f"{self.handle.class_name}.__init__", tb, e)
            raise ActorDiedError(cause, f"{self.actor_id:032x}") from None
        name = self.handle.class_name
        for fn_id, method in self.methods:
            self.rt.fns[fn_id] = (self._method(method), f"{name}.{method}")

    def _method(self, name):
        if name == TERMINATE:
            return lambda: self.exit("__ray_terminate__ was called")
        if name == READY:
            return lambda: True
        bound = getattr(self.instance, name)
        if inspect.isgeneratorfunction(inspect.unwrap(bound)):
            # Streaming a generator's items is issue 17's; until then its items come
            # back together: a list (num_returns=1), or one ref each (num_returns=N).
            return lambda *a, **k: list(bound(*a, **k))
        return bound

    def _unconstructed(self, *args, **kwargs):
        raise ActorDiedError(f"The actor {self.handle.class_name} has no instance: its "
                             f"__init__ did not finish.", f"{self.actor_id:032x}")

    def self_handle(self) -> ActorHandle:
        """This actor's own handle (uncounted: it never holds the actor alive)."""
        if self._self_handle is None:
            self._self_handle = ActorHandle(self.handle, ObjectRef(self.actor_id, True))
        return self._self_handle

    def run_concurrent(self, rt, *task):
        """The main thread's runner of a concurrent actor: the creation runs here,
        calls go to the threads."""
        if task[1] == self.class_id:
            run_task(rt, *task)
        else:
            self.executor.submit(task)

    def future_of(self, ref):
        """ObjectRef.future() in this actor: a Future of the ref's value."""
        return self._getters.submit(lambda: self.rt.get([ref], None)[0])

    def cancel_listed(self):
        if isinstance(self.executor, AsyncCalls):
            self.executor.cancel_listed()

    def exit(self, reason: str):
        """End this actor on purpose: the driver is told first (no restart, the calls
        after this one fail), then the process ends."""
        self.rt.send(ActorExiting(ACTOR_EXITING, reason))
        if self.executor is None and threading.current_thread() is threading.main_thread():
            raise SystemExit(0)  # through the worker's own exit (its output flushed)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(0)


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

    def _run(self, task):
        rt = self.rt
        task_id, fn_id, num_returns, args_stored, dep_values, *_, attempt, retry_exceptions = task
        fn, name, start = _enter(rt, task)
        try:
            result = _execute(rt, fn, name, task_id, num_returns, args_stored, dep_values,
                              retry_exceptions)
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
        task_id, fn_id, num_returns, args_stored, dep_values, *_, attempt, retry_exceptions = task
        fn, name, start = _enter(rt, task)
        try:
            async with self.limit:
                if rt.cancel_posted() and rt.is_cancelled(task_id):
                    raise asyncio.CancelledError
                args, kwargs = call_arguments(args_stored, dep_values)
                result = fn(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
                elif inspect.isasyncgen(result):  # (see ActorHost._method)
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


def become(rt, blocked, kind, actor_id, class_id, methods, max_concurrency, is_async, handle):
    """The Become record's receiver (see WorkerRuntime.receive)."""
    rt.actor_host = ActorHost(rt, actor_id, class_id, methods, max_concurrency, is_async,
                              handle)
    rt.actor_id = actor_id
    return False
