"""What a generator task returns to its caller (Ray's ``ObjectRefGenerator`` and
``DynamicObjectRefGenerator``).

    f.remote() of a generator function ─► ObjectRefGenerator at once
    next(gen) ─► runtime.generator_next(task id, index) ─► the ref of item `index`,
                 as soon as the task has yielded it (or StopIteration after the last)

Item `i` of task `t` has the id `stream_item_id(t, i)` in every process, so waiting
for a generator is waiting for its next item's id. The generator holds a ref to the
task's own return, which resolves (to None, or the task's error) when the task ends
(`completed()`): while that ref lives, the driver keeps the items not consumed yet;
once it is dropped they are freed and a task still running is cancelled.
"""
from __future__ import annotations

from . import _context
from ._object_ref import ObjectRef, stream_item_id
from ._protocol import STREAMING


class ObjectRefGenerator:
    """The refs of a streaming generator task's items, in the order it yields them:
    ``for ref in gen``, ``next(gen)``, ``async for ref in gen``."""

    __slots__ = ("_ref", "_index", "_ended", "__weakref__")

    def __init__(self, ref: ObjectRef):
        self._ref = ref         # the task's own return: the generator's life
        self._index = 0         # the next item to hand out
        self._ended = False     # its end was handed out (StopIteration)

    @property
    def _id(self) -> int:
        """What `wait` waits for: the next item's id (its end marker, after the last)."""
        return stream_item_id(self._ref._id, self._index)

    def __iter__(self):
        return self

    def __next__(self) -> ObjectRef:
        return self._next(None)

    def _next(self, timeout):
        if self._ended:
            raise StopIteration
        ref = _context.get_runtime().generator_next(self._ref._id, self._index, timeout)
        if ref is None:
            self._ended = True
            raise StopIteration
        self._index += 1
        return ref

    def __aiter__(self):
        return self

    async def __anext__(self) -> ObjectRef:
        import asyncio  # only code that iterates asynchronously pays for asyncio

        if not self._ended and not self.next_ready():
            await asyncio.get_running_loop().run_in_executor(None, self._wait_next)
        try:
            return self._next(None)
        except StopIteration:
            raise StopAsyncIteration from None

    def _wait_next(self):
        _context.get_runtime().wait([self], 1, None, True)

    def next_ready(self) -> bool:
        """Whether next() would return at once (an item, or the end)."""
        if self._ended:
            return True
        return bool(_context.get_runtime().wait([self], 1, 0.0, True)[0])

    def is_finished(self) -> bool:
        """Whether the task has ended: no item will be added (some may not be read yet)."""
        return bool(_context.get_runtime().wait([self._ref], 1, 0.0, True)[0])

    def completed(self) -> ObjectRef:
        """A ref that resolves to None when the task has ended, or raises its error."""
        return ObjectRef(self._ref._id)

    def task_id(self) -> str:
        return self._ref.task_id()

    def __reduce__(self):
        raise TypeError("An ObjectRefGenerator cannot be pickled or passed to another task: "
                        "its items are handed out by the process that called the generator "
                        "task. Pass the ObjectRefs it yields instead.")

    def __repr__(self):
        return f"ObjectRefGenerator({self._ref.hex()})"


class DynamicObjectRefGenerator:
    """What a ``num_returns="dynamic"`` task's one ref resolves to: the refs of the
    values it yielded (and one that raises its error, if it failed after some)."""

    def __init__(self, refs: list):
        self._refs = list(refs)

    def __iter__(self):
        return iter(self._refs)

    def __len__(self):
        return len(self._refs)

    def __repr__(self):
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"


def returned(ref: ObjectRef, num_returns: int):
    """What `.remote()` of a generator task returns, given the ref of its return."""
    return ObjectRefGenerator(ref) if num_returns == STREAMING else ref
