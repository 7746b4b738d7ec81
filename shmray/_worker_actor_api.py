"""The actor API inside a task or an actor (WorkerRuntime inherits it): calls and
kills go to the driver as messages, a creation and a lookup as rpcs (a name taken
must raise here, at the call)."""
from __future__ import annotations

from . import _serialization as ser
from ._object_ref import new_base_id
from ._protocol import (ACTOR_ASK, ACTOR_CALL, ACTOR_CREATE, ACTOR_KILL, PG_ASK, ActorAsk,
                        ActorCall, ActorCreate, ActorKill, PgAsk)
from .actor import handle_from, plain_state


class WorkerActorApi:
    actor_host = None       # the actor this worker is (_worker_actor.ActorHost), if any
    actor_id = None

    def submit_call(self, handle, fn_id, args, kwargs, options):
        task_id = new_base_id()
        args_stored, deps, held = ser.pack_args(options.name, args, kwargs,
                                                self.resolve_nested, self.new_segment_name)
        return self.send_submission(
            ActorCall(ACTOR_CALL, task_id, handle._state.actor_id, fn_id, options.name,
                      options, args_stored, deps, held, self.current_task_id),
            task_id, options.num_returns)

    def create_actor(self, actor_class, args, kwargs, options):
        actor_id = new_base_id()
        state = actor_class._handle_state(actor_id, options)
        args_stored, deps, held = ser.pack_args(actor_class.__qualname__, args, kwargs,
                                                self.resolve_nested, self.new_segment_name)
        # The new handle's token ref exists before the rpc: the driver counts it first.
        handle = handle_from(plain_state(state))
        reply = self._rpc(lambda req_id: ActorCreate(
            ACTOR_CREATE, req_id, plain_state(state), actor_class._pickled(), options,
            args_stored, deps, held))
        if isinstance(reply, Exception):
            raise reply
        return handle if reply is None else handle_from(reply)

    def kill_actor(self, actor_id, no_restart: bool):
        self.send(ActorKill(ACTOR_KILL, actor_id, no_restart))

    def get_actor(self, name, namespace):
        reply = self._rpc(lambda req_id: ActorAsk(ACTOR_ASK, req_id, "get", name, namespace))
        return None if reply is None else handle_from(reply)

    def placement_group_op(self, what: str, arg):
        """A placement group operation, done by the driver (see PgAsk)."""
        reply = self._rpc(lambda req_id: PgAsk(PG_ASK, req_id, what, arg))
        if isinstance(reply, Exception):
            raise reply
        return reply

    def named_actors(self, all_namespaces: bool) -> list:
        return self._rpc(lambda req_id: ActorAsk(ACTOR_ASK, req_id, "list", None,
                                                 "*" if all_namespaces else None))
