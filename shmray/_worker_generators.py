"""Generator tasks in a worker: a streaming generator's items sent as they are
yielded, a dynamic one's put and listed, and next() of a generator consumed here.

    fn(...) yields x ─► stored (inline, or a segment of its own) ─► GenItem(i) ─► driver
      K items not consumed (backpressure K) ─► GenPause rpc ─► goes on once one is
    the generator returns ─► the task's Done (its one result: None); raises ─► the
      task's error, which the caller reads after the items yielded before it

Item `i` has the same id everywhere (stream_item_id), so nothing but its index
travels back.
"""
from __future__ import annotations

from . import _serialization as ser
from ._generator import DynamicObjectRefGenerator
from ._object_ref import ObjectRef, collect_refs, new_base_id, stream_item_id
from ._protocol import DYNAMIC, GEN_NEXT, GEN_PAUSE, GenNext, GenPause
from ._worker_tasks import store_value
from .exceptions import GetTimeoutError


def run(rt, result, num_returns, task_id, backpressure, name):
    """Stream (or, dynamic, list) the items of `result`, what a generator function
    returned; returns the task's one result."""
    items = _iterator(result, name)
    if num_returns == DYNAMIC:
        refs = []
        try:
            for value in items:
                refs.append(rt.put(value))
        except Exception as e:  # the values before it stay readable (as in Ray)
            refs.append(_error_ref(rt, name, e))
        return DynamicObjectRefGenerator(refs)
    index = consumed = 0
    for value in items:
        _send_item(rt, task_id, index, value)
        index += 1
        if index - consumed >= backpressure > 0:
            consumed = _pause(rt, task_id, index)
            if consumed < 0:  # the caller dropped the generator
                items.close()
                break
    return None


async def run_async(rt, result, num_returns, task_id, backpressure, name):
    """run() for an async generator (an async actor's method), on its event loop."""
    if not hasattr(result, "__anext__"):
        return run(rt, result, num_returns, task_id, backpressure, name)
    if num_returns == DYNAMIC:
        refs = []
        try:
            async for value in result:
                refs.append(rt.put(value))
        except Exception as e:
            refs.append(_error_ref(rt, name, e))
        return DynamicObjectRefGenerator(refs)
    index = consumed = 0
    async for value in result:
        _send_item(rt, task_id, index, value)
        index += 1
        if index - consumed >= backpressure > 0:  # (waits on a thread: the loop runs on)
            import asyncio  # (an async actor's worker has it already)

            consumed = await asyncio.get_running_loop().run_in_executor(
                None, _pause, rt, task_id, index)
            if consumed < 0:
                await result.aclose()
                break
    return None


def first_n(rt, items, num_returns, task_id, name):
    """pack_results for a generator function called with num_returns=N: its first N
    values, each stored as it comes; if it raises after k < N, the other N - k results
    are its error (as in Ray). Fewer values and no error: ValueError, for all."""
    stored, inners, exported = [], [], []
    try:
        for value in items:
            if len(stored) == num_returns:  # more than asked for: not read (as in Ray)
                break
            s, inner, gpu = store_value(rt, value, task_id + len(stored))
            stored.append(s)
            inners.append(inner or None)
            if gpu:
                exported.append(len(stored) - 1)
    except Exception as e:
        error, inner = collect_refs(ser.task_error_stored, name, e, 1)
        while len(stored) < num_returns:
            stored.append(error)
            inners.append(inner or None)
    items.close()
    if len(stored) < num_returns:
        raise ValueError(f"Task returned {len(stored)} objects, but num_returns={num_returns}.")
    return tuple(stored), (tuple(inners) if any(inners) else None), (tuple(exported) or None)


def _iterator(result, name):
    if hasattr(result, "__next__") and hasattr(result, "close"):
        return result
    raise TypeError(f"{name} was called with num_returns=\"streaming\" or \"dynamic\", so it "
                    f"must be a generator function, but it returned a "
                    f"{type(result).__name__}")


def _send_item(rt, task_id, index, value):
    stored, inner, gpu = store_value(rt, value, stream_item_id(task_id, index))
    rt.send_item(task_id, index, stored, inner, gpu)


def _pause(rt, task_id, produced) -> int:
    """Wait until the caller has consumed enough; the number it has consumed, or -1
    if it dropped the generator."""
    return rt._rpc(lambda req_id: GenPause(GEN_PAUSE, req_id, task_id, produced))


def _error_ref(rt, name, e) -> ObjectRef:
    """A ref whose get raises `e` as this task's error (a dynamic generator's last)."""
    stored, inner = collect_refs(ser.task_error_stored, name, e, 1)
    return rt.put_stored(new_base_id(), stored, inner, False)


def next_item(rt, task_id, index, timeout):
    """WorkerRuntime.generator_next: item `index` of a generator this task consumes
    (its ref, granted by the driver), or None at its end."""
    reply = rt._rpc(lambda req_id: GenNext(GEN_NEXT, req_id, task_id, index, timeout))
    if reply is None:
        raise GetTimeoutError("Timed out waiting for the generator's next item.")
    if not reply:
        return None
    oid = stream_item_id(task_id, index)
    rt.granted_by_reply(oid)
    return ObjectRef(oid)
