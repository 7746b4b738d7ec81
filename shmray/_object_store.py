"""The driver's object table: which objects exist, where their bytes are, who waits.

    put / task result ──► values[oid] = stored form ──► callbacks (deps, rpc, futures)
    owner's ObjectRef dropped ──► freed when no pending task needs it
                                   (its shm segment goes back to the SegmentPool, or
                                   is unlinked; readers keep their mappings)
    shm objects above `capacity` ──► the least recently used spilled to disk
                                   (_spill), restored by ensure_in_memory()

Objects whose ref left the driver (pickled into a task argument or created inside
a worker) are kept until shutdown: cross-process borrowing is not tracked yet.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from collections import OrderedDict

from . import _serialization as ser
from . import _spill
from ._segment_pool import SegmentPool
from .exceptions import ObjectStoreFullError


@dataclass(frozen=True)
class StoreStats:
    objects: int
    pending: int
    inline_bytes: int
    shm_bytes: int
    shm_segments: int
    pinned: int
    spilled: int
    spilled_bytes: int


@dataclass(frozen=True)
class ObjectInfo:
    object_id: str
    size: int
    where: str                  # "inline", "shared memory", "spilled" or "error"
    created_by: str | None      # a task's name, "put", ...: kept for objects not inline
    owner_holds_ref: bool       # the driver's ObjectRef is alive (else freed once unneeded)
    needed_by_tasks: int        # pending tasks that take it as an argument
    pinned_by_workers: int      # tasks on workers that were handed it (never spilled)
    kept_until_shutdown: bool   # its ref left the driver (cross-process counting: issue 6)


class ObjectStore:
    def __init__(self, segments: SegmentPool, capacity: int, spill_directory: str):
        self.segments = segments    # where freed segments go
        self.capacity = capacity    # object_store_memory: bytes of shm objects, at most
        self.spill_directory = spill_directory
        self.shm_bytes = 0          # bytes of the objects in shared memory now
        self.spilled = 0            # objects on disk now
        self._lru = OrderedDict()   # oid -> size of objects in shm, least recently used first
        self._pinned = {}           # oid -> tasks on workers that were handed it: not spilled
        self._creators = {}         # oid -> what made it, for objects not inline
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

    def put(self, oid, stored, creator=None):
        """Store an object's stored form; `creator` (a task's name, "put") is kept for
        the large ones, for statistics (inline ones are too many to be worth it)."""
        self.pending.discard(oid)
        if oid in self._dropped and oid not in self._needed and oid not in self.escaped:
            self._dropped.discard(oid)
            self.segments.release(stored)
            return
        self.values[oid] = stored
        if stored[0] == ser.SHM:
            self._creators[oid] = creator
            self._account(oid, stored[2])
            if self.shm_bytes > self.capacity:  # a task's result: room for it comes after
                if not self.make_room(0, keep=oid):
                    self._spill(oid)  # larger than the store: get raises when it restores
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
            self._release(oid, stored)

    def _release(self, oid, stored):
        self._creators.pop(oid, None)
        if stored[0] == _spill.SPILLED:
            self.spilled -= 1
            _spill.discard(stored)
            return
        if stored[0] == ser.SHM:
            self.shm_bytes -= self._lru.pop(oid, 0)
        self.segments.release(stored)

    # ------------------------------------------------------------ memory
    def _account(self, oid, size):
        self.shm_bytes += size
        self._lru[oid] = size

    def pin(self, oids):
        pinned = self._pinned
        for oid in oids:
            pinned[oid] = pinned.get(oid, 0) + 1

    def unpin(self, oids):
        pinned = self._pinned
        for oid in oids:
            n = pinned.get(oid, 0) - 1
            if n > 0:
                pinned[oid] = n
            else:
                pinned.pop(oid, None)

    def any_large(self, oids) -> bool:
        """Is any of these objects in a segment or on disk (not inline)?"""
        values = self.values
        return any(values[o][0] in (ser.SHM, _spill.SPILLED) for o in oids if o in values)

    def holds_large(self) -> bool:
        """Are any objects in shm or on disk (so a read may need restoring, or LRU order)?"""
        return bool(self._lru) or self.spilled > 0

    def touch(self, oid):
        """The object was just read: the last one to spill."""
        if oid in self._lru:
            self._lru.move_to_end(oid)

    def make_room(self, size: int, keep=None) -> bool:
        """Bring shm objects + pooled segments + `size` under the capacity: pooled
        segments go first, then objects are spilled, least recently used first."""
        if self.shm_bytes + self.segments.free_bytes() + size <= self.capacity:
            return True
        self.segments.drop_free()
        for oid in list(self._lru):
            if self.shm_bytes + size <= self.capacity:
                break
            if oid != keep and oid not in self._pinned:  # a running task's input stays
                self._spill(oid)
        return self.shm_bytes + size <= self.capacity

    def reserve(self, size: int):
        """Room for a new object of `size` bytes, or ObjectStoreFullError saying why not."""
        if size > self.capacity:
            raise ObjectStoreFullError(
                f"Failed to store an object of {size:,} bytes: it is larger than the object "
                f"store's capacity (object_store_memory) of {self.capacity:,} bytes.")
        if not self.make_room(size):
            raise ObjectStoreFullError(
                f"Failed to store an object of {size:,} bytes: the object store's capacity "
                f"(object_store_memory) is {self.capacity:,} bytes, and {self.shm_bytes:,} "
                f"of it hold objects that cannot be spilled now.")

    def _spill(self, oid):
        stored = self.values[oid]
        self.values[oid] = _spill.spill(stored, self.spill_directory, f"{oid:032x}")
        self.shm_bytes -= self._lru.pop(oid)
        self.spilled += 1
        self.segments.release(stored, reuse=False)  # the point was to give the memory back

    def ensure_in_memory(self, oid):
        """A spilled object back in shared memory (before anyone is given it)."""
        stored = self.values.get(oid)
        if stored is None or stored[0] != _spill.SPILLED:
            return
        self.reserve(stored[2])
        self.values[oid] = _spill.restore(stored, self.segments.new_name())
        self.spilled -= 1
        self._account(oid, stored[2])

    def clear(self):
        for oid, stored in self.values.items():
            self._release(oid, stored)
        _spill.remove_dir(self.spill_directory)
        self.values.clear()
        self.pending.clear()
        self._callbacks.clear()
        self._needed.clear()
        self._dropped.clear()
        self._pinned.clear()
        self._creators.clear()
        self.segments.clear()

    def objects(self) -> list:
        """One ObjectInfo per stored object, largest first (what `shmray status` lists)."""
        where = {ser.INLINE: "inline", ser.SHM: "shared memory", ser.ERROR: "error",
                 _spill.SPILLED: "spilled"}
        infos = [ObjectInfo(f"{oid:032x}", _size(s), where[s[0]], self._creators.get(oid),
                            oid not in self._dropped, self._needed.get(oid, 0),
                            self._pinned.get(oid, 0), oid in self.escaped)
                 for oid, s in self.values.items()]
        return sorted(infos, key=lambda i: -i.size)

    def statistics(self) -> StoreStats:
        inline = shm = segs = spilled_bytes = 0
        for s in self.values.values():
            if s[0] == ser.SHM:
                shm += s[2]
                segs += 1
            elif s[0] == _spill.SPILLED:
                spilled_bytes += s[2]
            else:
                inline += ser.stored_size(s)
        return StoreStats(len(self.values), len(self.pending), inline, shm, segs,
                          len(self.escaped), self.spilled, spilled_bytes)


def _size(stored) -> int:
    return stored[2] if stored[0] in (ser.SHM, _spill.SPILLED) else ser.stored_size(stored)
