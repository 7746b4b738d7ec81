"""An actor's life as the driver runs it, for the API and for workers' messages alike:
creation (names, get_if_exists, its token), calls from workers, kill, an exit on
purpose, the end when every handle is gone.

    Session.create_actor / ActorCreate ─► create ─► token stored ─► TaskTable.create_actor
    ActorCall                           ─► on_actor_call ─► TaskTable.add (in its line)
    kill / ActorKill                    ─► kill ─► worker SIGKILLed ─► Workers.remove_worker
    token freed / a call done           ─► end_unreferenced, end_if_done ─► remove_worker

Every method runs under the session's lock.
"""
from __future__ import annotations

from .. import _serialization as ser, _shm
from .._protocol import SHM
from ..actor import HandleState, plain_state
from ..exceptions import ActorAlreadyExistsError
from .actors import DEAD, ActorCallSpec
from .workers import ENDED


class ActorLife:
    def __init__(self, store, tasks, actors, workers, rpcs, namespace):
        self.store = store
        self.rpcs = rpcs
        self.tasks = tasks
        self.actors = actors
        self.workers = workers
        self.namespace = namespace      # the job's (init's `namespace`, or its own)
        # (worker, parent task id or None, options) -> the options in the parent's
        # placement group if it captures its children (set by the Session)
        self.child_options = lambda w, parent, options: options

    def create(self, handle: HandleState, options, class_bytes, creation_args, owner=None):
        """A new actor, or with get_if_exists the live one of that name. Returns (its
        HandleState, whether it existed). `owner`: the worker whose handle holds the
        token (None: the driver's). A name taken raises ActorAlreadyExistsError."""
        namespace = options.namespace or self.namespace
        handle = handle._replace(namespace=namespace)  # (the options stay as they are:
        if options.name is not None:                   # one creation verdict for them all)
            existing = self.actors.lookup(namespace, options.name)
            if existing is not None:
                if options.get_if_exists:
                    return existing.handle, True
                raise ActorAlreadyExistsError(
                    f"The name {options.name} (namespace={namespace}) is already taken. "
                    f"Please use a different name or get the existing actor using "
                    f"shmray.get_actor('{options.name}', namespace='{namespace}')")
        token = handle.actor_id
        if owner is None:
            self.store.own(token)  # the driver's handle: an ObjectRef counted already
        self.store.tokens.add(token)
        if options.lifetime == "detached":
            self.store.keep_until_shutdown(token)  # lives until killed or shut down
        self.store.put(token, ser.to_stored(None), "an actor's token")
        args_stored, deps, held = creation_args
        self.tasks.create_actor(handle, options, class_bytes,
                                (args_stored, tuple(deps or ()), tuple(held or ())))
        return handle, False

    def find(self, actor_id):
        actor = self.actors.by_id.get(actor_id)
        if actor is None:
            actor = self.actors.graveyard.get(actor_id) or self.actors.unknown(actor_id)
        return actor

    def on_actor_call(self, w, kind, task_id, actor_id, fn_id, name, options, args_stored,
                      deps, held, parent):
        """An ActorCall record: a call made inside a task or an actor."""
        spec = ActorCallSpec(task_id, fn_id, name, options, args_stored, deps, False,
                             self.find(actor_id), caller=w.index)
        spec.parent = parent
        if held:
            spec.held = held
            spec.lent = self.tasks.lend(held)
        self.tasks.add(spec, submitter=w)

    def on_actor_create(self, w, kind, req_id, handle, class_bytes, options, args_stored,
                        deps, held):
        """An ActorCreate rpc: answered at once (None, an existing actor's state, or
        the error to raise in the worker)."""
        try:
            state, existed = self.create(HandleState(*handle),
                                         self.child_options(w, None, options), class_bytes,
                                         (args_stored, deps, held), owner=w)
            payload = plain_state(state) if existed else None
        except ActorAlreadyExistsError as e:
            existed, payload = True, e
        if existed and args_stored[0] == SHM:  # (the worker's segment: nothing reads it)
            _shm.unlink(args_stored[1])
        self.rpcs.reply(w, req_id, payload)

    def on_actor_ask(self, w, kind, req_id, what, name, namespace):
        if what == "get":
            actor = self.actors.lookup(namespace or self.namespace, name)
            payload = None if actor is None else plain_state(actor.handle)
        else:
            payload = self.named(namespace == "*")
        self.rpcs.reply(w, req_id, payload)

    def on_actor_exiting(self, w, kind, reason):
        if w.actor is not None and w.actor.exit_reason is None:  # (the first one says why)
            w.actor.exit_reason = reason

    def named(self, all_namespaces: bool) -> list:
        """The live named actors: names in this namespace, or (name, namespace) pairs."""
        found = [(name, ns) for (ns, name) in self.actors.named]
        if all_namespaces:
            return found
        return [name for name, ns in found if ns == self.namespace]

    def kill(self, actor_id, no_restart: bool):
        """Ray's kill: the actor's process is SIGKILLed now (a call it runs fails); it
        restarts only if no_restart is False and max_restarts allows. Returns its
        worker, if it had one: the caller (holding the pump lock: it reads the worker's
        ring) handles its death at once, as MessageLoop.on_death does."""
        actor = self.actors.by_id.get(actor_id)
        if actor is None or actor.state == DEAD:
            return None
        actor.killed = bool(no_restart)
        if no_restart and self.actors.named.get((actor.namespace, actor.name)) is actor:
            del self.actors.named[(actor.namespace, actor.name)]  # free at once, as in Ray
        w = actor.worker
        if w is not None:
            w.proc.kill()
            w.proc.wait()  # (SIGKILL: at once) its group too, see WorkerProcess
            return w
        if no_restart or not actor.restartable():
            self.actors.lost(actor, "killed")
            self.tasks.end_actor(actor, actor.death)
        return None

    def end_unreferenced(self):
        """Actors whose every handle is gone (their tokens were freed) end once idle."""
        freed = self.store.tokens_freed
        while freed:
            actor = self.actors.token_freed(freed.popleft())
            if actor is not None:
                self.end_if_done(actor)

    def end_if_done(self, actor):
        """End `actor` if it must end (its __init__ failed, or no handle is left) and
        nothing it was asked is still to come."""
        w = actor.worker
        if actor.state == DEAD:
            if w is not None:
                self.workers.remove_worker(w, ENDED)
        elif actor.ending and not any(not s.creates for s in actor.waiting) and (
                w is None or not w.inflight):  # (a creation not placed yet never will be)
            if w is not None:
                self.workers.remove_worker(w, ENDED)
            else:
                self.actors.lost(actor, "ended")
                self.tasks.end_actor(actor, actor.death)
