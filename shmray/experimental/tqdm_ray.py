"""Progress bars from tasks and actors, drawn in the driver's terminal (Ray's
``ray.experimental.tqdm_ray``; ``pip install 'shmray[tqdm]'``).

    @shmray.remote
    def work(n):
        for _ in tqdm(range(n), desc="work"):
            ...

A ``tqdm`` made in a task or an actor draws nothing itself: it sends its whole state
(a JSON line marked with PROGRESS_BAR_TOKEN) on the worker's stdout, at most once per
`flush_interval_s` (the last state held back is sent when the interval ends), and the
driver draws a real tqdm bar for it (see _progress_bars). In the driver, the same
object updates its bar directly. Bars of different processes never overlap, and lines
printed by tasks or by the driver appear whole above them.
"""
from __future__ import annotations

import numbers
import os
import sys
import threading
import time
import uuid
from typing import Iterable, Optional

from .. import _context
from .._protocol import PROGRESS_BAR_TOKEN
from ..util._on_cluster import ray_counterpart
from . import _progress_bars
from ._progress_bars import BarManager, BarState, instance, safe_print

if not _progress_bars.HAVE_TQDM:
    raise ImportError(_progress_bars.MISSING_TQDM)

__all__ = ["tqdm", "safe_print", "instance", "BarManager", "RAY_TQDM_MAGIC"]

RAY_TQDM_MAGIC = PROGRESS_BAR_TOKEN  # (Ray's name for the mark of a state line)


class tqdm:
    """A progress bar usable in tasks, actors and the driver (a subset of tqdm's API,
    Ray's): iterate over it, or call update(n); close() when done (iteration and
    ``with`` close it)."""

    DEFAULT_FLUSH_INTERVAL_SECONDS = 1.0

    def __new__(cls, *args, **kwargs):
        ray_tqdm = ray_counterpart("ray.experimental.tqdm_ray", "tqdm")
        if ray_tqdm is not None:  # on a Ray cluster: Ray's bars, through Ray's logs
            return ray_tqdm(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, iterable: Optional[Iterable] = None, desc: Optional[str] = None,
                 total: Optional[float] = None, unit: Optional[str] = None,
                 position: Optional[int] = None, flush_interval_s: Optional[float] = None):
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except (TypeError, AttributeError):
                total = None
        _check(total is None or _is_number(total), "total", total, "a number or None")
        _check(position is None or (isinstance(position, int) and not isinstance(position, bool)
                                    and position >= 0), "position", position,
               "an int >= 0 or None")
        _check(flush_interval_s is None or (_is_number(flush_interval_s)
                                            and flush_interval_s >= 0),
               "flush_interval_s", flush_interval_s, "a number of seconds >= 0 or None")
        self._iterable = iterable
        self._desc = "" if desc is None else str(desc)
        self._total = total
        self._unit = unit or "it"
        self._pos = position or 0
        self._uuid = uuid.uuid4().hex
        self._x = 0
        self._closed = False
        self._flush_interval_s = (self.DEFAULT_FLUSH_INTERVAL_SECONDS
                                  if flush_interval_s is None else flush_interval_s)
        # The user's thread and the late flush read and write the state: one lock.
        self._lock = threading.Lock()
        self._last_flush_time = 0.0
        self._held = False          # a state not sent yet, for the late flush
        self._dump_state(force_flush=True)  # (drawn at once, as tqdm's)

    # ------------------------------------------------------------ tqdm's API
    def update(self, n: float = 1) -> None:
        """Advance the bar by `n`."""
        if self._closed:
            return
        self._x += n
        self._dump_state()

    def set_description(self, desc: Optional[str] = None, refresh: bool = True) -> None:
        """Change the text in front of the bar."""
        self._desc = "" if desc is None else str(desc)
        self._dump_state(force_flush=refresh)

    def refresh(self) -> None:
        """Send (or draw) the bar's state now."""
        self._dump_state(force_flush=True)

    def close(self) -> None:
        """End the bar: the driver leaves its last state as a finished line."""
        if self._closed:
            return
        self._closed = True
        self._dump_state(force_flush=True)

    @property
    def total(self) -> Optional[float]:
        return self._total

    @total.setter
    def total(self, total: Optional[float]) -> None:
        _check(total is None or _is_number(total), "total", total, "a number or None")
        self._total = total

    @property
    def n(self) -> float:
        return self._x

    @n.setter
    def n(self, n: float) -> None:
        self._x = n

    @property
    def desc(self) -> str:
        return self._desc

    def __iter__(self):
        if self._iterable is None:
            raise ValueError("No iterable provided")
        try:
            for item in self._iterable:
                yield item
                self.update(1)
        finally:  # (exhausted, broken out of, or failed: the bar ends, as tqdm's)
            self.close()

    def __len__(self) -> int:
        if self._total is None:
            raise TypeError("this tqdm bar has no total")
        return int(self._total)

    def __enter__(self) -> "tqdm":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"tqdm_ray.tqdm(desc={self._desc!r}, n={self._x}, total={self._total})"

    # ------------------------------------------------------------ sending
    def _dump_state(self, force_flush: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not force_flush and now - self._last_flush_time < self._flush_interval_s:
                if not self._held:
                    self._held = True
                    _late_flush.hold(self, self._last_flush_time + self._flush_interval_s)
                return
            self._last_flush_time = now
            self._held = False
            state = BarState(self._uuid, os.getpid(), self._pos, self._desc, self._total,
                             self._unit, self._x, self._closed)
        _deliver(state)

    def _flush_held(self) -> None:
        """The late flush's call: the state held back, unless sent since."""
        with self._lock:
            held = self._held
        if held:
            self._dump_state(force_flush=True)


def _deliver(state: BarState) -> None:
    rt = _context.runtime
    if rt is not None and not rt.is_driver:
        # In a worker: one whole line on stdout (what is buffered of the task's own
        # output goes first, so the state line is never glued to a partial line).
        out = sys.stdout
        try:
            out.flush()
            out.write(state.to_line() + "\n")
            out.flush()
        except Exception:  # (stdout closed or replaced by something broken: no bar)
            pass
    else:
        instance().apply(state)


class _LateFlush:
    """Sends a bar's last state once its interval has passed, if no update did: without
    it a bar would show a stale count while its task works on. One daemon thread per
    process, started at the first held state."""

    def __init__(self):
        self._lock = threading.Lock()
        self._due = {}              # bar -> when its held state is due (time.monotonic)
        self._wake = threading.Event()
        self._thread_pid = None     # the process whose thread runs (a fork has none)

    def hold(self, bar: tqdm, due: float) -> None:
        with self._lock:
            self._due[bar] = due
            if self._thread_pid != os.getpid():
                self._thread_pid = os.getpid()
                threading.Thread(target=self._run, name="shmray-tqdm-flush",
                                 daemon=True).start()
        self._wake.set()

    def _run(self):
        while True:
            with self._lock:
                if not self._due:
                    self._wake.clear()
                    next_due = None
                else:
                    next_due = min(self._due.values())
            if next_due is None:
                self._wake.wait()
                continue
            # (a sleep until the earliest due time; a bar held meanwhile is due later)
            time.sleep(max(0.0, next_due - time.monotonic()))
            now = time.monotonic()
            with self._lock:
                ready = [bar for bar, due in self._due.items() if due <= now]
                for bar in ready:
                    del self._due[bar]
            for bar in ready:
                bar._flush_held()


_late_flush = _LateFlush()


def _after_fork_in_child():
    # A forked child has no flush thread, and the parent's lock may have been held.
    global _late_flush
    _late_flush = _LateFlush()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check(ok: bool, name: str, value, expected: str) -> None:
    if not ok:
        raise TypeError(f"tqdm's {name} must be {expected}, got {value!r}")
