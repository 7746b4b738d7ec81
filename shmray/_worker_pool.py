"""Worker processes: start them pinned to cores, track what each is doing, stop them.

A worker starts as a fork of the driver while the driver runs a single thread
(at init: a few milliseconds, like multiprocessing's default on Linux), and as a
fresh interpreter otherwise (forking a process with threads can copy a lock some
other thread holds; a fork of a process that initialised CUDA cannot use CUDA) or
when SHMRAY_START_METHOD=spawn asks for it.

Each worker owns a Channel (its task ring and result ring in one segment). The
driver pushes into a task ring without ever blocking: what does not fit waits in
the worker's outbox and is flushed on the next pump.
"""
from __future__ import annotations

import json
import os
import select
import signal
import sys
import threading
import time
from collections import deque

from . import _gpu, _proctree, _ring, _runtime_env, _shm, _status_area, _worker
from ._crecords import WorkerBase
from ._protocol import EXIT, Exit

_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


START_METHODS = ("fork", "spawn")
GONE_HISTORY = 10_000  # task records kept from workers that exited


class WorkerProcess:
    """A worker's process as the driver sees it, forked or spawned: the part of
    subprocess.Popen's interface the runtime uses.

    A worker leads its own process group (setsid): what its tasks start stays in it
    (unless it leaves on purpose: see _proctree.end_tree). Once the worker has
    exited, however it ended, the group is killed before the worker is reaped: until
    then the worker's pid, the group's id, cannot be anyone else's."""

    def __init__(self, pid: int, popen=None):
        self.pid = pid
        self.returncode = None
        self._popen = popen  # a spawned worker's Popen: kept, never asked (this reaps it)

    def poll(self):
        if self.returncode is None:
            try:  # exited? (WNOWAIT: not reaped yet)
                exited = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # reaped by someone else's os.wait(): its group
                self._ended(-signal.SIGKILL)  # id may be reused, so it is left alone
                return self.returncode
            if exited is not None:
                kill_group(self.pid)
                try:
                    self._ended(os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1]))
                except ChildProcessError:
                    self._ended(-signal.SIGKILL)
        return self.returncode

    def _ended(self, returncode: int):
        self.returncode = returncode
        if self._popen is not None:  # or subprocess would wait for the pid itself later
            self._popen.returncode = returncode

    def wait(self, timeout=None):
        if self.poll() is None:
            # A pidfd turns readable when the process exits: no polling loop.
            fd = os.pidfd_open(self.pid)
            try:
                select.select([fd], [], [], timeout)
            finally:
                os.close(fd)
            if self.poll() is None:
                import subprocess  # (Popen's exception; imported here, as in _spawn)

                raise subprocess.TimeoutExpired(f"worker pid {self.pid}", timeout)
        return self.returncode

    def kill(self):
        """SIGKILL the worker, its descendants and its process group (not reaped yet:
        its pid is still its own)."""
        if self.returncode is None:
            _proctree.end_tree(self.pid, root_too=True)
            kill_group(self.pid)


def kill_group(pid: int):
    """SIGKILL the process group that worker `pid` leads, or only the worker if it is
    not leading one yet (just started: before its setsid)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def start_method() -> str:
    method = os.environ.get("SHMRAY_START_METHOD", "fork")
    if method not in START_METHODS:
        raise ValueError(f"SHMRAY_START_METHOD must be one of {START_METHODS}, got {method!r}")
    return method


class WorkerHandle(WorkerBase):
    # (inflight, charge, fns, rpcs, batch, retiring, gone, env, actor, tasks_done, gpus
    # and idle_since are the C base's fields: the lane reads them for every task)
    __slots__ = ("index", "proc", "pid", "channel", "ring", "core", "outbox", "extra",
                 "started", "calls", "grants", "exports")

    def __init__(self, index, proc, channel, core, extra, gpus=(), env=None):
        self.index = index
        self.proc = proc
        self.pid = proc.pid
        self.channel = channel
        self.ring = channel.tasks
        self.core = core
        self.inflight = deque()     # TaskSpecs pushed to it, in execution order
        self.charge = None          # the resource request it holds while busy
        self.fns = set()            # function ids already shipped to it
        self.rpcs = []              # its open get/wait calls, innermost last
        self.outbox = deque()       # encoded messages that did not fit in its ring yet
        self.batch = []             # task tuples for one TASKS message, not pushed yet
        self.extra = extra          # started beyond num_cpus (blocked or fractional tasks)
        self.gpus = gpus            # GPU device ids it runs tasks for (its CUDA_VISIBLE_DEVICES)
        self.calls = {}             # fn_id -> tasks sent, for functions with max_calls
        self.retiring = False       # reached a max_calls: gets no more tasks, exits when idle
        self.grants = {}            # oid -> references it holds (see grant())
        self.gone = False           # removed from the pool: its messages are ignored
        self.env = env              # the runtime_env key it was started for (None: plain)
        self.exports = set()        # GPU objects whose cupy arrays it keeps (see _gpu)
        self.actor = None           # the actor it is (_driver.actors.ActorState), if any
        self.idle_since = time.monotonic()
        self.tasks_done = 0
        self.started = time.time()

    def send(self, data: bytes, wake: bool = True):
        """Push without ever blocking; wake=False leaves a sleeping worker asleep
        (the caller wakes it after a batch, or the pump's watcher does within 1 ms)."""
        if self.outbox or not self.ring.push(data, wake=wake):
            self.outbox.append(data)

    def grant(self, oid, store, n=1):
        """The driver counts `n` more references of this worker's to `oid` (the refs a
        Submit or Put returns to it, or a Refs record's borrows)."""
        self.grants[oid] = self.grants.get(oid, 0) + n
        store.borrow(oid, n)

    def flush(self):
        out = self.outbox
        while out and self.ring.push(out[0]):
            out.popleft()

    @property
    def blocked(self) -> bool:
        return bool(self.rpcs)

    @property
    def idle(self) -> bool:
        return not self.inflight and not self.rpcs

    def __repr__(self):
        return f"<worker {self.index} pid={self.pid} core={self.core}>"


class WorkerPool:
    def __init__(self, prefix: str, control: _ring.ControlArea, config: dict, method: str):
        self.prefix = prefix
        self.control = control
        self.config = config            # the JSON every worker starts with
        self.workers = []               # task workers (the scheduler's)
        self.actor_workers = []         # one per live actor, never given a task
        self.snapshot = ((), ())        # (all workers, result rings), replaced on change
        self.task_rings = ()
        self.gone_history = deque(maxlen=GONE_HISTORY)  # task records of workers gone
        self.created = time.monotonic()
        self._next_index = 0
        self.method = method            # "fork" or "spawn": see start_method()

    def spawn(self, core, extra=False, gpus=(), env=None, actor=False) -> WorkerHandle:
        """Start a worker pinned to `core`, for the GPU devices `gpus` (CPU tasks: ())
        and the runtime environment `env` (a _runtime_env.Prepared, or None); `actor`:
        for an actor (see _driver.actors), out of the scheduler's sight."""
        index = self._next_index
        self._next_index += 1
        name = f"{self.prefix}c{index}"
        channel = _ring.Channel(name, create=True, doorbell=self.control.doorbell)
        config = dict(self.config, channel=name, core=core, gpus=list(gpus))
        if env is not None:
            proc = self._spawn_in(env, config)
        elif (self.method == "fork" and threading.active_count() == 1
              and not _gpu.cuda_initialised()):
            proc = self._fork(config)
        else:
            proc = self._spawn(config)
        w = WorkerHandle(index, proc, channel, core, extra, tuple(gpus),
                         None if env is None else env.key)
        if not extra:  # The scheduler's pick is the warmest idle worker (the latest to
            # finish a task). The base workers count as idle since the pool began, all
            # alike: the first tasks go to the first started, the likeliest to be up.
            w.idle_since = self.created
        (self.actor_workers if actor else self.workers).append(w)
        self._refresh()
        return w

    @staticmethod
    def _fork(config) -> WorkerProcess:
        for stream in (sys.stdout, sys.stderr):  # or the child could print it again
            try:
                stream.flush()
            except Exception:
                pass
        pid = os.fork()
        if pid == 0:
            _worker.run_forked(config)  # never returns
        return WorkerProcess(pid)

    @staticmethod
    def _spawn(config) -> WorkerProcess:
        import subprocess  # (here: forked workers never need it)

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
        popen = subprocess.Popen(
            [sys.executable, "-c", "import sys, shmray._worker as w; w.main(sys.argv)",
             json.dumps(config)],
            cwd=config["cwd"], env=env, stdin=subprocess.DEVNULL, close_fds=True,
            start_new_session=True)  # the terminal's Ctrl-C goes to the driver only; its group
        return WorkerProcess(popen.pid, popen)

    @staticmethod
    def _spawn_in(env, config) -> WorkerProcess:
        """A worker for a runtime environment: its interpreter (a pip venv's), its
        env_vars, its working_dir copy as the directory, its paths first on sys.path."""
        import subprocess

        config = dict(config, cwd=env.cwd or config["cwd"], runtime_env=env.env)
        # Its PYTHONPATH (env_vars) comes right after the working_dir and py_modules.
        user_path = [p for p in env.env_vars.get("PYTHONPATH", "").split(os.pathsep) if p]
        if env.venv:  # the venv's own sys.path, then the base's (linked by the bootstrap)
            config["sys_path"], config["keep_sys_path"] = list(env.paths_first) + user_path, True
        else:
            config["sys_path"] = list(env.paths_first) + user_path + config["sys_path"]
        process_env = dict(os.environ, **env.env_vars)
        if not env.venv:  # shmray importable before the worker sets its sys.path
            process_env["PYTHONPATH"] = os.pathsep.join(
                p for p in (*user_path, _PACKAGE_PARENT, os.environ.get("PYTHONPATH")) if p)
        popen = subprocess.Popen(
            [env.python, "-c", _runtime_env.worker_bootstrap(env), json.dumps(config)],
            cwd=config["cwd"], env=process_env, stdin=subprocess.DEVNULL, close_fds=True,
            start_new_session=True)
        return WorkerProcess(popen.pid, popen)

    def remove(self, w: WorkerHandle):
        w.gone = True
        self.gone_history.extend(_status_area.read_history(w.channel.mm, w.pid))  # kept
        (self.actor_workers if w in self.actor_workers else self.workers).remove(w)
        self._refresh()
        _shm.unlink(w.channel.name)

    def busy(self) -> bool:
        """Is a task or an actor's call in flight on any worker? (Any thread may ask:
        the snapshot is a tuple, replaced whole.)"""
        return any(w.inflight for w in self.snapshot[0])

    def _refresh(self):
        ws = tuple(self.workers) + tuple(self.actor_workers)
        self.snapshot = (ws, tuple(w.channel.results for w in ws))
        self.task_rings = tuple(w.ring for w in ws)

    def stop_all(self, grace: float):
        """Ask every worker to exit, kill those still running after `grace` seconds."""
        import subprocess  # (its TimeoutExpired: a session starts without subprocess)

        self.workers += self.actor_workers
        self.actor_workers = []
        exit_msg = _ring.encode(Exit(EXIT), self.workers[0].ring, "") if self.workers else b""
        for w in self.workers:
            if w.idle:
                w.ring.push(exit_msg)
        deadline = time.monotonic() + grace
        for w in self.workers:
            if w.idle:
                try:
                    w.proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.kill()
        for w in self.workers:
            w.proc.wait()  # (its process group killed, see WorkerProcess)
            w.gone = True
            # its specs and it refer to each other, and the lane's specs are not
            # garbage-collected (see csrc/lane.c): the cycle ends here
            w.inflight.clear()
            w.batch.clear()
            _shm.unlink(w.channel.name)
        self.workers = []
        self._refresh()


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def worker_sys_path():
    """The driver's sys.path for its workers ('' is the directory it started in)."""
    path = list(sys.path)
    if path and path[0] == "":
        path[0] = os.getcwd()
    return path
