"""A worker process: pop task records from its ring, run them, push results.

    task ring ──► Func  cache the function (shipped once per worker)
              ──► Tasks resolve args (zero-copy) ─► run ─► Done (inline or shm results)
              ──► Reply answer to this worker's own Get/Wait (nested calls)
    result ring ◄── Done, Submit, Put, Get, Wait, Log, Bounce, Refs (refs held here)

This module is the process: its start (forked or spawned), its signals, its output
(LogStream); _worker_runtime is what the API does in it, _worker_tasks how one task
runs.
Forked from the driver at init when the driver runs a single thread (the fast
start), else started as ``python -m shmray._worker CONFIG_JSON``; pinned to one
core. It never imports the driver's runtime. It exits when told to, or when the driver is gone.
"""
from __future__ import annotations

import functools
import gc
import io
import json
import os
import signal
import sys
import threading
import time

from . import _context, _proctree, _shm, _worker_actor, _worker_tasks
from ._object_ref import _hooks
from ._protocol import ACTOR_EXITING, BECOME, LOG, ActorExiting, Log
from ._worker_runtime import WorkerRuntime


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
        if _worker_tasks.in_fork_child:  # not over the worker's ring: see _forked_in_task
            _write_fd(self._fd, s)
            return len(s)
        with self._lock:
            self._buf += s
            if "\n" not in self._buf:
                return len(s)
            text, _, self._buf = self._buf.rpartition("\n")
        self._rt.send(Log(LOG, self._fd, self._rt.current_name, text))
        return len(s)

    def flush(self):
        with self._lock:
            text, self._buf = self._buf, ""
        if text and _worker_tasks.in_fork_child:
            _write_fd(self._fd, text)
        elif text:
            self._rt.send(Log(LOG, self._fd, self._rt.current_name, text))

    def isatty(self):
        return False


def _write_fd(fd: int, text: str):
    data = text.encode(errors="replace")
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass


def _watch_driver(driver_pid: int):
    """Exit soon after the driver dies, even while a task runs; what the worker's
    tasks started goes with it."""
    while True:
        time.sleep(0.5)
        if os.getppid() != driver_pid:
            _proctree.end_tree(os.getpid(), root_too=False)
            if os.getpgid(0) == os.getpid():  # it leads its group (setsid): all of it
                os.killpg(0, signal.SIGKILL)
            os._exit(1)


# ------------------------------------------------ what tasks start
# A worker leads its own process group (setsid, forked or spawned): what its tasks
# start stays in it unless it calls setsid/setpgid itself, and the driver kills the
# group right before it reaps the worker (_worker_pool.WorkerProcess), however the
# worker ended. The tree of a worker's live descendants, which holds those that
# left the group (start_new_session=True) while their parent runs, is killed too
# when the worker leaves on its own (told to, or its driver gone) and when the
# driver kills it. Not covered: what left the group, of a worker that died by itself
# (a crash, os._exit, a SIGKILL from elsewhere): nothing links it to the worker then.
class _ForkedAway:
    """What the API finds, in place of the worker's runtime, in a process forked
    inside a task: the worker's rings have one reader and one writer, the worker."""

    is_driver = False

    def __getattr__(self, name):
        raise RuntimeError(
            "shmray cannot be used in a process forked inside a task (its rings belong to "
            "the worker); start a new interpreter instead (subprocess, or multiprocessing's "
            "'spawn' or 'forkserver' context)")


def _forked_in_task():
    """os.register_at_fork's after_in_child, in a worker: the child of an os.fork()
    in a task (or of multiprocessing's fork context) never touches the worker's
    rings. If the user's function returns in it, it exits (see _worker_tasks); its
    prints go to the worker's own stdout/stderr file descriptors."""
    _worker_tasks.in_fork_child = True
    _context.runtime = _ForkedAway()


PROCESS_NAME = _shm.WORKER_COMM + "{driver_pid}"  # what ps -o comm shows; <= 15 bytes


def _name_process(driver_pid: int):
    """Name the process after its driver, so ps and the leak checks can tell whose
    worker it is (a forked worker's command line is the driver's own)."""
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(PROCESS_NAME.format(driver_pid=driver_pid))
    except OSError:
        pass


STACK_BYTES = 64 << 20
MAX_FRAMES = 40_000


def _grow_stack_limit(size: int) -> int:
    """Let the main thread's stack grow to `size` bytes (Linux checks the limit as
    the stack grows, so raising it now counts); returns the bytes it may use."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft == resource.RLIM_INFINITY or soft >= size:
        return size
    try:
        soft = size if hard == resource.RLIM_INFINITY else min(size, hard)
        resource.setrlimit(resource.RLIMIT_STACK, (soft, hard))
    except (ValueError, OSError):
        pass
    return resource.getrlimit(resource.RLIMIT_STACK)[0]


def main(argv):
    """Entry point of a spawned worker: ``python -m shmray._worker CONFIG_JSON``."""
    config = json.loads(argv[1])
    os.chdir(config["cwd"])
    if config.get("keep_sys_path"):  # a pip environment's: its own paths stay
        sys.path[:0] = config["sys_path"]
    else:
        sys.path[:] = config["sys_path"]
    if os.environ.get("SHMRAY_AS_RAY") == "1":  # its driver runs as ray (`shmray run`)
        from . import _ray_alias

        _ray_alias.install()
    run(config)


def run_forked(config: dict):
    """Entry point of a worker forked from the driver at init; never returns.

    The child starts as a copy of the driver, so first it forgets what belongs to
    the driver: signal handlers, stdin, the driver's hooks, its random state."""
    try:
        os.setsid()  # the terminal's Ctrl-C goes to the driver only; its own group
        _forget_faulthandler()
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
        import traceback

        traceback.print_exc(file=sys.__stderr__)
    finally:
        os._exit(1)  # never return into the driver's code


def _forget_faulthandler():
    """The driver's faulthandler (pytest enables one) would print a worker's crash as
    a "Fatal Python error" and its stack on the driver's stderr: the driver reports a
    worker's death already (WorkerCrashedError: the signal that killed it). Kept when
    the user asked for it in every process (PYTHONFAULTHANDLER, -X faulthandler), as
    a spawned worker gets it."""
    faulthandler = sys.modules.get("faulthandler")
    if faulthandler is None or not faulthandler.is_enabled():
        return
    faulthandler.disable()
    if os.environ.get("PYTHONFAULTHANDLER") or "faulthandler" in sys._xoptions:
        try:
            faulthandler.enable(sys.__stderr__)
        except Exception:
            pass


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
    # user recursion costs 8 Python frames and about 1.2 KB of C stack, so 40,000
    # frames (a recursion of nested tasks about 5,000 deep) need some 6 MB of stack,
    # more with C-heavy frames: the main thread's may grow to 64 MB (the 8 MB default
    # is too close), threads that tasks start get as much (address space only, until
    # used), and the limit is lower where the stack cannot grow that far.
    stack = _grow_stack_limit(STACK_BYTES)
    try:
        threading.stack_size(STACK_BYTES)
    except (ValueError, RuntimeError):
        stack = min(stack, 8 << 20)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), min(MAX_FRAMES, stack // 1600)))
    rt = WorkerRuntime(config)
    rt._receivers[BECOME] = functools.partial(_worker_actor.become, rt)
    _context.runtime = rt
    _hooks.created = rt._created.append
    _hooks.dropped = rt._dropped.append
    _hooks.escaped = rt._escaped.append  # (a deque, never replaced)
    signal.signal(signal.SIGINT, rt.on_sigint)
    os.register_at_fork(after_in_child=_forked_in_task)
    pid = os.getpid()
    threading.Thread(target=_watch_driver, args=(rt.driver_pid,), daemon=True,
                     name="shmray-driver-watch").start()
    if config["log_to_driver"]:
        sys.stdout = LogStream(rt, 1)
        sys.stderr = LogStream(rt, 2)
    else:
        sys.stdout = sys.stderr = open(os.devnull, "w")
    try:
        try:
            rt.serve()
        except _worker_actor.RingHandedOver as handover:  # an async actor's loop reads it
            handover.standby()  # until an Exit
    except SystemExit as e:  # sys.exit() in a call of an actor: it ends on purpose
        if rt.actor_host is not None:
            rt.send(ActorExiting(ACTOR_EXITING, f"sys.exit({e.code!r}) was called"))
        raise
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        if os.getpid() == pid:  # (not a child forked in a task, leaving by an exception)
            _proctree.end_tree(pid, root_too=False)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
