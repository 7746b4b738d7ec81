"""Where a process writes its large objects: into a free segment of the session when
one fits, else into a new one; and the mappings it keeps of the segments it wrote,
to write them again, warm, once their objects are freed.

The first write into a fresh segment costs a page fault per 4 KiB page (about 1.6
GB/s here, against about 10 GB/s into pages mapped already); mapping a segment whose
pages exist costs one populate call (about 10 GB/s); writing through a mapping kept
from an earlier write costs nothing more than the copy.

    write(name, meta, buffers)
      ├─ a segment this process keeps mapped, freed since (under its free name):
      │    claimed (renamed to `name`), written through the kept mapping
      ├─ another free segment (the driver's reserve, one another process wrote):
      │    claimed, mapped (one populate call), kept
      └─ a new segment (fallocate'd), kept
    check() ──► kept mappings of segments that are neither this process's (under the
                name it gave) nor free (under their free name) any more are closed:
                taken by another process, or unlinked (then the mapping held its pages)

The driver alone decides when a segment is free (_segment_pool renames it to its
free name once its object is freed and no process maps it); a writer only claims.
A claim is a rename (see _shm.claim): atomic, so two processes never write the same
segment, and a segment the driver reclaimed (unlinked) can no longer be claimed.

A segment's bytes: the pickle, then each out-of-band buffer at a 64-byte aligned
offset (segment_layout); large buffers copied in parallel slices (fill_segment).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import OrderedDict

from . import _shm
from ._protocol import SHM
from .exceptions import ObjectStoreFullError

MAX_SLACK = 2             # a free segment serves sizes down to 1/MAX_SLACK of its own
FOREIGN_MIN = 1 << 20     # smaller writes look only at the segments this process keeps
WORKER_MAX_KEPT = 16      # mappings a worker keeps (each is one VMA and an inode's pages)
WORKER_CHECK_EVERY = 1.0  # seconds between a worker's check() of its kept mappings
# A worker's write into a full /dev/shm waits this long for room before it fails: the
# results written before it take room until the driver, told of them, spills the
# store's excess (Ray's plasma retries a full store's creations too). Not for what
# could not fit in half of /dev/shm anyway.
WORKER_ROOM_WAIT = 2.0
ROOM_POLL = 0.005
_ALIGN = 64

installed = None          # this process's writer of objects (a worker's), or None


class _Kept:
    __slots__ = ("name", "capacity", "mm", "ino", "busy")

    def __init__(self, name, capacity, mm, ino):
        self.name = name          # the name this process gave it (its object's)
        self.capacity = capacity  # the segment's size
        self.mm = mm              # a shared, read-write mapping of all of it
        self.ino = ino            # its inode: which file the names must still lead to
        self.busy = True          # being written: neither checked nor evicted


def fits(size: int, capacity: int) -> bool:
    return size <= capacity <= size * MAX_SLACK


class SegmentWriter:
    """`candidates()`: (free name, capacity) of the session's free segments;
    `is_free(free name)`: whether a kept segment is free (None: try to claim it);
    `on_claimed(free name)`: told of each free segment this writer took."""

    def __init__(self, candidates, max_kept, is_free=None, on_claimed=None, room_wait=0.0):
        self._candidates = candidates
        self.room_wait = room_wait   # seconds a new segment waits for room (see _create)
        self._is_free = is_free
        self._on_claimed = on_claimed
        self.max_kept = max_kept
        self._kept = OrderedDict()   # name -> _Kept, the least recently written first
        self._lock = threading.Lock()
        self.reused = 0              # free segments claimed
        self.created = 0             # new segments
        self._check_in_thread = False  # (see start_checking)
        self._checker = None

    # ------------------------------------------------------------- writing
    def write(self, name: str, meta: bytes, buffers: list):
        """Store meta + pickle-5 buffers in segment `name`; returns its SHM stored form."""
        layout, size = segment_layout(meta, buffers)
        kept = None
        try:
            kept = self._own(name, size) or self._foreign(name, size) or self._new(name, size)
            fill_segment(kept.mm, meta, buffers, layout)
        except BaseException:  # a Ctrl-C or a cancel in a long copy: nothing half written stays
            self._abandon(name, kept)
            raise
        kept.busy = False
        return (SHM, name, size, len(meta), layout)

    def _own(self, name, size):
        """A segment this process keeps mapped and that is free now, claimed."""
        with self._lock:
            fitting = sorted((k for k in self._kept.values() if not k.busy
                              and fits(size, k.capacity)), key=lambda k: k.capacity)
            for k in fitting:
                free = _shm.free_name(k.name, k.capacity)
                if self._is_free is not None and not self._is_free(free):
                    continue
                if _shm.claim(free, name):
                    del self._kept[k.name]
                    k.name, k.busy = name, True
                    self._kept[name] = k
                    self.reused += 1
                    break
            else:
                return None
        if self._on_claimed is not None:
            self._on_claimed(free)
        return k

    def _foreign(self, name, size):
        """Another free segment of the session, claimed and mapped."""
        if size < FOREIGN_MIN:
            return None
        for free, capacity in sorted(self._candidates(), key=lambda c: c[1]):
            if fits(size, capacity) and _shm.claim(free, name):
                if self._on_claimed is not None:
                    self._on_claimed(free)
                with self._lock:
                    self.reused += 1
                mm = _shm.attach(name, capacity, populate=True)
                return self._keep(name, capacity, mm)
        return None

    def _new(self, name, size):
        mm = self._create(name, size)
        with self._lock:
            self.created += 1
        return self._keep(name, max(size, 1), mm)

    def _create(self, name, size):
        """A new segment; in a full /dev/shm, tried again for up to room_wait seconds."""
        deadline = None
        while True:
            try:
                return _shm.create(name, size)
            except ObjectStoreFullError:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.room_wait
                if now >= deadline or 2 * size > _shm.shm_size():
                    raise
                time.sleep(ROOM_POLL)

    def _keep(self, name, capacity, mm):
        kept = _Kept(name, capacity, mm, _ino(name))
        with self._lock:
            self._kept[name] = kept
            self._evict()
            start = self._check_in_thread and self._checker is None
            if start:
                self._checker = threading.Thread(target=self._check_forever, daemon=True,
                                                 name="shmray-segment-check")
        if start:
            self._checker.start()
        return kept

    def adopt(self, name: str, mm, capacity: int):
        """Keep the mapping `mm` of segment `name`, which this process made (the
        driver's reserve, pre-faulted), to write it once claimed."""
        self._keep(name, capacity, mm).busy = False

    def _evict(self):
        """Under the lock: at most max_kept mappings (the least recently written go)."""
        for k in list(self._kept.values()):
            if len(self._kept) <= self.max_kept:
                break
            if not k.busy:
                del self._kept[k.name]
                _close(k.mm)

    def _abandon(self, name, kept):
        """A write failed: its segment is unlinked (claimed or new, it holds half an
        object), its mapping closed."""
        _shm.unlink(name)
        with self._lock:
            if kept is not None and self._kept.get(name) is kept:
                del self._kept[name]
        if kept is not None:
            _close(kept.mm)

    def forget(self, name: str):
        """Segment `name` was unlinked: close the mapping kept of it, if any."""
        with self._lock:
            kept = self._kept.get(name)
            if kept is None or kept.busy:
                return
            del self._kept[name]
        _close(kept.mm)

    def capacity_of(self, name: str) -> int | None:
        kept = self._kept.get(name)
        return None if kept is None else kept.capacity

    # ------------------------------------------------------------- checking
    def check(self):
        """Close the kept mappings of segments no longer this process's nor free."""
        with self._lock:
            idle = [k for k in self._kept.values() if not k.busy]
        gone = [k for k in idle if not _still_there(k)]
        if not gone:
            return
        with self._lock:
            for k in gone:
                if not k.busy and self._kept.get(k.name) is k:
                    del self._kept[k.name]
                    _close(k.mm)

    def start_checking(self):
        """check() every WORKER_CHECK_EVERY seconds in a thread of its own, from the
        first kept mapping on: a worker, busy in a task, may not write again for long,
        and its mapping of a segment unlinked meanwhile would hold the pages."""
        self._check_in_thread = True

    def _check_forever(self):
        while True:
            time.sleep(WORKER_CHECK_EVERY)
            self.check()

    def close(self):
        """Close every kept mapping (the session ends)."""
        with self._lock:
            kept = list(self._kept.values())
            self._kept.clear()
        for k in kept:
            _close(k.mm)


def _ino(name):
    return os.stat(_shm.path_of(name)).st_ino


def _still_there(k) -> bool:
    """Is k's segment still under the name this process gave it, or under its free
    name? (Names are never reused: its inode under either is the same file.)"""
    for name in (k.name, _shm.free_name(k.name, k.capacity)):
        try:
            if os.stat(_shm.path_of(name)).st_ino == k.ino:
                return True
        except FileNotFoundError:
            pass
    return False


def _close(mm):
    try:
        mm.close()
    except BufferError:  # views of it left by an interrupted copy: it goes with them
        pass


def install_in_worker(object_prefix: str) -> SegmentWriter:
    """A worker's writer: its large results, puts and generator items go through it
    (_serialization.to_stored); its arguments of tasks do not (their segments are
    unlinked by the driver when the task ends: a kept mapping would hold them)."""
    global installed
    installed = SegmentWriter(lambda: _shm.free_segments(object_prefix), WORKER_MAX_KEPT,
                              room_wait=WORKER_ROOM_WAIT)
    installed.start_checking()
    return installed


# ------------------------------------------------------------ a segment's bytes

def segment_layout(meta, buffers):
    """Where each out-of-band buffer goes after the pickle bytes: ((offset, n), ...), size."""
    layout = []
    off = len(meta)
    for b in buffers:
        off = (off + _ALIGN - 1) // _ALIGN * _ALIGN
        n = b.raw().nbytes
        layout.append((off, n))
        off += n
    return tuple(layout), off


def fill_segment(mm, meta, buffers, layout):
    mm[0:len(meta)] = meta
    for b, (o, n) in zip(buffers, layout):
        if n >= PARALLEL_COPY_MIN:
            _parallel_copy(mm, o, b.raw())
        else:
            mm[o:o + n] = b.raw()


# One core copies about 7 GB/s here, two about 14: a large buffer is copied in
# slices by threads, when this process may run on several cores (a worker is
# pinned to one) and numpy, which copies without holding the GIL, is loaded
# (out-of-band buffers that large come from numpy arrays anyway).
PARALLEL_COPY_MIN = 16 << 20
MAX_COPY_THREADS = 4


def _parallel_copy(mm, offset, src):
    np = sys.modules.get("numpy")
    k = min(MAX_COPY_THREADS, len(os.sched_getaffinity(0)))
    if np is None or k < 2:
        mm[offset:offset + src.nbytes] = src
        return
    source = np.frombuffer(src, np.uint8)  # PickleBuffer.raw(): 1-D, format "B"
    target = np.frombuffer(mm, np.uint8, count=source.size, offset=offset)
    step = -(-source.size // k) // 4096 * 4096 + 4096  # page-aligned slices
    threads = [threading.Thread(target=np.copyto, args=(target[i:i + step], source[i:i + step]))
               for i in range(step, source.size, step)]
    for t in threads:
        t.start()
    np.copyto(target[:step], source[:step])
    for t in threads:
        t.join()


def write_segment(name, meta, buffers):
    """A new segment holding meta + buffers; returns its SHM stored form."""
    layout, size = segment_layout(meta, buffers)
    mm = _shm.create(name, size)
    try:
        fill_segment(mm, meta, buffers, layout)
        mm.close()
        return (SHM, name, size, len(meta), layout)
    except BaseException:  # a Ctrl-C or a cancel in a long copy: no half-written segment
        _shm.discard(name, mm)
        raise
