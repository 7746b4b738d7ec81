"""The warm reserve: free segments whose pages exist already, made in the background
while the session is quiet, so that a large write that finds no freed segment to
reuse (its earlier objects are all alive) still copies into memory at full speed.
And memory pressure: when the machine runs short, every free segment goes back.

    a large object stored (a put, a task's result, a generator's item, ...) ──►
      demand(size): the reserve's segments are made at the largest size written in
      the last DEMAND_WINDOW seconds (they serve writes down to half that size)
    its thread ("shmray-reserve", niced), every TICK seconds or when woken:
      memory pressure ──► every free segment reclaimed; none made until it is over
      else, while demand is recent, no large write began for QUIET seconds, fewer than
      RESERVE_SEGMENTS free segments could take a write of that size, and the budget
      (RESERVE_MAX_BYTES, the pool's: within object_store_memory) has room:
      ──► one more segment: FILL_STEP bytes at a time allocated and every page touched
          (pre-faulted), each step only while the session is idle (no task or actor
          call in flight, no large write begun for QUIET seconds: its work comes first;
          other processes' only meet the thread's niceness), then freed
    trim keeps RESERVE_SEGMENTS such free segments past IDLE_SECONDS while demand lasts

Memory pressure, on Linux: MemAvailable (/proc/meminfo: what the kernel can give to
new allocations without swapping; shared memory counts as used) below
PRESSURE_FRACTION of MemTotal. It ends when MemAvailable is back above
REFILL_FRACTION of MemTotal, and the reserve never fills below that either.
"""
from __future__ import annotations

import mmap
import os
import sys
import threading
import time

from . import _shm
from ._segment_writer import MAX_SLACK, fits
from .exceptions import ObjectStoreFullError

RESERVE_SEGMENTS = 1
RESERVE_MAX_BYTES = 1 << 30
RESERVE_MIN = 1 << 20        # smaller writes are cheap enough cold
DEMAND_WINDOW = 60.0
QUIET = 0.05
TICK = 0.5
PRESSURE_FRACTION = 0.10
REFILL_FRACTION = 0.20
FILL_STEP = 4 << 20          # bytes allocated and touched between looks at the session
RESERVE_MARK = ".r"


class Reserve:
    def __init__(self, pool):
        self.pool = pool
        self.size = 0                 # what its segments are made at
        self.seen = -DEMAND_WINDOW    # when a write that size fits was last stored
        self.pressure = False
        self.made = 0                 # segments made
        self.returned = 0             # free segments given back under pressure
        self._last_write = 0.0        # when the driver last began a large write
        self._wake = threading.Event()
        self._stopped = False
        self._thread = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------- demand
    def writing(self):
        """The driver begins a large write (the reserve waits until it is quiet)."""
        self._last_write = time.monotonic()

    def demand(self, size: int):
        """A large object of `size` bytes was stored."""
        if size < RESERVE_MIN:
            return
        now = time.monotonic()
        self._last_write = now
        if size > self.size or now - self.seen > DEMAND_WINDOW:
            self.size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        if size * MAX_SLACK >= self.size:
            self.seen = now
        with self._lock:
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="shmray-reserve")
                self._thread.start()
        self._wake.set()

    def _wanted(self, now) -> int:
        """The size of the segments wanted now, or 0 (no recent demand)."""
        return self.size if now - self.seen <= DEMAND_WINDOW else 0

    def keeps(self, free_segments, now) -> set:
        """The names of the free segments trim keeps past their idle time: up to
        RESERVE_SEGMENTS that fit the demand (the latest freed), while it lasts."""
        size = self._wanted(now)
        if not size:
            return set()
        fitting = [f.name for f in free_segments if fits(size, f.capacity)]
        return set(fitting[len(fitting) - RESERVE_SEGMENTS:])

    def stop(self):
        """The session ends: no more segments (waits for the one being made)."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # ------------------------------------------------------------- the thread
    def _run(self):
        try:  # a background thread's CPU time goes to tasks first (Linux: per thread)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (OSError, AttributeError):
            pass
        while not self._stopped:
            self._wake.wait(TICK)
            self._wake.clear()
            if self._stopped:
                return
            self._check_pressure()
            while not self._stopped and self._missing():
                if not self._make(self.size):
                    break

    def _check_pressure(self):
        """Memory pressure begins or ends (see the module's docstring); while it lasts,
        every free segment goes back."""
        memory = memory_available()
        if memory is None:
            return
        available, total = memory
        if not self.pressure and available < total * PRESSURE_FRACTION:
            self.pressure = True
        elif self.pressure and available >= total * REFILL_FRACTION:
            self.pressure = False
        if self.pressure:
            self.returned += self.pool.drop_free()

    def _missing(self) -> bool:
        """Is one more segment wanted, and is there room for it?"""
        size = self._wanted(time.monotonic())
        if not size or self.pressure:
            return False
        free = self.pool.free_segments()
        if sum(1 for f in free if fits(size, f.capacity)) >= RESERVE_SEGMENTS:
            return False
        reserve = sum(f.capacity for f in free if f.reserve)
        if (reserve + size > RESERVE_MAX_BYTES
                or self.pool.free_bytes() + size > self.pool.budget()):
            return False
        memory = memory_available()
        return memory is None or memory[0] - size >= memory[1] * REFILL_FRACTION

    def _make(self, size) -> bool:
        """Make one pre-faulted free segment of `size` bytes; False if it cannot be.
        (Named <a name of the driver's>.r while it is made: no object's.)"""
        name = self.pool.new_name() + RESERVE_MARK
        what = "the warm reserve's segment"
        try:
            mm = _shm.create(name, size, what, allocate=False)
        except ObjectStoreFullError:  # /dev/shm is short: objects come first
            self.seen = -DEMAND_WINDOW
            return False
        try:
            made = self._prefault(name, mm, size, what)
        except ObjectStoreFullError:
            self.seen = -DEMAND_WINDOW
            made = False
        except BaseException:
            _shm.discard(name, mm)
            raise
        if not made or not self.pool.add_reserve(name, mm, size):
            _shm.discard(name, mm)
            return False
        self.made += 1
        return True

    def _prefault(self, name, mm, size, what) -> bool:
        """Allocate and fault in every page of segment `name` (mapped `mm`), a step at
        a time while the session is idle; False if it stopped, or the demand went.
        numpy's strided fill leaves the GIL to the session's threads; without numpy,
        a byte per page."""
        np = sys.modules.get("numpy")
        page = mmap.PAGESIZE
        view = None if np is None else np.frombuffer(mm, np.uint8, count=size)
        try:
            for start in range(0, size, FILL_STEP):
                if not self._idle(size):
                    return False
                end = min(size, start + FILL_STEP)
                _shm.allocate(name, start, end - start, what)  # (no SIGBUS when touched)
                if view is not None:
                    view[start:end:page] = 0
                else:
                    for offset in range(start, end, page):
                        mm[offset] = 0
            return True
        finally:
            del view  # (no export of the mapping may outlive this: it is closed later)

    def _idle(self, size) -> bool:
        """Wait until the session is idle; False if the reserve stopped meanwhile, or
        no longer wants a segment of `size` bytes (demand gone, memory pressure)."""
        next_look = time.monotonic() + TICK
        while not self._stopped:
            now = time.monotonic()
            if now >= next_look:  # (memory pressure is watched while it waits too)
                next_look = now + TICK
                self._check_pressure()
            if self.pressure or self._wanted(now) != size:
                return False
            if now - self._last_write >= QUIET and not self.pool.session_busy():
                return True
            time.sleep(QUIET)
        return False


def memory_available() -> tuple[int, int] | None:
    """(MemAvailable, MemTotal) in bytes, from /proc/meminfo; None if unreadable."""
    found = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("MemAvailable", "MemTotal"):
                    found[key] = int(rest.split()[0]) * 1024
                    if len(found) == 2:
                        return found["MemAvailable"], found["MemTotal"]
    except (OSError, ValueError):
        pass
    return None
