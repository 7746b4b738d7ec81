"""The life of worker processes, as the driver manages them: borrowed refs, and the
one way a worker leaves the session.

    evicted (the pool is full)  ─┐
    retired (max_calls reached)  │
    idle extra worker            ├─► remove_worker(w, why) ─► out of the pool, its refs
    an actor's end (out of scope,│   and resources let go, its process reaped later, a
      its __init__ failed)       │   base worker replaced; a dead one's tasks retried
    died                        ─┘   and its GPU objects lost; an actor's worker: its
                                     actor restarts or is dead (TaskTable)

A worker holding ObjectRef instances of an object keeps it alive: the driver counts,
per worker, the references it was granted (WorkerHandle.grant). A grant comes with
each Submit and Put (the refs the worker gets back), and with a Refs record for refs
the worker came to hold otherwise. The worker sends Refs borrows before, and
releases after, the message that made or ended them (a Done whose result holds the
ref counts first). Every method runs under the session's lock.
"""
from __future__ import annotations

import sys

from .. import _ring
from .._protocol import EXIT, Exit
from .._worker_pool import describe_exit
from ..exceptions import ObjectStoreFullError

EVICTED, RETIRED, IDLE, DIED, ENDED = "evicted", "retired", "idle", "died", "ended"
IDLE_EXTRA_RETIRE = 2.0
IDLE_ENV_RETIRE = 10.0       # a runtime_env's worker costs more to start again


class Workers:
    def __init__(self, pool, store, ledger, dispatch, rpcs, tasks, actors, gpu, envs):
        self.pool = pool
        self.actors = actors
        self.store = store
        self.ledger = ledger
        self.dispatch = dispatch
        self.rpcs = rpcs
        self.tasks = tasks
        self.gpu = gpu
        self.envs = envs
        self.stopping = False
        self._exited = []           # processes told to exit, not reaped yet

    def remove_worker(self, w, why):
        """Take `w` out of the session, for `why` (EVICTED, RETIRED, IDLE, ENDED or DIED)."""
        if w.gone:  # removed already (retired just before its last GPU object went)
            return
        if why != DIED:
            w.ring.push(_ring.encode(Exit(EXIT), w.ring, self.pool.prefix))
        self.pool.remove(w)
        self.dispatch.forget(w)
        self.ledger.uncharge(w)
        self.rpcs.forget(w)
        self.tasks.generators.forget_worker(w)
        grants, w.grants = w.grants, {}  # its refs no longer hold anything
        for oid, n in grants.items():
            self.store.unborrow(oid, n)
        # what it maps counts until its process is gone (one told to exit may run on)
        self.store.segments.worker_left(w, None if why == DIED else w.proc)
        inflight = list(w.inflight)  # (only a dead worker's or an actor's has any)
        w.inflight.clear()
        if why == DIED:
            why_text = describe_exit(w.proc.returncode)
            args = [t.args_stored for t in self.tasks.tasks.values()]
            args += [a.creation_args[0] for a in self.actors.by_id.values()]
            self.store.drop_dead_worker_segments(w, self.pool.config["object_prefix"], args)
        else:
            why_text = why
            self._reap_later(w.proc)
        if w.actor is not None:
            self.tasks.actor_worker_lost(w, inflight, why_text)
        elif why == DIED:
            self.tasks.orphaned(w, inflight, why_text)
        if why == DIED:
            self.gpu.lost_with(w, why_text)
        if not w.extra and why in (RETIRED, DIED) and not self.stopping:
            try:
                self.pool.spawn(w.core, env=self.envs.prepared.get(w.env))  # in its environment
            except ObjectStoreFullError as e:  # no room for its channel in /dev/shm now;
                # tasks start extra workers once there is room again
                print(f"shmray: a worker was not replaced: {e}", file=sys.stderr)

    def retire_if_done(self, w):
        """A max_calls worker exits once idle (after its results hold their refs) and
        its GPU objects are freed."""
        if w.retiring and w.idle and not w.exports:
            self.remove_worker(w, RETIRED)

    def on_refs(self, w, kind, borrows, releases, escaped):
        """A Refs record: the refs `w` came to hold, and let go of."""
        store = self.store
        for oid in borrows:
            w.grant(oid, store)
        for oid in escaped:
            store.keep_until_shutdown(oid)
        grants = w.grants
        for oid, n in releases:
            left = grants.get(oid, 0) - n
            if left > 0:
                grants[oid] = left
            else:
                grants.pop(oid, None)
            store.unborrow(oid, n)

    def on_maps(self, w, kind, mapped, unmapped):
        """A Maps record: the segments `w` came to map, and those it maps no more."""
        self.store.segments.worker_maps(w, mapped, unmapped)

    def rebase(self, prepared):
        """The job's pip environment is ready: the base workers, idle and plain until
        now (every task has the job's environment), start again in it."""
        for w in [w for w in self.pool.workers if not w.extra and w.env is None and w.idle
                  and not w.exports]:
            self.remove_worker(w, EVICTED)
            self.pool.spawn(w.core, env=prepared)

    def dead(self) -> list:
        return [w for w in self.pool.snapshot[0] if w.proc.poll() is not None]

    def retire_idle(self, now):
        """Extra workers idle for a while go (the pool grows again when needed); the
        others' outboxes are flushed (actors' too)."""
        for w in self.pool.actor_workers:
            if w.outbox:
                w.flush()
        for w in list(self.pool.workers):
            if w.outbox:
                w.flush()
            elif (w.extra and w.idle and not w.exports and now - w.idle_since >
                  (IDLE_ENV_RETIRE if w.env else IDLE_EXTRA_RETIRE)):
                self.remove_worker(w, IDLE)

    def _reap_later(self, proc):
        """Collect exited workers without blocking the loop."""
        self._exited.append(proc)
        self._exited[:] = [p for p in self._exited if p.poll() is None]

    def reap(self):
        """Shutdown: wait for the workers told to exit (kill the slow ones)."""
        import subprocess  # (its TimeoutExpired: here, a session starts without subprocess)

        for p in self._exited:
            try:
                p.wait(0.5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._exited.clear()
