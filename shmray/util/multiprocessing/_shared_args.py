"""Large numpy arrays among a pool's arguments: put in the object store once, passed as
refs beside the chunk, mapped by the worker (no pickled copy per call).

    Call items ──lift()──► items with Shared(i) placeholders + refs (one put per array)
    the call ends ──release()──► an array no running call uses is kept a while (the
                                 next calls may pass it again), RETAIN_BYTES at most
    the pool has nothing to do ──forget_idle()──► every array no call uses is forgotten

An array is found by identity among the arguments of the calls handed out while the
pool is busy: map's chunks, or apply_async calls (a joblib run) that keep passing the
same array. Once the pool has nothing to do, the arrays are forgotten, so an array
changed in place between two map() calls is put again; while the pool is busy, a
call sees an array as it was when it was first handed out (with the stdlib pool, a
change made meanwhile reaches the workers or not, depending on when its thread
pickles the call). The dispatcher thread alone uses this registry.
"""
from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass

import shmray

from ._chunk import APPLY, MAP, STARMAP, Shared

RETAIN_BYTES = 256 << 20  # arrays no call uses, kept for the next calls: at most this much


@dataclass(eq=False)
class _Entry:
    array: object     # held: its id stays its own while the entry lives
    ref: object       # its ObjectRef
    users: int        # calls running with it


class SharedArgs:
    def __init__(self, min_bytes: int):
        self.min_bytes = min_bytes
        self._entries = {}         # id(array) -> _Entry, used by running calls
        self._idle = OrderedDict()  # id(array) -> _Entry no call uses, oldest first
        self._idle_bytes = 0
        self.puts = 0              # arrays put (a statistic for tests and benchmarks)

    def lift(self, mode: int, items: list):
        """(items with large arrays replaced by Shared placeholders, their refs, the
        registry keys the call now uses), or (items, (), ()) when there are none."""
        ndarray = _ndarray_type()
        if ndarray is None:
            return items, (), ()
        refs, keys, index_of = [], [], {}

        def lifted(x):
            if not isinstance(x, ndarray) or x.nbytes < self.min_bytes:
                return x
            key = id(x)
            i = index_of.get(key)
            if i is None:
                i = index_of[key] = len(refs)
                refs.append(self._use(key, x))
                keys.append(key)
            return Shared(i)

        try:
            if mode == MAP:
                new_items = [lifted(x) for x in items]
            elif mode == STARMAP:
                new_items = [tuple(lifted(x) for x in item) for item in items]
            else:
                new_items = [(f, tuple(lifted(x) for x in args),
                              {k: lifted(v) for k, v in kw.items()}) for f, args, kw in items]
        except BaseException:  # a put that failed (the store full), an item not a tuple
            self.release(tuple(keys))
            raise
        if not refs:
            return items, (), ()
        return new_items, tuple(refs), tuple(keys)

    def _use(self, key, array):
        entry = self._entries.get(key)
        if entry is None:
            entry = self._idle.pop(key, None)
            if entry is not None:
                self._idle_bytes -= entry.array.nbytes
            else:
                entry = _Entry(array, shmray.put(array), 0)
                self.puts += 1
            self._entries[key] = entry
        entry.users += 1
        return entry.ref

    def release(self, keys: tuple) -> None:
        for key in keys:
            entry = self._entries[key]
            entry.users -= 1
            if entry.users == 0:
                del self._entries[key]
                self._idle[key] = entry
                self._idle_bytes += entry.array.nbytes
        while self._idle_bytes > RETAIN_BYTES:
            _, entry = self._idle.popitem(last=False)
            self._idle_bytes -= entry.array.nbytes

    def forget_idle(self) -> None:
        self._idle.clear()
        self._idle_bytes = 0

    def clear(self) -> None:
        self._entries.clear()
        self.forget_idle()


def worth_lifting(mode: int, first_item, min_bytes: int) -> bool:
    """Whether a chunk's first item holds, where lift() looks, a numpy array worth putting:
    how a chunk is judged (its first item only, so that a chunk of small items costs
    nothing). A chunk that is not looked through still travels through shared memory,
    its arrays pickled out of band into its task's arguments, only not put once."""
    ndarray = _ndarray_type()
    if ndarray is None:
        return False
    if mode == APPLY:
        _, args, kwargs = first_item
        values = (*args, *kwargs.values())
    elif mode == STARMAP and type(first_item) in (tuple, list):
        values = first_item
    else:
        values = (first_item,)
    return any(isinstance(x, ndarray) and x.nbytes >= min_bytes for x in values)


def _ndarray_type():
    numpy = sys.modules.get("numpy")  # no numpy loaded: no array can be among the items
    return None if numpy is None else numpy.ndarray
