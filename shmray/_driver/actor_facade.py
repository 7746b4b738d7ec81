"""The actor half of the driver's facade (Session inherits it): create, call
(admission), kill, look up named actors. Like the rest of the Session, it takes the
state lock around what it asks of the components (ActorLife, the tables).
"""
from __future__ import annotations

from .. import _serialization as ser, _shm
from .._object_ref import new_base_id
from .._protocol import SHM
from ..actor import handle_from
from ..exceptions import PendingCallsLimitExceeded
from .interrupts import sections


class ActorFacade:
    def create_actor(self, actor_class, args, kwargs, options):
        name = actor_class.__qualname__
        try:
            class_bytes = actor_class._pickled()
        except Exception as e:
            raise TypeError(f"Could not serialize the actor class {name}: "
                            f"{type(e).__name__}: {e}") from e
        actor_id = new_base_id()
        with sections:  # the actor is made whole, or leaves nothing behind
            args_stored, deps, held = ser.pack_args(name, args, kwargs, self.resolve_nested,
                                                    self.new_segment_name)
            try:
                with self.lock.raw:
                    self.check_open()
                    state, existed = self.life.create(
                        actor_class._handle_state(actor_id, options), options, class_bytes,
                        (args_stored, deps, held))
            except BaseException:
                existed = True
                raise
            finally:
                if existed and args_stored[0] == SHM:
                    _shm.unlink(args_stored[1])
            return handle_from(state, counted=not existed)

    def kill_actor(self, actor_id, no_restart: bool):
        # The pump lock first (the order: pump lock, then the state lock): the killed
        # worker's ring is read here, and a ring has one consumer.
        with sections, self.loop.pump_lock, self.lock:
            killed = self.life.kill(actor_id, no_restart)
            if killed is not None:
                self.loop.on_death(killed)  # calls made after kill() see it dead (or
        self.loop.run_deferred()            # restarting)

    def get_actor(self, name, namespace):
        with self.lock:
            actor = self.actors.lookup(namespace or self.life.namespace, name)
            state = None if actor is None else actor.handle
        return None if state is None else handle_from(state)

    def named_actors(self, all_namespaces: bool) -> list:
        with self.lock:
            return self.life.named(all_namespaces)

    def admit_call(self, spec, actor_id):
        """Give the call its actor; PendingCallsLimitExceeded if max_pending_calls
        calls are pending already (in submit's section, under the lock)."""
        actor = spec.actor = self.life.find(actor_id)
        limit = actor.max_pending_calls
        if limit > 0 and actor.pending_calls() >= limit:
            if spec.args_stored[0] == SHM:
                _shm.unlink(spec.args_stored[1])
            raise PendingCallsLimitExceeded(
                f"The actor {actor.class_name} ({actor_id:032x}) has {limit} calls pending "
                f"already (max_pending_calls={limit}).")

