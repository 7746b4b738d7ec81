"""The actor table: every actor of the session, its worker, its calls in order.

    create ─► ActorState (PENDING_CREATION); its creation is a call spec in the task
              table (inputs, runtime_env, never-runnable verdicts as for tasks)
    creation ready ─► place: its resources held for life, a worker of its own
              (Func of the class, Become, then the creation as a Task) ─► ALIVE
    a call ─► enqueue (submission order) ─► ready (inputs there) ─► flush: pushed to
              the actor's ring in order; a caller's call still waiting for an input
              holds back that caller's later ones (as in Ray), not other callers'
    its worker gone ─► lost(): RESTARTING (a new creation runs __init__ again) or DEAD
    every handle gone (its token freed, see shmray.actor) ─► it ends once idle

Calls are task specs (ActorCallSpec) in the task table, which stores their results
and fails them; this table decides where and when they go. Every method runs under
the session's lock.
"""
from __future__ import annotations

import os
import signal
import time
from collections import OrderedDict, deque

from .. import _ring, _serialization as ser, _shm
from .._protocol import BECOME, ERROR, FUNC, SHM, Become, Func
from .._options import ACTOR_DEFAULT
from ..actor import HandleState, plain_state
from ..exceptions import ActorDiedError, ActorUnavailableError
from .._crecords import ActorSpecBase, ActorStateBase
from .spec import TaskSpec

PENDING, ALIVE, RESTARTING, DEAD = "PENDING_CREATION", "ALIVE", "RESTARTING", "DEAD"
ENDED_HISTORY = 1000         # dead actors kept for `shmray list actors`
ASYNC_MAX_CONCURRENCY = 1000  # Ray's default for an actor with async methods


class ActorCallSpec(ActorSpecBase, TaskSpec):
    """A call of an actor's method (or its creation) as the task table tracks it. Its
    own fields are in C (ActorSpecBase: csrc/actor_call.c makes the common call's):
        actor                   its ActorState
        creates = False         runs __init__ (the first thing its worker runs)
        runnable = False        its inputs are there (see ActorTable.ready)
        caller = None           who called (None: the driver; else a worker's index)
        sent = False            pushed to the actor's worker (this attempt)
    """
    __slots__ = ()

    def __init__(self, task_id, fn_id, name, options, args_stored, deps, owned, actor,
                 caller=None, creates=False):
        super().__init__(task_id, fn_id, name, options, args_stored, deps, owned)
        self.actor = actor
        self.creates = creates
        self.caller = caller


class ActorState(ActorStateBase):
    """An actor, as the driver tracks it. The fields its calls' way reads are in C
    (ActorStateBase, read by csrc/actor_call.c): state, worker, waiting, ending,
    calls_done, max_pending_calls."""
    __slots__ = ("actor_id", "handle", "class_name", "name", "namespace", "options",
                 "creation_args", "restarts", "death", "held", "gpus", "exit_reason",
                 "killed", "pid", "creation_options", "started", "max_concurrency",
                 "detached", "placed")

    def __init__(self, handle, options, creation_args):
        self.actor_id = handle.actor_id
        self.handle = handle                  # shmray.actor.HandleState
        self.class_name = handle.class_name
        self.name, self.namespace = handle.name, handle.namespace
        self.options = options
        self.state = PENDING
        self.worker = None
        self.waiting = deque()                # calls not pushed yet, in submission order
        self.creation_args = creation_args    # (args_stored, deps, held): kept for restarts
        self.creation_options = options.creation(handle.class_name)  # (one per actor)
        self.restarts = 0
        self.calls_done = 0
        self.death = None                     # the stored error every later call gets
        self.held = options.held              # resources held while it lives
        self.gpus = ()
        self.ending = False                   # every handle is gone: it ends once idle
        self.exit_reason = None               # it said it exits on purpose (ActorExiting)
        self.killed = None                    # kill(): None, or whether no restart
        self.pid = None
        self.started = time.time()
        self.max_concurrency = options.max_concurrency or (
            ASYNC_MAX_CONCURRENCY if handle.is_async else 1)
        self.detached = options.lifetime == "detached"
        self.placed = False                   # its resources are held
        self.max_pending_calls = options.max_pending_calls

    def pending_calls(self) -> int:
        """Calls made and not finished (its creation, first in line, is not one)."""
        w = self.worker
        n = len(self.waiting) - (1 if self.waiting and self.waiting[0].creates else 0)
        if w is not None and w.inflight:
            n += len(w.inflight) - (1 if w.inflight[0].creates else 0)
        return n

    def restartable(self) -> bool:
        limit = self.options.max_restarts
        return (self.exit_reason is None and self.killed is not True and not self.ending
                and (limit < 0 or self.restarts < limit))

    def row(self) -> dict:
        w = self.worker
        running = w.inflight[0].name if w is not None and w.inflight else None
        return {"actor_id": f"{self.actor_id:032x}", "class_name": self.class_name,
                "name": self.name or "", "namespace": self.namespace or "",
                "state": self.state, "pid": self.pid, "restarts": self.restarts,
                "calls_done": self.calls_done, "pending_calls": self.pending_calls(),
                "current_method": running, "started": self.started}


class ActorTable:
    def __init__(self, pool, ledger, dispatch, store, functions, envs, cores, prefix):
        self.pool = pool
        self.ledger = ledger
        self.dispatch = dispatch
        self.store = store
        self.functions = functions      # fn_id -> (pickled function or class, name)
        self.envs = envs                # runtime_env key -> Prepared, once set up
        self.cores = cores
        self.prefix = prefix
        self.by_id = {}                 # actor id -> ActorState, until it is dead
        self.named = {}                 # (namespace, name) -> ActorState
        self.unplaced = []              # creations waiting for resources to be free
        self.ended = deque(maxlen=ENDED_HISTORY)  # rows of dead actors
        self.graveyard = OrderedDict()  # actor id -> the latest dead ActorStates
        self.dead_count = 0             # actors dead since the session began
        self._spawned = 0

    # ------------------------------------------------------------ creation
    def register(self, handle, options, class_bytes, creation_args) -> ActorState:
        """A new actor (its token stored by the caller). Named ones are kept until
        killed or shut down, like detached ones."""
        actor = ActorState(handle, options, creation_args)
        self.by_id[actor.actor_id] = actor
        if handle.class_id not in self.functions:
            self.functions[handle.class_id] = (class_bytes, f"{handle.class_name}.__init__")
            for m in handle.methods:
                self.functions[m[1]] = (None, f"{handle.class_name}.{m[0]}")
        if actor.name is not None:
            self.named[(actor.namespace, actor.name)] = actor
        args_stored, deps, held = creation_args
        for oid in deps + held:  # kept while it may restart
            self.store.need(oid)
        return actor

    def lookup(self, namespace, name) -> ActorState | None:
        return self.named.get((namespace, name))

    def creation_spec(self, actor, task_id) -> ActorCallSpec:
        args_stored, deps, held = actor.creation_args
        spec = ActorCallSpec(task_id, actor.handle.class_id, f"{actor.class_name}.__init__",
                             actor.creation_options, args_stored,
                             list(deps) or None, True, actor, creates=True)
        spec.attempt = actor.restarts
        if held:
            spec.held = list(held)
        return spec

    # ------------------------------------------------------------ calls
    def enqueue(self, spec):
        """A new call (or creation): in line, in submission order. Returns the stored
        error it gets at once if its actor is dead, else None."""
        actor = spec.actor
        if actor.state == DEAD:
            return actor.death
        if spec.creates:
            actor.waiting.appendleft(spec)  # (a restart's: before the retried calls)
        else:
            actor.waiting.append(spec)
        return None

    def ready(self, spec, burst):
        """`spec`'s inputs are there (and its runtime_env, for a creation)."""
        actor = spec.actor
        if actor.state == DEAD:
            return
        spec.runnable = True
        if spec.creates and actor.worker is None and not self.place(actor, spec):
            self.unplaced.append(spec)
            return
        self.flush(actor, burst)

    def flush(self, actor, burst=False):
        """Push the calls that may go now, in order (see the module's docstring)."""
        w = actor.worker
        waiting = actor.waiting
        if w is None or not waiting:
            return
        send = self.dispatch.send_task
        while waiting and waiting[0].runnable:  # the common case
            spec = waiting.popleft()
            spec.sent = True
            send(w, spec, burst)
        if waiting:
            blocked, kept = set(), deque()
            for spec in waiting:
                if spec.runnable and spec.caller not in blocked:
                    spec.sent = True
                    send(w, spec, burst)
                else:
                    blocked.add(spec.caller)
                    kept.append(spec)
            actor.waiting = kept

    def retry(self, spec) -> bool:
        """`spec` raised an exception it is retried for: in line again, last (False:
        its actor is dead, and it fails with that)."""
        actor = spec.actor
        if actor.state == DEAD:
            return False
        actor.waiting.append(spec)
        self.flush(actor)
        return True

    def call_finished(self, spec, outcome) -> list:
        """`spec` is finished (ran, failed, or never ran). Returns the calls to fail
        with its actor's death, if its creation failed."""
        actor = spec.actor
        if not spec.sent:  # never ran (a failed input, a cancel, its actor's death)
            try:
                actor.waiting.remove(spec)
            except ValueError:  # (taken out already: its actor died)
                pass
            self.flush(actor)  # its caller's later calls may go now
        else:
            actor.calls_done += not spec.creates
        if not spec.creates:
            return []
        self.store.disown(spec.task_id)  # (its return: nobody reads it)
        # Its own restart's creation only: one its worker took with it when it died
        # is not the actor's end (a restart counts up before it is failed).
        if outcome and outcome[0] == ERROR and spec.attempt == actor.restarts \
                and actor.state != DEAD:
            actor.death = outcome  # its __init__ raised (an ActorDiedError), or it can
            return self._dead(actor)  # never be placed, or an input of it failed
        if actor.state != DEAD and spec.attempt == actor.restarts:
            actor.state = ALIVE
            w = actor.worker  # calls cancelled while it was created: interrupted now
            if (actor.handle.is_async and w is not None
                    and any(s.cancelled for s in w.inflight)):
                interrupt(w)
        return []

    # ------------------------------------------------------------ placement
    def place(self, actor, creation) -> bool:
        """Hold the actor's resources and start its worker; False if they are not free
        now (Ray's default actor needs 1 CPU free to be placed, and holds none)."""
        ledger = self.ledger
        if not actor.placed:
            if not ledger.fits(creation.request):
                return False
            gpus = ()
            if actor.options.num_gpus:
                gpus = ledger.gpus.assign(actor.options.num_gpus)
                if gpus is None:
                    return False
            ledger.acquire(actor.held, gpus)
            actor.gpus, actor.placed = gpus, True
        core = self.cores[self._spawned % len(self.cores)]
        self._spawned += 1
        w = self.pool.spawn(core, extra=True, gpus=actor.gpus, env=self.envs.get(creation.env),
                            actor=True)
        w.actor = actor
        actor.worker, actor.pid = w, w.pid
        class_id = actor.handle.class_id
        class_bytes, name = self.functions[class_id]
        w.send(_ring.encode(Func(FUNC, class_id, class_bytes, name), w.ring, self.prefix))
        w.fns.add(class_id)
        w.fns.update(m[1] for m in actor.handle.methods)
        w.send(_ring.encode(Become(BECOME, actor.actor_id, class_id,
                                   tuple((m[1], m[0]) for m in actor.handle.methods),
                                   actor.max_concurrency, actor.handle.is_async,
                                   plain_state(actor.handle), actor.held), w.ring,
                                   self.prefix))
        return True

    def place_unplaced(self):
        """Resources were freed: creations waiting for them try again, in order."""
        waiting, self.unplaced = self.unplaced, []
        for spec in waiting:
            if spec.actor.state != DEAD:
                self.ready(spec, False)

    # ------------------------------------------------------------ the end
    def lost(self, actor, why: str) -> bool:
        """Its worker is gone (`why`: how it ended). True: it restarts; else it is
        dead from now on (its death error set)."""
        actor.worker = None
        if actor.state == DEAD:
            return False
        if actor.restartable():
            actor.restarts += 1
            actor.state = RESTARTING
            actor.pid = None  # (its new process's, once placed)
            return True
        if actor.exit_reason is not None:
            why = f"The actor exited on purpose: {actor.exit_reason}."
        elif actor.killed is not None:
            why = "The actor was killed by shmray.kill()."
        elif actor.ending and why == "ended":
            why = "Every handle to the actor went out of scope."
        else:
            why = f"The actor's worker process died ({why})."
        actor.death = ser.error_stored(ActorDiedError(self._context(actor, why),
                                                      f"{actor.actor_id:032x}"))
        return False

    def unavailable(self, actor, why: str):
        """The stored error of a call its restarting actor lost."""
        return ser.error_stored(ActorUnavailableError(
            f"its worker process ended ({why}) and it is restarting (restart "
            f"{actor.restarts} of {actor.options.max_restarts})", f"{actor.actor_id:032x}"))

    def _context(self, actor, why):
        lines = [f"\tclass_name: {actor.class_name}", f"\tactor_id: {actor.actor_id:032x}"]
        if actor.pid:
            lines.append(f"\tpid: {actor.pid}")
        if actor.name:
            lines += [f"\tname: {actor.name}", f"\tnamespace: {actor.namespace}"]
        return "\n".join(lines + [why])

    def die(self, actor, death) -> list:
        """End `actor` for good with `death` (a stored error); returns its calls not
        pushed yet, for the task table to fail."""
        if actor.state == DEAD:
            return []
        actor.death = death
        return self._dead(actor)

    def _dead(self, actor) -> list:
        actor.state = DEAD
        self.by_id.pop(actor.actor_id, None)
        if self.named.get((actor.namespace, actor.name)) is actor:
            del self.named[(actor.namespace, actor.name)]
        if actor.placed:
            self.ledger.release(actor.held, actor.gpus)
            actor.placed = False
        args_stored, deps, held = actor.creation_args
        for oid in deps + held:
            self.store.unneed(oid)
        if args_stored[0] == SHM:
            _shm.unlink(args_stored[1])
        waiting, actor.waiting = list(actor.waiting), deque()  # (failed by the caller)
        self.ended.append(actor.row())
        self.dead_count += 1
        self.graveyard[actor.actor_id] = actor  # (its handles still get its death error)
        if len(self.graveyard) > ENDED_HISTORY:
            self.graveyard.popitem(last=False)
        return waiting

    def unknown(self, actor_id) -> ActorState:
        """A dead actor's stand-in for a handle this session does not know."""
        actor = ActorState(HandleState(actor_id, 0, "?", (), False, None, None),
                           ACTOR_DEFAULT, (ser.NO_ARGS, (), ()))
        actor.state = DEAD
        actor.death = ser.error_stored(ActorDiedError(
            f"No actor {actor_id:032x} lives in this session: it ended long ago, or its "
            f"handle comes from another session.", f"{actor_id:032x}"))
        return actor

    def token_freed(self, oid) -> ActorState | None:
        """Every handle to actor `oid` is gone: it ends once idle (the caller ends it).
        A named actor too, unless detached, as in Ray."""
        actor = self.by_id.get(oid)
        if actor is None or actor.detached:
            return None
        actor.ending = True
        return actor

    def drop_all(self):
        """Shutdown: the calls still in line let go of their actors (the lane's are not
        tracked by the garbage collector: see csrc/actor_call.c)."""
        for actor in self.by_id.values():
            actor.waiting.clear()
            actor.worker = None

    def rows(self) -> list:
        return list(self.ended) + [a.row() for a in self.by_id.values()]


def interrupt(w):
    """SIGINT to `w`: its cancelled calls (listed in its channel) end (see
    _worker_concurrent.AsyncCalls.cancel_listed)."""
    try:
        os.kill(w.pid, signal.SIGINT)
    except ProcessLookupError:
        pass
