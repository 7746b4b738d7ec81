"""Warm segments: freed objects' segments written again, once no process maps them.

The first write into a fresh shm segment costs a page fault per 4 KiB page (about
1.6 GB/s here, against about 10 GB/s into pages that exist). So the segment of a
freed object is not unlinked but renamed to its free name (see _shm), once no
process maps it, and the next large write of a similar size, in the driver or in a
worker, claims it (_segment_writer) and copies into memory already there.

    an object freed ──► release(stored)
        a process may map it (the driver's arrays: _mappings; a worker's: its Maps
        reports; a removed worker still running: any) ──► draining, until the last
        such mapping is reported gone
        nobody maps it ──► renamed free (kept within the budget: the oldest go)
        spilled ──► unlinked (its memory given back now if nobody maps it)
    a write ──► a free segment claimed (the writer's own mapping kept from its last
                write first), or a new one (SegmentWriter)
    housekeeping ──► trim(): free segments idle for IDLE_SECONDS reclaimed (but the
                     reserve's, while its demand lasts: _warm_reserve), gone ones
                     forgotten
    a worker removed ──► worker_left(): its mappings count until its process is gone
    a worker died ──► dead_worker_names(), drop_unread_large_messages(): what it left
                      (ObjectStore.drop_dead_worker_segments keeps what is still read)

Why a segment is never written while a process may map it: a private (copy-on-write)
mapping shows the file's current contents in the pages it has not written. Why a
report always comes in time: a process maps an object's segment only while it holds
the object (a ref, a task's input), and it reports the mapping before the message
that lets go of it; so when an object is freed, every mapping of it is known.

The budget: free segments hold at most min(1 GiB, 1/8 of /dev/shm) and never more
than object_store_memory leaves to objects (the store drops them first when it
needs room). Reclaiming a free segment gives its memory back at once, even while
writers keep mappings of it (_shm.reclaim).
"""
from __future__ import annotations

import os
import pickle
import threading
import time
from collections import OrderedDict

from . import _mappings, _shm
from ._protocol import DONE_MARK, LARGE, SHM, TASKS_MARK
from ._records import NamedTuple
from ._segment_writer import SegmentWriter, fits
from ._warm_reserve import Reserve

IDLE_SECONDS = 5.0
MAX_FREE_SEGMENTS = 32
MAX_KEPT_MAPPINGS = 256  # write mappings the driver keeps (each is one VMA)
CHECK_EVERY = 1.0        # seconds between checks of the driver's kept mappings
VALIDATE_EVERY = 0.01    # seconds between looks at whether workers took free segments


class SegmentPoolStats(NamedTuple):
    free_segments: int      # warm free segments, the reserve's included
    free_bytes: int
    reserve_segments: int   # of them, made by the reserve and not written yet
    reserve_bytes: int
    draining: int           # freed objects' segments that a process still maps
    reused: int             # free segments taken by a write (the driver's or a worker's)
    created: int            # new segments the driver's own writes made
    prefaulted: int         # segments the reserve made
    returned: int           # free segments given back under memory pressure
    pressure: bool          # memory pressure now (see _warm_reserve)
    budget: int             # the most free segments may hold now


class FreeSegment(NamedTuple):
    name: str               # its free name
    capacity: int
    since: float            # when it became free
    reserve: bool           # made by the reserve, never written


class SegmentPool:
    def __init__(self, new_name, max_free_bytes: int | None = None, busy=None):
        self._new_name = new_name
        self.session_busy = busy or (lambda: False)  # is a task or an actor's call running?
        self.max_free_bytes = _default_budget() if max_free_bytes is None else max_free_bytes
        self._room = None           # bytes object_store_memory leaves (see bound_by)
        self._free = OrderedDict()  # free name -> FreeSegment, the oldest first
        self._free_bytes = 0
        self._draining = set()      # names of freed objects' segments still mapped
        self._readers = {}          # name -> workers that reported mapping it
        self._leaving = {}          # removed worker -> its process, until it is gone
        self._lock = threading.Lock()  # writes, the reserve's thread and the loop meet here
        self.writer = SegmentWriter(self._candidates, MAX_KEPT_MAPPINGS,
                                    is_free=self._free.__contains__,
                                    on_claimed=self._claimed)
        self.reserve = Reserve(self)
        self._taken = 0             # free segments found taken by workers
        self._next_validation = 0.0
        self._next_check = 0.0
        self._closed = False

    def bound_by(self, room):
        """`room()`: the bytes of object_store_memory that objects leave free now."""
        self._room = room

    def budget(self) -> int:
        room = self.max_free_bytes if self._room is None else self._room()
        return max(0, min(self.max_free_bytes, room))

    # ------------------------------------------------------------- writing
    def write(self, meta: bytes, buffers: list):
        """Store meta + pickle-5 buffers in a segment (the driver's put); returns its
        SHM stored form."""
        self.reserve.writing()
        return self.writer.write(self._new_name(), meta, buffers)

    def note_write(self, size: int):
        """A large object of `size` bytes was stored (a put, a task's result, ...): maybe
        into a free segment a worker took (a rename the driver is not told of)."""
        self.reserve.demand(size)
        if self._free:
            with self._lock:
                self._validate(time.monotonic())

    def _validate(self, now):
        """Under the lock: forget the free segments workers took (their free names are
        gone), at most every VALIDATE_EVERY seconds."""
        if now < self._next_validation:
            return
        self._next_validation = now + VALIDATE_EVERY
        for free in [n for n in self._free if not os.path.exists(_shm.path_of(n))]:
            self._forget_free(free)  # taken by a worker (or a dead one's, unlinked)
            self._taken += 1

    def _candidates(self):
        with self._lock:
            return [(f.name, f.capacity) for f in self._free.values()]

    def _claimed(self, free: str):
        with self._lock:
            self._forget_free(free)

    def _forget_free(self, free):
        f = self._free.pop(free, None)
        if f is not None:
            self._free_bytes -= f.capacity
        return f

    # ------------------------------------------------------------- readers
    def worker_maps(self, w, mapped, unmapped):
        """Worker `w` maps the segments `mapped` now, and `unmapped` no more."""
        with self._lock:
            readers = self._readers
            for name in mapped:
                readers.setdefault(name, set()).add(w)
            for name in unmapped:
                some = readers.get(name)
                if some is not None:
                    some.discard(w)
                    if not some:
                        del readers[name]
                        self._unread(name)

    def worker_left(self, w, process=None):
        """`w` left the session; `process`: its process if it may still run (told to
        exit), None if it is gone. Until it is gone, it may map any segment freed."""
        with self._lock:
            if process is None or process.returncode is not None:
                self._reader_gone(w)
            else:
                self._leaving[w] = process

    def _reader_gone(self, w):
        for name in [n for n, some in self._readers.items() if w in some]:
            some = self._readers[name]
            some.discard(w)
            if not some:
                del self._readers[name]
                self._unread(name)

    def _maps(self, name) -> bool:
        """Under the lock: may a process map segment `name`?"""
        if self._leaving:
            self._readers.setdefault(name, set()).update(self._leaving)
        return name in self._readers or _mappings.maps(name)

    def _driver_events(self):
        """Under the lock: the driver's own mappings made and gone since last time."""
        for name in _mappings.drain()[1]:
            if name not in self._readers:
                self._unread(name)

    def _unread(self, name):
        """Under the lock: nobody maps `name` any more: free it, if it was freed."""
        if name in self._draining and not _mappings.maps(name):
            self._draining.discard(name)
            self._make_free(name)

    # ------------------------------------------------------------- freeing
    def release(self, stored, reuse=True):
        """The object is freed (or spilled: `reuse` False): its segment is freed for
        reuse once nobody maps it (or unlinked)."""
        if stored[0] != SHM:
            return
        name = stored[1]
        with self._lock:
            self._driver_events()
            if self._maps(name):  # its readers keep their pages whatever happens
                if reuse and not self._closed:
                    self._draining.add(name)
                else:
                    _shm.unlink(name)
                    self.writer.forget(name)
            elif reuse:
                self._make_free(name)
            else:
                _shm.reclaim(name)
                self.writer.forget(name)

    def _make_free(self, name):
        """Under the lock: `name` is freed and nobody maps it: free it (rename it to its
        free name) or, if it cannot be kept, give its memory back."""
        capacity = self.writer.capacity_of(name) or _shm.size_of(name)
        if capacity is None:  # unlinked already (a dead worker's leftovers)
            self.writer.forget(name)
            return
        if (self._closed or self.reserve.pressure or capacity > self.budget()
                or not _shm.claim(name, _shm.free_name(name, capacity))):
            _shm.reclaim(name)
            self.writer.forget(name)
            return
        free = _shm.free_name(name, capacity)
        self._free[free] = FreeSegment(free, capacity, time.monotonic(), False)
        self._free_bytes += capacity
        self._bound()

    def add_reserve(self, name, mm, capacity) -> bool:
        """The reserve made segment `name` (pre-faulted, mapped `mm`): free it, or
        False if it cannot be kept (the caller discards it)."""
        with self._lock:
            if self._closed or self._free_bytes + capacity > self.budget():
                return False
            free = _shm.free_name(name, capacity)
            self.writer.adopt(name, mm, capacity)
            if not _shm.claim(name, free):
                self.writer.forget(name)
                return False
            self._free[free] = FreeSegment(free, capacity, time.monotonic(), True)
            self._free_bytes += capacity
            return True

    def _bound(self):
        budget = self.budget()
        while self._free and (len(self._free) > MAX_FREE_SEGMENTS
                              or self._free_bytes > budget):
            self._reclaim(next(iter(self._free)))  # the oldest first

    def _reclaim(self, free):
        """Under the lock: give free segment `free` back (unless a worker just took it)."""
        self._forget_free(free)
        _shm.reclaim(free)
        self.writer.forget(free.rpartition(_shm.FREE_MARK)[0])

    def trim(self, now=None):
        """Housekeeping: drains the driver's dropped mappings and gone workers, forgets
        free segments workers took, reclaims the idle ones."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._driver_events()
            for w, process in list(self._leaving.items()):
                if process.poll() is not None:
                    del self._leaving[w]
                    self._reader_gone(w)
            self._validate(now)
            check = now >= self._next_check
            if check:
                self._next_check = now + CHECK_EVERY
            keep = self.reserve.keeps(self._free.values(), now)
            for f in [f for f in self._free.values() if now - f.since > IDLE_SECONDS]:
                if f.name not in keep:
                    self._reclaim(f.name)
        if check:
            self.writer.check()

    def free_bytes(self) -> int:
        return self._free_bytes

    def free_segments(self) -> list:
        """The free segments (FreeSegment records), the oldest first."""
        with self._lock:
            return list(self._free.values())

    def drop_free(self, keep_for=0) -> int:
        """Give every free segment back (the store needs the memory, or the machine
        does), but the smallest that a write of `keep_for` bytes can take, if any;
        returns how many went."""
        with self._lock:
            fitting = [f for f in self._free.values() if fits(keep_for, f.capacity)]
            kept = min(fitting, key=lambda f: f.capacity).name if fitting else None
            gone = [free for free in self._free if free != kept]
            for free in gone:
                self._reclaim(free)
            return len(gone)

    def clear(self):
        """The session ends: the reserve stops, free segments are reclaimed, freed ones
        still mapped unlinked (their readers keep their pages); live ones are the
        store's to release."""
        self.reserve.stop()
        with self._lock:
            self._closed = True
            for free in list(self._free):
                self._reclaim(free)
            for name in self._draining:
                _shm.unlink(name)
            self._draining.clear()
            self._readers.clear()
            self._leaving.clear()
        self.writer.close()

    def new_name(self) -> str:
        return self._new_name()

    def statistics(self) -> SegmentPoolStats:
        with self._lock:
            reserve = [f for f in self._free.values() if f.reserve]
            return SegmentPoolStats(
                len(self._free), self._free_bytes, len(reserve),
                sum(f.capacity for f in reserve), len(self._draining),
                self.writer.reused + self._taken, self.writer.created, self.reserve.made,
                self.reserve.returned, self.reserve.pressure, self.budget())


# ------------------------------------------------------ a dead worker's leftovers

def dead_worker_names(w, object_prefix: str) -> list:
    """The segments that dead worker `w` may have left: its objects (named
    {object_prefix}w{pid}_{n} by _worker_runtime, in /dev/shm or in the session's
    objects directory) and its large messages ({channel}_m{pid}_{n}, see _ring.encode;
    those it pushed were received, and unlinked, before it was removed)."""
    return (_shm.object_names(f"{object_prefix}w{w.pid}_")
            + _shm.list_names(f"{w.channel.name}_m{w.pid}_"))


def drop_unread_large_messages(w) -> list:
    """Unlink the segments of the driver's large messages (see _ring.encode) that dead
    worker `w` never read: still in its task ring, or in its outbox. Nothing reads
    that ring any more: the driver may pop it."""
    removed = []
    unread = list(w.outbox)
    w.outbox.clear()
    while True:
        data = w.ring.pop(0.0)
        if data is None:
            break
        unread.append(data)
    for data in unread:
        # a Large record: a pickle of a few dozen bytes (not a message in a compact form)
        if len(data) < _LARGE_RECORD_MAX and data[0] not in (DONE_MARK, TASKS_MARK):
            msg = pickle.loads(data)
            if msg[0] == LARGE and _shm.unlink(msg[1]):
                removed.append(msg[1])
    return removed


_LARGE_RECORD_MAX = 512


def _default_budget() -> int:
    """Free segments hold memory: at most 1 GiB, and at most 1/8 of /dev/shm."""
    try:
        st = os.statvfs(_shm.SHM_DIR)
        return min(1 << 30, st.f_blocks * st.f_frsize // 8)
    except OSError:
        return 256 << 20
