"""Session: everything one driver session has, made by init() and dropped by shutdown().

    init() ─► Session ─► ObjectStore, WorkerPool, ResourceLedger, Scheduler,
                         Environments, Dispatcher, TaskTable, PlacementGroupTable,
                         RpcTable, GpuObjects, Workers, MessageLoop (built in that
                         order: each gets what it uses when it is made)
    shmray.remote/get/put/wait/cancel ─► Session (the facade) ─► the components

The Session is the driver's side of the runtime contract (_runtime.Runtime). It
takes the state lock around what it asks of the components and leaves the rest to
the message loop. After shutdown() nothing refers to it: ObjectRef's hooks are
unset and _context forgets it.
"""
from __future__ import annotations

import atexit
import math
import os
import sys
import threading
import time
import warnings
from threading import get_ident

from .. import _context, _custom_serializers, _ring, _serialization as ser, _shm, _status_area
from . import introspect
from .._generator import returned as returned_generator
from .._object_ref import ObjectRef, _hooks, new_base_id, task_id_of
from .._object_store import ObjectStore
from .._protocol import SHM
from .._serialization import NO_ARGS
from .._crecords import Lane, set_lane
from .._cring import pop_any
from .._resources import EPS, ResourceLedger, affinity_cpus, node_totals, user_stacklevel
from .._runtime import Runtime
from .._scheduler import PIPELINE_MAX, PIPELINE_SECONDS, SMOOTHING, Scheduler
from .._segment_pool import SegmentPool
from .._worker_pool import WorkerPool, start_method, worker_sys_path
from ..exceptions import RaySystemError
from .actor_facade import ActorFacade
from .actor_life import ActorLife
from .actors import ALIVE, ActorCallSpec, ActorTable
from .dispatch import BURST_GAP, TASK_BATCH, WAKE_BATCH, Dispatcher
from .envs import Environments
from .generators import GeneratorTable
from .gpu_objects import GpuObjects, driver_cannot_copy
from .interrupts import MAIN, SafeLock, sections
from .loop import DRAIN_BATCH, MessageLoop
from .object_facade import ObjectFacade
from .placement_facade import PlacementGroupFacade
from .placement_groups import PlacementGroupTable
from .rpcs import RpcTable
from .spec import TaskSpec
from .tasks import TaskTable
from .workers import EVICTED, Workers

WORKER_SPIN = 20e-6          # workers spin less than the driver: they share its cores
# The C rings take any number of workers, but each is a process with a 4 MB channel:
# extras are capped well below what the machine's process table would notice.
MAX_EXTRA_WORKERS = 256
# Workers started by init: one per CPU asked for, up to this many (or one per core,
# if more); beyond it (init(num_cpus=100000)) they start as tasks need them.
PRESTART_MAX = 64
# The scan for dead sessions' stuck workers (reading every process's name: a few ms of
# Python, which would hold the GIL from the first task) starts this long after init.
ORPHAN_SCAN_DELAY = 0.1


class Session(ActorFacade, ObjectFacade, PlacementGroupFacade, Runtime):
    is_driver = True

    def __init__(self, num_cpus=None, num_gpus=None, resources=None, object_store_memory=None,
                 log_to_driver=True, resolve_nested_refs=True, max_workers=None,
                 runtime_env=None, namespace=None):
        method = start_method()  # checked before anything is created
        _shm.reclaim_dead_sessions(workers=False)  # (orphaned workers: at the end)
        self.pid = os.getpid()
        self.tag = os.urandom(4).hex()
        self.prefix = _shm.session_prefix(self.pid, self.tag)
        self.node_id = os.urandom(28).hex()
        self.namespace = namespace or f"anonymous-{self.tag}"  # the job's
        self.started = time.time()
        self.session_root = _shm.session_root(self.prefix)
        self.envs = Environments(runtime_env, self.session_root)
        self.job_env = runtime_env
        base_env = self.envs.base_env()  # first: if it cannot be set up, nothing is left over
        self.resolve_nested = resolve_nested_refs
        totals = node_totals(num_cpus, num_gpus, resources,
                             object_store_memory=object_store_memory)
        self.ledger = ResourceLedger(totals)
        cores = affinity_cpus()
        n_base = math.ceil(totals["CPU"])
        self.control = _ring.ControlArea(self.prefix + "ctl", create=True)
        # What `shmray status` reads (see _status_area): words in the control segment,
        # and the session's directory with session.json and, when asked, snapshot.json.
        self.status = _status_area.DriverStatus(self.control.mm, self.pid, self.started)
        self.session_info = {
            "driver_pid": self.pid, "tag": self.tag, "prefix": self.prefix,
            "control": self.control.name, "started": self.started, "node_id": self.node_id,
            "python": _status_area.python_description(), "argv": list(sys.argv),
            "cwd": os.getcwd(), "totals": totals}
        _status_area.write_session_file(self.session_root, self.session_info)
        capacity = int(totals["object_store_memory"])
        self.object_prefix = self._object_location(capacity)
        self._seg_ids = iter(range(1, 1 << 62))
        # (the warm reserve fills only while no task runs: see _warm_reserve)
        self.segments = SegmentPool(self.new_segment_name, busy=lambda: self.pool.busy())
        self.store = ObjectStore(self.segments, capacity, _shm.session_dir(self.prefix, "spill"))
        self.pool = WorkerPool(self.prefix, self.control, {
            "driver_pid": self.pid, "session_prefix": self.prefix, "control": self.control.name,
            "node_id": self.node_id, "namespace": self.namespace,
            "resolve_nested_refs": resolve_nested_refs,
            "log_to_driver": log_to_driver, "cwd": os.getcwd(), "sys_path": worker_sys_path(),
            "spin": WORKER_SPIN, "totals": totals, "object_prefix": self.object_prefix}, method)
        self.lock = SafeLock()  # holding it is a Ctrl-C-safe section (see interrupts)
        sections.install()
        self.scheduler = Scheduler(
            self.ledger, self.pool, cores,
            max_workers or min(max(32, 4 * n_base), n_base + MAX_EXTRA_WORKERS),
            self.envs.prepared, lambda w: self.workers.remove_worker(w, EVICTED))
        self.functions = {}  # fn_id -> (pickled function, name)
        self.dispatch = Dispatcher(self.scheduler, self.ledger, self.store, self.functions,
                                   self.readable, self.prefix)
        self.actors = ActorTable(self.pool, self.ledger, self.dispatch, self.store,
                                 self.functions, self.envs.prepared, cores, self.prefix)
        self.generators = GeneratorTable(self.store, self.prefix)
        self.tasks = TaskTable(self.store, self.ledger, self.scheduler, self.dispatch,
                               self.envs, self.actors, self.generators, self.node_id)
        # The common task's submission and ending, in C (csrc/lane.c; what it stands for
        # is the Python of _submit, TaskTable.add, the Dispatcher and MessageLoop.on_done)
        self.lane = Lane(store=self.store, task_table=self.tasks, scheduler=self.scheduler,
                         pool=self.pool, ledger=self.ledger, dispatch=self.dispatch,
                         common=self.tasks.verdicts.common, spec_type=TaskSpec,
                         ref_type=ObjectRef, none_stored=ser.NONE,
                         pipeline_seconds=PIPELINE_SECONDS, pipeline_max=PIPELINE_MAX,
                         smoothing=SMOOTHING, eps=EPS, pop_any=pop_any, burst_gap=BURST_GAP,
                         task_batch=TASK_BATCH, serializers=_custom_serializers,
                         session=self, sections=sections, main_thread=MAIN, no_args=NO_ARGS,
                         drain_batch=DRAIN_BATCH, wake_batch=WAKE_BATCH,
                         actor_spec_type=ActorCallSpec, alive=ALIVE)
        self.groups = PlacementGroupTable(self.ledger, self.namespace, self.node_id)
        self.tasks.verdicts.groups = self.groups
        self._captured = {}  # (see PlacementGroupFacade.captured)
        self.rpcs = RpcTable(self.store, self.ledger, self.scheduler, self.dispatch,
                             self.readable, self.tasks.tasks, self.generators, self.prefix)
        self.gpu = GpuObjects(self.store, self.readable, self.new_segment_name, self.prefix)
        self.workers = Workers(self.pool, self.store, self.ledger, self.dispatch, self.rpcs,
                               self.tasks, self.actors, self.gpu, self.envs)
        self.life = ActorLife(self.store, self.tasks, self.actors, self.workers, self.rpcs,
                              self.namespace)
        self.life.child_options = self.child_options
        self.loop = MessageLoop(self)
        self.closed = False
        try:
            for i in range(min(n_base, max(PRESTART_MAX, len(cores)))):
                self.pool.spawn(cores[i % len(cores)], env=base_env)
        except BaseException:  # no room in /dev/shm for their channels, a Ctrl-C: init
            self.pool.stop_all(grace=0.0)  # fails and leaves nothing behind
            _shm.unlink_prefix(self.prefix)
            _status_area.remove_session_directory(self.session_root)
            raise
        # This process's ObjectRefs count themselves into this session's store.
        _hooks.created = self.store.created_queue.append
        _hooks.dropped = self.store.drop_queue.append
        _hooks.escaped = self.store.keep_until_shutdown
        _hooks.future = self.loop.future_of
        set_lane(self.lane)  # f.remote() of the common task: from the call to it in C
        self.envs.start_eager()
        self.loop.thread.start()
        # Workers of dead sessions, still running (stuck): found by reading every
        # process's name, a few ms that the first tasks need not wait for. (A session
        # shut down sooner leaves them to the next init.)
        self._ending = threading.Event()
        self._reclaim = threading.Thread(target=self._reclaim_orphans, daemon=True,
                                         name="shmray-reclaim")
        self._reclaim.start()
        atexit.register(self.shutdown)

    def _reclaim_orphans(self):
        if not self._ending.wait(ORPHAN_SCAN_DELAY):
            _shm.kill_orphaned_workers()

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
                      f"a larger {_shm.SHM_DIR} (docker run --shm-size=...).",
                      stacklevel=user_stacklevel())
        return os.path.join(directory, "")

    def new_segment_name(self) -> str:
        return f"{self.object_prefix}o{next(self._seg_ids)}"

    def check_open(self):
        if self.closed:
            raise RaySystemError("The shmray session was shut down while this call waited "
                                 "on it.")

    # ------------------------------------------------------------ submit
    def submit(self, rf, args, kwargs, options):
        fn_id = rf._fn_id
        if fn_id not in self.functions:
            try:
                self.functions[fn_id] = (rf._pickled(), rf._name)
            except Exception as e:
                raise TypeError(f"Could not serialize the remote function {rf._function_name}: "
                                f"{type(e).__name__}: {e}") from e
        if not args and not kwargs:  # f.remote() of the common task: _submit's work, in C
            ref = self.lane.remote(fn_id, rf._name, options)
            if ref is not None:
                return ref
        return self._submit(fn_id, rf._name, args, kwargs, options, None)

    def submit_call(self, handle, fn_id, args, kwargs, options):
        """An actor's method called (see shmray.actor): a task spec in its actor's line."""
        actor_id = handle._state.actor_id
        if not args and not kwargs:  # the common call, whole, in C (csrc/actor_call.c)
            ref = self.lane.call(actor_id, fn_id, options.name, options)
            if ref is not None:
                return ref
        return self._submit(fn_id, options.name, args, kwargs, options, actor_id)

    def _submit(self, fn_id, name, args, kwargs, options, actor_id):
        # A Ctrl-C-safe section from the arguments' segment to the returned ref (see
        # interrupts; `with sections:` inlined, the per-task path): the call is made
        # whole or, if it fails before the task is added, leaves nothing behind.
        in_main = get_ident() == MAIN
        if in_main:
            sections.depth += 1
        try:
            if args or kwargs:
                args_stored, deps, held = ser.pack_args(name, args, kwargs,
                                                        self.resolve_nested, self.new_segment_name)
                simple = not deps and not held and args_stored[0] != SHM
            else:  # f.remote(): pack_args' first case, without the call (the per-task path)
                args_stored = NO_ARGS
                deps = held = None
                simple = True
            lane = self.lane
            with self.lock.raw:  # (in submit's section)
                if self.closed:
                    if args_stored[0] == SHM:
                        _shm.unlink(args_stored[1])
                    self.check_open()
                ref = None
                if simple and actor_id is None:
                    ref = lane.submit(fn_id, name, options, args_stored)  # the common task, in C
                if ref is None:  # every other one (and the first of each options object)
                    ref = self._submit_in_python(fn_id, name, options, args_stored, deps, held,
                                                 simple, actor_id, lane.note_submit())
                # Inside a burst (lane.burst: .remote() calls less than BURST_GAP apart),
                # results are collected every 16th call only: workers hold up to 64 queued
                # tasks each, and an empty drain costs as much as a submit's scheduling.
                burst, drain = lane.burst, lane.drain_due
            if drain and self.loop.pump_lock.acquire(False):
                try:
                    self.loop.drain(DRAIN_BATCH, burst)
                finally:
                    self.loop.pump_lock.release()
        finally:
            if in_main:
                sections.depth -= 1
                if sections.pending and not sections.depth:
                    sections.raise_pending()
        if self.loop.deferred:  # (user code: outside the section)
            self.loop.run_deferred()
        return ref

    def _submit_in_python(self, fn_id, name, options, args_stored, deps, held, simple,
                          actor_id, burst):
        """_submit's task, in Python: every case (the lane takes the common one). Under
        the lock; returns what .remote() returns."""
        task_id = new_base_id()
        if actor_id is None:
            spec = TaskSpec(task_id, fn_id, name, options, args_stored, deps, True)
            if simple and spec.num_returns == 1:
                spec.simple = True
        else:
            spec = ActorCallSpec(task_id, fn_id, name, options, args_stored, deps, True, None)
            self.admit_call(spec, actor_id)
        if held:  # refs inside the arguments: the task holds their objects until it ends
            spec.held = held
            spec.lent = self.tasks.lend(held)
        self.tasks.add(spec, None, burst)
        n = spec.num_returns
        if n == 1:
            return ObjectRef(task_id, True)
        if n >= 0:
            return [ObjectRef(task_id + i, True) for i in range(n)] if n else None
        return returned_generator(ObjectRef(task_id, True), n)

    def cancel(self, ref, force: bool, recursive: bool):
        with self.lock:
            spec = self.tasks.tasks.get(task_id_of(ref._id))
            if force and spec is not None and spec.actor is not None:
                raise ValueError("force=True is not supported for actor tasks.")
            self.tasks.cancel(task_id_of(ref._id), force, recursive)
        self.loop.run_deferred()  # the cancelled task's futures

    def gpu_host_copy(self, oid) -> dict:
        driver_cannot_copy(oid)

    @property
    def job_id(self) -> str:
        return f"{self.pid:08x}"

    @property
    def runtime_env(self) -> dict:
        return dict(self.job_env or {})

    # ------------------------------------------------------------ info
    def counters(self) -> tuple:
        return introspect.counters(self)

    def snapshot(self) -> dict:
        """The session as plain data (what `shmray status/memory/list` print)."""
        with self.lock:
            return introspect.snapshot(self)

    def write_snapshot(self, request):  # under the lock (from housekeeping)
        introspect.write_snapshot(self, request)

    def timeline(self) -> list:
        from .. import _snapshot  # (here: a session starts without it)

        return _snapshot.chrome_trace(self.snapshot())

    def cluster_resources(self):
        return {k: v for k, v in self.ledger.totals.items() if v}

    def available_resources(self):
        with self.lock:
            return self.available_now()

    def available_now(self):  # under the lock
        free = {k: max(v, 0.0) for k, v in self.ledger.available.items() if v > 1e-9}
        used = self.store.shm_bytes  # what the objects take, not tasks
        free["object_store_memory"] = max(0.0, free.get("object_store_memory", 0.0) - used)
        return free

    # ------------------------------------------------------------ shutdown
    def shutdown(self):
        if self.closed:
            return
        with sections:  # a Ctrl-C here waits for the end: nothing is left half stopped
            self._shutdown()

    def _shutdown(self):
        self.closed = True
        self.workers.stopping = True
        self.envs.shutdown()  # a pip install of this session's: killed, not awaited
        atexit.unregister(self.shutdown)
        if self.loop.thread.is_alive() and threading.current_thread() is not self.loop.thread:
            self.loop.thread.join(timeout=1.0)
        self._ending.set()
        self._reclaim.join(timeout=1.0)  # (a next init forks its workers: one thread only)
        with self.lock:
            self.pool.stop_all(grace=0.2)
            self.workers.reap()
            self.store.clear()
            self.tasks.drop_all()
            self.actors.drop_all()
        _shm.unlink(self.control.name)
        _shm.unlink_prefix(self.prefix)
        # the session's directory: status files, spilled and file-backed objects
        _status_area.remove_session_directory(self.session_root)
        if _hooks.future == self.loop.future_of:
            _hooks.created = _hooks.dropped = _hooks.escaped = _hooks.future = None
        if _context.runtime is self:
            _context.runtime = None
        set_lane(None)  # (it holds the lane, and so the session)
        self.loop.deferred.clear()

