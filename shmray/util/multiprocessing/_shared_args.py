"""Large numpy arrays passed to many calls of a pool: put in the object store once,
passed as refs beside the chunks, mapped by the workers (no copy per call).

    Call items ──lift()──► an array passed more than once (twice in the chunk, or seen
                           in an earlier one, or any apply_async argument): put once,
                           Shared(i) in the items, its ref beside the chunk
                           an array passed once: left in the items (the chunk's pickle
                           carries it out of band, into the task's shared memory)
    the call ends ──release()──► an array no running call uses is kept a while (the
                                 next calls may pass it again), RETAIN_BYTES at most
    the pool has nothing to do ──forget_idle()──► every array no call uses is forgotten

An array is known by identity among the calls handed out while the pool is busy: map's
chunks, or apply_async calls (a joblib run) passing the same array again and again.
Once the pool has nothing to do, the arrays are forgotten, so an array changed in place
between two map() calls is put again; while the pool is busy, a call sees an array as
it was when first handed out (with the stdlib pool, a change made meanwhile reaches
the workers or not, depending on when its thread pickles the call). Arrays passed
once (map over distinct arrays) are not put one by one: one segment per chunk costs
less than a segment per array. The dispatcher thread alone uses this registry.
"""
from __future__ import annotations

import sys
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import shmray

from ._chunk import APPLY, MAP, STARMAP, Shared

RETAIN_BYTES = 256 << 20  # arrays no call uses, kept for the next calls: at most this much
SEEN_MAX = 4096           # arrays passed once, remembered (weakly) to spot a second pass


@dataclass(eq=False)
class _Entry:
    array: object     # held: its id stays its own while the entry lives
    ref: object       # its ObjectRef
    users: int        # calls running with it


class SharedArgs:
    def __init__(self, min_bytes: int):
        self.min_bytes = min_bytes
        self._entries = {}          # id(array) -> _Entry, used by running calls
        self._idle = OrderedDict()  # id(array) -> _Entry no call uses, oldest first
        self._idle_bytes = 0
        self._seen = OrderedDict()  # id(array) -> weakref of an array passed once so far
        self.puts = 0               # arrays put (a statistic for tests and benchmarks)

    def lift(self, mode: int, items: list):
        """(items with the arrays to share replaced by Shared placeholders, their refs,
        the registry keys the call now uses), or (items, (), ()) when there are none."""
        ndarray = _ndarray_type()
        if ndarray is None:
            return items, (), ()
        large = {}    # id -> (array, times in this chunk)
        for x in _arguments(mode, items):
            if isinstance(x, ndarray) and x.nbytes >= self.min_bytes:
                array, times = large.get(id(x), (x, 0))
                large[id(x)] = (array, times + 1)
        to_share = {key for key, (array, times) in large.items()
                    if times > 1 or mode == APPLY or self._passed_before(key, array)}
        if not to_share:
            return items, (), ()
        refs, keys, index_of = [], [], {}
        try:
            for key in to_share:
                index_of[key] = len(refs)
                refs.append(self._use(key, large[key][0]))
                keys.append(key)
        except BaseException:  # a put that failed (the store full)
            self.release(tuple(keys))
            raise

        def lifted(x):
            i = index_of.get(id(x)) if isinstance(x, ndarray) else None
            return x if i is None else Shared(i)

        if mode == MAP:
            new_items = [lifted(x) for x in items]
        elif mode == STARMAP:
            new_items = [tuple(lifted(x) for x in item) for item in items]
        else:
            new_items = [(f, tuple(lifted(x) for x in args),
                          {k: lifted(v) for k, v in kw.items()}) for f, args, kw in items]
        return new_items, tuple(refs), tuple(keys)

    def _passed_before(self, key, array) -> bool:
        """Whether `array` was passed to an earlier call; remembered if not."""
        if key in self._entries or key in self._idle:
            return True
        seen = self._seen.pop(key, None)
        if seen is not None and seen() is array:
            return True
        try:
            self._seen[key] = weakref.ref(array)
        except TypeError:  # (an ndarray subclass without weak references)
            return False
        if len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        return False

    def _use(self, key, array):
        self._seen.pop(key, None)
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
        self._seen.clear()

    def clear(self) -> None:
        self._entries.clear()
        self.forget_idle()


def _arguments(mode: int, items: list):
    """The values lift() looks at: each item (map), each item's values (starmap), each
    call's arguments (apply)."""
    if mode == MAP:
        return items
    if mode == STARMAP:
        return [x for item in items for x in item]
    return [x for _, args, kwargs in items for x in (*args, *kwargs.values())]


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
