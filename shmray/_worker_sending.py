"""What a worker sends to the driver, and the reference counts that go with it
(WorkerRuntime inherits it).

Every message carries the changes of this worker's ObjectRef instances since the
last one: a Refs record of the refs it came to hold goes before the message, one of
those it let go of after (a Done's result may hold one). The driver counts a
reference of this worker's (a grant) for each ref a Submit or Put returns to it, and
for a generator's item it hands out in a Reply.

The objects' segments this worker came to map, or maps no more, go first, in a Maps
record (see _mappings): before the message that lets go of what it read (a Done, a
Refs release), so the driver knows every reader of an object when it frees it. A
task that maps a segment and drops its arrays before it ends sends none.
"""
from __future__ import annotations

import gc
from threading import get_ident

from . import _mappings, _ring
from ._crecords import pack_item
from ._protocol import GEN_ITEM, MAPS, REFS, Maps, Refs

_map_events = _mappings.events  # (one deque for the process's life)


class WorkerSending:
    def send(self, msg, grants=()):
        """Push `msg` (a record, or its encoded bytes); the refs this worker came to
        hold go first, the ones it let go of after (a DONE's result may hold one).
        `grants`: oids the driver counts for this worker on receiving `msg` (the refs
        a SUBMIT or PUT returns)."""
        data = msg if type(msg) is bytes else _ring.encode(msg, self.results, self.spill_prefix)
        held = self._hold_interrupts()
        try:
            with self._send_lock:
                if self._created or self._dropped or self._escaped or _map_events:
                    self._push_with_ref_changes(data)
                else:
                    self.results.push(data, None)  # (timeout None: until there is room)
                granted = self._granted
                for oid in grants:
                    granted[oid] = granted.get(oid, 0) + 1
        finally:
            if held:
                self._release_interrupts()

    def send_item(self, task_id, index, stored, inner, gpu):
        """A streaming generator's item (a GenItem): a small inline one in its compact
        form (csrc/item_form.c), which the driver handles in C."""
        data = pack_item(task_id, index, stored, inner, gpu, self.results.max_message)
        self.send(data if data is not None else
                  (GEN_ITEM, task_id, index, stored, inner or None, gpu))  # (a GenItem)

    def send_ref_changes(self):
        """Tell the driver about refs created or dropped since the last message."""
        held = self._hold_interrupts()
        try:
            with self._send_lock:
                self._push_with_ref_changes(None)
        finally:
            if held:
                self._release_interrupts()

    def _push_with_ref_changes(self, data):
        """Under _send_lock: MAPS, REFS borrows, `data` (if any), REFS releases. The
        garbage collector is off meanwhile: a user's __del__ run by it could print or
        put, and so re-enter send() under the lock."""
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            borrows, releases, escaped = self._ref_changes()
            push, results, spill = self.results.push, self.results, self.spill_prefix
            # (drained after the drops' count was read: the mappings made before them
            # go first)
            mapped, unmapped = _mappings.drain()
            if mapped or unmapped:
                push(_ring.encode(Maps(MAPS, mapped, unmapped), results, spill),
                     timeout=None)
            if data is None:
                if borrows or releases or escaped:
                    push(_ring.encode(Refs(REFS, borrows, releases, escaped), results, spill),
                         timeout=None)
                return
            if borrows or escaped:
                push(_ring.encode(Refs(REFS, borrows, (), escaped), results, spill),
                     timeout=None)
            push(data, timeout=None)
            if releases:
                push(_ring.encode(Refs(REFS, (), releases, ()), results, spill), timeout=None)
        finally:
            if gc_was_on:
                gc.enable()

    def _ref_changes(self):
        """Count the queued creations and drops (under _send_lock). Returns the oids
        now held here that the driver does not count for this worker, the
        (oid, grants) it counts for oids held here no more, and escaped oids.
        Drops are counted up to a length read first (see ObjectStore.process_refs)."""
        dropped, created, counts = self._dropped, self._created, self._counts
        n = len(dropped)
        touched = set()
        while created:
            oid = created.popleft()
            counts[oid] = counts.get(oid, 0) + 1
            touched.add(oid)
        for _ in range(n):
            oid = dropped.popleft()
            left = counts.get(oid, 0) - 1
            if left > 0:
                counts[oid] = left
            else:
                counts.pop(oid, None)  # (an instance inherited from the driver at fork: < 0)
            touched.add(oid)
        granted = self._granted
        borrows = [oid for oid in touched if oid in counts and oid not in granted]
        for oid in borrows:
            granted[oid] = 1
        releases = [(oid, granted.pop(oid)) for oid in touched
                    if oid not in counts and oid in granted]
        escaped_queue = self._escaped
        escaped = [escaped_queue.popleft() for _ in range(len(escaped_queue))]
        return borrows, releases, escaped

    # A cancel's KeyboardInterrupt (on_sigint) must not land between pushing a message
    # and recording what it granted, or between a SUBMIT and the ObjectRef it returns:
    # the driver's counts and this worker's would disagree. The main thread (where
    # Python runs signal handlers) defers it to the end of such a section.
    def _hold_interrupts(self) -> bool:
        if get_ident() != self._main_thread:
            return False
        self._critical += 1
        return True

    def _release_interrupts(self):
        self._critical -= 1
        if not self._critical and self._interrupt_pending:
            self._interrupt_pending = False
            if self.is_cancelled(self.current_task_id):
                raise KeyboardInterrupt

    def send_done(self, data: bytes):
        """Push an encoded Done (the per-task path: no interrupt can land here)."""
        with self._send_lock:
            if self._created or self._dropped or self._escaped or _map_events:
                self._push_with_ref_changes(data)
            else:
                self.results.push(data, None)  # (timeout None: until there is room)

    def granted_by_reply(self, oid):
        """The driver counted a reference of this worker's to `oid` when it replied."""
        with self._send_lock:
            self._granted[oid] = self._granted.get(oid, 0) + 1
