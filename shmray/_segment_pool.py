"""Warm shared-memory segments for the driver's large puts.

The first write into a fresh shm segment costs a page fault per 4 KiB page
(about 1.6 GB/s here, against about 7 GB/s for a copy into touched memory). So a
segment the driver wrote stays mapped in the driver, and when its object is freed
and no other mapping of it can exist, it goes back to this pool instead of being
unlinked: the next put of a similar size is a plain memcpy.

    put ──► write(meta, buffers) ──► pooled segment (fits) or a new one, kept mapped
    object freed ──► release(stored) ──► pooled, if only the driver ever wrote it,
                                          no worker was handed it, and no array
                                          the driver returned still maps it;
                                          unlinked otherwise
    housekeeping ──► trim(): segments idle for IDLE_SECONDS are unlinked
    a put interrupted (Ctrl-C) while it writes ──► its segment unlinked, never pooled
    a worker died ──► dead_worker_names(), drop_unread_large_messages(): what it left
                      (ObjectStore.drop_dead_worker_segments keeps what is still read)

Reuse must never change what a reader sees: a private (copy-on-write) mapping
still shows the file's current contents in the pages it has not written, so a
segment that any reader may still map is never written again.
"""
from __future__ import annotations

import mmap
import os
import pickle
import threading
import time
import weakref

from . import _serialization as ser
from . import _shm
from ._protocol import LARGE, SHM
from ._records import NamedTuple

IDLE_SECONDS = 5.0
MAX_FREE_SEGMENTS = 8
MAX_SLACK = 2            # a pooled segment serves sizes down to 1/MAX_SLACK of its own
MAX_KEPT_MAPPINGS = 256  # write mappings kept for live objects (each is one VMA)


class SegmentPoolStats(NamedTuple):
    free_segments: int
    free_bytes: int
    reused: int
    created: int


class _Segment:
    __slots__ = ("name", "capacity", "mm", "freed_at")

    def __init__(self, name, capacity, mm):
        self.name = name
        self.capacity = capacity
        self.mm = mm            # the driver's shared read-write mapping, or None
        self.freed_at = 0.0


class SegmentPool:
    def __init__(self, new_name, max_free_bytes: int | None = None):
        self._new_name = new_name
        self.max_free_bytes = _default_budget() if max_free_bytes is None else max_free_bytes
        self._live = {}         # name -> _Segment written by the driver, object alive
        self._free = []         # _Segments ready to be written again
        self._handed_out = set()  # names a worker was given: it may map them any time
        self._readers = {}      # name -> [weakref to a driver-side private mapping]
        self._reused = 0
        self._created = 0
        self._lock = threading.Lock()  # puts copy outside the runtime's lock

    # ------------------------------------------------------------- writing
    def write(self, meta: bytes, buffers: list):
        """Store meta + pickle-5 buffers in a segment; returns the SHM stored form."""
        layout, size = ser.segment_layout(meta, buffers)
        with self._lock:
            seg = self._take(size)
            if seg is None:
                name = self._new_name()
                self._created += 1
        if seg is None:
            seg = _Segment(name, size, _shm.create(name, size))
        try:
            if seg.mm is None:  # populate: one call maps every existing page
                seg.mm = _shm.attach(seg.name, seg.capacity, populate=True)
            ser.fill_segment(seg.mm, meta, buffers, layout)
            with self._lock:
                if len(self._live) >= MAX_KEPT_MAPPINGS:
                    seg.mm.close()
                    seg.mm = None
                self._live[seg.name] = seg
            return (SHM, seg.name, size, len(meta), layout)
        except BaseException:  # a Ctrl-C in a long copy: no half-written segment stays
            with self._lock:
                self._live.pop(seg.name, None)
            self._discard(seg)
            raise

    def _take(self, size):
        best = None
        for seg in self._free:
            if size <= seg.capacity <= size * MAX_SLACK and (
                    best is None or seg.capacity < best.capacity):
                best = seg
        if best is not None:
            self._free.remove(best)
            self._reused += 1
        return best

    # ------------------------------------------------------------- readers
    def handed_out(self, stored):
        """A worker was given this stored form: never write its segment again."""
        if stored[0] == SHM and stored[1] in self._live:
            with self._lock:
                self._handed_out.add(stored[1])

    def mapped(self, name: str, mm: mmap.mmap):
        """The driver mapped segment `name` privately (get): reusable once `mm` is gone."""
        if name in self._live:
            with self._lock:
                self._readers.setdefault(name, []).append(weakref.ref(mm))

    # ------------------------------------------------------------- freeing
    def release(self, stored, reuse=True):
        """The object is freed: pool its segment if nothing can map it (and `reuse`),
        else unlink."""
        if stored[0] != SHM:
            return
        name = stored[1]
        with self._lock:
            seg = self._live.pop(name, None)
            readers = self._readers.pop(name, ())
            handed_out = name in self._handed_out
            self._handed_out.discard(name)
            if (seg is None or not reuse or handed_out
                    or any(r() is not None for r in readers)):
                if seg is not None and seg.mm is not None:
                    seg.mm.close()
                _shm.unlink(name)
                return
            seg.freed_at = time.monotonic()
            self._free.append(seg)
            self._bound()

    def _bound(self):
        free = self._free
        while free and (len(free) > MAX_FREE_SEGMENTS
                        or sum(s.capacity for s in free) > self.max_free_bytes):
            self._discard(free.pop(0))  # the oldest first

    def trim(self, now=None):
        now = time.monotonic() if now is None else now
        with self._lock:
            for seg in [s for s in self._free if now - s.freed_at > IDLE_SECONDS]:
                self._free.remove(seg)
                self._discard(seg)

    @staticmethod
    def _discard(seg):
        _shm.discard(seg.name, seg.mm)

    def clear(self):
        """Unlink every pooled segment; live ones are the store's to release."""
        with self._lock:
            self._clear()

    def _clear(self):
        for seg in self._free:
            self._discard(seg)
        self._free.clear()
        for seg in self._live.values():
            if seg.mm is not None:
                seg.mm.close()
        self._live.clear()
        self._handed_out.clear()
        self._readers.clear()

    def new_name(self) -> str:
        return self._new_name()

    def free_bytes(self) -> int:
        return sum(s.capacity for s in self._free)

    def drop_free(self):
        """Unlink every pooled segment (the store needs the memory)."""
        with self._lock:
            for seg in self._free:
                self._discard(seg)
            self._free.clear()

    def statistics(self) -> SegmentPoolStats:
        return SegmentPoolStats(len(self._free), sum(s.capacity for s in self._free),
                                self._reused, self._created)


# ------------------------------------------------------ a dead worker's leftovers

def dead_worker_names(w, object_prefix: str) -> list:
    """The segments that dead worker `w` may have left: its objects (named
    {object_prefix}w{pid}_{n} by _worker_runtime, in /dev/shm or in the session's
    objects directory) and its large messages ({channel}_m{pid}_{n}, see _ring.encode;
    those it pushed were received, and unlinked, before it was removed)."""
    mine = f"{object_prefix}w{w.pid}_"
    if mine.startswith("/"):
        directory, start = os.path.split(mine)
        try:
            names = [os.path.join(directory, n) for n in os.listdir(directory)
                     if n.startswith(start)]
        except FileNotFoundError:
            names = []
    else:
        names = _shm.list_names(mine)
    return names + _shm.list_names(f"{w.channel.name}_m{w.pid}_")


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
        if len(data) < _LARGE_RECORD_MAX:  # a Large record is a few dozen bytes
            msg = pickle.loads(data)
            if msg[0] == LARGE and _shm.unlink(msg[1]):
                removed.append(msg[1])
    return removed


_LARGE_RECORD_MAX = 512


def _default_budget() -> int:
    """Pooled segments hold memory: at most 1 GiB, and at most 1/8 of /dev/shm."""
    try:
        st = os.statvfs(_shm.SHM_DIR)
        return min(1 << 30, st.f_blocks * st.f_frsize // 8)
    except OSError:
        return 256 << 20
