"""Worker processes: start them pinned to cores, track what each is doing, stop them.

Each worker owns a Channel (its task ring and result ring in one segment). The
driver pushes into a task ring without ever blocking: what does not fit waits in
the worker's outbox and is flushed on the next pump.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass

from . import _ring, _shm

_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WorkerHandle:
    __slots__ = ("index", "proc", "pid", "channel", "ring", "core", "inflight", "charge",
                 "fns", "rpcs", "outbox", "extra", "idle_since", "tasks_done", "started")

    def __init__(self, index, proc, channel, core, extra):
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
        self.extra = extra          # started beyond num_cpus (blocked or fractional tasks)
        self.idle_since = time.monotonic()
        self.tasks_done = 0
        self.started = time.time()

    def send(self, data: bytes, wake: bool = True):
        """Push without ever blocking; wake=False leaves a sleeping worker asleep
        (the caller wakes it after a batch, or the pump's watcher does within 1 ms)."""
        if self.outbox or not self.ring.push(data, wake=wake):
            self.outbox.append(data)

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


@dataclass(frozen=True)
class PoolStats:
    workers: int
    extra: int
    busy: int
    blocked: int
    started_total: int


class WorkerPool:
    def __init__(self, prefix: str, control: _ring.ControlArea, config: dict):
        self.prefix = prefix
        self.control = control
        self.config = config            # the JSON every worker starts with
        self.workers = []
        self.snapshot = ((), ())        # (workers, result rings), replaced on change
        self.task_rings = ()
        self._next_index = 0

    def spawn(self, core, extra=False) -> WorkerHandle:
        index = self._next_index
        self._next_index += 1
        name = f"{self.prefix}c{index}"
        channel = _ring.Channel(name, create=True, doorbell=self.control.doorbell)
        config = dict(self.config, channel=name, core=core)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(
            [sys.executable, "-m", "shmray._worker", json.dumps(config)],
            cwd=config["cwd"], env=env, stdin=subprocess.DEVNULL, close_fds=True,
            start_new_session=True)  # the terminal's Ctrl-C goes to the driver only
        w = WorkerHandle(index, proc, channel, core, extra)
        self.workers.append(w)
        self._refresh()
        return w

    def remove(self, w: WorkerHandle):
        self.workers.remove(w)
        self._refresh()
        _shm.unlink(w.channel.name)

    def _refresh(self):
        ws = tuple(self.workers)
        self.snapshot = (ws, tuple(w.channel.results for w in ws))
        self.task_rings = tuple(w.ring for w in ws)

    def statistics(self) -> PoolStats:
        ws = self.workers
        return PoolStats(len(ws), sum(w.extra for w in ws), sum(not w.idle for w in ws),
                         sum(w.blocked for w in ws), self._next_index)

    def stop_all(self, grace: float):
        """Ask every worker to exit, kill those still running after `grace` seconds."""
        exit_msg = _ring.encode((_ring.EXIT,), self.workers[0].ring, "") if self.workers else b""
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
                try:
                    os.kill(w.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for w in self.workers:
            w.proc.wait()
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
