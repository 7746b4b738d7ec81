"""Results in the order they finish: ``as_completed`` over refs already made and
``map_unordered`` over a remote function and an iterable of items (Ray's
``ray.util.as_completed`` / ``ray.util.map_unordered``, from ``ray.util.helpers``).

    refs ─► wait(num_returns=chunk_size) ─► the ready batch (values, or refs) ─► yielded
       └── the rest ─► wait again, until none is left
    map_unordered: fn.remote(item) per item; at backpressure_size refs in flight, one
       batch is waited for and yielded before the next item is submitted

Within a batch the refs come in the order they were given (``wait``'s order), not
necessarily in the order they finished.
"""
from __future__ import annotations

import numbers
from typing import Any, Iterable, Iterator, Optional, Sequence

from .. import _api
from ._on_cluster import ray_counterpart

DEFAULT_CHUNK_SIZE = 10        # refs waited for at once (Ray's default)
DEFAULT_BACKPRESSURE_SIZE = 100  # tasks in flight before map_unordered waits (Ray's default)


def as_completed(refs: Sequence, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 yield_obj_refs: bool = False, **kwargs) -> Iterator[Any]:
    """Yield the results of `refs` as batches of `chunk_size` of them become ready.

    yield_obj_refs: yield the ready refs themselves instead of their values.
    kwargs: passed on to ``wait`` (``timeout``, ``fetch_local``); each wait may then
    return fewer refs, and the iteration goes on until every ref was yielded.
    """
    ray_helper = ray_counterpart("ray.util", "as_completed")
    if ray_helper is not None:
        return ray_helper(refs, chunk_size=chunk_size, yield_obj_refs=yield_obj_refs, **kwargs)
    _check_chunk_size(chunk_size)
    _check_wait_kwargs(kwargs)
    if isinstance(refs, (str, bytes)) or not isinstance(refs, Iterable):
        raise TypeError(f"as_completed() expects a list of ObjectRefs, got "
                        f"{type(refs).__name__}")
    return _completed(list(refs), chunk_size, yield_obj_refs, kwargs)


def map_unordered(fn, items: Iterable[Any], *,
                  backpressure_size: Optional[int] = DEFAULT_BACKPRESSURE_SIZE,
                  chunk_size: int = DEFAULT_CHUNK_SIZE, yield_obj_refs: bool = False,
                  **kwargs) -> Iterator[Any]:
    """``fn.remote(item)`` for each item, yielding the results as they finish.

    backpressure_size: at most this many tasks in flight; at the limit one batch of
    `chunk_size` results is waited for (and yielded) before the next item is
    submitted. None: no limit, every item submitted as the iteration reaches it.
    """
    ray_helper = ray_counterpart("ray.util", "map_unordered")
    if ray_helper is not None:
        return ray_helper(fn, items, backpressure_size=backpressure_size,
                          chunk_size=chunk_size, yield_obj_refs=yield_obj_refs, **kwargs)
    if not callable(getattr(fn, "remote", None)):
        raise TypeError(f"map_unordered() expects a remote function (decorated with "
                        f"@shmray.remote) as `fn`, got {fn!r}")
    if backpressure_size is not None and (
            isinstance(backpressure_size, bool) or not isinstance(backpressure_size, numbers.Real)
            or backpressure_size <= 0):
        raise ValueError(f"backpressure_size must be positive (or None for no limit), got "
                         f"{backpressure_size!r}")
    _check_chunk_size(chunk_size)
    _check_wait_kwargs(kwargs)
    if not isinstance(items, Iterable):
        raise TypeError(f"map_unordered() expects an iterable of items, got "
                        f"{type(items).__name__}")
    limit = float("inf") if backpressure_size is None else backpressure_size
    return _mapped(fn, items, limit, chunk_size, yield_obj_refs, kwargs)


# The generators below start when first iterated; the checks above run at the call.
def _completed(refs: list, chunk_size, yield_obj_refs, wait_kwargs):
    while refs:
        ready, refs = _next_batch(refs, chunk_size, yield_obj_refs, wait_kwargs)
        yield from ready


def _mapped(fn, items, limit, chunk_size, yield_obj_refs, wait_kwargs):
    in_flight = []
    for item in items:
        in_flight.append(fn.remote(item))
        if len(in_flight) >= limit:
            ready, in_flight = _next_batch(in_flight, chunk_size, yield_obj_refs, wait_kwargs)
            yield from ready
    yield from _completed(in_flight, chunk_size, yield_obj_refs, wait_kwargs)


def _next_batch(refs: list, chunk_size, yield_obj_refs, wait_kwargs):
    """(the next ready batch, as values or refs; the refs still pending)."""
    ready, pending = _api.wait(refs, num_returns=min(chunk_size, len(refs)), **wait_kwargs)
    return (ready if yield_obj_refs else _api.get(ready)), pending


def _check_chunk_size(chunk_size):
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be an int >= 1, got {chunk_size!r}")


def _check_wait_kwargs(kwargs):
    if "num_returns" in kwargs:
        raise ValueError("Use the `chunk_size` argument instead of `num_returns`.")
    unknown = set(kwargs) - {"timeout", "fetch_local"}
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}: the extra keywords "
                        f"are passed to wait(), which takes `timeout` and `fetch_local`")
