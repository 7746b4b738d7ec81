"""ObjectRef: the handle of a value that exists, or will exist, in the object store.

Every process counts its live ObjectRef instances per object id (reference
counting across processes, see _object_store): an instance tells the process's
runtime, through ``_hooks``, when it is created and when it is dropped. When one is
pickled, the ids go to the thread's collector if shmray is serializing a value
(the stored value then holds those objects: see `collect_refs`); otherwise the
ref escaped somewhere shmray cannot follow, and its object is kept until shutdown.
The runtime installs the hooks; this module imports nothing of the runtime.
"""
from __future__ import annotations

import os
import threading

from . import _crecords
from ._crecords import RefBase, reset_ids, set_hooks


class _Hooks:
    """Set by the process's runtime; the defaults do nothing. Both counting hooks
    may be called from any thread, in the middle of anything (a garbage
    collection): they only append to a deque."""

    created = None      # callable(oid): a new instance (unpickled, copied)
    dropped = None      # callable(oid): an instance was garbage-collected
    escaped = None      # callable(oid): pickled outside shmray's own serialization
    future = None       # callable(ref) -> concurrent.futures.Future


_hooks = _Hooks()
set_hooks(_hooks)


class _Collector(threading.local):
    oids = None         # while shmray serializes a value: the ids of refs pickled in it


_collector = _Collector()


def collect_refs(serialize, *args):
    """Call serialize(*args); returns (its result, ids of the ObjectRefs it pickled)."""
    outer = _collector.oids
    oids = _collector.oids = []
    try:
        result = serialize(*args)
    finally:
        _collector.oids = outer
    if len(oids) > 1:
        oids = list(dict.fromkeys(oids))  # a retry with cloudpickle pickles them again
    return result, oids

# Ids: 16 low bits of return index, then a per-process random prefix (45 bits), then
# a counter from bit 61. CPython hashes an int modulo 2^61 - 1, so a counter at bit
# 61 reaches the hash's lowest bits: consecutive ids hash to consecutive values and
# fill a dict's or set's slots in turn. (With the counter below the prefix, every id
# of a process hashed to one slot in a table of up to 65,536, and each insert and
# lookup of the driver's id-keyed tables collided: 2-4 µs per task at 1,000,000.)
_ID_SHIFT = 16
_PREFIX_BITS = 45
_COUNTER_SHIFT = 61


def _reset_ids():
    """Give this process a fresh id prefix (at start and after fork); the counter
    starts again. Ids are made in C (_crecords.new_base_id)."""
    random = int.from_bytes(os.urandom(8), "little") & ((1 << _PREFIX_BITS) - 1)
    reset_ids(random << _ID_SHIFT)


_reset_ids()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_ids)


new_base_id = _crecords.new_base_id  # () -> a fresh task or put id; return i is base + i


def task_id_of(oid: int) -> int:
    """The id of the task whose return `oid` is (the base id for puts)."""
    return oid >> _ID_SHIFT << _ID_SHIFT


_MASK64 = (1 << 64) - 1
_ITEM_MARK = 0xFFFF  # no task returns that many values: these low bits mark an item


def stream_item_id_reference(task_id: int, index: int) -> int:
    """The id of item `index` of the streaming generator task `task_id`, the same in
    every process: a 64-bit mix of the task id, the index, and the item mark. The
    index sits at bit 61 (40 bits), as a task id's counter does, so that one
    generator's items hash to consecutive values; the mix fills the bits around it.
    (The reference: `stream_item_id`, what every caller uses, is this formula in C,
    tests/test_lane_forms.py holds the two equal.)"""
    mixed = ((task_id * 0x9E3779B97F4A7C15) >> 64 ^ task_id) & _MASK64
    low = mixed & ((1 << _PREFIX_BITS) - 1)
    return ((mixed >> _PREFIX_BITS) << 101 | index << _COUNTER_SHIFT | low << _ID_SHIFT
            | _ITEM_MARK)


stream_item_id = _crecords.stream_item_id


class ObjectRef(RefBase):
    """`ObjectRef(oid, _counted=False)`; `_id`, the object's id, and the counting of
    instances through `_hooks` (created, unless `_counted`: the runtime counted this
    instance already, a submit's or put's returned handle; dropped, when the instance
    goes) are the C base's (shmray._crecords.RefBase): no frame runs for either."""

    __slots__ = ()

    def hex(self) -> str:
        return f"{self._id:032x}"

    def binary(self) -> bytes:
        return self._id.to_bytes(16, "big")

    def task_id(self) -> str:
        return f"{self._id >> _ID_SHIFT << _ID_SHIFT:032x}"

    def __eq__(self, other):
        return type(other) is ObjectRef and other._id == self._id

    def __hash__(self):
        return hash(self._id)

    def __repr__(self):
        return f"ObjectRef({self.hex()})"

    def __reduce__(self):
        oids = _collector.oids
        if oids is not None:
            oids.append(self._id)
        else:
            escaped = _hooks.escaped
            if escaped is not None:
                escaped(self._id)
        return (ObjectRef, (self._id,))

    def __copy__(self):
        return ObjectRef(self._id)

    def __deepcopy__(self, memo):
        return ObjectRef(self._id)

    def future(self):
        """A concurrent.futures.Future that resolves to the value (or the task's error)."""
        if _hooks.future is None:
            raise RuntimeError("shmray is not initialized; call shmray.init() first")
        return _hooks.future(self)

    def __await__(self):
        import asyncio  # only code that awaits refs pays for asyncio

        return asyncio.wrap_future(self.future()).__await__()
