"""Which worker runs which ready task, within the node's resources.

    ready tasks, grouped by resource request ──place()──► a worker (charged) or wait

A worker runs one task at a time and is charged its task's request while busy.
Short tasks (by the function's measured mean duration) may queue behind a busy
worker holding the same request, so the ring always has work and the worker never
sleeps between them; long or unknown ones wait for an idle worker so a slow task
cannot hold quick ones hostage. When a task fits the free resources but every
worker is busy (because some are blocked in get, or requests are fractional),
an extra worker is started, up to a cap. Before that, a worker blocked in ``get``
on a task's result "helps": it runs that task itself, on top of the frame that
waits for it. A frame only ever helps its own dependencies, so the help never
delays it, the stack grows no deeper than the user's recursion, and a recursion
as wide as you like (fib(20), one task per call) runs on the base workers.
"""
from __future__ import annotations

import math
from collections import deque

from ._resources import ResourceLedger
from ._worker_pool import WorkerHandle, WorkerPool
from .exceptions import ObjectStoreFullError

# Queue behind a busy worker only while the queued work stays under this much time.
PIPELINE_SECONDS = 0.002
PIPELINE_MAX = 64
# Durations are smoothed exponentially: each new one weighs this much.
SMOOTHING = 0.2


class Scheduler:
    def __init__(self, ledger: ResourceLedger, pool: WorkerPool, cores: list, max_workers: int,
                 envs: dict, evict):
        self.ledger = ledger
        self.pool = pool
        self.cores = cores
        self.max_workers = max_workers
        self.envs = envs           # runtime_env key -> _runtime_env.Prepared, once set up
        self.evict = evict         # callable(worker): an idle worker leaves to make room
        self.ready = {}            # spec.queue (request, + runtime_env) -> deque[TaskSpec]
        self.stale = 0             # entries of those deques taken out of turn (see take)
        self.fn_mean = {}          # fn_id -> mean run time (s), exponentially smoothed
        self.awaited = {}          # oid -> the open get (an _Rpc) of a worker that needs it
        self.recent_mean = 0.0     # mean run time of the latest tasks, any function
        self._spread_next = 0

    def push(self, spec, front=False):
        spec.queued = True
        q = self.ready.get(spec.queue)
        if q is None:
            q = self.ready[spec.queue] = deque()
        if front:
            q.appendleft(spec)
        else:
            q.append(spec)

    def take(self, spec):
        """Take a queued task out to run it out of turn (a blocked worker helps with it,
        a cancel, its placement group removed). Its entry stays in the deque, stale, and
        is dropped when it reaches the front (Dispatcher.dispatch_queued): removing it
        from the middle would cost the deque's length, every help of a long get."""
        spec.queued = False
        self.stale += 1

    def queued_count(self) -> int:
        return sum(len(q) for q in self.ready.values()) - self.stale

    def helpable(self, rpc) -> bool:
        """Can the worker of this open get run a task for it right now?"""
        w = rpc.worker
        return (rpc.num_returns is None and not rpc.answered and w.charge is None
                and bool(w.rpcs) and w.rpcs[-1] is rpc and not w.retiring
                and w.actor is None)  # an actor's process runs its own calls only

    def record_duration(self, fn_id, seconds):
        m = self.fn_mean.get(fn_id)
        self.fn_mean[fn_id] = seconds if m is None else (1 - SMOOTHING) * m + SMOOTHING * seconds
        self.recent_mean = (1 - SMOOTHING) * self.recent_mean + SMOOTHING * seconds

    def place(self, spec) -> WorkerHandle | None:
        """A worker to run `spec` now, charging its resources; None if none can.

        A worker runs tasks for one GPU device set only, fixed when it starts
        (CUDA_VISIBLE_DEVICES; none for CPU workers): a GPU task gets devices from
        the ledger, then an idle worker of exactly those devices, or a new one."""
        request = spec.request
        strategy = spec.options.scheduling_strategy
        workers = self.pool.workers
        env = spec.env  # a runtime_env's tasks run only on workers started for it
        if self.ledger.fits(request):
            gpus = ()
            if spec.options.num_gpus:
                gpus = self.ledger.gpus.assign(spec.options.num_gpus)
                if gpus is None:  # the GPU total fits, but no device has the room
                    return None
            if strategy == "SPREAD":
                idle = [w for w in workers if not w.inflight and not w.rpcs and w.gpus == gpus
                        and not w.retiring and w.env == env]
                w = min(idle, key=lambda w: (w.index - self._spread_next) % (1 << 30),
                        default=None)
                if w is not None:
                    self._spread_next = w.index + 1
            else:
                w = None  # the warmest idle worker (a loop: this runs once per task)
                for x in workers:
                    if (not x.inflight and not x.rpcs and x.gpus == gpus and not x.retiring
                            and x.env == env and (w is None or x.idle_since > w.idle_since)):
                        w = x
            if w is not None:
                self.ledger.charge(w, request)
                return w
            if len(workers) >= self.max_workers:
                self._make_room(workers, env, gpus)
                workers = self.pool.workers
            if len(workers) < self.max_workers:
                try:
                    w = self.pool.spawn(self.cores[len(workers) % len(self.cores)], extra=True,
                                        gpus=gpus, env=self.envs.get(env))
                except ObjectStoreFullError:  # no room for its channel in /dev/shm now:
                    return None               # the task waits for a worker to be free
                self.ledger.charge(w, request)
                return w
        return self._pipeline(spec, workers)

    def _make_room(self, workers, env, gpus):
        """The pool is full, with no idle worker of this kind (runtime_env, GPU devices):
        the longest idle extra worker of another kind goes (Ray does the same)."""
        idle = [w for w in workers if w.extra and not w.inflight and not w.rpcs
                and not w.exports and not w.outbox and (w.env != env or w.gpus != gpus)]
        if idle:
            self.evict(min(idle, key=lambda w: w.idle_since))

    def _pipeline(self, spec, workers):
        if spec.options.scheduling_strategy == "SPREAD" or not spec.pipelinable:
            return None
        mean = self.fn_mean.get(spec.fn_id)
        if mean is None:
            return None
        depth = PIPELINE_MAX if mean <= 0 else min(PIPELINE_MAX, math.floor(PIPELINE_SECONDS / mean))
        if depth < 2:
            return None
        best = None  # the least loaded worker below the depth (a loop: once per task)
        request, env = spec.request, spec.env
        for w in workers:
            n = len(w.inflight)
            if (n < depth and w.charge == request and not w.rpcs and not w.retiring
                    and w.env == env):
                best, depth = w, n
        return best

