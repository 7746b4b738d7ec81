"""The objects half of the facade (Session inherits it): put, get, wait, and the
driver consuming a streaming generator's items (see shmray._generator and
_driver.generators).

`get`, `wait` and a generator's next item read the store without the session's lock
(see ObjectStore.coming_or_there); what they hand out is counted by ObjectRef's hooks.
"""
from __future__ import annotations

import sys
from pickle import loads

from .. import _gpu, _serialization as ser, _shm
from .._crecords import inline_values, not_stored
from .._object_ref import ObjectRef, collect_refs, new_base_id, stream_item_id
from .._protocol import SHM
from .._segment_writer import segment_layout
from ..exceptions import GetTimeoutError, ObjectStoreFullError
from .generators import END
from .interrupts import sections
from .rpcs import lost_error


class ObjectFacade:
    def put(self, value):
        with sections:  # a Ctrl-C-safe section: the object is stored whole, or not at all
            return self._put(value)

    def _put(self, value):
        oid = new_base_id()
        if "cupy" in sys.modules:  # cupy arrays go out as IPC handles (see _gpu)
            with _gpu.exporting(oid) as gpu:
                stored, inner = collect_refs(ser.to_stored, value, None, self._write_large)
        else:
            gpu = None
            stored, inner = collect_refs(ser.to_stored, value, None, self._write_large)
        with self.lock:
            if self.closed:  # shut down while the value was written: nothing keeps it
                if stored[0] == SHM:
                    _shm.unlink(stored[1])
                self.check_open()
            self.store.own(oid)
            if gpu is not None and gpu.exported:
                self.store.gpu_producers[oid] = None  # the driver keeps the arrays
            self.store.put(oid, stored, "put", inner)
        return ObjectRef(oid, True)  # (no future can wait for an id made just now)

    def _write_large(self, meta, buffers):
        size = segment_layout(meta, buffers)[1]
        with self.lock:  # a ref just dropped may free a segment this put can reuse
            self.store.process_refs()
            self.store.reserve(size)  # spills others if needed, or raises
        return self.segments.write(meta, buffers)

    def readable(self, oid):
        """The stored form of `oid` to read or hand out: brought back from disk first if
        it was spilled (an error form if there is no room for it). Under the lock."""
        store = self.store
        try:
            store.ensure_in_memory(oid)
        except ObjectStoreFullError as e:
            return ser.error_stored(e)
        store.touch(oid)
        return store.values[oid]

    def get(self, refs: list, timeout):
        store = self.store
        if len(refs) == 1:  # get(ref), a generator's item: stored, small and inline, read
            out = inline_values(refs, store.values, ObjectRef, loads)  # here, in C
            if out is not None:
                return out
        # the ids not stored yet (store.coming_or_there, in C: pending read first)
        missing = not_stored(refs, ObjectRef, store.pending, store.values)
        if missing is None:  # one is lost
            self.check_open()
            raise lost_error(next(r._id for r in refs if type(r) is ObjectRef
                                  and not store.coming_or_there(r._id)))
        first = 0

        def all_ready():  # results arrive roughly in order: resume at the first missing one
            nonlocal first
            values = store.values  # (each time: housekeeping may compact the store)
            while first < len(missing) and missing[first] in values:
                first += 1
            return first == len(missing)

        if missing and not self.loop.wait_until(all_ready, timeout):
            raise GetTimeoutError("Get timed out: some object(s) not ready.")
        return self.values(refs)

    def values(self, refs: list) -> list:
        """The values of `refs`, all stored; the first error raises. Spilled ones come
        back or are read from their files (read ones spill last)."""
        store = self.store
        if not store.holds_large():  # nothing can be spilled: no lock needed
            return ser.values_of(refs, store.values)
        oids = [r._id for r in refs if type(r) is ObjectRef]
        for _ in range(3):
            with self.lock:
                readable = {oid: self.readable(oid) for oid in oids}
            try:
                return ser.values_of(refs, readable)
            except _shm.SegmentGone:  # another thread spilled one in between
                continue
        raise lost_error(oids[0])

    def wait(self, refs: list, num_returns: int, timeout, fetch_local: bool):
        store = self.store  # (store.values read at each check: it may be compacted)
        is_ready = lambda r: r._id in store.values  # (a generator's _id: its next item's)
        not_yet = [r for r in refs if not is_ready(r)]
        ready_before = len(refs) - len(not_yet)
        may_stay = len(refs) - num_returns  # refs that may be not ready at the end
        first = 0  # not_yet[:first] are ready: results arrive roughly in order

        def enough():
            # Called at every pump: it must not cost len(refs) each time (waiting for all
            # of 200,000 tasks took 7 times as long as a get of them). Past the ready front,
            # it stops at the first ref too many not ready, or at enough ready ones.
            nonlocal first
            values = store.values
            n = len(not_yet)
            while first < n and not_yet[first]._id in values:
                first += 1
            ready = ready_before + first
            late = 0
            for i in range(first, n):
                if ready >= num_returns:
                    break
                if not_yet[i]._id in values:
                    ready += 1
                else:
                    late += 1
                    if late > may_stay:
                        return False
            return ready >= num_returns

        self.loop.wait_until(enough, timeout)
        ready, not_ready = [], []
        for r in refs:
            (ready if is_ready(r) and len(ready) < num_returns else not_ready).append(r)
        return ready, not_ready

    def generator_next(self, task_id, index, timeout):
        """The ref of item `index` of generator task `task_id` once it is stored, or
        None if the stream ended before it; GetTimeoutError after `timeout` seconds.
        Without the lock (the per-item path): the new ref is counted by its hook, and the
        stream lets go of the item when the loop takes the `taken` record, after it."""
        oid = stream_item_id(task_id, index)
        store = self.store
        stored = store.values.get(oid)
        if stored is None:
            if not store.coming_or_there(oid):
                self.check_open()
                raise lost_error(oid)
            stream = self.generators.streams.get(task_id)
            fast = stream is not None and stream.fast
            if not self.loop.wait_until(lambda: oid in store.values, timeout, fast):
                raise GetTimeoutError("Timed out waiting for the generator's next item.")
            stored = store.values.get(oid)
            if stored is None:  # (the session ended meanwhile)
                self.check_open()
                raise lost_error(oid)
        ref = None if stored is END else ObjectRef(oid)
        store.generator_taken.append((task_id, index))
        return ref
