"""ActorPool: work spread over a fixed set of actors, one call per actor at a time
(Ray's ``ray.util.ActorPool``).

    submit(fn, v) ─► an idle actor? fn(actor, v) ─► its ref, numbered in submission order
                 └─ none idle ─► pending, submitted when an actor comes back
    get_next()           ─► the oldest unreturned ref's value (in order)
    get_next_unordered() ─► whichever ref is ready first (``wait``)
    a result taken ─► its actor idle again ─► the oldest pending submit goes to it

``fn(actor, value)`` returns the ref of a call on that actor (or a list of refs, taken
together). An actor whose call raised ``ActorDiedError`` leaves the pool. The pool is
a plain object of the process that made it, not shared: like Ray's, it is not
thread-safe.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, TypeVar, Union

from .. import _api, exceptions
from .._object_ref import ObjectRef
from ._on_cluster import ray_counterpart

V = TypeVar("V")
_TIMED_OUT = "Timed out waiting for result"


class _InFlight(NamedTuple):
    """A submitted call not yet returned: its submission number and its actor."""
    index: int
    actor: Any


class _PendingSubmit(NamedTuple):
    """A submit that waits for an idle actor."""
    fn: Callable
    value: Any


# A call's future as fn returned it: one ref, or a list of refs (kept as a tuple to be
# a dict key; its value is the list of their values).
_Future = Union[ObjectRef, Tuple[ObjectRef, ...]]


class ActorPool:
    """A pool of actors that runs ``fn(actor, value)`` on whichever actor is idle.

        pool = ActorPool([A.remote(), A.remote()])
        list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3]))   # [2, 4, 6]
    """

    def __new__(cls, actors=None):
        ray_pool = ray_counterpart("ray.util", "ActorPool")
        if ray_pool is not None:  # on a Ray cluster: the handles are Ray's
            return ray_pool(actors)
        return super().__new__(cls)

    def __init__(self, actors: list):
        if isinstance(actors, (str, bytes)) or not hasattr(actors, "__iter__"):
            raise TypeError(f"ActorPool expects a list of actor handles, got "
                            f"{type(actors).__name__}")
        self._idle_actors: List[Any] = list(actors)
        self._future_to_actor: Dict[_Future, _InFlight] = {}
        self._index_to_future: Dict[int, _Future] = {}
        self._next_task_index = 0      # the number the next submitted call gets
        self._next_return_index = 0    # the next call get_next() returns
        self._pending_submits: List[_PendingSubmit] = []

    # ------------------------------------------------------------ many values
    def map(self, fn: Callable[[Any, V], Any], values: List[V]):
        """Run ``fn(actor, v)`` for each value; an iterator over the results in the
        order of `values`. Results of earlier submits not yet taken are dropped."""
        self._drop_unreturned(ordered=True)
        for v in values:
            self.submit(fn, v)
        return self._results(self.get_next)

    def map_unordered(self, fn: Callable[[Any, V], Any], values: List[V]):
        """As map(), but the results come as they finish."""
        self._drop_unreturned(ordered=False)
        for v in values:
            self.submit(fn, v)
        return self._results(self.get_next_unordered)

    def _results(self, take):
        while self.has_next():
            yield take()

    def _drop_unreturned(self, ordered: bool):
        """Take (and drop) every result still owed, waiting for none: a new map starts
        from an empty pool. Calls still running are let go, their actors idle again."""
        while self.has_next():
            try:
                if ordered:
                    self.get_next(timeout=0, ignore_if_timedout=True)
                else:
                    self.get_next_unordered(timeout=0, ignore_if_timedout=True)
            except Exception:  # (not ready: skipped; or its error: dropped with it)
                pass

    # ------------------------------------------------------------ one value
    def submit(self, fn: Callable[[Any, V], Any], value: V) -> None:
        """Run ``fn(actor, value)`` on an idle actor now, or once one is free; its
        result comes from get_next() / get_next_unordered()."""
        if not callable(fn):
            raise TypeError(f"ActorPool.submit() expects fn(actor, value) returning an "
                            f"ObjectRef, got {fn!r}")
        if not self._idle_actors:
            self._pending_submits.append(_PendingSubmit(fn, value))
            return
        actor = self._idle_actors.pop()
        try:
            key = _future_key(fn(actor, value))
        except BaseException:
            self._idle_actors.append(actor)  # (fn failed: nothing runs on it for this submit)
            raise
        self._future_to_actor[key] = _InFlight(self._next_task_index, actor)
        self._index_to_future[self._next_task_index] = key
        self._next_task_index += 1

    def has_next(self) -> bool:
        """Whether a submitted call's result has not been returned yet."""
        return bool(self._future_to_actor)

    def get_next(self, timeout: Optional[float] = None, ignore_if_timedout: bool = False):
        """The next result in submission order, waiting up to `timeout` seconds.

        TimeoutError if it is not ready by then; with ignore_if_timedout, that call is
        skipped (its actor back in the pool) before the TimeoutError is raised.
        StopIteration when no result is owed.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after "
                             "get_next_unordered().")
        key = self._index_to_future[self._next_return_index]
        if timeout is not None:
            ready, _ = _api.wait(_refs(key), num_returns=len(_refs(key)), timeout=timeout)
            if len(ready) < len(_refs(key)):
                if not ignore_if_timedout:
                    raise TimeoutError(_TIMED_OUT)
                self._forget(key)
                raise TimeoutError(f"{_TIMED_OUT}. The task {_shown(key)} has been ignored.")
        in_flight = self._forget(key, return_actor=False)
        return self._result_of(key, in_flight.actor)

    def get_next_unordered(self, timeout: Optional[float] = None,
                           ignore_if_timedout: bool = False):
        """Whichever result is ready first, waiting up to `timeout` seconds.

        TimeoutError if none is ready by then; with ignore_if_timedout, the oldest
        call is skipped (its actor back in the pool) before the TimeoutError.
        StopIteration when no result is owed.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        key = self._first_ready(timeout)
        if key is None:
            if not ignore_if_timedout:
                raise TimeoutError(_TIMED_OUT)
            oldest = min(self._future_to_actor, key=lambda k: self._future_to_actor[k].index)
            self._forget(oldest)
            raise TimeoutError(f"{_TIMED_OUT}. The task {_shown(oldest)} has been ignored.")
        in_flight = self._forget(key, return_actor=False)
        return self._result_of(key, in_flight.actor)

    def _first_ready(self, timeout: Optional[float]) -> Optional[_Future]:
        """The future whose refs are all ready first (None at the timeout): one wait on
        every pending ref, again without those found ready, until a future is whole."""
        owner = {ref: key for key in self._future_to_actor for ref in _refs(key)}
        not_ready = {key: len(_refs(key)) for key in self._future_to_actor}
        pending = list(owner)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, pending = _api.wait(pending, num_returns=1, timeout=left)
            if not ready:
                return None
            key = owner[ready[0]]
            not_ready[key] -= 1
            if not_ready[key] == 0:
                return key

    def _forget(self, key: _Future, return_actor: bool = True) -> _InFlight:
        """Drop `key` from the calls owed; with return_actor, its actor is idle again."""
        in_flight = self._future_to_actor.pop(key)
        del self._index_to_future[in_flight.index]
        self._next_return_index = max(self._next_return_index, in_flight.index + 1)
        if return_actor:
            self._return_actor(in_flight.actor)
        return in_flight

    def _result_of(self, key: _Future, actor):
        """The value(s) of `key`; its actor goes back to the pool unless it died."""
        alive = True
        try:
            return _api.get(key if isinstance(key, ObjectRef) else list(key))
        except exceptions.ActorDiedError:
            alive = False
            raise
        finally:
            self._return_actor(actor, alive)

    def _return_actor(self, actor, alive: bool = True):
        # A dead actor stays out: submit() would keep choosing it and nothing would run.
        if alive:
            self._idle_actors.append(actor)
        if self._pending_submits and self._idle_actors:
            self.submit(*self._pending_submits.pop(0))

    # ------------------------------------------------------------ the actors
    def has_free(self) -> bool:
        """Whether an actor is idle and no submit is waiting for one."""
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self):
        """Take an idle actor out of the pool; None if none is free."""
        return self._idle_actors.pop() if self.has_free() else None

    def push(self, actor) -> None:
        """Add `actor` to the pool (idle; a waiting submit goes to it at once)."""
        busy = [in_flight.actor for in_flight in self._future_to_actor.values()]
        if actor in self._idle_actors or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)


def _future_key(future) -> _Future:
    """fn's return value as a dict key; TypeError naming it if it is not ref(s)."""
    if isinstance(future, ObjectRef):
        return future
    if isinstance(future, list) and future and all(isinstance(r, ObjectRef) for r in future):
        return tuple(future)
    raise TypeError(f"ActorPool's fn(actor, value) must return an ObjectRef (e.g. "
                    f"actor.method.remote(value)) or a list of them, got {future!r}")


def _refs(key: _Future) -> list:
    return [key] if isinstance(key, ObjectRef) else list(key)


def _shown(key: _Future):
    return key if isinstance(key, ObjectRef) else list(key)
