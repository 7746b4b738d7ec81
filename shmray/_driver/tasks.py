"""The task table: every task from its submission to the end of its last attempt.

    add ─► never runnable? ─► finish(error)
       └─► waiting for inputs ─► (each input stored) ─► ready
    ready ─► an input failed? ─► finish(that error)
          ├─► its runtime_env not set up yet ─► waits for the env's event
          ├─► a blocked worker waits for it ─► that worker runs it (help)
          └─► dispatch
    Done ─► cancelled / retried (requeued) / finish(results)

`finish` stores the results (or one error for each), lets go of the inputs and
records the end. Retries, cancellation and the tasks a dead worker leaves behind
are decided here. Every method runs under the session's lock.
"""
from __future__ import annotations

import time
from collections import deque

from .. import _serialization as ser, _shm
from .._object_ref import new_base_id
from .._protocol import ERROR, INLINE, SHM, SPILLED, STREAMING
from .._ring import CANCEL_SLOTS
from .._scheduler import PIPELINE_MAX
from .._resources import warn_infeasible
from ..exceptions import TaskUnschedulableError, WorkerCrashedError
from .rpcs import can_help, lost_error
from .task_cancel import Cancelling, cancelled_stored
from .verdicts import Verdicts

HISTORY = 10_000             # tasks that ended without running, for `shmray list tasks`
LEND_MAX = 64                # stored forms lent with one task at most
LEND_INLINE_MAX = 1024       # inline values lent only up to this size
# Every cancelled task queued on a worker is listed in its channel (see _ring), and
# the innermost of the help tasks running there.
assert PIPELINE_MAX < CANCEL_SLOTS // 2


class TaskTable(Cancelling):
    def __init__(self, store, ledger, scheduler, dispatch, envs, actors, generators, node_id):
        self.store = store
        self.actors = actors
        self.generators = generators
        self.ledger = ledger
        self.scheduler = scheduler
        self.dispatch = dispatch
        self.envs = envs
        self.node_id = node_id
        self.tasks = {}             # task_id -> TaskSpec, until its last attempt ends
        self.children = {}          # parent task id -> ids of the tasks it submitted, unfinished
        # Tasks that ended without running (cancelled early, unschedulable, a failed
        # input): (task id, fn id, attempt, (None, None, end ns), error type). Those that
        # ran are in their workers' records (see _status_area.WorkerStatus).
        self.history = deque(maxlen=HISTORY)
        # (task id, attempt, "Type: message") of the latest failed tasks, for the state
        # API and `shmray list tasks` (a worker's record holds only the type's name).
        self.failures = deque(maxlen=HISTORY)
        self.finished = 0           # tasks whose last attempt succeeded
        self.failed = 0             # ... or failed (cancelled ones too)
        self.verdicts = Verdicts(ledger, envs, node_id)

    # ------------------------------------------------------------ submission
    def add(self, spec, submitter=None, burst=False):
        """Register a new task: expect its returns, count the refs to them (the
        driver's, or the submitting worker's), wait for its inputs."""
        store = self.store
        self.tasks[spec.task_id] = spec
        if spec.num_returns == 1:
            store.pending.add(spec.task_id)
            if submitter is None:  # store.own_new(), inlined: what ObjectRef(.., True) means
                store._local[spec.task_id] = 1
            else:
                submitter.grant(spec.task_id, store)
        else:
            for oid in spec.return_ids():
                store.pending.add(oid)
                if submitter is None:
                    store.own_new(oid)
                else:
                    submitter.grant(oid, store)
        if spec.num_returns == STREAMING:
            self.generators.start(spec)
        if spec.parent is not None:  # (for a recursive cancel of its parent)
            self.children.setdefault(spec.parent, set()).add(spec.task_id)
        if spec.held:
            for oid in spec.held:
                store.need(oid)
        if spec.deps:  # before anything can finish it (which lets go of them)
            for oid in spec.deps:
                store.need(oid)
        if spec.actor is not None:  # in line behind its actor's earlier calls
            death = self.actors.enqueue(spec)
            if death is not None:
                self.finish(spec, death)
                return
        verdict = self.verdicts.of(spec.options)
        never, env = verdict.never, verdict.env
        spec.retry_exceptions = verdict.retry_types
        if submitter is not None:
            env = self.envs.child_key(spec.options, submitter.env, env)
        if env is not None:  # a runtime_env: its own workers, its own queue
            spec.env = env
            spec.queue = (spec.request, env)
        if never is None and not spec.deps:  # the common case: runnable now
            if spec.simple and env is None:  # (simple: submitted by the driver)
                self.dispatch.place_or_queue(spec, burst)  # (what ready() comes to for it)
            else:
                self.ready(spec, burst)
            return
        if never is not None:
            if isinstance(never, TaskUnschedulableError):
                warn_infeasible(spec.name, never.error_message)
            self.finish(spec, ser.error_stored(never))
            return
        missing = [oid for oid in spec.deps if oid not in store.values]
        lost = [oid for oid in missing if oid not in store.pending]
        if lost:
            self.finish(spec, ser.error_stored(lost_error(lost[0])))
            return
        spec.unresolved = len(missing)
        for oid in missing:
            store.on_ready(oid, lambda oid, spec=spec: self._input_ready(spec))
        if not missing:
            self.ready(spec, burst)

    def lend(self, oids):
        """Stored forms of refs pickled inside a task's arguments that exist already:
        sent with the task, so a `get` of them inside it needs no round trip.
        Descriptors only (shm forms, errors, tiny values): the message stays small."""
        values = self.store.values
        lent = {}
        for oid in oids[:LEND_MAX]:
            stored = values.get(oid)
            if stored is not None and stored[0] != SPILLED and (
                    stored[0] != INLINE or ser.stored_size(stored) <= LEND_INLINE_MAX):
                lent[oid] = stored
        return lent or None

    def _input_ready(self, spec):
        spec.unresolved -= 1
        if spec.unresolved == 0:
            self.ready(spec, False)

    def ready(self, spec, burst):
        """All inputs exist: fail at once if one is an error, else queue to run."""
        if spec.cancelled:  # cancelled while it waited for them: finished already
            return
        if spec.deps:
            values = self.store.values
            for oid in spec.deps:
                if values[oid][0] == ERROR:
                    self.finish(spec, values[oid])
                    return
        if spec.env is not None:
            admitted = self.envs.admit(spec)  # True: set up; False: waits for it; or an error
            if admitted is not True:
                if admitted is not False:
                    self.finish(spec, ser.error_stored(admitted))
                return  # back through env_settled once its environment is set up
        if spec.actor is not None:  # its actor's worker runs it, in its turn
            if spec.task_id in self.tasks:  # (not failed meanwhile: its actor died)
                self.actors.ready(spec, burst)
            return
        sched = self.scheduler
        rpc = sched.awaited.get(spec.task_id) if sched.awaited else None
        if rpc is not None and sched.helpable(rpc) and can_help(self.ledger, rpc.worker, spec):
            self.dispatch.send_help(rpc.worker, spec)
            return
        # A task reading large objects waits for a free worker instead of queueing on a
        # busy one: its inputs stay in shared memory while it is on a worker.
        if spec.deps:
            spec.pipelinable = not self.store.any_large(spec.deps)
        self.dispatch.place_or_queue(spec, burst)

    def env_settled(self, waiting, error):
        """An environment's setup ended (see _driver.envs): its tasks run or fail."""
        for spec in waiting:
            if error is None:
                self.ready(spec, False)
            elif not spec.cancelled:
                self.finish(spec, ser.error_stored(error))

    # ------------------------------------------------------------ the end
    def finish(self, spec, outcome, inner=None, ran=False):
        """The task's last attempt is over: store its results (or its error in each);
        `inner`: per result, the ids of the refs inside it (None: none anywhere), or
        for an error, the ids of those inside the exception. `ran`: it ran on a worker
        (which recorded it in its history); else it is recorded here."""
        self.tasks.pop(spec.task_id, None)
        spec.worker = None
        if spec.parent is not None:
            siblings = self.children.get(spec.parent)
            if siblings is not None:
                siblings.discard(spec.task_id)
                if not siblings:
                    del self.children[spec.parent]
        store = self.store
        if spec.pinned is not None:
            store.unpin(spec.pinned)
            spec.pinned = None
        if spec.num_returns == STREAMING:  # its items, then its end, before its return
            self.generators.finish(spec, outcome)
        if outcome and outcome[0] == ERROR:  # one error stands for every return
            self.failed += 1
            self.failures.append((spec.task_id, spec.attempt, ser.error_message(outcome)))
            if not ran:
                self.history.append((spec.task_id, spec.fn_id, spec.attempt,
                                     (None, None, time.monotonic_ns()), ser.error_name(outcome)))
            for oid in spec.return_ids():
                store.put(oid, outcome, None, inner or ())
        elif spec.num_returns == 1:
            self.finished += 1
            store.put(spec.task_id, outcome[0], spec.name, inner[0] if inner else ())
        else:
            self.finished += 1
            for i, (oid, stored) in enumerate(zip(spec.return_ids(), outcome)):
                store.put(oid, stored, spec.name, inner[i] if inner else ())
        if spec.deps:
            for oid in spec.deps:
                store.unneed(oid)
        if spec.held:
            for oid in spec.held:
                store.unneed(oid)
        if spec.args_stored[0] == SHM and not spec.creates:  # (its actor keeps those)
            _shm.unlink(spec.args_stored[1])
        if spec.actor is not None:
            for call in self.actors.call_finished(spec, outcome):
                self.finish(call, spec.actor.death)

    # ------------------------------------------------------------ actors
    def create_actor(self, handle, options, class_bytes, creation_args):
        """A new actor, its creation submitted (the caller stored its token)."""
        actor = self.actors.register(handle, options, class_bytes, creation_args)
        spec = self.actors.creation_spec(actor, new_base_id())
        if spec.held:
            spec.lent = self.lend(spec.held)
        self.add(spec)
        return actor

    def actor_worker_lost(self, w, inflight, why):
        """`w`, an actor's worker, is gone with these calls pushed to it: the actor
        restarts (they are retried per max_task_retries, or fail with
        ActorUnavailableError), or is dead (they, and every call after, fail with its
        ActorDiedError)."""
        actor = w.actor
        restart = self.actors.lost(actor, why)
        retried = []
        for spec in inflight:
            self._off_worker(spec)
            spec.sent = False
            if spec.cancelled:
                self.finish(spec, cancelled_stored(spec))
            elif spec.creates:
                self.finish(spec, actor.death or self.actors.unavailable(actor, why))
            elif restart and _retries_left(spec, spec.options.max_task_retries):
                spec.attempt += 1
                retried.append(spec)
            else:
                self.finish(spec, self.actors.unavailable(actor, why) if restart
                            else actor.death)
        if restart:
            actor.waiting.extendleft(reversed(retried))
            spec = self.actors.creation_spec(actor, new_base_id())
            if spec.held:
                spec.lent = self.lend(spec.held)
            self.add(spec)
        else:
            self.end_actor(actor, actor.death)

    def generators_dropped(self):
        """Generators whose every ref is gone: their tasks still running are cancelled."""
        for task_id in self.generators.take_freed():
            if task_id in self.tasks:
                self.cancel(task_id, False, True)

    def end_actor(self, actor, death):
        """`actor` is dead (`death`: the stored error its calls get): its calls not
        pushed yet fail."""
        for spec in self.actors.die(actor, death):
            self.finish(spec, death)

    def on_done(self, spec, outcome, inner, retryable):
        """`spec`'s attempt on a worker ended (a Done record): retried, or finished."""
        if spec.cancelled:  # whatever it managed to return, it was cancelled
            if outcome and outcome[0] != ERROR:
                for stored in outcome:  # results nobody will read: their segments go
                    if stored[0] == SHM:
                        _shm.unlink(stored[1])
            self.finish(spec, cancelled_stored(spec), ran=True)
        elif outcome and outcome[0] == ERROR and self._retries(spec, retryable):
            spec.attempt += 1
            spec.worker = None
            if spec.actor is None:
                self.scheduler.push(spec)
            else:  # again on the same actor, behind the calls made meanwhile (as Ray)
                spec.sent = False
                if not self.actors.retry(spec):
                    self.finish(spec, spec.actor.death)
        else:
            self.finish(spec, outcome, inner, True)

    def _retries(self, spec, retryable) -> bool:
        opts = spec.options
        limit = opts.max_retries if spec.actor is None else opts.max_task_retries
        if not opts.retry_exceptions or not _retries_left(spec, limit):
            return False
        return opts.retry_exceptions is True or retryable

    def bounced(self, w, task_id):
        """A task queued on `w` came back unstarted (w blocked): first in line again."""
        for spec in w.inflight:
            if spec.task_id == task_id:
                w.inflight.remove(spec)
                self._off_worker(spec)
                if spec.cancelled:
                    self.finish(spec, cancelled_stored(spec))
                else:
                    self.scheduler.push(spec, front=True)
                return

    def _off_worker(self, spec):
        """`spec` left its worker unfinished: the inputs it was handed may spill again."""
        spec.worker = None
        if spec.pinned is not None:
            self.store.unpin(spec.pinned)
            spec.pinned = None

    def orphaned(self, w, inflight, why):
        """`w` died with these tasks on it: the unstarted ones run elsewhere, the
        started ones are retried per max_retries, or fail with WorkerCrashedError."""
        for i, spec in enumerate(inflight):
            self._off_worker(spec)
            started = i == 0 or spec.helping
            spec.helping = False
            if spec.cancelled:  # killed by cancel(force=True), or cancelled meanwhile
                self.finish(spec, cancelled_stored(spec))
                continue
            opts = spec.options
            if not started:
                self.scheduler.push(spec, front=True)
            elif opts.max_retries < 0 or spec.attempt < opts.max_retries:
                spec.attempt += 1
                self.scheduler.push(spec, front=True)
            else:
                self.finish(spec, ser.error_stored(WorkerCrashedError(
                    f"The worker died unexpectedly while executing this task "
                    f"({spec.name}, pid={w.pid}, {why}); it was tried {spec.attempt + 1} "
                    f"time(s) (max_retries={opts.max_retries}).")))

    def drop_all(self):
        """Shutdown: the arguments' segments go with the tasks."""
        for spec in self.tasks.values():
            if spec.args_stored[0] == SHM:
                _shm.unlink(spec.args_stored[1])
        self.tasks.clear()


def _retries_left(spec, limit) -> bool:
    """Whether `spec` may run again under `limit` (-1: forever); an actor call's limit
    of None is its actor's max_task_retries."""
    if limit is None:
        limit = spec.actor.options.max_task_retries
    return limit < 0 or spec.attempt < limit

