"""Actors in local mode (LocalRuntime inherits it): the instance lives in the driver's
process, and each call runs when it is made, as a task of local mode does. An async
actor's calls run on an event loop of its own, on a thread (so a driver that is inside
asyncio itself can call it); a call waits for its result.
"""
from __future__ import annotations

import asyncio
import inspect
import threading
import traceback

from . import _serialization as ser
from ._object_ref import ObjectRef, new_base_id
from .actor import READY, TERMINATE, ActorHandle, HandleState, handle_from, plain_state
from .exceptions import ActorAlreadyExistsError, ActorDiedError, RayTaskError


class _ActorExits(BaseException):
    """exit_actor() in a local actor's call (a BaseException: the call's own error
    handling lets it through)."""


class LocalActor:
    def __init__(self, state: HandleState, held: tuple):
        self.state = state
        self.handle = state           # (what RuntimeContext reads: its name)
        self.held = held              # what get_assigned_resources() says in its calls
        self.instance = None
        self.death = None             # the stored error every later call gets
        self.loop = None              # an async actor's event loop (on its own thread)

    def self_handle(self) -> ActorHandle:
        return handle_from(plain_state(self.state))

    def exit(self, reason: str):
        raise _ActorExits(reason)

    def run_async(self, coroutine):
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
            threading.Thread(target=self.loop.run_forever, daemon=True,
                             name="shmray-local-actor").start()
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


class LocalActors:
    def _init_actors(self):
        self.actor_host = None        # the actor whose call runs now
        self.actor_id = None
        self._actors = {}             # actor id -> LocalActor
        self._named = {}              # (namespace, name) -> LocalActor

    def create_actor(self, actor_class, args, kwargs, options):
        namespace = options.namespace or self.namespace
        if options.name is not None:
            existing = self._named.get((namespace, options.name))
            if existing is not None:
                if options.get_if_exists:
                    return existing.self_handle()
                raise ActorAlreadyExistsError(
                    f"The name {options.name} (namespace={namespace}) is already taken. "
                    f"Please use a different name or get the existing actor using "
                    f"shmray.get_actor('{options.name}', namespace='{namespace}')")
        actor_id = new_base_id()
        state = actor_class._handle_state(actor_id, options)._replace(namespace=namespace)
        actor = LocalActor(state, options.held)
        self._actors[actor_id] = actor
        if options.name is not None:
            self._named[(namespace, options.name)] = actor
        self.put_stored(actor_id, ser.to_stored(None), (), False)  # its token
        handle = ActorHandle(state, ObjectRef(actor_id))
        cls, name = actor_class._cls, f"{state.class_name}.__init__"

        def construct(*a, **k):
            try:
                actor.instance = cls(*a, **k)
            except Exception as e:  # (as a worker's actor: every later call gets it)
                tb = "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next))
                raise ActorDiedError(RayTaskError(name, tb, e), f"{actor_id:032x}") from None

        creation = new_base_id()
        self._in_actor(actor, creation, construct, name, args, kwargs,
                       options.creation(state.class_name))
        outcome = self.values.pop(creation)
        if outcome[0] == ser.ERROR:
            self._die(actor, outcome)
        return handle

    def submit_call(self, handle, fn_id, args, kwargs, options):
        task_id = new_base_id()
        actor = self._actors.get(handle._state.actor_id)
        method = next(m[0] for m in handle._state.methods if m[1] == fn_id)
        if actor is None or actor.death is not None:
            death = actor.death if actor is not None else ser.error_stored(ActorDiedError(
                "The actor is dead.", f"{handle._state.actor_id:032x}"))
            self._finish(task_id, self._return_ids(task_id, options.num_returns), death, None)
            return self._returned(task_id, options.num_returns)
        if method == TERMINATE:
            fn = lambda: actor.exit("__ray_terminate__ was called")  # noqa: E731
        elif method == READY:
            fn = lambda: True  # noqa: E731
        else:
            fn = self._callable(actor, getattr(actor.instance, method))
        self._in_actor(actor, task_id, fn, options.name, args, kwargs, options)
        return self._returned(task_id, options.num_returns)

    @staticmethod
    def _return_ids(task_id, n):
        return [task_id + i for i in range(n)] if n >= 0 else [task_id]

    @staticmethod
    def _callable(actor, bound):
        """`bound` as a plain call: an async method's coroutine (or async generator)
        runs on the actor's loop."""
        if inspect.iscoroutinefunction(bound):
            return lambda *a, **k: actor.run_async(bound(*a, **k))
        if inspect.isasyncgenfunction(bound):
            def items(*a, **k):
                agen = bound(*a, **k)
                while True:
                    try:
                        yield actor.run_async(agen.__anext__())
                    except StopAsyncIteration:
                        return
            return items
        return bound

    def _in_actor(self, actor, task_id, fn, name, args, kwargs, options):
        outer = self.actor_host, self.actor_id
        self.actor_host, self.actor_id = actor, actor.state.actor_id
        try:
            self._run(task_id, fn, name, args, kwargs, options)
        except _ActorExits as e:  # exit_actor(): this call and every later one fail
            death = ser.error_stored(ActorDiedError(
                f"The actor exited on purpose: {e}", f"{actor.state.actor_id:032x}"))
            self._finish(task_id, self._return_ids(task_id, options.num_returns), death, None)
            self._die(actor, death)
        finally:
            self.actor_host, self.actor_id = outer

    def _die(self, actor, death):
        actor.death = death
        actor.instance = None
        key = (actor.state.namespace, actor.state.name)
        if self._named.get(key) is actor:
            del self._named[key]

    def kill_actor(self, actor_id, no_restart: bool):
        actor = self._actors.get(actor_id)
        if actor is not None and actor.death is None:
            self._die(actor, ser.error_stored(ActorDiedError(
                "The actor was killed by ray.kill().", f"{actor_id:032x}")))

    def get_actor(self, name, namespace):
        actor = self._named.get((namespace or self.namespace, name))
        return None if actor is None else actor.self_handle()

    def named_actors(self, all_namespaces: bool) -> list:
        if all_namespaces:
            return list((name, ns) for ns, name in self._named)
        return [name for ns, name in self._named if ns == self.namespace]

    def _end_actors(self):
        for actor in self._actors.values():
            if actor.loop is not None:
                actor.loop.call_soon_threadsafe(actor.loop.stop)
        self._actors.clear()
        self._named.clear()

