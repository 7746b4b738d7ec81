"""Streaming generator tasks, as the driver sees them: their items as they come.

    start (at submit) ─► a Stream; item 0's id pending
    GenItem i ─► stored as object stream_item_id(task, i), held by the stream
    next() ─► hand_out(i): the consumer (the driver, or a worker: granted) holds it now
    the task's last attempt ends ─► its error (if it failed) as one more item, then
             the end marker: the item after the last, which next() turns into
             StopIteration
    every ref to the generator gone (ObjectStore.generators_freed) ─► dropped: items
             not handed out are freed, the task (if still running) is cancelled

Backpressure: a generator with `_generator_backpressure_num_objects=K` asks (GenPause)
when it has K items not handed out, and the reply (how many are) comes once one is. A retried
attempt yields from the start again: items the stream holds already are skipped.
Every method runs under the session's lock.
"""
from __future__ import annotations

import time

from .. import _ring, _serialization as ser, _shm
from .._object_ref import stream_item_id
from .._protocol import ERROR, INLINE, REPLY, SHM, Reply

# The end marker's stored form: the driver tells it by identity, never by its value.
END = (INLINE, ser.NONE[1], ())


FAST_ITEMS = 200e-6          # items this close together: a consumer spins for the next


class Stream:
    __slots__ = ("task_id", "name", "produced", "consumed", "ended", "backpressure", "pause",
                 "last_item", "gap")

    def __init__(self, spec):
        self.task_id = spec.task_id
        self.name = spec.name
        self.produced = 0           # items stored (its error, if any, is one)
        self.consumed = 0           # items handed out
        self.ended = False          # the end marker is stored
        self.backpressure = spec.options._generator_backpressure_num_objects
        self.pause = None           # (worker, req_id, produced) of a GenPause not answered
        self.last_item = 0.0        # when the latest item came (monotonic seconds)
        self.gap = 0.0              # the recent mean time between items

    @property
    def fast(self) -> bool:
        return self.gap < FAST_ITEMS

    def row(self) -> dict:
        return {"task_id": f"{self.task_id:032x}", "name": self.name,
                "items": self.produced, "consumed": self.consumed, "ended": self.ended,
                "paused": self.pause is not None}


class GeneratorTable:
    def __init__(self, store, prefix):
        self.store = store
        self.prefix = prefix
        self.streams = {}           # task id -> Stream, until every ref to it is gone

    def start(self, spec):
        """A streaming generator task was submitted (its return is the generator's ref)."""
        self.streams[spec.task_id] = Stream(spec)
        self.store.generators.add(spec.task_id)
        self.store.pending.add(stream_item_id(spec.task_id, 0))

    def on_item(self, task_id, index, stored, inner):
        """A GenItem's item stored; returns its id (None: nobody will read it)."""
        s = self.streams.get(task_id)
        if s is None or s.ended or index != s.produced:  # dropped, or a retry's replay
            if stored[0] == SHM:
                _shm.unlink(stored[1])
            return None
        return self._append(s, stored, inner or ())

    def _append(self, s, stored, inner=()):
        oid = stream_item_id(s.task_id, s.produced)
        now = time.monotonic()
        s.gap += ((now - s.last_item) - s.gap) * 0.25 if s.produced else 0.0
        s.last_item = now
        store = self.store
        # The next one pending first: a reader without the lock who finds no value for
        # it must find it coming (see ObjectStore.coming_or_there).
        store.pending.add(stream_item_id(s.task_id, s.produced + 1))
        needed = store._needed  # the stream holds it until it is handed out (store.need,
        needed[oid] = needed.get(oid, 0) + 1  # inlined: once per item)
        store.put(oid, stored, s.name, inner)
        s.produced += 1
        return oid

    def finish(self, spec, outcome):
        """The task's last attempt ended: its error is the last item; then the end."""
        s = self.streams.get(spec.task_id)
        if s is None or s.ended:
            return
        if outcome and outcome[0] == ERROR:
            self._append(s, outcome)
        oid = stream_item_id(s.task_id, s.produced)  # (the marker is not an item)
        self.store.need(oid)
        self.store.put(oid, END)
        s.ended = True
        self._answer_pause(s, False)

    def hand_out(self, task_id, index, w) -> bool:
        """Item `index` (stored) goes to worker `w`, which consumes the stream (granted
        to it). False: the stream ended before it."""
        oid = stream_item_id(task_id, index)
        store = self.store
        s = self.streams.get(task_id)
        is_item = store.values[oid] is not END
        if is_item:
            w.grant(oid, store)
        if s is not None and index >= s.consumed:
            store.unneed(oid)  # (the consumer's count first: it is not freed between)
            self._consumed(s, index)
        return is_item

    def take_handed_out(self):
        """The items the driver handed out (generator_next, without the lock): the
        streams let go of them (their refs were counted before, by the hooks)."""
        store = self.store
        taken, streams, needed = store.generator_taken, self.streams, store._needed
        n = len(taken)  # each one's ref was queued before it: counted now, before it counts
        store.count_created()
        for _ in range(n):
            task_id, index = taken.popleft()
            s = streams.get(task_id)
            if s is not None and index >= s.consumed:
                oid = stream_item_id(task_id, index)
                left = needed.get(oid, 0) - 1
                if left > 0 or oid in store._local:  # (store.unneed's common case: the
                    if left > 0:                      # consumer's ref holds it still)
                        needed[oid] = left
                    else:
                        needed.pop(oid, None)
                else:
                    store.unneed(oid)
                self._consumed(s, index)

    def _consumed(self, s, index):
        s.consumed = index + 1
        if s.pause is not None and s.pause[2] - s.consumed < s.backpressure:
            self._answer_pause(s, True)

    def on_pause(self, w, kind, req_id, task_id, produced):
        """A GenPause record: the generator waits for its items to be consumed."""
        s = self.streams.get(task_id)
        if s is None:  # dropped
            self._reply(w, req_id, -1)
        elif produced - s.consumed < s.backpressure:
            self._reply(w, req_id, s.consumed)
        else:
            s.pause = (w, req_id, produced)

    def _answer_pause(self, s, go_on: bool):
        """Reply to the pause: the count consumed (go on), or -1 (stop)."""
        if s.pause is not None:
            w, req_id, _ = s.pause
            s.pause = None
            self._reply(w, req_id, s.consumed if go_on else -1)

    def _reply(self, w, req_id, payload):
        if not w.gone:
            w.send(_ring.encode(Reply(REPLY, req_id, payload), w.ring, self.prefix))

    def take_freed(self) -> list:
        """The generators whose every ref is gone: their items not handed out are
        freed. Returns their task ids (the caller cancels those still running)."""
        freed = self.store.generators_freed
        dropped = []
        store = self.store
        while freed:
            task_id = freed.popleft()
            s = self.streams.pop(task_id, None)
            if s is None:
                continue
            for index in range(s.consumed, s.produced + s.ended):
                store.unneed(stream_item_id(task_id, index))
            store.pending.discard(stream_item_id(task_id, s.produced + s.ended))
            self._answer_pause(s, False)
            dropped.append(task_id)
        return dropped

    def forget_worker(self, w):
        """`w` is gone: the pause it waited in goes with it."""
        for s in self.streams.values():
            if s.pause is not None and s.pause[0] is w:
                s.pause = None

    def rows(self) -> list:
        return [s.row() for s in self.streams.values() if not s.ended]
