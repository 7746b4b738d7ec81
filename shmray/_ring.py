"""Message channels between the driver and one worker, over the C rings.

    driver ──task ring──► worker      Func, Tasks, Reply, Exit, GpuFree
    driver ◄─result ring── worker     Done, Submit, Put, Get, Wait, Log, Bounce, Refs, ...

Both rings of a worker live in one segment; every result ring rings the session's
doorbell (in the control segment) so the driver sleeps on one futex for all
workers. A message is one of _protocol's records, pickled as a plain tuple whose
first item is its kind. A message too big for a ring travels in a temporary
segment that the receiver unlinks.
"""
from __future__ import annotations

import itertools
import os
import pickle

from . import _shm
from ._crecords import unpack_done, unpack_item, unpack_tasks
from ._protocol import DONE_MARK, ITEM_MARK, LARGE, TASKS_MARK, Large
from ._cring import DOORBELL_SIZE, HEADER_SIZE, Doorbell, Ring


TASK_RING_BYTES = 1 << 21
RESULT_RING_BYTES = 1 << 21
_RING_SPAN = {"tasks": HEADER_SIZE + TASK_RING_BYTES, "results": HEADER_SIZE + RESULT_RING_BYTES}
# After the rings: the ids of the cancelled tasks that the driver has sent to this
# worker and not seen end, as u64 words: [0] a sequence number (odd while the driver
# rewrites the list), [1] how many, then CANCEL_SLOTS (low, high) pairs. A worker
# holds at most _scheduler.PIPELINE_MAX queued tasks (the driver checks the bound),
# so every task it has that must not run is listed.
CANCEL_SLOTS = 256
CANCEL_BYTES = 8 * (2 + 2 * CANCEL_SLOTS)
# Last, the worker's status words, then a ring of records of the tasks it ran (see
# _status_area.WorkerStatus).
CHANNEL_STATUS_OFFSET = _RING_SPAN["tasks"] + _RING_SPAN["results"] + CANCEL_BYTES
CHANNEL_STATUS_BYTES = 64
HISTORY_SLOTS = 2048
HISTORY_RECORD = 64
CHANNEL_HISTORY_OFFSET = CHANNEL_STATUS_OFFSET + CHANNEL_STATUS_BYTES
CHANNEL_BYTES = CHANNEL_HISTORY_OFFSET + HISTORY_SLOTS * HISTORY_RECORD
# The control segment: the doorbell, then the driver's status words (_status_area.DriverStatus).
CONTROL_STATUS_OFFSET = 64
CONTROL_STATUS_BYTES = 256
CONTROL_BYTES = 4096
assert DOORBELL_SIZE <= CONTROL_STATUS_OFFSET

_dumps = pickle.dumps
_loads = pickle.loads
_large_ids = itertools.count()


class ControlArea:
    """The session's control segment: the driver's doorbell and status words."""

    def __init__(self, name: str, create: bool):
        self.name = name
        self.mm = (_shm.create(name, CONTROL_BYTES, "the session's control segment") if create
                   else _shm.attach(name))
        self.doorbell = Doorbell(memoryview(self.mm)[:DOORBELL_SIZE], create=create)


class Channel:
    """A worker's task ring and result ring, in one segment."""

    def __init__(self, name: str, create: bool, doorbell: Doorbell):
        self.name = name
        self.mm = (_shm.create(name, CHANNEL_BYTES, "a worker's channel") if create
                   else _shm.attach(name, CHANNEL_BYTES))
        view = memoryview(self.mm)
        split = _RING_SPAN["tasks"]
        end = split + _RING_SPAN["results"]
        self.tasks = Ring(view[:split], create=create)
        self.results = Ring(view[split:end], create=create, doorbell=doorbell)
        self.cancels = view[end:end + CANCEL_BYTES].cast("Q")
        self._spill_prefix = name + "_m"

    def post_cancels(self, task_ids: list):
        """Driver: list the cancelled tasks this worker has (see cancelled_ids); the
        latest CANCEL_SLOTS if there are more (help tasks stacked in a deep recursion)."""
        words = self.cancels
        seq = words[0]
        words[0] = seq + 1  # odd: a reader retries
        task_ids = task_ids[-CANCEL_SLOTS:]
        for i, task_id in enumerate(task_ids):
            words[2 + 2 * i] = task_id & 0xFFFFFFFFFFFFFFFF
            words[3 + 2 * i] = task_id >> 64
        words[1] = len(task_ids)
        words[0] = seq + 2  # last: the worker reads the list only after seeing it move

    def cancelled_ids(self) -> set:
        """Worker: the ids of the cancelled tasks the driver has sent here."""
        w = self.cancels
        while True:
            seq = w[0]
            if seq & 1:  # the driver is rewriting the list
                continue
            ids = {w[2 + 2 * i] | (w[3 + 2 * i] << 64) for i in range(min(w[1], CANCEL_SLOTS))}
            if w[0] == seq:
                return ids

def encode(msg: tuple, ring: Ring, spill_prefix: str) -> bytes:
    """The bytes of a message (a record, or the plain tuple of one) for `ring`."""
    data = _dumps(msg if type(msg) is tuple else tuple(msg), 5)
    if len(data) > ring.max_message:
        name = f"{spill_prefix}{os.getpid()}_{next(_large_ids)}"
        mm = _shm.create(name, len(data), "a message too large for its ring")
        mm[:] = data
        mm.close()
        data = _dumps((LARGE, name, len(data)), 5)
    return data


def decode(data: bytes) -> tuple:
    """The message a message's bytes hold: a record's plain tuple (see _protocol)."""
    if data[0] == DONE_MARK:  # a Done in its compact form (csrc/lane_done.c)
        return unpack_done(data)
    if data[0] == TASKS_MARK:  # plain tasks in their compact form (csrc/task_form.c)
        return unpack_tasks(data)
    if data[0] == ITEM_MARK:  # a generator's small item, compact (csrc/item_form.c)
        return unpack_item(data)
    msg = _loads(data)
    if msg[0] == LARGE:
        large = Large(*msg)
        mm = _shm.attach(large.name, large.size)
        try:
            msg = _loads(mm)
        finally:
            mm.close()
            _shm.unlink(large.name)
    return msg
