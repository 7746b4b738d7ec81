"""The driver's runtime: one session of workers, object store and scheduler.

      user thread                         background thread
  submit ─► TaskSpec ─► deps ─► ready ─► place ─► task ring ─► worker
  get/wait ─┐                                                      │
            ├─ pump: pop result rings ◄── doorbell ◄───────────────┘
  bg (only when nobody else pumps) ─┘   DONE/SUBMIT/PUT/GET/WAIT/LOG/BOUNCE

Whoever needs progress pumps: ``get`` pops results itself (no thread hand-off on
the latency path), ``remote`` drains what is there without waiting, and the
background thread drains rings that nobody has popped for a millisecond (the user
is busy elsewhere) and does the housekeeping: dead workers, rpc deadlines,
outboxes, idle extra workers. Two locks: ``_pump_lock`` makes one thread the
rings' consumer; ``_lock`` guards the state. Always take them in that order.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import itertools
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import deque

from . import (_context, _gpu, _ring, _runtime_env, _serialization as ser, _shm, _spill,
               _snapshot, _status_area)
from ._cring import pop_any, wait_stalled
from ._object_ref import ObjectRef, _hooks, collect_refs, new_base_id, task_id_of
from ._object_store import ObjectStore
from ._segment_pool import SegmentPool
from ._resources import ResourceLedger, affinity_cpus, infeasible, node_totals, warn_infeasible
from ._scheduler import Scheduler
from ._task import TaskSpec
from ._worker_pool import WorkerPool, describe_exit, start_method
from .exceptions import (GetTimeoutError, ObjectLostError, ObjectStoreFullError, RayTaskError,
                         RuntimeEnvSetupError, TaskCancelledError, TaskUnschedulableError,
                         WorkerCrashedError)
from .util.scheduling_strategies import NodeAffinitySchedulingStrategy

# How long a waiting pop spins before it sleeps on the futex (seconds). Spinning
# catches a reply from a worker on the other core in well under a microsecond;
# sleeping costs ~20 µs to wake. But a spinning driver takes a core from the
# workers, so it spins only while tasks are short (recent mean below SPIN_IF_TASKS_UNDER).
# Workers spin less: they share cores with the driver.
DRIVER_SPIN = 50e-6
SPIN_IF_TASKS_UNDER = 200e-6
WORKER_SPIN = 20e-6
HOUSEKEEP_EVERY = 0.02
HISTORY = 10_000             # finished tasks remembered for `shmray list tasks` / timeline
# Waking a sleeping worker costs a system call and often a context switch on the
# driver's core (~25 µs, more than the rest of a submit). Inside a burst of
# .remote() calls (less than BURST_GAP apart) tasks are pushed without waking
# their worker; it is woken once per WAKE_BATCH tasks, as soon as the driver waits
# for anything (get, wait), or by the background watcher within a millisecond.
BURST_GAP = 200e-6
WAKE_BATCH = 64
# Inside a burst, tasks for one worker are pickled and pushed together: up to
# TASK_BATCH per message, sent whenever results are collected (every 8th submit),
# and at the latest when the driver next waits or the background thread looks.
TASK_BATCH = 16
IDLE_EXTRA_RETIRE = 2.0
IDLE_ENV_RETIRE = 10.0       # a runtime_env's worker costs more to start again
QUIET = 0.01                 # no .remote() for this long: the background thread pumps
LEND_MAX = 64                # stored forms lent with one task at most
LEND_INLINE_MAX = 1024       # inline values lent only up to this size
DRAIN_BATCH = 512


class DriverRuntime:
    is_driver = True

    def __init__(self, num_cpus=None, num_gpus=None, resources=None, object_store_memory=None,
                 log_to_driver=True, resolve_nested_refs=True, max_workers=None,
                 runtime_env=None):
        method = start_method()  # checked before anything is created
        _shm.reclaim_dead_sessions()
        self.pid = os.getpid()
        self.tag = secrets.token_hex(4)
        self.prefix = _shm.session_prefix(self.pid, self.tag)
        self.node_id = secrets.token_hex(28)
        self.started = time.time()
        self.session_root = _shm.session_root(self.prefix)
        _runtime_env.allow_setups()
        self.job_env = runtime_env  # init(runtime_env=...), normalized: tasks inherit it
        self._envs = {}             # runtime_env key -> _EnvState
        self._job_key = self._register_env(runtime_env)
        base_env = self._job_env_now()  # first: if it cannot be set up, nothing is left over
        self.resolve_nested = resolve_nested_refs
        self.log_to_driver = log_to_driver
        self.object_store_memory = object_store_memory
        totals = node_totals(num_cpus, num_gpus, resources,
                             object_store_memory=object_store_memory)
        self.ledger = ResourceLedger(totals)
        cores = affinity_cpus()
        n_base = math.ceil(totals["CPU"])
        self.control = _ring.ControlArea(self.prefix + "ctl", create=True)
        # What `shmray status` reads (see _status_area): words in the control segment, and
        # the session's directory with session.json and, when asked, snapshot.json.
        self.status = _status_area.DriverStatus(self.control.mm, self.pid, self.started)
        self.session_info = {
            "driver_pid": self.pid, "tag": self.tag, "prefix": self.prefix,
            "control": self.control.name, "started": self.started, "node_id": self.node_id,
            "python": _status_area.python_description(), "argv": list(sys.argv),
            "cwd": os.getcwd(), "totals": totals}
        _status_area.write_session_file(self.session_root, self.session_info)
        # Tasks that ended without running (cancelled early, unschedulable, a failed
        # input): (task id, fn id, attempt, (None, None, end ns), error type). Those that
        # ran are in their workers' records (see _status_area.WorkerStatus).
        self.history = deque(maxlen=HISTORY)
        self.finished = 0            # tasks whose last attempt succeeded
        self.failed = 0              # ... or failed (cancelled ones too)
        self.object_prefix = self._object_location(int(totals["object_store_memory"]))
        self.segments = SegmentPool(self.new_segment_name)
        self.store = ObjectStore(self.segments, int(totals["object_store_memory"]),
                                 _shm.session_dir(self.prefix, "spill"))
        self.pool = WorkerPool(self.prefix, self.control, {
            "driver_pid": self.pid, "session_prefix": self.prefix, "control": self.control.name,
            "node_id": self.node_id, "resolve_nested_refs": resolve_nested_refs,
            "log_to_driver": log_to_driver, "cwd": os.getcwd(), "sys_path": _worker_sys_path(),
            "spin": WORKER_SPIN, "totals": totals, "object_prefix": self.object_prefix}, method)
        self.scheduler = Scheduler(self.ledger, self.pool, cores,
                                   max_workers or max(32, 4 * n_base))
        self.n_base = n_base
        self.fn_bytes = {}          # fn_id -> (pickled function, name)
        self.tasks = {}             # task_id -> TaskSpec, until its last attempt ends
        self._verdicts = {}         # id(TaskOptions) -> (options, error or None, env key or
                                    # None): worked out once per options
        self._child_envs = {}       # (id(TaskOptions), parent's env key) -> (options, key)
        self.scheduler.evict = self._evict
        if base_env is not None:
            self.scheduler.envs[base_env.key] = base_env
        self._rpcs = {}             # (worker index, req_id) -> _Rpc
        self._lock = threading.Lock()
        self._pump_lock = threading.Lock()
        self._seg_ids = itertools.count(1)
        self._rr = 0
        self._last_submit = 0.0
        self._submits = 0
        self._waited = False         # a get/wait since the last submit (no burst then)
        self._pumpers = 0            # user threads inside _wait_until (they pump)
        self._pumpers_lock = threading.Lock()
        self._nobody_pumps = threading.Event()
        self._bg_parked = False      # the background thread waits for _nobody_pumps
        self._burst = False          # inside submit, with the previous one just before:
                                     # dispatches defer their wakes
        self._unwoken = {}           # worker -> tasks pushed to it without a wake
        self._batched = set()        # workers with tasks in w.batch, not pushed yet
        self._next_housekeep = 0.0
        self._stopping = False
        self._closed = False
        for i in range(n_base):
            self.pool.spawn(cores[i % len(cores)], env=base_env)
        _hooks.created = self.store.created_queue.append
        _hooks.dropped = self.store.drop_queue.append
        _hooks.escaped = self.store.keep_until_shutdown
        _hooks.future = self.future
        _gpu.host_copy = self._gpu_host_copy
        self.store.on_gpu_free = self._on_gpu_free
        self._host_copies = {}      # GPU object id -> stored form of its arrays' host copies
        if self._job_key is not None and self._envs[self._job_key].prepared is None and \
                self.job_env.get("config", {}).get("eager_install", True):
            self._start_env_setup(self._job_key)  # as Ray: the job's pip packages, at init
        self._bg = threading.Thread(target=self._background, name="shmray-pump", daemon=True)
        self._bg.start()
        atexit.register(self.shutdown)

    def _object_location(self, capacity: int) -> str:
        """Where objects' segments go: /dev/shm, or, when /dev/shm cannot hold the store
        (a default Docker container has 64 MB), files in a session directory, mapped
        the same way (Ray falls back to /tmp too). Returns the names' prefix."""
        if capacity <= _shm.shm_size():
            return self.prefix
        directory = _shm.session_dir(self.prefix, "objects")
        os.makedirs(directory, mode=0o700)
        warnings.warn(f"shmray: {_shm.SHM_DIR} holds {_shm.shm_size():,} bytes, less than the "
                      f"object store's {capacity:,} (object_store_memory): objects go to files "
                      f"in {directory} instead, which is slower. Give the machine or container "
                      f"a larger {_shm.SHM_DIR} (docker run --shm-size=...).", stacklevel=4)
        return os.path.join(directory, "")

    # ================================================================ submit
    def new_segment_name(self) -> str:
        return f"{self.object_prefix}o{next(self._seg_ids)}"

    def submit(self, rf, args, kwargs, options):
        fn_id = rf._fn_id
        if fn_id not in self.fn_bytes:
            try:
                self.fn_bytes[fn_id] = (rf._pickled(), rf._name)
            except Exception as e:
                raise TypeError(f"Could not serialize the remote function {rf._function_name}: "
                                f"{type(e).__name__}: {e}") from e
        if args or kwargs:
            args, kwargs, refs = ser.extract_refs(args, kwargs, self.resolve_nested)
            try:
                if ser.args_hold_no_refs(args, kwargs):
                    args_stored, held = ser.to_stored((args, kwargs), self.new_segment_name), None
                else:
                    args_stored, held = collect_refs(ser.to_stored, (args, kwargs),
                                                     self.new_segment_name)
            except TypeError as e:
                raise TypeError(collect_refs(_unpicklable_argument, rf._name, args, kwargs,
                                             e)[0]) from None
        else:
            args_stored, refs, held = ser.NO_ARGS, None, None
        task_id = new_base_id()
        spec = TaskSpec(task_id, fn_id, rf._name, options, args_stored, refs, True)
        if held:  # refs inside the arguments: the task holds their objects until it ends
            spec.held = held
            spec.lent = self._lend(held)
        now = time.monotonic()
        # Inside a burst, what this call dispatches (its own task, or queued ones
        # that results free up in the drain below) is pushed without a wake.
        self._burst = now - self._last_submit < BURST_GAP and not self._waited
        self._last_submit = now
        self._waited = False
        try:
            with self._lock:
                self._add_task(spec)
            self._submits += 1
            # In a burst, results are collected every 8th call: workers hold up to
            # 64 queued tasks each, and an empty drain costs as much as a submit's
            # scheduling.
            if (not self._burst or not self._submits & 7) and self._pump_lock.acquire(False):
                try:
                    self._drain(DRAIN_BATCH)
                finally:
                    self._pump_lock.release()
        finally:
            self._burst = False
        n = spec.num_returns
        if n == 1:
            return ObjectRef(task_id, True)
        return [ObjectRef(task_id + i, True) for i in range(n)] if n else None

    def _add_task(self, spec, submitter=None):
        """Register a new task (under _lock): expect its returns, count the refs to
        them (the driver's, or the submitting worker's), wait for its inputs."""
        store = self.store
        self.tasks[spec.task_id] = spec
        if spec.num_returns == 1:
            store.pending.add(spec.task_id)
            if submitter is None:  # store.own_new(), inlined: what ObjectRef(.., True) means
                store._local[spec.task_id] = 1
            else:
                self._grant(submitter, spec.task_id)
        else:
            for oid in spec.return_ids():
                store.pending.add(oid)
                if submitter is None:
                    store.own_new(oid)
                else:
                    self._grant(submitter, oid)
        if spec.held:
            for oid in spec.held:
                store.need(oid)
        if spec.deps:  # before anything can _finish it (which lets go of them)
            for oid in spec.deps:
                store.need(oid)
        verdict = self._verdicts.get(id(spec.options))
        if verdict is None or verdict[0] is not spec.options:
            verdict = self._verdicts[id(spec.options)] = (
                spec.options, self._never_runs(spec), self._env_key(spec.options))
        env = verdict[2] if submitter is None else self._task_env(spec, verdict, submitter)
        if env is not None:  # a runtime_env: its own workers, its own queue
            spec.env = env
            spec.queue = (spec.request, env)
        if verdict[1] is None and not spec.deps:  # the common case: runnable now
            self._ready(spec)
            return
        if verdict[1] is not None:
            if isinstance(verdict[1], TaskUnschedulableError):
                warn_infeasible(spec.name, verdict[1].error_message)
            self._finish(spec, ser.error_stored(verdict[1]))
            return
        if spec.deps:
            missing = [oid for oid in spec.deps if oid not in store.values]
            lost = [oid for oid in missing if oid not in store.pending]
            if lost:
                self._finish(spec, ser.error_stored(_lost(lost[0])))
                return
            spec.unresolved = len(missing)
            for oid in missing:
                store.on_ready(oid, lambda oid, spec=spec: self._dep_ready(spec))
            if missing:
                return
        self._ready(spec)

    def _never_runs(self, spec):
        """The error every task with these options gets at once, or None if they can run."""
        reason = self._unschedulable(spec)
        if reason:
            return TaskUnschedulableError(reason)
        return None

    def _unschedulable(self, spec):
        strategy = spec.options.scheduling_strategy
        node = None
        soft = True
        if isinstance(strategy, NodeAffinitySchedulingStrategy):
            node, soft = strategy.node_id, strategy.soft
        elif strategy == "NODE_AFFINITY":
            node, soft = spec.options.scheduling_strategy_node_id, False
        if node is not None and node != self.node_id and not soft:
            return (f"node affinity to node {node!r}, which does not exist (this node is "
                    f"{self.node_id}) and soft=False")
        return infeasible(self.ledger.totals, spec.request)

    # ======================================================== runtime_env
    # A task with a runtime_env (its own, or the job's) runs on workers started for
    # that environment. The first such task sets the environment up on a thread
    # (copies, a pip venv: seconds to minutes); its tasks wait meanwhile, and fail
    # with RuntimeEnvSetupError if it cannot be set up. Other tasks go on as usual.
    def _env_key(self, options):
        """The key of the environment tasks with these options run in, or None."""
        return self._register_env(_runtime_env.merge(self.job_env, options.runtime_env))

    def _register_env(self, env):
        if not env or not any(k in env for k in _runtime_env.EFFECTIVE):
            return None
        key = _runtime_env.key(env)
        if key not in self._envs:
            self._envs[key] = _EnvState(env)
        return key

    def _job_env_now(self):
        """The job's runtime_env, set up now unless it needs pip (seconds to minutes:
        that one is set up on a thread, and the base workers start plain and are
        replaced once it is ready). Returns what the base workers start in (None:
        plain). RuntimeEnvSetupError if it cannot be set up (nothing is left behind)."""
        key = self._register_env(self.job_env)
        if key is None or "pip" in self.job_env:
            return None
        state = self._envs[key]
        try:
            state.prepared = _runtime_env.prepare(state.env, self.session_root, _env_log)
        except BaseException as e:
            shutil.rmtree(self.session_root, ignore_errors=True)
            if isinstance(e, RuntimeEnvSetupError) or not isinstance(e, Exception):
                raise
            raise RuntimeEnvSetupError(f"Failed to set up runtime environment "
                                       f"{state.env}: {type(e).__name__}: {e}") from e
        return state.prepared

    def _task_env(self, spec, verdict, submitter):
        """The key of the environment `spec` runs in: its options' merged with its
        parent's, which is the job's for the driver's tasks and the submitting
        worker's environment for tasks submitted inside a task (Ray's inheritance)."""
        parent = None if submitter is None else submitter.env
        if parent is None or parent == self._job_key:
            return verdict[2]
        cache_key = (id(spec.options), parent)
        cached = self._child_envs.get(cache_key)
        if cached is None or cached[0] is not spec.options:
            env = _runtime_env.merge(self._envs[parent].env, spec.options.runtime_env)
            cached = self._child_envs[cache_key] = (spec.options, self._register_env(env))
        return cached[1]

    def _evict(self, w):
        """The pool is full and a task needs a worker of another kind (runtime_env or
        GPU devices): `w`, idle, extra, goes to make room."""
        w.ring.push(_ring.encode((_ring.EXIT,), w.ring, self.prefix))
        self.pool.remove(w)
        self._drop_grants(w)
        self._unwoken.pop(w, None)
        _reap_later(w.proc)

    def _rebase(self, prepared):
        """The job's pip environment is ready: the base workers, idle and plain until
        now (every task has the job's environment), start again in it."""
        for w in [w for w in self.pool.workers if not w.extra and w.env is None and w.idle
                  and not w.exports]:
            self._evict(w)
            self.pool.spawn(w.core, env=prepared)

    def _env_ready(self, spec) -> bool:
        """Is the task's environment set up? If not, the task waits for it (or fails,
        if setting it up failed)."""
        state = self._envs[spec.env]
        if state.prepared is not None:
            return True
        if state.error is not None:
            self._finish(spec, ser.error_stored(state.error))
            return False
        state.waiting.append(spec)
        self._start_env_setup(spec.env)
        return False

    def _start_env_setup(self, key):
        state = self._envs[key]
        if state.thread is None:
            state.thread = threading.Thread(target=self._set_up_env, args=(key,), daemon=True,
                                            name=f"shmray-runtime-env-{key}")
            state.thread.start()

    def _set_up_env(self, key):
        """(A thread.) Prepare the environment, then run or fail its waiting tasks."""
        state = self._envs[key]
        try:
            prepared, error = _runtime_env.prepare(state.env, self.session_root,
                                                   _env_log), None
        except RuntimeEnvSetupError as e:
            prepared, error = None, e
        except Exception as e:  # a copy that failed, a full disk...
            prepared, error = None, RuntimeEnvSetupError(
                f"Failed to set up runtime environment {state.env}: {type(e).__name__}: {e}")
        with self._lock:
            if self._stopping:
                return
            state.prepared, state.error = prepared, error
            if prepared is not None:
                self.scheduler.envs[key] = prepared
                if key == self._job_key:
                    self._rebase(prepared)
            waiting, state.waiting = state.waiting, []
            for spec in waiting:
                if error is not None:
                    if not spec.cancelled:
                        self._finish(spec, ser.error_stored(error))
                else:
                    self._ready(spec)

    def _dep_ready(self, spec):
        spec.unresolved -= 1
        if spec.unresolved == 0:
            self._ready(spec)

    def _ready(self, spec):
        """All inputs exist: fail at once if one is an error, else queue to run."""
        if spec.cancelled:  # cancelled while it waited for them: finished already
            return
        if spec.deps:
            values = self.store.values
            for oid in spec.deps:
                if values[oid][0] == ser.ERROR:
                    self._finish(spec, values[oid])
                    return
        if spec.env is not None and not self._env_ready(spec):
            return  # its runtime_env is being set up: _env_prepared() brings it back
        sched = self.scheduler
        rpc = sched.awaited.get(spec.task_id) if sched.awaited else None
        if (rpc is not None and sched.helpable(rpc) and not spec.options.num_gpus
                and rpc.worker.env == spec.env and self.ledger.fits(spec.request)):
            self._send_help(rpc.worker, spec)
            return
        # A task reading large objects waits for a free worker instead of queueing on a
        # busy one: its inputs stay in shared memory while it is on a worker.
        if spec.deps:
            spec.pipelinable = not self.store.any_large(spec.deps)
        if spec.queue not in sched.ready:  # nothing queued ahead of it: place it now
            w = sched.place(spec)
            if w is not None:
                self._send_task(w, spec)
                return
        sched.push(spec)
        self._dispatch()

    def _unpin(self, spec):
        if spec.pinned is not None:
            self.store.unpin(spec.pinned)
            spec.pinned = None

    def _send_help(self, w, spec):
        spec.helping = True
        self.scheduler.charge(w, spec.request)
        self._send_task(w, spec)

    def _help_blocked(self, w):
        """`w` waits in get for tasks still queued: let it run one of them itself."""
        rpc = w.rpcs[-1] if w.rpcs else None
        if rpc is None or not self.scheduler.helpable(rpc):
            return
        values, tasks = self.store.values, self.tasks
        for oid in rpc.oids:
            if oid not in values:
                spec = tasks.get(task_id_of(oid))
                if (spec is not None and spec.queued and not spec.options.num_gpus
                        and spec.env == w.env and self.ledger.fits(spec.request)):
                    self.scheduler.take(spec)
                    self._send_help(w, spec)
                    return

    def _dispatch(self):
        sched = self.scheduler
        for request in list(sched.ready):
            q = sched.ready[request]
            while q:
                w = sched.place(q[0])
                if w is None:
                    break
                spec = q.popleft()
                spec.queued = False
                self._send_task(w, spec)
            if not q:
                del sched.ready[request]

    def _send_task(self, w, spec):
        fn_id = spec.fn_id
        if fn_id not in w.fns:
            fn_bytes, name = self.fn_bytes[fn_id]
            w.send(_ring.encode((_ring.FUNC, fn_id, fn_bytes, name), w.ring, self.prefix))
            w.fns.add(fn_id)
        if spec.deps:
            dep_values = tuple(self._readable(o) for o in spec.deps)
            for stored in dep_values:
                self.segments.handed_out(stored)
            if spec.pinned is None:  # the worker maps them soon: not spilled meanwhile
                spec.pinned = spec.deps
                self.store.pin(spec.deps)
        else:
            dep_values = None
        if spec.lent:
            for stored in spec.lent.values():
                self.segments.handed_out(stored)
        task = (spec.task_id, fn_id, spec.num_returns, spec.args_stored, dep_values, spec.lent,
                spec.request, spec.helping, spec.attempt)
        w.inflight.append(spec)
        spec.worker = w
        max_calls = spec.options.max_calls
        if max_calls:  # its last call here: the worker gets nothing more, exits when idle
            calls = w.calls[fn_id] = w.calls.get(fn_id, 0) + 1
            if calls >= max_calls:
                w.retiring = True
                self._send_batch(w, wake=True)
        if self._burst:  # batched: one message, one pickling for several tasks
            w.batch.append(task)
            self._batched.add(w)
            if len(w.batch) >= TASK_BATCH:
                self._send_batch(w)
        else:
            w.batch.append(task)
            self._send_batch(w, wake=True)

    def _send_batch(self, w, wake=False):
        """Push `w`'s batched tasks as one TASKS message. Inside a burst the worker is
        woken once per WAKE_BATCH tasks (or when the driver next waits)."""
        batch, w.batch = w.batch, []
        self._batched.discard(w)
        if not batch:
            return
        data = _ring.encode((_ring.TASKS, batch), w.ring, self.prefix)
        n = self._unwoken.get(w, 0) + len(batch)
        if wake or n >= WAKE_BATCH:
            self._unwoken.pop(w, None)
            w.send(data)
        else:
            self._unwoken[w] = n
            w.send(data, wake=False)

    def _send_batches(self):
        for w in list(self._batched):
            self._send_batch(w)

    def _finish(self, spec, outcome, inner=None, ran=False):
        """The task's last attempt is over: store its results (or its error in each);
        `inner`: per result, the ids of the refs inside it (None: none anywhere), or
        for an error, the ids of those inside the exception. `ran`: it ran on a worker
        (which recorded it in its history); else the driver records it here."""
        self.tasks.pop(spec.task_id, None)
        spec.worker = None
        if spec.pinned is not None:
            self._unpin(spec)
        store = self.store
        if outcome and outcome[0] == ser.ERROR:  # one error stands for every return
            self.failed += 1
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
        if spec.args_stored[0] == ser.SHM:
            _shm.unlink(spec.args_stored[1])

    # ================================================================ pump
    def _drain(self, limit):
        """Handle up to `limit` messages that are already waiting (caller holds _pump_lock)."""
        workers, rings = self.pool.snapshot
        n = 0
        with self._lock:
            while rings and n < limit:
                got = pop_any(rings, self.control.doorbell, 0.0, 0.0, self._rr)
                if got is None:
                    break
                i, data = got
                self._rr = i + 1
                self._handle(workers[i], _ring.decode(data))
                n += 1
            if n:
                self._dispatch()  # once per batch: results free workers and inputs
            if self._batched:
                self._send_batches()
            self.store.process_refs()
            if time.monotonic() >= self._next_housekeep:
                self._housekeep()
        return n

    def _wake_deferred(self):
        if self._unwoken or self._batched:
            with self._lock:
                self._send_batches()
                for w in self._unwoken:
                    w.ring.wake()
                self._unwoken.clear()

    def _pump(self, timeout, done=None, spin=True):
        """Wait up to `timeout` seconds for messages and handle them; return early
        if done() already holds (another thread may have handled what we wait for)."""
        self._wake_deferred()
        if not self._pump_lock.acquire(timeout=min(timeout, 0.05) if timeout >= 0 else 0.05):
            return
        try:
            if self._drain(DRAIN_BATCH) or (done is not None and done()):
                return
            workers, rings = self.pool.snapshot
            if not rings:
                time.sleep(min(max(timeout, 0), 0.01))
                return
            spin = spin and self.scheduler.recent_mean < SPIN_IF_TASKS_UNDER
            got = pop_any(rings, self.control.doorbell, min(max(timeout, 0.0), HOUSEKEEP_EVERY),
                          DRIVER_SPIN if spin else 0.0, self._rr)
            if got is not None:
                i, data = got
                self._rr = i + 1
                with self._lock:
                    self._handle(workers[i], _ring.decode(data))
                    self._dispatch()
            self._drain(DRAIN_BATCH)
        finally:
            self._pump_lock.release()

    def _background(self):
        """Handle messages nobody else is handling, and keep house.

        While a user thread waits in get/wait, it handles the messages: this thread
        parks. While the driver is quiet (no .remote() for QUIET seconds), it sleeps
        on the doorbell and handles whatever comes. During a burst of submissions,
        the submitting thread collects results itself, and this one only watches
        for rings nobody empties (and delivers deferred wakes), every millisecond."""
        while not self._stopping:
            try:
                self._background_step()
            except KeyboardInterrupt:  # signals are the main thread's business
                continue
            except Exception as e:  # never die: the session depends on this thread
                print(f"shmray: background thread error: {type(e).__name__}: {e}",
                      file=sys.stderr)
                time.sleep(HOUSEKEEP_EVERY)

    def _background_step(self):
        if self._pumpers:
            self._bg_parked = True
            self._nobody_pumps.clear()
            if self._pumpers:  # re-checked after clear(): a set() cannot be lost
                self._nobody_pumps.wait(HOUSEKEEP_EVERY)
            self._bg_parked = False
            return
        if time.monotonic() - self._last_submit > QUIET:
            self._pump(HOUSEKEEP_EVERY, spin=False)
            return
        # also delivers deferred wakes: it nudges task rings whose worker sleeps
        wait_stalled(self.pool.snapshot[1], 0.001, HOUSEKEEP_EVERY, self.pool.task_rings)
        if not self._stopping and self._pump_lock.acquire(False):
            try:
                self._drain(1 << 30)
            finally:
                self._pump_lock.release()

    def _handle(self, w, msg):
        if w.gone:  # retired or dead: what it sends after is void (its refs are dropped)
            return
        kind = msg[0]
        if kind == _ring.DONE:
            self._on_done(w, msg)
        elif kind == _ring.REFS:
            self._on_refs(w, msg)
        elif kind == _ring.SUBMIT:
            self._on_submit(w, msg)
        elif kind == _ring.PUT:
            _, oid, stored, inner, gpu = msg
            self._grant(w, oid)
            if gpu:
                self._gpu_object(oid, w)
            self.store.put(oid, stored, f"put in a task (pid={w.pid})", inner)
        elif kind == _ring.GPU_HOST:
            _, req_id, oid = msg
            w.send(_ring.encode((_ring.REPLY, req_id, self._gpu_host_stored(oid)), w.ring,
                                self.prefix))
        elif kind == _ring.GET or kind == _ring.WAIT:
            self._on_rpc(w, msg)
        elif kind == _ring.LOG:
            self._on_log(w, msg)
        elif kind == _ring.BOUNCE:
            self._on_bounce(w, msg[1])
        elif kind == _ring.CANCEL:
            self._cancel(task_id_of(msg[1]), msg[2], msg[3])
        elif kind == _ring.ABANDON:
            self._on_abandon(w, msg[1])

    def _on_done(self, w, msg):
        _, task_id, outcome, start, end, inner, gpu = msg
        inflight = w.inflight
        if inflight[0].task_id == task_id:
            spec = inflight.popleft()
        else:  # a help task, run on top of a waiting one
            spec = next(s for s in inflight if s.task_id == task_id)
            inflight.remove(spec)
        spec.helping = False
        w.tasks_done += 1
        self._resume(w)
        if not inflight:
            w.idle_since = time.monotonic()
        self.scheduler.record_duration(spec.fn_id, (end - start) * 1e-9)
        if spec.cancelled:  # whatever it managed to return, it was cancelled
            self._discard_gpu_results(w, spec, gpu)
            self._finish(spec, _cancelled(spec), ran=True)
        elif outcome and outcome[0] == ser.ERROR and self._should_retry(spec, outcome):
            spec.attempt += 1
            spec.worker = None
            self.scheduler.push(spec)
        else:
            if gpu:  # results whose cupy arrays the worker keeps
                for i in gpu:
                    self._gpu_object(spec.task_id + i, w)
            self._finish(spec, outcome, inner, True)
        if w.retiring and w.idle and not w.exports:  # after the results hold their refs
            self._retire(w)

    def _should_retry(self, spec, outcome) -> bool:
        opts = spec.options
        if not opts.retry_exceptions or not (opts.max_retries < 0 or spec.attempt < opts.max_retries):
            return False
        if opts.retry_exceptions is True:
            return True
        try:
            exc = ser.load_error(outcome)
        except Exception:
            return False
        cause = exc.cause if isinstance(exc, RayTaskError) else exc
        return isinstance(cause, tuple(opts.retry_exceptions))

    def _on_submit(self, w, msg):
        _, task_id, fn_id, fn_bytes, name, options, args_stored, refs, held, parent = msg
        if fn_bytes is not None and fn_id not in self.fn_bytes:
            self.fn_bytes[fn_id] = (fn_bytes, name)
        spec = TaskSpec(task_id, fn_id, name, options, args_stored, refs, False)
        spec.parent = parent
        if held:
            spec.held = held
            spec.lent = self._lend(held)
        self._add_task(spec, submitter=w)

    # ====================================================== borrowed refs
    # A worker holding ObjectRef instances of an object keeps it alive: the driver
    # counts, per worker, the references it was granted. A grant comes with each
    # SUBMIT and PUT (the refs the worker gets back), and with a REFS message for
    # refs the worker came to hold otherwise (unpickled from arguments or values).
    # The worker sends REFS borrows before, and releases after, the message that
    # made or ended them (a DONE whose result holds the ref counts first). Until a
    # task's DONE, whatever it was given is held by the task itself (its inputs,
    # the refs inside its arguments), so nothing it reads can go in between.
    def _grant(self, w, oid, n=1):
        w.grants[oid] = w.grants.get(oid, 0) + n
        self.store.borrow(oid, n)

    def _on_refs(self, w, msg):
        _, borrows, releases, escaped = msg
        store = self.store
        for oid in borrows:
            self._grant(w, oid)
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

    def _drop_grants(self, w):
        """`w` is gone (exited or died): its refs no longer hold anything."""
        grants, w.grants = w.grants, {}
        for oid, n in grants.items():
            self.store.unborrow(oid, n)

    def _on_rpc(self, w, msg):
        """A worker blocks in get/wait: free its resources until it is answered."""
        if msg[0] == _ring.GET:
            _, req_id, oids, timeout = msg
            rpc = _Rpc(w, req_id, oids, None, timeout)
        else:
            _, req_id, oids, num_returns, timeout = msg
            rpc = _Rpc(w, req_id, oids, num_returns, timeout)
        w.rpcs.append(rpc)
        self.scheduler.uncharge(w)  # its CPU is free while it waits: children can run
        self._rpcs[(w.index, req_id)] = rpc
        store = self.store
        for oid in oids:
            if oid not in store.values and oid not in store.pending:
                store.keep_until_shutdown(oid)  # a tiny error, kept for whoever asks again
                store.put(oid, ser.error_stored(_lost(oid)))
        answer = lambda oid, rpc=rpc: self._answer(rpc, False)
        awaited = self.scheduler.awaited
        for oid in oids:
            if oid not in store.values:
                store.on_ready(oid, answer)
                if rpc.num_returns is None:
                    awaited[oid] = rpc
        self._answer(rpc, False)
        self._help_blocked(w)

    def _answer(self, rpc, timed_out):
        """Reply to a blocked worker if its get/wait is satisfied (or out of time)."""
        w = rpc.worker
        key = (w.index, rpc.req_id)
        if self._rpcs.get(key) is not rpc:
            return  # answered already
        values = self.store.values
        if rpc.num_returns is None:  # GET: every value, or None for a timeout
            if all(o in values for o in rpc.oids):
                payload = [self._readable(o) for o in rpc.oids]
                for stored in payload:
                    self.segments.handed_out(stored)
            elif timed_out:
                payload = None
            else:
                return
        else:  # WAIT: a ready mask with at most num_returns set, in order, as Ray does
            payload, ready = [], 0
            for o in rpc.oids:
                ok = o in values and ready < rpc.num_returns
                ready += ok
                payload.append(ok)
            if ready < rpc.num_returns and not timed_out:
                return
        del self._rpcs[key]
        awaited = self.scheduler.awaited
        for oid in rpc.oids:
            if awaited.get(oid) is rpc:
                del awaited[oid]
        if w not in self.pool.workers:
            return
        w.send(_ring.encode((_ring.REPLY, rpc.req_id, payload), w.ring, self.prefix))
        rpc.answered = True
        if w.rpcs[-1] is rpc:  # the innermost wait: the worker runs again
            self._resume(w)

    def _resume(self, w):
        """`w` finished a task or got a reply: it runs again if something is runnable —
        the task under an answered innermost wait, or its next queued task."""
        if w.rpcs:
            if not w.rpcs[-1].answered:
                self.scheduler.uncharge(w)  # back to waiting
                self._help_blocked(w)
                return
            w.rpcs.pop()
        if w.inflight:
            if w.charge is None:
                self.scheduler.charge(w, w.inflight[0].request)
        else:
            self.scheduler.uncharge(w)

    def _retire(self, w):
        """`w` ran a function max_calls times: it exits, and a base worker is replaced."""
        if w.gone:  # retired already (its last GPU object was freed just before)
            return
        w.ring.push(_ring.encode((_ring.EXIT,), w.ring, self.prefix))
        self.pool.remove(w)
        self._drop_grants(w)
        self._unwoken.pop(w, None)
        self.scheduler.uncharge(w)
        _reap_later(w.proc)
        if not w.extra and not self._stopping:  # a base worker: replaced, in its environment
            self.pool.spawn(w.core, env=self.scheduler.envs.get(w.env))

    def _on_log(self, w, msg):
        _, fd, name, text = msg
        stream = sys.stdout if fd == 1 else sys.stderr
        prefix = f"({name} pid={w.pid}) " if name else f"(pid={w.pid}) "
        try:
            stream.write("".join(prefix + line + "\n" for line in text.split("\n")))
            stream.flush()
        except Exception:
            pass

    def _on_bounce(self, w, task_id):
        for spec in w.inflight:
            if spec.task_id == task_id:
                w.inflight.remove(spec)
                spec.worker = None
                self._unpin(spec)
                if spec.cancelled:
                    self._finish(spec, _cancelled(spec))
                else:
                    self.scheduler.push(spec, front=True)
                return

    def _on_abandon(self, w, req_id):
        """A worker left its get/wait early (a cancel interrupted it): forget the rpc,
        and charge the worker again, since its task runs on."""
        rpc = self._rpcs.pop((w.index, req_id), None)
        if rpc is None:
            return
        if rpc in w.rpcs:
            w.rpcs.remove(rpc)
        awaited = self.scheduler.awaited
        for oid in rpc.oids:
            if awaited.get(oid) is rpc:
                del awaited[oid]
        if not w.rpcs and w.inflight and w.charge is None:
            self.scheduler.charge(w, w.inflight[0].request)

    # ============================================================= cancel
    def cancel(self, ref, force: bool, recursive: bool):
        with self._lock:
            self._cancel(task_id_of(ref._id), force, recursive)

    def _cancel(self, task_id, force, recursive):
        """Ray's cancel: a task not started never runs; a running one gets
        KeyboardInterrupt (SIGINT; its worker checks that the cancel is for the task
        it runs), or loses its worker with force. Never retried; get raises
        TaskCancelledError. recursive: the tasks it submitted too."""
        spec = self.tasks.get(task_id)
        if spec is None or spec.cancelled:
            return  # finished already, or a put
        spec.cancelled = True
        if recursive:
            for child in [s for s in self.tasks.values() if s.parent == task_id]:
                self._cancel(child.task_id, force, recursive)
        w = spec.worker
        if w is None:  # queued, or waiting for its inputs
            if spec.queued:
                self.scheduler.take(spec)
            self._finish(spec, _cancelled(spec))
            return
        for i, task in enumerate(w.batch):
            if task[0] == task_id:  # not pushed to the worker yet
                del w.batch[i]
                w.inflight.remove(spec)
                if w.idle:  # it was the worker's only task: its resources are free again
                    self.scheduler.uncharge(w)
                    w.idle_since = time.monotonic()
                self._finish(spec, _cancelled(spec))
                return
        w.channel.post_cancel(task_id)  # the worker skips it if it has not started it
        if w.inflight[0] is spec or spec.helping:  # running now
            try:
                os.kill(w.pid, signal.SIGKILL if force else signal.SIGINT)
            except ProcessLookupError:
                pass

    # ========================================================= housekeeping
    def _housekeep(self):
        now = time.monotonic()
        self._next_housekeep = now + HOUSEKEEP_EVERY
        self.status.publish(self._counters())
        request = self.status.requested()
        if request is not None:
            self._write_snapshot(request)
        self.segments.trim(now)
        self._send_batches()
        for w in self._unwoken:
            w.ring.wake()
        self._unwoken.clear()
        for w in list(self.pool.workers):
            if w.proc.poll() is not None:
                self._on_worker_death(w)
            elif w.outbox:
                w.flush()
        for rpc in list(self._rpcs.values()):
            if rpc.deadline is not None and now >= rpc.deadline:
                self._answer(rpc, True)
        extras = [w for w in self.pool.workers if w.extra and w.idle and not w.outbox
                  and not w.exports
                  and now - w.idle_since > (IDLE_ENV_RETIRE if w.env else IDLE_EXTRA_RETIRE)]
        for w in extras:
            w.ring.push(_ring.encode((_ring.EXIT,), w.ring, self.prefix))
            self.pool.remove(w)
            self._drop_grants(w)
            _reap_later(w.proc)
        self._dispatch()

    def _on_worker_death(self, w):
        # What it managed to send before dying still counts.
        rings = (w.channel.results,)
        while True:
            got = pop_any(rings, self.control.doorbell, 0.0, 0.0, 0)
            if got is None:
                break
            self._handle(w, _ring.decode(got[1]))
        if w not in self.pool.workers:
            return
        self.pool.remove(w)
        self._unwoken.pop(w, None)
        self._batched.discard(w)
        w.batch.clear()  # their specs are in w.inflight: requeued below
        self.scheduler.uncharge(w)
        w.rpcs.clear()
        for key in [k for k in self._rpcs if k[0] == w.index]:
            rpc = self._rpcs.pop(key)
            for oid in rpc.oids:
                if self.scheduler.awaited.get(oid) is rpc:
                    del self.scheduler.awaited[oid]
        why = describe_exit(w.proc.returncode)
        inflight = list(w.inflight)
        w.inflight.clear()
        for i, spec in enumerate(inflight):
            spec.worker = None
            self._unpin(spec)
            started = i == 0 or spec.helping
            spec.helping = False
            if spec.cancelled:  # killed by cancel(force=True), or cancelled meanwhile
                self._finish(spec, _cancelled(spec))
                continue
            if not started:  # never started: just run it elsewhere
                self.scheduler.push(spec, front=True)
                continue
            opts = spec.options
            if opts.max_retries < 0 or spec.attempt < opts.max_retries:
                spec.attempt += 1
                self.scheduler.push(spec, front=True)
            else:
                self._finish(spec, ser.error_stored(WorkerCrashedError(
                    f"The worker died unexpectedly while executing this task "
                    f"({spec.name}, pid={w.pid}, {why}); it was tried {spec.attempt + 1} "
                    f"time(s) (max_retries={opts.max_retries}).")))
        self._drop_grants(w)
        for oid in list(w.exports):  # its GPU arrays died with it
            self.store.gpu_producers.pop(oid, None)
            self._on_gpu_free(oid, w)  # its host copy goes (w is gone: nothing is sent)
            self.store.replace(oid, ser.error_stored(ObjectLostError(
                f"{oid:032x}", f"Its GPU arrays were in worker pid={w.pid}, which died "
                               f"({why}).")))
        w.exports.clear()
        if not w.extra and not self._stopping:
            self.pool.spawn(w.core, env=self.scheduler.envs.get(w.env))

    # ================================================================ get/put
    def put(self, value):
        if isinstance(value, ObjectRef):
            raise TypeError("Calling 'put' on an ObjectRef is not allowed. If you really want "
                            "to do this, you can wrap the ObjectRef in a list and call 'put' "
                            "on it.")
        oid = new_base_id()
        if "cupy" in sys.modules:  # cupy arrays go out as IPC handles (see _gpu)
            with _gpu.exporting(oid) as gpu:
                stored, inner = collect_refs(ser.to_stored, value, None, self._write_large)
        else:
            gpu = None
            stored, inner = collect_refs(ser.to_stored, value, None, self._write_large)
        with self._lock:
            self.store.own(oid)
            if gpu is not None and gpu.exported:
                self.store.gpu_producers[oid] = None  # the driver keeps the arrays
            self.store.put(oid, stored, "put", inner)
        return ObjectRef(oid, True)

    def _write_large(self, meta, buffers):
        size = ser.segment_layout(meta, buffers)[1]
        with self._lock:  # a ref just dropped may free a segment this put can reuse
            self.store.process_refs()
            self.store.reserve(size)  # spills others if needed, or raises
        return self.segments.write(meta, buffers)

    def _readable(self, oid):
        """The stored form of `oid` to read or hand out: brought back from disk first if
        it was spilled (an error form if there is no room for it)."""
        store = self.store
        try:
            store.ensure_in_memory(oid)
        except ObjectStoreFullError as e:
            return ser.error_stored(e)
        store.touch(oid)
        return store.values[oid]

    def _lend(self, oids):
        """Stored forms of refs pickled inside a task's arguments that exist already:
        sent with the task, so a `get` of them inside it needs no round trip.
        Descriptors only (shm forms, errors, tiny values): the message stays small."""
        values = self.store.values
        lent = {}
        for oid in oids[:LEND_MAX]:
            stored = values.get(oid)
            if stored is not None and stored[0] != _spill.SPILLED and (
                    stored[0] != ser.INLINE or ser.stored_size(stored) <= LEND_INLINE_MAX):
                lent[oid] = stored
        return lent or None

    # ============================================================== GPU objects
    # A GPU object's cupy arrays stay in the process that made them (see _gpu); the
    # driver tells it when the object is freed, keeps the worker until then, and
    # makes host copies for readers that cannot open the IPC handles.
    def _gpu_object(self, oid, w):
        self.store.gpu_producers[oid] = w
        w.exports.add(oid)

    def _on_gpu_free(self, oid, producer):
        """(From the store, under _lock.) The object is freed: its arrays may go."""
        copy = self._host_copies.pop(oid, None)
        if copy is not None and copy[0] == ser.SHM:
            _shm.unlink(copy[1])
        if producer is None:
            _gpu.release((oid,))
            return
        producer.exports.discard(oid)
        if producer.gone or self._stopping:
            return
        producer.send(_ring.encode((_ring.GPU_FREE, (oid,)), producer.ring, self.prefix))
        if producer.retiring and producer.idle and not producer.exports:
            self._retire(producer)

    def _discard_gpu_results(self, w, spec, gpu):
        """Results of a cancelled task: the worker may drop their cupy arrays."""
        if gpu:
            oids = tuple(spec.task_id + i for i in gpu)
            w.send(_ring.encode((_ring.GPU_FREE, oids), w.ring, self.prefix))

    def _gpu_host_stored(self, oid):
        """The stored form of {index: numpy array}: host copies of a GPU object's
        arrays (made once, kept while the object lives), or the error to raise."""
        stored = self._host_copies.get(oid)
        if stored is None:
            try:
                value = self._readable(oid)
                arrays = _gpu.host_arrays(lambda: ser.from_stored(value, self.segments.mapped))
                stored = ser.to_stored(arrays, self.new_segment_name)
            except Exception as e:
                return ser.error_stored(e)
            self._host_copies[oid] = stored
        return stored

    def _gpu_host_copy(self, oid) -> dict:
        """In the driver, for a descriptor it could not open: no copy can help (a host
        copy is made by opening that very device)."""
        raise RuntimeError(f"The driver cannot read GPU object {oid:032x}: it needs cupy and "
                           f"the device that holds it ({_gpu.INSTALL_HINT}).")

    def _wait_until(self, done, timeout):
        """Pump until done() is true; False if `timeout` seconds pass first."""
        if done():
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        self._waited = True  # a get/wait ends a burst: the next .remote() goes out at once
        with self._pumpers_lock:
            self._pumpers += 1
        try:
            while True:
                remaining = -1.0 if deadline is None else deadline - time.monotonic()
                if deadline is not None and remaining <= 0:
                    return done()
                self._pump(HOUSEKEEP_EVERY if remaining < 0 else min(remaining, HOUSEKEEP_EVERY),
                           done)
                if done():
                    return True
        finally:
            with self._pumpers_lock:
                self._pumpers -= 1
                if not self._pumpers and self._bg_parked:  # only a parked thread needs a wake
                    self._nobody_pumps.set()

    def get(self, refs: list, timeout):
        values = self.store.values
        oids = [r._id for r in refs if type(r) is ObjectRef]
        for oid in oids:
            if oid not in values and oid not in self.store.pending:
                raise _lost(oid)
        missing = [o for o in oids if o not in values]
        first = 0

        def all_ready():  # results arrive roughly in order: resume at the first missing one
            nonlocal first
            while first < len(missing) and missing[first] in values:
                first += 1
            return first == len(missing)

        if not self._wait_until(all_ready, timeout):
            raise GetTimeoutError("Get timed out: some object(s) not ready.")
        if self.store.holds_large():  # spilled ones come back; read ones spill last
            with self._lock:
                readable = {oid: self._readable(oid) for oid in oids}
            return ser.values_of(refs, readable, self.segments.mapped)
        return ser.values_of(refs, values, self.segments.mapped)

    def wait(self, refs: list, num_returns: int, timeout, fetch_local: bool):
        values = self.store.values
        is_ready = lambda r: type(r) is not ObjectRef or r._id in values
        not_yet = [r for r in refs if not is_ready(r)]

        def enough():
            not_yet[:] = [r for r in not_yet if r._id not in values]
            return len(refs) - len(not_yet) >= num_returns

        self._wait_until(enough, timeout)
        ready, not_ready = [], []
        for r in refs:
            (ready if is_ready(r) and len(ready) < num_returns else not_ready).append(r)
        return ready, not_ready

    def future(self, ref):
        fut = concurrent.futures.Future()

        def resolve(oid, ref=ref):
            stored = self._readable(oid)
            try:
                if stored[0] == ser.ERROR:
                    fut.set_exception(ser.load_error(stored))
                else:
                    fut.set_result(ser.from_stored(stored, self.segments.mapped))
            except Exception as e:
                fut.set_exception(e)

        with self._lock:
            self.store.on_ready(ref._id, resolve)
        return fut

    # ================================================================ info
    def _counters(self) -> tuple:
        """The live counters (_status_area.COUNTERS, in order), for the status words."""
        workers = self.pool.workers
        running = on_workers = 0
        for w in workers:
            if w.inflight:  # its first task runs, and help tasks on top of a blocked one
                running += 1 + (sum(1 for s in w.inflight if s.helping) if w.rpcs else 0)
                on_workers += len(w.inflight)
        queued = sum(len(q) for q in self.scheduler.ready.values())
        queued += sum(len(state.waiting) for state in self._envs.values())  # their env
        waiting = max(0, len(self.tasks) - queued - on_workers)  # for their inputs
        queued += on_workers - running
        store = self.store
        spilled_bytes = store.statistics().spilled_bytes if store.spilled else 0
        submitted = self.finished + self.failed + len(self.tasks)  # every task ends in one
        return (len(workers), sum(1 for w in workers if w.rpcs), submitted, self.finished,
                self.failed, queued, waiting, running, len(store.values), store.shm_bytes,
                store.capacity, store.spilled, spilled_bytes)

    def snapshot(self) -> dict:
        """The session as plain data (what `shmray status/memory/list` print)."""
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> dict:  # under _lock
        self.store.process_refs()
        return _snapshot.snapshot(
            self.session_info, dict(zip(_status_area.COUNTERS, self._counters())),
            {"total": self.cluster_resources(), "available": self._available()},
            {fn_id: name for fn_id, (_, name) in self.fn_bytes.items()},
            self.pool.workers, self.store, self._task_records(), list(self.tasks.values()))

    def _task_records(self) -> list:
        """The latest HISTORY finished tasks, oldest first: the workers' records (of the
        live workers, and those kept from workers gone) and the driver's own."""
        records = list(self.history) + list(self.pool.gone_history)
        for w in self.pool.workers:
            records += _status_area.read_history(w.channel.mm, w.pid)
        records.sort(key=lambda r: r[3][2])
        return records[-HISTORY:]

    def _write_snapshot(self, request):  # under _lock (from _housekeep)
        try:
            _status_area.write_snapshot(self.session_root, self._snapshot())
        except OSError as e:  # a full /tmp must not break the session
            print(f"shmray: could not write the status snapshot: {e}", file=sys.stderr)
        self.status.served(request)

    def timeline(self) -> list:
        return _snapshot.chrome_trace(self.snapshot())

    def cluster_resources(self):
        return {k: v for k, v in self.ledger.totals.items() if v}

    def available_resources(self):
        with self._lock:
            return self._available()

    def _available(self):
        free = {k: max(v, 0.0) for k, v in self.ledger.available.items() if v > 1e-9}
        used = self.store.shm_bytes  # what the objects take, not tasks
        free["object_store_memory"] = max(0.0, free.get("object_store_memory", 0.0) - used)
        return free

    # ============================================================== shutdown
    def shutdown(self):
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        _runtime_env.stop_setups()  # a pip install of this session's: killed, not awaited
        for state in self._envs.values():  # copies stop at their next directory
            if state.thread is not None:
                state.thread.join(timeout=2.0)
        atexit.unregister(self.shutdown)
        if self._bg.is_alive() and threading.current_thread() is not self._bg:
            self._bg.join(timeout=1.0)
        with self._lock:
            self.pool.stop_all(grace=0.2)
            _reap_zombies()
            self.store.clear()
            for spec in self.tasks.values():
                if spec.args_stored[0] == ser.SHM:
                    _shm.unlink(spec.args_stored[1])
            self.tasks.clear()
        _shm.unlink(self.control.name)
        _shm.unlink_prefix(self.prefix)
        # the session's directory: status files, spilled and file-backed objects
        _status_area.remove_session_directory(self.session_root)
        if _hooks.future == self.future:
            _hooks.created = _hooks.dropped = _hooks.escaped = _hooks.future = None
        if _context.runtime is self:
            _context.runtime = None


class _EnvState:
    """A runtime_env of this session: set up once, on a thread."""

    __slots__ = ("env", "thread", "prepared", "error", "waiting")

    def __init__(self, env):
        self.env = env              # the merged, normalized runtime_env
        self.thread = None          # setting it up
        self.prepared = None        # _runtime_env.Prepared, once set up
        self.error = None           # RuntimeEnvSetupError, if that failed
        self.waiting = []           # TaskSpecs ready but for the environment


def _env_log(text):
    print(f"shmray: {text}", file=sys.stderr, flush=True)


class _Rpc:
    """A worker's pending get (num_returns None) or wait."""

    __slots__ = ("worker", "req_id", "oids", "num_returns", "deadline", "answered")

    def __init__(self, worker, req_id, oids, num_returns, timeout):
        self.worker = worker
        self.req_id = req_id
        self.oids = oids
        self.num_returns = num_returns
        self.deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        self.answered = False


def _lost(oid) -> ObjectLostError:
    return ObjectLostError(f"{oid:032x}", "Its value was released or never existed in this session.")


def _unpicklable_argument(task_name, args, kwargs, error) -> str:
    """Name the argument that could not be pickled."""
    for where, value in [(f"argument {i}", a) for i, a in enumerate(args)] + \
                        [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]:
        try:
            ser.dumps(value)
        except TypeError as e:
            return f"Could not serialize {where} of task {task_name}: {e}"
    return f"Could not serialize the arguments of task {task_name}: {error}"


def _cancelled(spec):
    return ser.error_stored(TaskCancelledError(f"{spec.task_id:032x}"))


def _worker_sys_path():
    path = list(sys.path)
    if path and path[0] == "":
        path[0] = os.getcwd()
    return path


_zombies = []


def _reap_later(proc):
    """Collect exited extra workers without blocking the pump."""
    _zombies.append(proc)
    _zombies[:] = [p for p in _zombies if p.poll() is None]


def _reap_zombies():
    for p in _zombies:
        try:
            p.wait(0.5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    _zombies.clear()

