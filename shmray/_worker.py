"""A worker process: pop task descriptors from its ring, run them, push results.

    task ring ──► FUNC  cache the function (shipped once per worker)
              ──► TASKS resolve args (zero-copy) ─► run ─► DONE (inline or shm results)
              ──► REPLY answer to this worker's own GET/WAIT (nested calls)
    result ring ◄── DONE, SUBMIT, PUT, GET, WAIT, LOG, BOUNCE, REFS (refs held here)

Forked from the driver at init when the driver runs a single thread (the fast
start), else started as ``python -m shmray._worker CONFIG_JSON``; pinned to one
core. It never imports the driver's runtime. It exits when told to, or when the driver is gone.
"""
from __future__ import annotations

import gc
import io
import itertools
import json
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections import deque
from threading import get_ident

from . import _context, _gpu, _ring, _serialization as ser, _shm, _status_area
from ._object_ref import ObjectRef, _collector, _hooks, collect_refs, new_base_id
from .exceptions import GetTimeoutError, TaskCancelledError


class LogStream(io.TextIOBase):
    """sys.stdout/stderr of a worker: whole lines go to the driver, tagged with the task."""

    def __init__(self, runtime: "WorkerRuntime", fd: int):
        self._rt = runtime
        self._fd = fd
        self._buf = ""
        self._lock = threading.Lock()

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        with self._lock:
            self._buf += s
            if "\n" not in self._buf:
                return len(s)
            text, _, self._buf = self._buf.rpartition("\n")
        self._rt.send((_ring.LOG, self._fd, self._rt.current_name, text))
        return len(s)

    def flush(self):
        with self._lock:
            text, self._buf = self._buf, ""
        if text:
            self._rt.send((_ring.LOG, self._fd, self._rt.current_name, text))

    def isatty(self):
        return False


_NO_ARGS_PICKLE = ser.NO_ARGS[1]
_NONE_RESULT = (ser.NONE,)


class WorkerRuntime:
    """What ``shmray.get/put/wait/remote`` do inside a task: ask the driver over the ring."""

    is_driver = False

    def __init__(self, config: dict):
        self.config = config
        self.driver_pid = config["driver_pid"]
        self.resolve_nested = config["resolve_nested_refs"]
        self.node_id = config["node_id"]
        control = _ring.ControlArea(config["control"], create=False)
        self.channel = _ring.Channel(config["channel"], create=False, doorbell=control.doorbell)
        self._control = control
        self.status = _status_area.WorkerStatus(self.channel.mm, os.getpid(), config.get("core"))
        self._tasks = self.channel.tasks
        self._results = self.channel.results
        self._spill = self.channel._spill_prefix
        self._send_lock = threading.Lock()
        self._rpc_lock = threading.RLock()  # re-entered by tasks run while waiting
        self._waiting = set()      # req_ids of this worker's open rpcs
        self._replies = {}         # req_id -> reply payload, until its rpc picks it up
        self._req_ids = itertools.count(1)
        self._seg_ids = itertools.count(1)
        self._seg_prefix = f"{config['object_prefix']}w{os.getpid()}_"
        self.fns = {}              # fn_id -> (callable or Exception, name)
        self.known_to_driver = set()
        self.current_name = None
        self.current_task_id = None
        self._lent = None          # the running task's lent stored forms (oid -> stored)
        self._backlog = deque()    # tasks of the current TASKS message not started yet
        self._cancel_words = self.channel.cancels
        self._cancels_seen = 0     # the channel's cancel counter when last read
        self._cancelled = set()    # the ids it listed then
        # The GPU devices this worker runs tasks for (Ray returns ints for numeric ids).
        self.gpu_ids = [int(d) if d.isdigit() else d for d in config.get("gpus", ())]
        self.current_request = ()  # the running task's resources, as (name, amount) pairs
        self.spin = config.get("spin", 0.0)
        # Reference counting (see DriverRuntime._grant): ObjectRef instances here,
        # counted from the hooks' queues when a message goes out.
        self._created = deque()    # oids of instances created (appended by the hooks)
        self._dropped = deque()    # oids of instances dropped
        self._escaped = deque()    # oids pickled outside shmray: the driver keeps them
        self._counts = {}          # oid -> live instances here
        self._granted = {}         # oid -> references the driver counts for this worker
        self._main_thread = threading.main_thread().ident
        self._critical = 0         # depth of sections a cancel's interrupt waits for
        self._interrupt_pending = False

    # ---------------------------------------------------------------- plumbing
    def new_segment_name(self) -> str:
        return f"{self._seg_prefix}{next(self._seg_ids)}"

    def send(self, msg: tuple, grants=()):
        """Push `msg`; the refs this worker came to hold go first, the ones it let go
        of after (a DONE's result may hold one). `grants`: oids the driver counts for
        this worker on receiving `msg` (the refs a SUBMIT or PUT returns)."""
        data = _ring.encode(msg, self._results, self._spill)
        held = self._hold_interrupts()
        try:
            with self._send_lock:
                if self._created or self._dropped or self._escaped:
                    self._push_with_ref_changes(data)
                else:
                    self._results.push(data, timeout=None)
                granted = self._granted
                for oid in grants:
                    granted[oid] = granted.get(oid, 0) + 1
        finally:
            if held:
                self._release_interrupts()

    def send_ref_changes(self):
        """Tell the driver about refs created or dropped since the last message."""
        held = self._hold_interrupts()
        try:
            with self._send_lock:
                self._push_with_ref_changes(None)
        finally:
            if held:
                self._release_interrupts()

    def _push_with_ref_changes(self, data):
        """Under _send_lock: REFS borrows, `data` (if any), REFS releases. The garbage
        collector is off meanwhile: a user's __del__ run by it could print or put, and
        so re-enter send() under the lock."""
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            borrows, releases, escaped = self._ref_changes()
            push, results, spill = self._results.push, self._results, self._spill
            if data is None:
                if borrows or releases or escaped:
                    push(_ring.encode((_ring.REFS, borrows, releases, escaped), results, spill),
                         timeout=None)
                return
            if borrows or escaped:
                push(_ring.encode((_ring.REFS, borrows, (), escaped), results, spill),
                     timeout=None)
            push(data, timeout=None)
            if releases:
                push(_ring.encode((_ring.REFS, (), releases, ()), results, spill), timeout=None)
        finally:
            if gc_was_on:
                gc.enable()

    def _ref_changes(self):
        """Count the queued creations and drops (under _send_lock). Returns the oids
        now held here that the driver does not count for this worker, the
        (oid, grants) it counts for oids held here no more, and escaped oids.
        Drops are counted up to a length read first (see ObjectStore.process_refs)."""
        dropped, created, counts = self._dropped, self._created, self._counts
        n = len(dropped)
        touched = set()
        while created:
            oid = created.popleft()
            counts[oid] = counts.get(oid, 0) + 1
            touched.add(oid)
        for _ in range(n):
            oid = dropped.popleft()
            left = counts.get(oid, 0) - 1
            if left > 0:
                counts[oid] = left
            else:
                counts.pop(oid, None)  # (an instance inherited from the driver at fork: < 0)
            touched.add(oid)
        granted = self._granted
        borrows = [oid for oid in touched if oid in counts and oid not in granted]
        for oid in borrows:
            granted[oid] = 1
        releases = [(oid, granted.pop(oid)) for oid in touched
                    if oid not in counts and oid in granted]
        escaped_queue = self._escaped
        escaped = [escaped_queue.popleft() for _ in range(len(escaped_queue))]
        return borrows, releases, escaped

    # A cancel's KeyboardInterrupt (on_sigint) must not land between pushing a message
    # and recording what it granted, or between a SUBMIT and the ObjectRef it returns:
    # the driver's counts and this worker's would disagree. The main thread (where
    # Python runs signal handlers) defers it to the end of such a section.
    def _hold_interrupts(self) -> bool:
        if get_ident() != self._main_thread:
            return False
        self._critical += 1
        return True

    def _release_interrupts(self):
        self._critical -= 1
        if not self._critical and self._interrupt_pending:
            self._interrupt_pending = False
            if self.is_cancelled(self.current_task_id):
                raise KeyboardInterrupt

    # ------------------------------------------------------------- the loop
    def serve(self):
        pop = self._tasks.pop
        decode = _ring.decode
        backlog = self._backlog
        while True:
            if backlog:
                self.run_task(backlog.popleft())
                continue
            if self._created or self._dropped or self._escaped:
                self.send_ref_changes()  # refs dropped since the last message (a GC)
            data = pop(timeout=1.0, spin=self.spin)
            if data is None:
                continue
            msg = decode(data)
            kind = msg[0]
            if kind == _ring.TASKS:
                backlog.extend(msg[1])
            elif kind == _ring.FUNC:
                self.register(msg)
            elif kind == _ring.GPU_FREE:
                _gpu.release(msg[1])
            elif kind == _ring.EXIT:
                return
            # a REPLY outside an rpc is stale (its rpc timed out): drop it

    def register(self, msg):
        _, fn_id, fn_bytes, name = msg
        try:
            fn = pickle.loads(fn_bytes)
        except Exception as e:  # e.g. a module the worker cannot import
            fn = e
        self.fns[fn_id] = (fn, name)
        self.known_to_driver.add(fn_id)

    def run_task(self, task):
        task_id, fn_id, num_returns, args_stored, dep_values, lent, request, _help, attempt = task
        fn, name = self.fns[fn_id]
        # A help task runs inside another: restore what the outer one had.
        outer = self.current_name, self.current_task_id, self._lent, self.current_request
        self.current_name, self.current_task_id, self._lent = name, task_id, lent
        self.current_request = request
        status = self.status
        under = status.save() if outer[1] is not None else None
        start = time.monotonic_ns()
        status.begin(task_id, fn_id, start)
        error = "WorkerExit"  # what the record says if the task ends the process
        try:
            outcome, inner, gpu, error = self._execute(fn, name, task_id, num_returns,
                                                       args_stored, dep_values)
        finally:
            end = time.monotonic_ns()
            self.current_name, self.current_task_id, self._lent, self.current_request = outer
            if under is None:
                status.end(task_id, fn_id, start, end, attempt, error)
            else:
                status.restore(under, task_id, fn_id, start, end, attempt, error)
        # The arguments and the result are gone by now: the refs among them that
        # nothing here holds any more are released right after the DONE.
        done = (_ring.DONE, task_id, outcome, start, end, inner, gpu)
        if outer[1] is not None:  # a help task: the task under it may be cancelled
            self.send(done)
            return
        # No cancel can interrupt this (on_sigint acts on the running task only, and
        # none runs now): send() without deferring interrupts, the per-task path.
        data = _ring.encode(done, self._results, self._spill)
        with self._send_lock:
            if self._created or self._dropped or self._escaped:
                self._push_with_ref_changes(data)
            else:
                self._results.push(data, timeout=None)

    def _execute(self, fn, name, task_id, num_returns, args_stored, dep_values):
        """Run one task; returns (its stored results, per result the ids of the refs
        inside it or None, the indexes of results holding GPU arrays or None, None), or
        for an error (the stored error, the refs inside it, None, its type's name)."""
        try:
            if self._cancel_words[0] != self._cancels_seen or self._cancelled:
                if self.is_cancelled(task_id):
                    raise KeyboardInterrupt  # cancelled before it started: never runs
            if isinstance(fn, Exception):
                raise fn
            if args_stored[1] == _NO_ARGS_PICKLE:  # f.remote(): nothing to unpickle
                args, kwargs = (), {}
            else:
                args, kwargs = ser.from_stored(args_stored)
            if dep_values:
                args, kwargs = ser.fill_refs(args, kwargs, [ser.from_stored(v) for v in dep_values])
            return (*self.pack_results(fn(*args, **kwargs), num_returns, task_id), None)
        except Exception as e:  # refs inside the exception: held by the stored error
            stored, inner = collect_refs(ser.task_error_stored, name, e, 1)
            return stored, (inner or None), None, type(e).__name__
        except KeyboardInterrupt:
            if not self.is_cancelled(task_id):
                raise  # not ours: a signal from elsewhere ends the worker as before
            return (ser.error_stored(TaskCancelledError(f"{task_id:032x}")), None, None,
                    "TaskCancelledError")

    def pack_results(self, result, num_returns, task_id):
        """(stored results, per result the refs inside it or None, the indexes of the
        results whose cupy arrays went out as IPC handles (kept here) or None)."""
        if num_returns == 1:
            if result is None:
                return _NONE_RESULT, None, None
            if type(result) in ser.REF_FREE:  # a number, a string: no refs to collect
                return (ser.to_stored(result, self.new_segment_name),), None, None
            if "cupy" in sys.modules:
                stored, inner, gpu = self._store_value(result, task_id)
                return (stored,), ((inner,) if inner else None), ((0,) if gpu else None)
            collector = _collector  # collect_refs(), inlined: once per task
            outer = collector.oids
            inner = collector.oids = []
            try:
                stored = ser.to_stored(result, self.new_segment_name)
            finally:
                collector.oids = outer
            return (stored,), ((list(dict.fromkeys(inner)),) if inner else None), None
        if num_returns == 0:
            return (), None, None
        try:
            items = tuple(result)
        except TypeError:
            raise ValueError(f"Task returned a {type(result).__name__}, but num_returns="
                             f"{num_returns} needs a sequence of that many values") from None
        if len(items) != num_returns:
            raise ValueError(f"Task returned {len(items)} objects, but num_returns={num_returns}.")
        packed = []
        try:
            for i, x in enumerate(items):
                packed.append(self._store_value(x, task_id + i))
        except BaseException:  # the task fails: what the first results exported goes
            _gpu.release([task_id + i for i in range(len(packed))])
            raise
        inner = tuple(refs for _, refs, _ in packed)
        gpu = tuple(i for i, (_, _, exported) in enumerate(packed) if exported)
        return (tuple(stored for stored, _, _ in packed), (inner if any(inner) else None),
                gpu or None)

    def _store_value(self, value, oid):
        """(stored form, ids of the refs inside, whether cupy arrays went out as IPC
        handles) of `value` stored as object `oid`."""
        if "cupy" not in sys.modules:  # no cupy array can be in it
            stored, inner = collect_refs(ser.to_stored, value, self.new_segment_name)
            return stored, inner, False
        with _gpu.exporting(oid) as gpu:
            stored, inner = collect_refs(ser.to_stored, value, self.new_segment_name)
        return stored, inner, gpu.exported

    # ------------------------------------------------ the API inside a task
    def submit(self, rf, args, kwargs, options):
        task_id = new_base_id()
        args, kwargs, refs = ser.extract_refs(args, kwargs, self.resolve_nested)
        if ser.args_hold_no_refs(args, kwargs):
            args_stored, held = ser.to_stored((args, kwargs), self.new_segment_name), None
        else:
            args_stored, held = collect_refs(ser.to_stored, (args, kwargs),
                                             self.new_segment_name)
        fn_bytes = None if rf._fn_id in self.known_to_driver else rf._pickled()
        n = options.num_returns
        returns = [task_id + i for i in range(n)]
        critical = self._hold_interrupts()  # until the refs exist (see _hold_interrupts)
        try:
            self.send((_ring.SUBMIT, task_id, rf._fn_id, fn_bytes, rf._name, options,
                       args_stored, refs, held or None, self.current_task_id), grants=returns)
            self.known_to_driver.add(rf._fn_id)
            if n == 1:
                return ObjectRef(task_id)
            return [ObjectRef(oid) for oid in returns] if n else None
        finally:
            if critical:
                self._release_interrupts()

    def put(self, value):
        oid = new_base_id()
        stored, inner, gpu = self._store_value(value, oid)
        critical = self._hold_interrupts()
        try:
            self.send((_ring.PUT, oid, stored, inner, gpu), grants=(oid,))
            return ObjectRef(oid)
        finally:
            if critical:
                self._release_interrupts()

    def _rpc(self, msg):
        """Send GET/WAIT and wait for its REPLY. Meanwhile, tasks queued to this worker
        before it blocked go back to the driver (BOUNCE) for a free worker; a task the
        driver marks `help` (every worker is busy or blocked, the pool is at its cap)
        runs right here, on top of the waiting one, so nested tasks never deadlock."""
        with self._rpc_lock:
            req_id = next(self._req_ids)
            self._waiting.add(req_id)
            self.status.blocked(True)
            try:
                # Tasks that came in the same batch as the one blocking now must not
                # wait behind it (one may be what it waits for): back they go, last
                # first, since the driver puts each back at the front of its queue.
                while self._backlog:
                    self.send((_ring.BOUNCE, self._backlog.pop()[0]))
                self.send(msg[:1] + (req_id,) + msg[1:])
                while req_id not in self._replies:
                    reply = _ring.decode(self._tasks.pop(timeout=None, spin=self.spin))
                    kind = reply[0]
                    if kind == _ring.REPLY:
                        if reply[1] in self._waiting:  # else stale: its rpc is over
                            self._replies[reply[1]] = reply[2]
                    elif kind == _ring.TASKS:
                        for task in reply[1]:
                            if task[7]:  # help (see _send_task): run it here, on top of this wait
                                self.run_task(task)
                            else:
                                self.send((_ring.BOUNCE, task[0]))
                    elif kind == _ring.FUNC:
                        self.register(reply)
                    elif kind == _ring.GPU_FREE:
                        _gpu.release(reply[1])
                    elif kind == _ring.EXIT:
                        os._exit(0)
                return self._replies.pop(req_id)
            except BaseException:
                if req_id not in self._replies:  # left early (a cancel): the driver forgets it
                    self.send((_ring.ABANDON, req_id))
                self._replies.pop(req_id, None)
                raise
            finally:
                self._waiting.discard(req_id)
                self.status.blocked(False)

    def get(self, refs: list, timeout):
        oids = [r._id for r in refs if type(r) is ObjectRef]
        if not oids:
            return list(refs)
        lent = self._lent
        if lent and all(o in lent for o in oids):  # sent with the task: no round trip
            try:
                return ser.values_of(refs, lent)
            except _shm.SegmentGone:  # spilled since it was lent: the driver restores it
                pass
        for attempt in range(3):
            stored = self._rpc((_ring.GET, oids, timeout))
            if stored is None:
                raise GetTimeoutError("Get timed out: some object(s) not ready.")
            try:
                return ser.values_of(refs, dict(zip(oids, stored)))
            except _shm.SegmentGone:  # spilled again in between (a very full store)
                if attempt == 2:
                    raise

    def cancel(self, ref, force: bool, recursive: bool):
        self.send((_ring.CANCEL, ref._id, force, recursive))

    def gpu_host_copy(self, oid) -> dict:
        """Host copies of a GPU object's arrays, made by the driver (see _gpu)."""
        stored = self._rpc((_ring.GPU_HOST, oid))
        return ser.from_stored(stored)

    # ------------------------------------------------------------ cancellation
    def is_cancelled(self, task_id) -> bool:
        """Has the driver cancelled `task_id` (see _ring.Channel.post_cancel)?"""
        n = self._cancel_words[0]
        if n != self._cancels_seen:
            self._cancels_seen = n
            self._cancelled = self.channel.cancelled_ids()
        return task_id is not None and task_id in self._cancelled

    def on_sigint(self, signum, frame):
        """The driver cancels a running task with SIGINT: raise KeyboardInterrupt in it
        (a sleeping task wakes) if the task running now is the one cancelled."""
        if self.is_cancelled(self.current_task_id):
            if self._critical:
                self._interrupt_pending = True  # raised when the section ends
            else:
                raise KeyboardInterrupt

    def cluster_resources(self):
        return {k: v for k, v in self.config["totals"].items() if v}

    def available_resources(self):
        raise RuntimeError("available_resources() is answered by the driver only; call it "
                           "outside of tasks")

    def wait(self, refs: list, num_returns: int, timeout, fetch_local: bool):
        ready_mask = self._rpc((_ring.WAIT, [r._id for r in refs], num_returns, timeout))
        ready = [r for r, ok in zip(refs, ready_mask) if ok]
        return ready, [r for r, ok in zip(refs, ready_mask) if not ok]


def _watch_driver(driver_pid: int):
    """Exit soon after the driver dies, even while a task runs."""
    while True:
        time.sleep(0.5)
        if os.getppid() != driver_pid:
            os._exit(1)


PROCESS_NAME = _shm.WORKER_COMM + "{driver_pid}"  # what ps -o comm shows; <= 15 bytes


def _name_process(driver_pid: int):
    """Name the process after its driver, so ps and the leak checks can tell whose
    worker it is (a forked worker's command line is the driver's own)."""
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(PROCESS_NAME.format(driver_pid=driver_pid))
    except OSError:
        pass


def main(argv):
    """Entry point of a spawned worker: ``python -m shmray._worker CONFIG_JSON``."""
    config = json.loads(argv[1])
    os.chdir(config["cwd"])
    if config.get("keep_sys_path"):  # a pip environment's: its own paths stay
        sys.path[:0] = config["sys_path"]
    else:
        sys.path[:] = config["sys_path"]
    run(config)


def run_forked(config: dict):
    """Entry point of a worker forked from the driver at init; never returns.

    The child starts as a copy of the driver, so first it forgets what belongs to
    the driver: signal handlers, stdin, the driver's hooks, its random state."""
    try:
        os.setsid()  # the terminal's Ctrl-C goes to the driver only
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM, signal.SIGUSR1,
                    signal.SIGUSR2, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # The driver's objects are never collected here: a collection could run
        # their finalizers (an ObjectRef telling the store it was dropped).
        gc.freeze()
        _hooks.created = _hooks.dropped = _hooks.escaped = _hooks.future = None
        numpy = sys.modules.get("numpy")
        if numpy is not None:  # `random` reseeds itself after fork; numpy does not
            numpy.random.seed()
        run(config)
    except SystemExit as e:  # sys.exit() in a task: the exit code the driver reports
        os._exit(e.code if isinstance(e.code, int) else (0 if e.code is None else 1))
    except BaseException:
        traceback.print_exc(file=sys.__stderr__)
    finally:
        os._exit(1)  # never return into the driver's code


def run(config: dict):
    _name_process(config["driver_pid"])
    if config["gpus"] or config["totals"].get("GPU"):
        # Its own devices only; none for a CPU worker on a node with GPUs (as Ray
        # does): a process that initialised CUDA never runs tasks for other devices.
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(config["gpus"])
    if config.get("core") is not None:
        try:
            os.sched_setaffinity(0, {config["core"]})
        except OSError:
            pass
    # SCHED_BATCH: the same CPU share as any process, but a woken worker does not
    # preempt the process on its core at once. That process is often the driver
    # mid-submit (2 cores, 2 workers); preempting it costs the driver more than the
    # worker gains by starting a few microseconds sooner (W1: about +8% here).
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (OSError, AttributeError):
        pass
    # Help tasks run on top of the frames that wait for them: one nesting level of
    # user recursion costs a handful of Python frames.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    rt = WorkerRuntime(config)
    _context.runtime = rt
    _gpu.host_copy = rt.gpu_host_copy
    _hooks.created = rt._created.append
    _hooks.dropped = rt._dropped.append
    _hooks.escaped = rt._escaped.append  # (a deque, never replaced)
    signal.signal(signal.SIGINT, rt.on_sigint)
    threading.Thread(target=_watch_driver, args=(rt.driver_pid,), daemon=True,
                     name="shmray-driver-watch").start()
    if config["log_to_driver"]:
        sys.stdout = LogStream(rt, 1)
        sys.stderr = LogStream(rt, 2)
    else:
        sys.stdout = sys.stderr = open(os.devnull, "w")
    try:
        rt.serve()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
