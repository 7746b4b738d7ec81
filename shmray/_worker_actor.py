"""An actor inside its worker process: its instance, its methods, how its calls run.

    Become ─► ActorHost: the constructor and the methods in the worker's function
              table (rt.fns, by the ids shmray.actor.method_id gives them)
    the creation Task ─► construct(), on the main thread (the first thing it runs)
    calls (Task records, in order) ─► max_concurrency 1: run_task on the main thread,
        one at a time, as tasks run
      └► threaded or async: _worker_concurrent (the calls run on threads, the main
         thread reading the ring; or on an event loop, whose thread reads the ring
         once the creation has run: RingHandedOver)
    exit_actor(), __ray_terminate__, sys.exit() ─► ActorExiting, then the process ends
"""
from __future__ import annotations

import os
import sys
import threading

from ._object_ref import ObjectRef
from ._protocol import ACTOR_EXITING, ActorExiting
from ._worker_tasks import run_task
from .actor import READY, TERMINATE, ActorHandle, HandleState
from .exceptions import ActorDiedError, RayTaskError


class RingHandedOver(Exception):
    """Ends an async actor's serve() on its main thread once the creation has run: the
    actor's event loop thread reads the ring from then on, and the main thread calls
    `standby` (see _worker_concurrent.AsyncCalls), which returns when the actor ends."""

    def __init__(self, standby):
        super().__init__("the ring is read by the actor's event loop thread")
        self.standby = standby


class ActorHost:
    def __init__(self, rt, actor_id, class_id, methods, max_concurrency, is_async, handle,
                 held):
        self.rt = rt
        self.actor_id = actor_id
        self.held = held  # what get_assigned_resources() says in its calls
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
        if is_async or max_concurrency > 1:
            # Imported here: asyncio and thread pools would cost every task worker and
            # sync actor some 3 MB (and 15 ms of start-up) for nothing.
            from . import _worker_concurrent
            self.executor = _worker_concurrent.start(rt, self, max_concurrency, is_async)

    def construct(self, *args, **kwargs):
        try:
            self.instance = self.cls(*args, **kwargs)
        except Exception as e:
            import traceback  # (here: a program's errors are rare, its start-up is not)

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
        return getattr(self.instance, name)  # (a generator's items: see _worker_generators)

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
        calls go to the threads (or the event loop, which then reads the ring itself:
        RingHandedOver)."""
        if task[1] == self.class_id:
            run_task(rt, *task)
            self.executor.created()
        else:
            self.executor.submit(task)

    def cancel_listed(self):
        """(signal handler) A cancel came: an async actor cancels the listed calls."""
        if self.executor is not None:
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


def become(rt, blocked, kind, actor_id, class_id, methods, max_concurrency, is_async, handle,
           held):
    """The Become record's receiver (see WorkerRuntime.receive)."""
    rt.actor_host = ActorHost(rt, actor_id, class_id, methods, max_concurrency, is_async,
                              handle, held)
    rt.actor_id = actor_id
    return False
