"""``init(local_mode=True)``: every task and actor call runs in the driver's own process,
in submission order, when it is submitted.

    f.remote(x) ─► LocalRuntime.submit: the arguments packed as for a worker (a copy), the
                   refs among them resolved, f(...) run here and now by the worker's own
                   code (_worker_tasks._execute), its results stored as a worker's are
    get / wait / next(gen) ─► what is stored, read as in a session (fresh copies; a
                   failed task's error raises as RayTaskError, also an instance of yours)

Ray removed local_mode (it raises now); its users lost a debugger's breakpoint inside a
task, coverage and profiles of task code, and cheap CI. Here results and errors are a
normal session's. What differs: nothing runs in parallel, a task runs when it is
submitted (one that waits for a later task's result waits forever), values stay in this
process (nothing in /dev/shm, no worker), and a runtime_env is not applied.

Objects live while refs to them do, as in a session: ObjectRef's hooks queue creations
and drops, counted at each call (`_count_refs`); a value's inner refs, and a streaming
generator's items not handed out yet, hold their objects too.
"""
from __future__ import annotations

import os
import secrets
import threading
import time
import warnings
from collections import deque

from . import _serialization as ser
from ._generator import returned as returned_generator
from ._local_actors import LocalActors
from ._object_ref import ObjectRef, _hooks, collect_refs, new_base_id, stream_item_id
from ._protocol import ERROR, INLINE, STREAMING
from ._driver.placement_groups import PlacementGroupTable
from ._resources import ResourceLedger, infeasible
from ._runtime import Runtime
from ._worker_tasks import _execute
from .exceptions import ObjectLostError, TaskUnschedulableError

END = (INLINE, ser.NONE[1], ())  # a stream's end marker (told by identity)


class LocalRuntime(LocalActors, Runtime):
    is_driver = True
    new_segment_name = None  # (read by the worker's code: every value stays inline)

    def __init__(self, totals: dict, namespace, resolve_nested_refs: bool, runtime_env):
        self.tag = secrets.token_hex(4)
        self.prefix = f"shmray_local_{os.getpid()}_{self.tag}_"
        self.node_id = secrets.token_hex(28)
        self.namespace = namespace or f"anonymous-{self.tag}"
        # Placement groups reserve as in a session (their resources exist once placed);
        # tasks run one at a time here, so they hold nothing.
        ledger = ResourceLedger(totals)
        self.totals = ledger.totals
        self.groups = PlacementGroupTable(ledger, self.namespace, self.node_id)
        self.resolve_nested = resolve_nested_refs
        self._runtime_env = runtime_env or {}
        if runtime_env:
            warnings.warn("local_mode runs every task in this process: the runtime_env is "
                          "not applied", stacklevel=3)
        self.values = {}            # oid -> stored form
        self._holds = {}            # oid -> refs here + values holding it + its stream
        self._inner = {}            # oid -> ids of the refs inside its value
        self._streams = {}          # generator task id -> [items stored, next to hand out]
        self._created, self._dropped, self._escaped = deque(), deque(), set()
        self._events = []           # timeline: one complete event per task
        self._lock = threading.RLock()  # (never held while user code runs)
        self.current_task_id = self.current_name = None
        self.current_request = ()
        self.lent = None
        self._init_actors()
        _hooks.created, _hooks.dropped = self._created.append, self._dropped.append
        _hooks.escaped, _hooks.future = self._escaped.add, self._future

    # ------------------------------------------------------------ objects' lives
    def _count_refs(self):
        """Count the ObjectRefs created and dropped since last time (drops up to a
        length read first: each has its creation queued before it)."""
        n = len(self._dropped)
        while self._created:
            self._hold(self._created.popleft())
        for _ in range(n):
            self._let_go(self._dropped.popleft())

    def _hold(self, oid):
        self._holds[oid] = self._holds.get(oid, 0) + 1

    def _let_go(self, oid):
        todo = [oid]
        while todo:
            oid = todo.pop()
            left = self._holds.get(oid, 0) - 1
            if left > 0:
                self._holds[oid] = left
                continue
            self._holds.pop(oid, None)
            if oid in self._escaped or self.values.pop(oid, None) is None:
                continue
            todo.extend(self._inner.pop(oid, ()))
            stream = self._streams.pop(oid, None)
            if stream is not None:  # the generator is gone: its items not handed out
                todo.extend(stream_item_id(oid, i) for i in range(stream[1], stream[0] + 1))

    def _store(self, oid, stored, inner=()):
        self.values[oid] = stored
        if inner:
            self._inner[oid] = inner
            for i in inner:
                self._hold(i)

    def _read(self, oids):
        self._count_refs()
        for oid in oids:
            if oid not in self.values:
                raise ObjectLostError(f"{oid:032x}", "Its value was released or never "
                                                     "existed in this session.")

    # ------------------------------------------------------------ tasks
    def submit(self, rf, args, kwargs, options):
        task_id = new_base_id()
        self._run(task_id, rf._function, rf._name, args, kwargs, options)
        return self._returned(task_id, options.num_returns)

    def _returned(self, task_id, n):
        if n == 1:
            return ObjectRef(task_id)
        if n < 0:
            return returned_generator(ObjectRef(task_id), n)
        return [ObjectRef(task_id + i) for i in range(n)] if n else None

    def _run(self, task_id, fn, name, args, kwargs, options):
        """Run `fn` as the task `task_id` (its retries too) and store its results."""
        n = options.num_returns
        returns = [task_id + i for i in range(n)] if n >= 0 else [task_id]
        args_stored, deps, _ = ser.pack_args(name, args, kwargs, self.resolve_nested, None)
        with self._lock:
            self._count_refs()
            dep_values = tuple(self.values.get(o) for o in deps) if deps else None
        failed = next((v for v in dep_values or () if v is None or v[0] == ERROR), False)
        reason = infeasible(self.totals, options.request)
        if n == STREAMING:
            self._streams[task_id] = [0, 0]
        if failed is not False or reason:  # a failed input, or a request never met
            error = (ser.error_stored(TaskUnschedulableError(reason)) if reason else failed
                     or ser.error_stored(ObjectLostError(f"{deps[0]:032x}", "not found")))
            return self._finish(task_id, returns, error, None)
        retry = options.retry_exceptions
        retry_types = ser.dumps(retry) if type(retry) is tuple else None
        limit = options.max_retries if options.max_task_retries is None \
            else options.max_task_retries
        attempt = 0
        while True:
            outer = self.current_task_id, self.current_name, self.current_request
            self.current_task_id, self.current_name = task_id, name
            self.current_request = options.request
            start = time.time()
            try:
                outcome, inner, _, error, retryable = _execute(
                    self, fn, name, task_id, n, args_stored, dep_values, retry_types)
            finally:
                self.current_task_id, self.current_name, self.current_request = outer
                self._events.append({"name": name, "cat": "task", "ph": "X", "pid": os.getpid(),
                                     "tid": 0, "ts": start * 1e6,
                                     "dur": (time.time() - start) * 1e6})
            if error is None or not retry or (retry is not True and not retryable) \
                    or not (limit < 0 or attempt < limit):
                break
            attempt += 1
        return self._finish(task_id, returns, outcome, inner)

    def _finish(self, task_id, returns, outcome, inner):
        with self._lock:
            stream = self._streams.get(task_id)
            if stream is not None:  # its error (if any) as the last item, then the end
                if outcome[0] == ERROR:
                    self._item(task_id, stream, outcome)
                self._store(stream_item_id(task_id, stream[0]), END)
                self._hold(stream_item_id(task_id, stream[0]))
            if outcome[0] == ERROR:
                for oid in returns:
                    self._store(oid, outcome, tuple(inner or ()))
            else:
                for i, (oid, stored) in enumerate(zip(returns, outcome)):
                    self._store(oid, stored, tuple(inner[i] or ()) if inner else ())

    # The worker's code calls these (_execute, _worker_generators).
    def cancel_posted(self) -> bool:
        return False

    def is_cancelled(self, task_id) -> bool:
        return False

    def send_item(self, task_id, index, stored, inner, gpu):
        """A streaming generator's item (the only message the worker's code sends here)."""
        with self._lock:
            self._item(task_id, self._streams[task_id], stored, inner)

    def _item(self, task_id, stream, stored, inner=None):
        oid = stream_item_id(task_id, stream[0])
        self._store(oid, stored, tuple(inner or ()))
        self._hold(oid)  # the stream holds it until it is handed out
        stream[0] += 1

    def put_stored(self, oid, stored, inner, gpu):
        with self._lock:
            self._store(oid, stored, tuple(inner or ()))
        return ObjectRef(oid)

    def generator_next(self, task_id, index, timeout):
        oid = stream_item_id(task_id, index)
        with self._lock:
            self._read([oid])
            stored = self.values[oid]
            ref = None if stored is END else ObjectRef(oid)
            self._count_refs()
            stream = self._streams.get(task_id)
            if stream is not None and index >= stream[1]:
                stream[1] = index + 1
                self._let_go(oid)
        return ref

    # ------------------------------------------------------------ the API
    def put(self, value):
        oid = new_base_id()
        stored, inner = collect_refs(ser.to_stored, value)
        return self.put_stored(oid, stored, inner, False)

    def get(self, refs: list, timeout):
        with self._lock:
            oids = [r._id for r in refs if type(r) is ObjectRef]
            self._read(oids)
            stored = {oid: self.values[oid] for oid in oids}
        return ser.values_of(refs, stored)  # (outside the lock: it unpickles user values)

    def wait(self, refs: list, num_returns: int, timeout, fetch_local: bool):
        with self._lock:
            self._count_refs()
            ready, not_ready = [], []
            for r in refs:
                (ready if r._id in self.values and len(ready) < num_returns
                 else not_ready).append(r)
        return ready, not_ready

    def cancel(self, ref, force: bool, recursive: bool):
        pass  # every task has run to its end already

    def _future(self, ref):
        import concurrent.futures

        future = concurrent.futures.Future()
        try:
            future.set_result(self.get([ref], None)[0])
        except Exception as e:
            future.set_exception(e)
        return future

    def cluster_resources(self) -> dict:
        return {k: v for k, v in self.totals.items() if v}

    def available_resources(self) -> dict:
        return self.cluster_resources()  # (nothing runs between calls)

    def timeline(self) -> list:
        return list(self._events)

    def gpu_host_copy(self, oid) -> dict:
        raise RuntimeError("local_mode keeps GPU objects in this process")

    @property
    def job_id(self) -> str:
        return f"{os.getpid():08x}"

    @property
    def runtime_env(self) -> dict:
        return dict(self._runtime_env)

    def shutdown(self):
        with self._lock:
            self._end_actors()
            self.values.clear()
            self._holds.clear()
            self._streams.clear()
        _hooks.created = _hooks.dropped = _hooks.escaped = _hooks.future = None

    def placement_group_op(self, what: str, arg):
        with self._lock:
            if what == "create":
                self.groups.create(arg)
                return None
            if what == "remove":
                return self.groups.remove(arg) is not None
            return self.groups.query(what, arg)
