"""The driver's object table: which objects exist, where their bytes are, who needs them.

    put / task result ──► values[oid] = stored form ──► callbacks (deps, rpc, futures)
    references ──► an object lives while any of these holds it:
        ObjectRef instances in the driver       (counted by ObjectRef's hooks)
        workers that hold instances              (borrow/release messages)
        stored objects whose value contains it   (ids collected when pickled)
        unfinished tasks that take it            (resolved inputs, refs inside args)
      ──► then it is freed: its shm segment goes to the SegmentPool (written again
          once no process maps it), and what it contained loses a holder
    shm objects above `capacity` ──► the least recently used spilled to disk
                                   (_spill), read from there, or restored by
                                   ensure_in_memory() when they fit

A ref pickled outside shmray's own serialization (the user's pickle.dumps) cannot
be followed: its object is kept until shutdown, as Ray does.
"""
from __future__ import annotations

from collections import OrderedDict, deque

from . import _shm, _spill
from ._protocol import INLINE, SHM, SPILLED
from ._segment_pool import SegmentPool, dead_worker_names, drop_unread_large_messages
from .exceptions import ObjectStoreFullError


COMPACT_FROM = 8192  # a table this large, fallen below an eighth of it, is rebuilt

class ObjectStore:
    def __init__(self, segments: SegmentPool, capacity: int, spill_directory: str):
        self.segments = segments    # where freed segments go
        segments.bound_by(lambda: self.capacity - self.shm_bytes)  # free ones fit in ours
        self.capacity = capacity    # object_store_memory: bytes of shm objects, at most
        self.spill_directory = spill_directory
        self.shm_bytes = 0          # bytes of the objects in shared memory now
        self.spilled = 0            # objects on disk now
        self._on_disk = {}          # oid -> spill file of an object restored since
        self._lru = OrderedDict()   # oid -> size of objects in shm, least recently used first
        self._pinned = {}           # oid -> tasks on workers that were handed it: not spilled
        self._creators = {}         # oid -> what made it, for objects not inline
        self.values = {}            # oid -> stored form
        self._peaks = {}            # table name -> its largest size seen (see compact)
        self.pending = set()        # oids a submitted task will produce
        self._callbacks = {}        # oid -> [callable(oid)]
        # The holders of an object, each a count (an oid is a key only while > 0):
        self._local = {}            # ObjectRef instances in the driver
        self._borrowed = {}         # references held by workers (see _driver.workers)
        self._contained = {}        # stored objects whose value holds its ref
        self._needed = {}           # unfinished tasks that take it
        self.escaped = set()        # pickled outside shmray: kept until shutdown
        self._inner = {}            # oid -> ids of the refs inside its value
        self.gpu_producers = {}     # oid -> the worker keeping its cupy arrays (None: the
                                    # driver), see _gpu
        self.gpu_freed = deque()    # (oid, producer) of GPU objects freed, for the driver
                                    # to tell their producers (see _driver.gpu_objects)
        self.tokens = set()         # actors' tokens (see shmray.actor): watched
        self.tokens_freed = deque()  # ... freed: every handle to their actor is gone
        self.generators = set()     # streaming generator tasks' own returns: watched
        self.generators_freed = deque()  # ... unheld: every ref to the generator is gone
        self.generator_taken = deque()  # (task id, index) of items the driver handed out
        # Appended by ObjectRef's hooks from any thread; counted by process_refs().
        self.created_queue = deque()
        self.drop_queue = deque()

    # ------------------------------------------------------------ contents
    def put(self, oid, stored, creator=None, inner=()):
        """Store an object's stored form; `inner`: the ids of the refs inside its value.
        `creator` (a task's name, "put") is kept for the large ones, for statistics
        (inline ones are too many to be worth it). An object nothing holds any more
        (its ref was dropped before the task finished) is released at once."""
        if oid not in self._local and not self._held(oid):
            self.pending.discard(oid)
            self._release(oid, stored)
            return
        # The value first, then out of pending: `get` reads them without the lock, in
        # the other order (see coming_or_there), and so never sees neither.
        self.values[oid] = stored
        self.pending.discard(oid)
        if inner:
            self._inner[oid] = inner
            contained = self._contained
            for i in inner:
                contained[i] = contained.get(i, 0) + 1
        if stored[0] == SHM:
            self._creators[oid] = creator
            self._account(oid, stored[2])
            self.segments.note_write(stored[2])
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

    def compact(self):
        """Give back the memory of the id-keyed tables after a mass drop (housekeeping,
        under the lock): a dict or set never shrinks when keys leave, and after
        200,000 results were dropped their tables kept 10 MB each. A table rebuilt
        at its live size replaces the old one; readers without the lock read the
        attribute at each check (a rebuilt one holds the same entries)."""
        for name in ("values", "_local", "pending"):
            table = getattr(self, name)
            peak = self._peaks.get(name, 0)
            if len(table) > peak:
                self._peaks[name] = len(table)
            elif peak >= COMPACT_FROM and len(table) * 8 < peak:
                setattr(self, name, type(table)(table))
                self._peaks[name] = len(table)

    def coming_or_there(self, oid) -> bool:
        """Will `oid` have a value, or has it? Safe without the lock: pending is read
        before values, and put() sets the value before it leaves pending."""
        return oid in self.pending or oid in self.values

    # ------------------------------------------------------------ lifetime
    def _held(self, oid) -> bool:
        return (oid in self._local or oid in self._needed or oid in self._borrowed
                or oid in self._contained or oid in self.escaped)

    def _add(self, holders: dict, oid, n=1):
        holders[oid] = holders.get(oid, 0) + n

    def _remove(self, holders: dict, oid, n=1):
        left = holders.get(oid, 0) - n
        if left > 0:
            holders[oid] = left
            return
        holders.pop(oid, None)
        if not self._held(oid):
            if oid in self.values:
                self._free(oid)
            elif oid in self.generators:  # (its task runs on)
                self._generator_unheld(oid)

    def _generator_unheld(self, oid):
        self.generators.discard(oid)
        self.generators_freed.append(oid)

    def own(self, oid):
        """The driver made an ObjectRef for `oid` without the `created` hook."""
        self._add(self._local, oid)

    def own_new(self, oid):
        """own() for an id just made (a task's return): no instance of it exists yet."""
        self._local[oid] = 1

    def disown(self, oid):
        """The driver lets go of a reference it counted without an instance."""
        self._remove(self._local, oid)

    def need(self, oid):
        self._add(self._needed, oid)

    def unneed(self, oid):
        self._remove(self._needed, oid)

    def borrow(self, oid, n=1):
        self._add(self._borrowed, oid, n)

    def unborrow(self, oid, n=1):
        self._remove(self._borrowed, oid, n)

    def keep_until_shutdown(self, oid):
        self.escaped.add(oid)

    def count_created(self):
        """Count the driver's ObjectRef instances created since last time."""
        created, local = self.created_queue, self._local
        while created:
            oid = created.popleft()
            local[oid] = local.get(oid, 0) + 1

    def process_refs(self):
        """Count the driver's ObjectRef instances created and dropped since last time.
        Drops are counted up to a length read first: each has its creation queued
        before it, so a count never passes through zero while an instance lives."""
        drops = self.drop_queue
        n = len(drops)
        if self.created_queue:
            self.count_created()
        # _remove(local, oid) and _free(oid), inlined: this runs once per task
        local, values, inner = self._local, self.values, self._inner
        needed, borrowed, contained, escaped = (self._needed, self._borrowed, self._contained,
                                                self.escaped)
        for _ in range(n):
            oid = drops.popleft()
            left = local.pop(oid, 0) - 1
            if left > 0:
                local[oid] = left
            elif (oid in values and oid not in needed and oid not in borrowed
                  and oid not in contained and oid not in escaped):
                if oid in inner:
                    self._free(oid)
                else:
                    self._release(oid, values.pop(oid))
            elif oid in self.generators and not self._held(oid):
                self._generator_unheld(oid)

    def replace(self, oid, stored):
        """Give a stored object another stored form (its producer died: an error),
        releasing the old one's memory (never to be written again: the object lives
        on, and a worker may be about to map the old form)."""
        old = self.values.get(oid)
        if old is None:
            return
        self._release(oid, old, reuse=False)
        self.values[oid] = stored

    def _free(self, oid):
        """Release `oid`, then whatever only its value held (iteratively: a long
        chain of refs inside refs must not hit the recursion limit)."""
        todo = [oid]
        contained = self._contained
        while todo:
            oid = todo.pop()
            stored = self.values.pop(oid, None)
            if stored is None:
                continue
            self._release(oid, stored)
            for inner in self._inner.pop(oid, ()):
                left = contained[inner] - 1
                if left:
                    contained[inner] = left
                else:
                    del contained[inner]
                    if inner in self.values and not self._held(inner):
                        todo.append(inner)

    def _release(self, oid, stored, reuse=True):
        if oid in self.tokens:
            self.tokens.discard(oid)
            self.tokens_freed.append(oid)
        if oid in self.generators:
            self._generator_unheld(oid)
        if self.gpu_producers and oid in self.gpu_producers:
            self.gpu_freed.append((oid, self.gpu_producers.pop(oid)))
        if stored[0] == INLINE:
            return
        self._creators.pop(oid, None)
        if stored[0] == SPILLED:
            self.spilled -= 1
            _spill.discard(stored)
            return
        if stored[0] == SHM:
            self.shm_bytes -= self._lru.pop(oid, 0)
            if self._on_disk:
                path = self._on_disk.pop(oid, None)
                if path is not None:
                    _spill.discard((SPILLED, path))
        self.segments.release(stored, reuse)

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
        return any(values[o][0] in (SHM, SPILLED) for o in oids if o in values)

    def holds_large(self) -> bool:
        """Are any objects in shm or on disk (so a read may need restoring, or LRU order)?"""
        return bool(self._lru) or self.spilled > 0

    def touch(self, oid):
        """The object was just read: the last one to spill."""
        if oid in self._lru:
            self._lru.move_to_end(oid)

    def make_room(self, size: int, keep=None) -> bool:
        """Bring shm objects + free segments + `size` under the capacity: free segments
        go first (but one a write of `size` can take: it becomes that object), then
        objects are spilled, least recently used first."""
        if self.shm_bytes + self.segments.free_bytes() + size <= self.capacity:
            return True
        self.segments.drop_free(keep_for=size)
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
        path = self._on_disk.pop(oid, None)  # spilled before: its file is still there
        self.values[oid] = (_spill.spill(stored, self.spill_directory, f"{oid:032x}")
                            if path is None else _spill.spilled_form(stored, path))
        self.shm_bytes -= self._lru.pop(oid)
        self.spilled += 1
        self.segments.release(stored, reuse=False)  # the point was to give the memory back

    def ensure_in_memory(self, oid):
        """A spilled object back in shared memory (before anyone is given it), if it fits
        without spilling another: the form of an object read just before (by the same
        get, say) must not go stale before its reader maps it. Else it stays on disk,
        and its readers map its file (see _serialization.from_stored). An object larger
        than the whole store: ObjectStoreFullError, as for a put."""
        stored = self.values.get(oid)
        if stored is None or stored[0] != SPILLED:
            return
        size = stored[2]
        if size > self.capacity:  # a task's result larger than the store, refused as a put is
            self.reserve(size)
        if self.shm_bytes + size > self.capacity:
            return
        if self.shm_bytes + self.segments.free_bytes() + size > self.capacity:
            self.segments.drop_free()
        try:
            self.values[oid] = _spill.restore(stored, self.segments.new_name())
        except ObjectStoreFullError:  # /dev/shm itself is full: read from disk
            return
        self._on_disk[oid] = stored[1]
        self.spilled -= 1
        self._account(oid, size)

    def drop_dead_worker_segments(self, w, object_prefix: str, args=()) -> list:
        """Unlink what dead worker `w` left in shared memory that nobody will read;
        returns the names. Called once its last messages were handled: what it
        stored before dying stays, and so do `args` (the stored arguments of the
        unfinished tasks and of live actors' creations: those it submitted are in its
        segments)."""
        found = dead_worker_names(w, object_prefix)
        if found:
            keep = {s[1] for s in self.values.values() if s[0] == SHM}
            keep.update(a[1] for a in args if a[0] == SHM)
            found = [n for n in found if n not in keep and _shm.unlink(n)]
        return found + drop_unread_large_messages(w)

    def clear(self):
        for oid, stored in self.values.items():
            self._release(oid, stored)
        _spill.remove_dir(self.spill_directory)
        self._on_disk.clear()
        self.values.clear()
        self.pending.clear()
        self._callbacks.clear()
        for holders in (self._local, self._borrowed, self._contained, self._needed,
                        self._inner, self.escaped):
            holders.clear()
        self.created_queue.clear()
        self.drop_queue.clear()
        self.generators.clear()
        self.generator_taken.clear()
        self.gpu_producers.clear()
        self._pinned.clear()
        self._creators.clear()
        self.segments.clear()

    def objects(self) -> list:
        """One ObjectInfo per stored object, largest first (what `shmray status` lists)."""
        from . import _store_info  # (here: status only; a session starts without it)

        return _store_info.objects(self)

    def statistics(self):  # -> _store_info.StoreStats
        from . import _store_info

        return _store_info.statistics(self)
