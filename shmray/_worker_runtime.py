"""A worker's runtime: what the API does inside a task, and the worker's one
message switch.

    driver's messages ─► receive(): Tasks (run, or bounced while blocked), Reply,
                                    Func (cached), GpuFree, Exit
    get/wait in a task ─► rpc (Get/Wait) ─► blocks on the task ring until its Reply
    remote/put in a task ─► Submit/Put (+ Refs: the refs held here, see send)
"""
from __future__ import annotations

import itertools
import os
import pickle
import sys
import threading
from collections import deque

from . import _gpu, _mappings, _ring, _segment_writer, _serialization as ser, _shm
from . import _status_area
from ._generator import returned as returned_generator
from ._object_ref import ObjectRef, new_base_id
from ._protocol import done_record
from ._protocol import (ABANDON, BOUNCE, CANCEL, EXIT, FUNC, GET, GPU_FREE, GPU_HOST, PUT,
                        REPLY, SUBMIT, TASKS, WAIT, Abandon, Bounce, Cancel, Get, GpuHost, Put,
                        Submit, Task, Wait)
from ._runtime import Runtime
from ._worker_actor_api import WorkerActorApi
from ._worker_sending import WorkerSending
from ._worker_tasks import run_task, store_value
from .exceptions import GetTimeoutError

# A help task runs on top of the frames waiting for it (see _rpc): it is refused
# with RecursionError once fewer than this many frames are left below Python's
# limit, which leaves room for its task code and for reporting every level's error.
HELP_STACK_RESERVE = 200


def _stack_room() -> bool:
    try:
        sys._getframe(sys.getrecursionlimit() - HELP_STACK_RESERVE)
    except ValueError:  # the stack is shallower than that
        return True
    return False


def _too_deep(name):
    error = RecursionError(f"maximum recursion depth exceeded: nested tasks ({name}) "
                           f"waiting on one another in this worker reached Python's limit "
                           f"of {sys.getrecursionlimit()} frames")
    return ser.task_error_stored(name, error)

class WorkerRuntime(WorkerSending, WorkerActorApi, Runtime):
    """What ``shmray.get/put/wait/remote`` do inside a task: ask the driver over the ring."""

    is_driver = False

    def __init__(self, config: dict):
        self.config = config
        self.driver_pid = config["driver_pid"]
        self.resolve_nested = config["resolve_nested_refs"]
        self.node_id = config["node_id"]
        self.namespace = config.get("namespace")
        control = _ring.ControlArea(config["control"], create=False)
        self.channel = _ring.Channel(config["channel"], create=False, doorbell=control.doorbell)
        self._control = control
        self.status = _status_area.WorkerStatus(self.channel.mm, os.getpid(), config.get("core"))
        self._tasks = self.channel.tasks
        self.results = self.channel.results
        self.spill_prefix = self.channel._spill_prefix
        self._send_lock = threading.Lock()
        self._rpc_lock = threading.RLock()  # re-entered by tasks run while waiting
        self._waiting = set()      # req_ids of this worker's open rpcs
        self._replies = {}         # req_id -> reply payload, until its rpc picks it up
        self._req_ids = itertools.count(1)
        self._seg_ids = itertools.count(1)
        self._seg_prefix = f"{config['object_prefix']}w{os.getpid()}_"
        _segment_writer.install_in_worker(config["object_prefix"])  # objects' segments
        self.fns = {}              # fn_id -> (callable or Exception, name)
        self.known_to_driver = set()
        self.current_name = None
        self.current_task_id = None
        self.lent = None          # the running task's lent stored forms (oid -> stored)
        self._backlog = deque()    # tasks of the current TASKS message not started yet
        self._helps = deque()      # help tasks received inside an rpc, not run yet
        self._cancel_words = self.channel.cancels
        self._cancels_seen = 0     # the channel's cancel counter when last read
        self._cancelled = set()    # the ids it listed then
        # The GPU devices this worker runs tasks for (Ray returns ints for numeric ids).
        self.gpu_ids = tuple(int(d) if d.isdigit() else d for d in config.get("gpus", ()))
        self.current_request = ()  # the running task's resources, as (name, amount) pairs
        self.spin = config.get("spin", 0.0)
        # Reference counting (see _driver.workers): ObjectRef instances here,
        # counted from the hooks' queues when a message goes out.
        self._created = deque()    # oids of instances created (appended by the hooks)
        self._dropped = deque()    # oids of instances dropped
        self._escaped = deque()    # oids pickled outside shmray: the driver keeps them
        self._counts = {}          # oid -> live instances here
        self._granted = {}         # oid -> references the driver counts for this worker
        self._main_thread = threading.main_thread().ident
        self._critical = 0         # depth of sections a cancel's interrupt waits for
        self._interrupt_pending = False
        self.run_one = run_task    # how the main thread runs a task (see _worker_actor)
        self._receivers = {TASKS: self._on_tasks, REPLY: self._on_reply, FUNC: self._on_func,
                           GPU_FREE: self._on_gpu_free, EXIT: self._on_exit}

    # ---------------------------------------------------------------- plumbing
    def new_segment_name(self) -> str:
        return f"{self._seg_prefix}{next(self._seg_ids)}"

    # ------------------------------------------------------------- the loop
    def serve(self):
        """Run tasks until told to exit."""
        pop, decode, backlog = self._tasks.pop, _ring.decode, self._backlog
        while True:
            if backlog:
                self.run_one(self, *backlog.popleft())
                continue
            if self._created or self._dropped or self._escaped or _mappings.events:
                self.send_ref_changes()  # refs (or arrays) dropped since the last message
            data = pop(timeout=1.0, spin=self.spin)
            if data is not None and self.receive(decode(data), blocked=False):
                return

    def receive(self, msg, blocked: bool) -> bool:
        """Act on a message from the driver; True for Exit. `blocked`: inside an rpc,
        where tasks do not wait behind the blocked one: a help task runs on top of it
        (see _driver.dispatch), the others go back (Bounce) for a free worker."""
        return self._receivers[msg[0]](blocked, *msg)  # (the kind, then the fields)

    def _on_tasks(self, blocked, kind, tasks):
        if not blocked or self.actor_host is not None:  # (an actor's calls wait their turn)
            self._backlog.extend(tasks)
            return False
        for task in tasks:  # (the help tasks run once the message is taken: see _rpc)
            if Task(*task).helping:
                self._helps.append(task)
            else:
                self.send(Bounce(BOUNCE, Task(*task).task_id))
        return False

    def _run_help(self, task):
        """A help task, on top of the rpc that waits (see _driver.dispatch)."""
        if _stack_room():
            run_task(self, *task)
        else:  # a recursion of nested tasks as deep as Python allows: it ends here
            record = Task(*task)
            self.send(done_record(record.task_id, _too_deep(self.fns[record.fn_id][1]),
                                  0, 0, None, None, False))

    def _receive_blocked(self):
        """Inside an rpc: wait for one message and take it. A cancel's interrupt waits
        until the message is taken (a Tasks message torn halfway would lose its tasks:
        neither bounced nor run); on_sigint ends the wait itself (Ring.interrupt)."""
        held = self._hold_interrupts()
        try:
            seen = self._tasks.wake_count
            if not (held and self._interrupt_pending):
                data = self._tasks.pop(timeout=None, spin=self.spin,
                                       since=seen if held else None)
                if data is not None:
                    self.receive(_ring.decode(data), blocked=True)
        finally:
            if held:
                self._release_interrupts()  # (raises the cancel's KeyboardInterrupt now)

    def _on_reply(self, blocked, kind, req_id, payload):
        if req_id in self._waiting:  # else stale: its rpc timed out
            self._replies[req_id] = payload
        return False

    def _on_func(self, blocked, kind, fn_id, fn_bytes, name):
        try:
            fn = pickle.loads(fn_bytes)
        except Exception as e:  # e.g. a module the worker cannot import
            fn = e
        self.fns[fn_id] = (fn, name)
        self.known_to_driver.add(fn_id)
        return False

    def _on_gpu_free(self, blocked, kind, oids):
        _gpu.release(oids)
        return False

    def _on_exit(self, blocked, kind):
        if blocked:
            os._exit(0)
        return True

    # ------------------------------------------------ the API inside a task
    def submit(self, rf, args, kwargs, options):
        task_id = new_base_id()
        args_stored, deps, held = ser.pack_args(rf._name, args, kwargs, self.resolve_nested,
                                                self.new_segment_name)
        fn_bytes = None if rf._fn_id in self.known_to_driver else rf._pickled()
        refs = self.send_submission(Submit(SUBMIT, task_id, rf._fn_id, fn_bytes, rf._name,
                                           options, args_stored, deps, held,
                                           self.current_task_id), task_id, options.num_returns)
        self.known_to_driver.add(rf._fn_id)
        return refs

    def send_submission(self, record, task_id, n):
        """Send a Submit or ActorCall; the refs to its `n` returns (None for none), or
        for a generator (n < 0) what its caller gets (see shmray._generator)."""
        returns = [task_id + i for i in range(n)] if n >= 0 else [task_id]
        critical = self._hold_interrupts()  # until the refs exist (see _hold_interrupts)
        try:
            self.send(record, grants=returns)
            if n == 1:
                return ObjectRef(task_id)
            if n < 0:
                return returned_generator(ObjectRef(task_id), n)
            return [ObjectRef(oid) for oid in returns] if n else None
        finally:
            if critical:
                self._release_interrupts()

    def put(self, value):
        oid = new_base_id()
        return self.put_stored(oid, *store_value(self, value, oid))

    def put_stored(self, oid, stored, inner, gpu):
        """Store a value's stored form as object `oid`; its ObjectRef."""
        critical = self._hold_interrupts()
        try:
            self.send(Put(PUT, oid, stored, inner, gpu), grants=(oid,))
            return ObjectRef(oid)
        finally:
            if critical:
                self._release_interrupts()

    def generator_next(self, task_id, index, timeout):
        from . import _worker_generators  # (only tasks that consume generators load it)

        return _worker_generators.next_item(self, task_id, index, timeout)

    def _rpc(self, request):
        """Send GET/WAIT and wait for its REPLY. Meanwhile, tasks queued to this worker
        before it blocked go back to the driver (BOUNCE) for a free worker; a task the
        driver marks `help` (every worker is busy or blocked, the pool is at its cap)
        runs right here, on top of the waiting one, so nested tasks never deadlock.
        `request(req_id)`: the Get, Wait or GpuHost record to send."""
        with self._rpc_lock:
            req_id = next(self._req_ids)
            self._waiting.add(req_id)
            self.status.blocked(True)
            try:
                # Tasks that came in the same batch as the one blocking now must not
                # wait behind it (one may be what it waits for): back they go, last
                # first, since the driver puts each back at the front of its queue.
                while self._backlog and self.actor_host is None:
                    self.send(Bounce(BOUNCE, Task(*self._backlog.pop()).task_id))
                self.send(request(req_id))
                while req_id not in self._replies:
                    self._receive_blocked()
                    while self._helps:
                        self._run_help(self._helps.popleft())
                return self._replies.pop(req_id)
            except BaseException:
                while self._helps:  # (not run: back, last first, as the backlog above)
                    self.send(Bounce(BOUNCE, Task(*self._helps.pop()).task_id))
                if req_id not in self._replies:  # left early (a cancel): the driver forgets it
                    self.send(Abandon(ABANDON, req_id))
                self._replies.pop(req_id, None)
                raise
            finally:
                self._waiting.discard(req_id)
                self.status.blocked(False)

    def get(self, refs: list, timeout):
        oids = [r._id for r in refs if type(r) is ObjectRef]
        if not oids:
            return list(refs)
        lent = self.lent
        if lent and all(o in lent for o in oids):  # sent with the task: no round trip
            try:
                return ser.values_of(refs, lent)
            except _shm.SegmentGone:  # spilled since it was lent: the driver restores it
                pass
        for attempt in range(3):
            stored = self._rpc(lambda req_id: Get(GET, req_id, oids, timeout))
            if stored is None:
                raise GetTimeoutError("Get timed out: some object(s) not ready.")
            try:
                return ser.values_of(refs, dict(zip(oids, stored)))
            except _shm.SegmentGone:  # spilled again in between (a very full store)
                if attempt == 2:
                    raise

    def cancel(self, ref, force: bool, recursive: bool):
        self.send(Cancel(CANCEL, ref._id, force, recursive))

    def gpu_host_copy(self, oid) -> dict:
        """Host copies of a GPU object's arrays, made by the driver (see _gpu)."""
        stored = self._rpc(lambda req_id: GpuHost(GPU_HOST, req_id, oid))
        return ser.from_stored(stored)

    # ------------------------------------------------------------ cancellation
    def cancel_posted(self) -> bool:
        """Has a cancel come to this worker since it last looked (or is one listed)?"""
        return self._cancel_words[0] != self._cancels_seen or bool(self._cancelled)

    def is_cancelled(self, task_id) -> bool:
        """Has the driver cancelled `task_id` (see _ring.Channel.post_cancels)?"""
        n = self._cancel_words[0]
        if n != self._cancels_seen:
            self._cancels_seen = n
            self._cancelled = self.channel.cancelled_ids()
        return task_id is not None and task_id in self._cancelled

    def on_sigint(self, signum, frame):
        """The driver cancels a running task with SIGINT: raise KeyboardInterrupt in it
        (a sleeping task wakes) if the task running now is the one cancelled."""
        if self.actor_host is not None:
            self.actor_host.cancel_listed()  # (an async actor's calls)
        if self.is_cancelled(self.current_task_id):
            if self._critical:
                self._interrupt_pending = True  # raised when the section ends
                self._tasks.interrupt()  # (an rpc's wait for a message ends: _receive_blocked)
            else:
                raise KeyboardInterrupt

    def cluster_resources(self):
        return {k: v for k, v in self.config["totals"].items() if v}

    def timeline(self):
        raise RuntimeError("timeline() is answered by the driver only; call it outside of tasks")

    @property
    def job_id(self) -> str:
        return f"{self.driver_pid:08x}"

    @property
    def runtime_env(self) -> dict:
        return dict(self.config.get("runtime_env") or {})

    def available_resources(self):
        raise RuntimeError("available_resources() is answered by the driver only; call it "
                           "outside of tasks")

    def wait(self, refs: list, num_returns: int, timeout, fetch_local: bool):
        oids = [r._id for r in refs]
        ready_mask = self._rpc(lambda req_id: Wait(WAIT, req_id, oids, num_returns, timeout))
        ready = [r for r, ok in zip(refs, ready_mask) if ok]
        return ready, [r for r, ok in zip(refs, ready_mask) if not ok]


