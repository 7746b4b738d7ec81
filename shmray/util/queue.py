"""A first-in, first-out queue shared by the driver, tasks and actors (Ray's
``ray.util.queue``): the items live in an actor, the ``Queue`` object is a handle to it.

    Queue(maxsize) ─► an async actor (_QueueActor) holding an asyncio.Queue
    q.put(x) / q.get() anywhere ─► a call on that actor ─► get() of its ref
    pickled into a task or an actor ─► the same actor: every process sees one queue

A blocking put/get is a call that waits in the actor's event loop, so thousands of
producers and consumers can wait at once without holding a thread each. Every item is
delivered to exactly one get. A full or empty queue raises ``Full`` / ``Empty``
(subclasses of the standard library's ``queue.Full`` / ``queue.Empty``).
"""
from __future__ import annotations

import asyncio
import math
import numbers
import queue as _stdlib_queue
from collections.abc import Iterable
from typing import Any, Dict, List, Optional

from .. import _api
from ._on_cluster import ray_counterpart


class Empty(_stdlib_queue.Empty):
    """get() found the queue empty (without blocking, or after its timeout)."""


class Full(_stdlib_queue.Full):
    """put() found the queue full (without blocking, or after its timeout)."""


class Queue:
    """A FIFO queue, usable from the driver, tasks and actors (pass it as an argument).

    maxsize: the most items it holds (0 or less: no limit).
    actor_options: options of the actor that holds the items (``num_cpus``,
    ``resources``, ``name``, ...), as ``.options(...)`` of an actor class takes them.
    """

    def __new__(cls, maxsize: int = 0, actor_options: Optional[Dict] = None):
        ray_queue = ray_counterpart("ray.util.queue", "Queue")
        if ray_queue is not None:  # on a Ray cluster: Ray's queue, on Ray's actor
            return ray_queue(maxsize=maxsize, actor_options=actor_options)
        return super().__new__(cls)

    def __init__(self, maxsize: int = 0, actor_options: Optional[Dict] = None) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"Queue's maxsize must be an int (0: no limit), got {maxsize!r}")
        if actor_options is not None and not isinstance(actor_options, dict):
            raise TypeError(f"Queue's actor_options must be a dict of actor options, got "
                            f"{type(actor_options).__name__}")
        self.maxsize = maxsize
        self.actor = _queue_actor().options(**(actor_options or {})).remote(maxsize)

    def __reduce__(self):
        # (not through __new__: unpickling in a worker is never a new queue)
        return _same_queue, (self.maxsize, self.actor)

    def __len__(self) -> int:
        return self.size()

    # ------------------------------------------------------------ state
    def size(self) -> int:
        """The number of items in the queue."""
        return _api.get(self._actor().qsize.remote())

    def qsize(self) -> int:
        """The number of items in the queue."""
        return self.size()

    def empty(self) -> bool:
        """Whether the queue holds no item."""
        return _api.get(self._actor().empty.remote())

    def full(self) -> bool:
        """Whether the queue holds maxsize items."""
        return _api.get(self._actor().full.remote())

    # ------------------------------------------------------------ put
    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Add `item` at the end. On a full queue: with block, wait for room (up to
        `timeout` seconds, None: no limit), else raise Full at once. Full after the
        timeout; ValueError for a negative timeout."""
        ref = self._put_call(item, block, timeout)
        try:
            _outcome(ref)
        except Full:
            raise Full(_full_message(self.maxsize, block, timeout)) from None

    async def put_async(self, item: Any, block: bool = True,
                        timeout: Optional[float] = None) -> None:
        """put(), awaited (in an async actor or an asyncio program)."""
        ref = self._put_call(item, block, timeout)
        try:
            await _outcome_async(ref)
        except Full:
            raise Full(_full_message(self.maxsize, block, timeout)) from None

    def put_nowait(self, item: Any) -> None:
        """put(item, block=False)."""
        return self.put(item, block=False)

    def put_nowait_batch(self, items: Iterable) -> None:
        """Add all of `items`, in order, or none of them: Full if they do not all fit."""
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise TypeError(f"Argument 'items' must be an Iterable, got "
                            f"{type(items).__name__}")
        items = list(items)
        try:
            _api.get(self._actor().put_nowait_batch.remote(items))
        except Full as e:
            raise Full(_reason(e)) from None

    def _put_call(self, item, block, timeout):
        if not block:
            return self._actor().put.remote(item, 0)
        return self._actor().put.remote(item, _checked_timeout(timeout))

    # ------------------------------------------------------------ get
    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Remove and return the first item. On an empty queue: with block, wait for
        one (up to `timeout` seconds, None: no limit), else raise Empty at once. Empty
        after the timeout; ValueError for a negative timeout."""
        ref = self._get_call(block, timeout)
        try:
            return _outcome(ref)
        except Empty:
            raise Empty(_empty_message(block, timeout)) from None

    async def get_async(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """get(), awaited (in an async actor or an asyncio program)."""
        ref = self._get_call(block, timeout)
        try:
            return await _outcome_async(ref)
        except Empty:
            raise Empty(_empty_message(block, timeout)) from None

    def get_nowait(self) -> Any:
        """get(block=False)."""
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> List[Any]:
        """Remove and return the first `num_items` items, in order, or none: Empty if
        the queue holds fewer."""
        if isinstance(num_items, bool) or not isinstance(num_items, int):
            raise TypeError(f"Argument 'num_items' must be an int, got {num_items!r}")
        if num_items < 0:
            raise ValueError(f"'num_items' must be nonnegative, got {num_items}")
        try:
            return _api.get(self._actor().get_nowait_batch.remote(num_items))
        except Empty as e:
            raise Empty(_reason(e)) from None

    def _get_call(self, block, timeout):
        if not block:
            return self._actor().get.remote(0)
        return self._actor().get.remote(_checked_timeout(timeout))

    # ------------------------------------------------------------ the end
    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """End the queue's actor (its items are lost). Without force, the calls made
        before end first, for up to `grace_period_s` seconds, then it is killed."""
        if self.actor is not None:
            if force:
                _api.kill(self.actor, no_restart=True)
            else:
                ended = self.actor.__ray_terminate__.remote()
                ready, _ = _api.wait([ended], timeout=grace_period_s)
                if not ready:
                    _api.kill(self.actor, no_restart=True)
        self.actor = None

    def _actor(self):
        if self.actor is None:
            raise RuntimeError("This Queue was shut down (Queue.shutdown()): its items and "
                               "its actor are gone")
        return self.actor


def _outcome(ref):
    """The put's or get's result. A caller that stops waiting (Ctrl-C) cancels the call,
    so that an item is not put or taken later for nobody."""
    try:
        return _api.get(ref)
    except KeyboardInterrupt:
        _api.cancel(ref)
        raise


async def _outcome_async(ref):
    try:
        return await ref
    except asyncio.CancelledError:  # (the awaiting task was cancelled: the call too)
        _api.cancel(ref)
        raise


def _same_queue(maxsize, actor) -> Queue:
    q = object.__new__(Queue)
    q.maxsize, q.actor = maxsize, actor
    return q


def _checked_timeout(timeout):
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"'timeout' must be a number of seconds or None, got {timeout!r}")
    if timeout < 0 or math.isnan(timeout):
        raise ValueError("'timeout' must be a non-negative number")
    return float(timeout)


def _full_message(maxsize, block, timeout):
    waited = f" after waiting {timeout} s" if block and timeout is not None else ""
    return f"the queue is full (maxsize {maxsize}){waited}"


def _empty_message(block, timeout):
    waited = f" after waiting {timeout} s" if block and timeout is not None else ""
    return f"the queue is empty{waited}"


def _reason(error) -> str:
    """The message the actor gave (the error caught here is a RayTaskError that is
    also the actor's Empty/Full: its cause carries the message)."""
    cause = getattr(error, "cause", None) or error
    return str(cause.args[0]) if cause.args else str(cause)


class _QueueActor:
    """The queue's items, in an async actor: waiting puts and gets are coroutines."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.queue = asyncio.Queue(maxsize)

    def qsize(self) -> int:
        return self.queue.qsize()

    def empty(self) -> bool:
        return self.queue.empty()

    def full(self) -> bool:
        return self.queue.full()

    async def put(self, item, timeout: Optional[float] = None) -> None:
        # A timeout of 0 (put_nowait) is a try, never a wait (asyncio.wait_for with 0
        # would time out even with room).
        if not self.queue.full():
            self.queue.put_nowait(item)
        elif timeout == 0:
            raise Full
        else:
            try:
                await asyncio.wait_for(self.queue.put(item), timeout)
            except asyncio.TimeoutError:
                raise Full from None

    async def get(self, timeout: Optional[float] = None):
        if not self.queue.empty():
            return self.queue.get_nowait()
        if timeout == 0:
            raise Empty
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            raise Empty from None

    def put_nowait_batch(self, items: list) -> None:
        room = self.maxsize - self.queue.qsize()
        if self.maxsize > 0 and len(items) > room:
            raise Full(f"Cannot add {len(items)} items to the queue: it holds "
                       f"{self.queue.qsize()} of maxsize {self.maxsize}")
        for item in items:
            self.queue.put_nowait(item)

    def get_nowait_batch(self, num_items: int) -> list:
        if num_items > self.queue.qsize():
            raise Empty(f"Cannot get {num_items} items: the queue holds "
                        f"{self.queue.qsize()}")
        return [self.queue.get_nowait() for _ in range(num_items)]


_queue_actor_class = None


def _queue_actor():
    """The actor class of _QueueActor, made at the first Queue (at import time
    shmray._api may still be loading: it imports shmray.util)."""
    global _queue_actor_class
    if _queue_actor_class is None:
        _queue_actor_class = _api.remote(_QueueActor)
    return _queue_actor_class
