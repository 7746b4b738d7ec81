"""The driver's object table: which objects exist, where their bytes are, who waits.

    put / task result ──► values[oid] = stored form ──► callbacks (deps, rpc, futures)
    owner's ObjectRef dropped ──► freed when no pending task needs it
                                   (its shm segment goes back to the SegmentPool, or
                                   is unlinked; readers keep their mappings)

Objects whose ref left the driver (pickled into a task argument or created inside
a worker) are kept until shutdown: cross-process borrowing is not tracked yet.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from . import _serialization as ser
from ._segment_pool import SegmentPool


@dataclass(frozen=True)
class StoreStats:
    objects: int
    pending: int
    inline_bytes: int
    shm_bytes: int
    shm_segments: int
    pinned: int


class ObjectStore:
    def __init__(self, segments: SegmentPool):
        self.segments = segments    # where freed segments go
        self.values = {}            # oid -> stored form
        self.pending = set()        # oids a submitted task will produce
        self._callbacks = {}        # oid -> [callable(oid)]
        self._needed = {}           # oid -> number of pending tasks that read it
        self._dropped = set()       # owner's handle gone; free once no longer needed
        self.escaped = set()        # a handle left this process: keep until shutdown
        self.drop_queue = deque()   # appended by ObjectRef.__del__ from any thread

    # ------------------------------------------------------------ contents
    def expect(self, oid):
        self.pending.add(oid)

    def put(self, oid, stored):
        self.pending.discard(oid)
        if oid in self._dropped and oid not in self._needed and oid not in self.escaped:
            self._dropped.discard(oid)
            self.segments.release(stored)
            return
        self.values[oid] = stored
        cbs = self._callbacks.pop(oid, None)
        if cbs:
            for cb in cbs:
                cb(oid)

    def on_ready(self, oid, callback):
        """Call callback(oid) once the object exists (now, if it already does)."""
        if oid in self.values:
            callback(oid)
        else:
            self._callbacks.setdefault(oid, []).append(callback)

    def known(self, oid) -> bool:
        return oid in self.values or oid in self.pending

    # ------------------------------------------------------------ lifetime
    def need(self, oid):
        self._needed[oid] = self._needed.get(oid, 0) + 1

    def unneed(self, oid):
        n = self._needed[oid] - 1
        if n:
            self._needed[oid] = n
        else:
            del self._needed[oid]
            if oid in self._dropped:
                self._free(oid)

    def process_drops(self):
        q = self.drop_queue
        while q:
            oid = q.popleft()
            if oid in self.escaped:
                continue
            if oid in self._needed or oid in self.pending:
                self._dropped.add(oid)
            else:
                self._free(oid)

    def _free(self, oid):
        self._dropped.discard(oid)
        stored = self.values.pop(oid, None)
        if stored is not None:
            self.segments.release(stored)

    def clear(self):
        for stored in self.values.values():
            self.segments.release(stored)
        self.values.clear()
        self.pending.clear()
        self._callbacks.clear()
        self._needed.clear()
        self._dropped.clear()
        self.segments.clear()

    def statistics(self) -> StoreStats:
        inline = shm = segs = 0
        for s in self.values.values():
            if s[0] == ser.SHM:
                shm += s[2]
                segs += 1
            else:
                inline += ser.stored_size(s)
        return StoreStats(len(self.values), len(self.pending), inline, shm, segs,
                          len(self.escaped))

