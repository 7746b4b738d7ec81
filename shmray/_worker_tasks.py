"""Running one task in a worker: its arguments, its function, its results.

    Task record ─► arguments (zero-copy for shm) ─► fn(*args) ─► results stored ─► Done

Results small enough travel inline in the Done record; large ones go into a segment
of their own (mapped by readers); an exception becomes the task's stored error.
"""
from __future__ import annotations

import os
import sys
import time

from . import _gpu, _ring, _serialization as ser, _shm
from ._crecords import pack_done
from ._object_ref import _collector, collect_refs
from ._protocol import ERROR, SHM, done_record
from .exceptions import ObjectStoreFullError, RayTaskError, TaskCancelledError

_NO_ARGS_PICKLE = ser.NO_ARGS[1]
_NONE_RESULT = (ser.NONE,)
_NONE_OUTCOME = (_NONE_RESULT, None, None, None, False)  # _execute's for a None result
_monotonic_ns = time.monotonic_ns
in_fork_child = False  # True in a process forked inside a task (see _worker._forked_in_task)


def run_task(rt, task_id, fn_id, num_returns, args_stored, dep_values, lent, request, helping,
             attempt, retry_exceptions, backpressure):
    """Run a task (the fields of its Task record) and send its Done (rt: the
    WorkerRuntime)."""
    fn, name = rt.fns[fn_id]
    # A help task runs inside another: restore what the outer one had.
    outer = rt.current_name, rt.current_task_id, rt.lent, rt.current_request
    rt.current_name, rt.current_task_id, rt.lent = name, task_id, lent
    rt.current_request = request
    status = rt.status
    under = status.save() if outer[1] is not None else None
    start = _monotonic_ns()
    status.begin(task_id, fn_id, start)
    error = "WorkerExit"  # what the record says if the task ends the process
    try:
        outcome, inner, gpu, error, retryable = _execute(
            rt, fn, name, task_id, num_returns, args_stored, dep_values, retry_exceptions,
            backpressure)
    finally:
        if in_fork_child:  # (SystemExit in a child forked by the task) no status words
            _end_fork_child(1)
        end = _monotonic_ns()
        rt.current_name, rt.current_task_id, rt.lent, rt.current_request = outer
        if under is None:
            status.end(task_id, fn_id, start, end, attempt, error)
        else:
            status.restore(under, task_id, fn_id, start, end, attempt, error)
    # The arguments and the result are gone by now: the refs among them that
    # nothing here holds any more are released right after the Done.
    # A small inline result, nothing else to say: the compact form, unpickled (_protocol)
    data = pack_done(task_id, outcome, start, end, inner, gpu, retryable,
                     rt.results.max_message)
    if data is None:
        done = done_record(task_id, outcome, start, end, inner, gpu, retryable)
        try:
            data = _ring.encode(done, rt.results, rt.spill_prefix)
        except ObjectStoreFullError as e:  # too large for the ring, and /dev/shm is full
            if outcome and outcome[0] != ERROR:  # results nobody will be told of
                for stored in outcome:
                    if stored[0] == SHM:
                        _shm.unlink(stored[1])
            data = _ring.encode(done_record(task_id, ser.task_error_stored(name, e), start,
                                            end, None, None, False), rt.results, rt.spill_prefix)
    if outer[1] is not None:  # a help task: the task under it may be cancelled
        rt.send(data)
        return
    # No cancel can interrupt this (on_sigint acts on the running task only, and
    # none runs now): no deferring of interrupts, the per-task path.
    rt.send_done(data)


def _execute(rt, fn, name, task_id, num_returns, args_stored, dep_values, retry_exceptions,
             backpressure=-1):
    """Run one task; returns (its stored results, per result the ids of the refs
    inside it or None, the indexes of results holding GPU arrays or None, None, False),
    or for an error (the stored error, the refs inside it, None, its type's name,
    whether the task's retry_exceptions name it)."""
    try:
        if rt.cancel_posted():
            if rt.is_cancelled(task_id):
                raise KeyboardInterrupt  # cancelled before it started: never runs
        if isinstance(fn, Exception):
            raise fn
        if args_stored[1] == _NO_ARGS_PICKLE:  # f.remote(): nothing to unpickle
            result = fn()
            if result is None and num_returns == 1 and not in_fork_child:
                return _NONE_OUTCOME  # (pack_results' first case, the per-task path)
        else:
            args, kwargs = call_arguments(args_stored, dep_values)
            result = fn(*args, **kwargs)
        if num_returns < 0:  # a generator: its items streamed or listed, then one result
            from . import _worker_generators

            result = _worker_generators.run(rt, result, num_returns, task_id, backpressure,
                                            name)
            num_returns = 1
        elif num_returns > 1 and type(result).__name__ == "generator":
            from . import _worker_generators  # (its values one by one; an error: the rest)

            return (*_worker_generators.first_n(rt, result, num_returns, task_id, name),
                    None, False)
        if in_fork_child:  # the child of an os.fork() in the task came back here
            _end_fork_child(0)
        return (*pack_results(rt, result, num_returns, task_id), None, False)
    except Exception as e:  # refs inside the exception: held by the stored error
        if in_fork_child:
            _end_fork_child(1)
        return failed(name, e, retry_exceptions)
    except KeyboardInterrupt:
        if in_fork_child:
            _end_fork_child(1)
        if not rt.is_cancelled(task_id):
            raise  # not ours: a signal from elsewhere ends the worker as before
        return cancelled(task_id)


def call_arguments(args_stored, dep_values):
    """A task's (args, kwargs), the refs resolved for it filled in (zero-copy)."""
    args, kwargs = ser.from_stored(args_stored)
    if dep_values:
        args, kwargs = ser.fill_refs(args, kwargs, [ser.from_stored(v) for v in dep_values])
    return args, kwargs


def failed(name, e, retry_exceptions):
    """_execute's return for a task that raised `e`."""
    stored, inner = collect_refs(ser.task_error_stored, name, e, 1)
    retryable = retry_exceptions is not None and _retryable(e, retry_exceptions)
    return stored, (inner or None), None, type(e).__name__, retryable


def cancelled(task_id):
    """_execute's return for a task that was cancelled."""
    return (ser.error_stored(TaskCancelledError(f"{task_id:032x}")), None, None,
            "TaskCancelledError", False)


def _end_fork_child(code: int):
    """A process forked inside a task left the user's function (returned: `code` 0;
    raised: 1, the traceback printed): it ends here, never sending a Done nor reading
    the task ring, which have one writer and one reader, the worker."""
    if code:
        import traceback  # (here: imported when first needed, as in _serialization)

        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def _retryable(exc, pickled_types: bytes) -> bool:
    """Does the task's retry_exceptions list name `exc` (or, for a RayTaskError from a
    nested get, its cause)? A function of its own: a local naming the exception in
    _execute's frame would keep it, and the refs inside it, alive through its
    traceback."""
    types = _retry_types.get(pickled_types)
    if types is None:
        types = _retry_types[pickled_types] = ser.loads_retry_types(pickled_types)
    return isinstance(exc.cause if isinstance(exc, RayTaskError) else exc, types)


_retry_types = {}  # the pickled retry_exceptions of a task -> the exception types


def pack_results(rt, result, num_returns, task_id):
    """(stored results, per result the refs inside it or None, the indexes of the
    results whose cupy arrays went out as IPC handles (kept here) or None)."""
    if num_returns == 1:
        if result is None:
            return _NONE_RESULT, None, None
        if type(result) in ser.REF_FREE:  # a number, a string: no refs to collect
            return (ser.to_stored(result, rt.new_segment_name),), None, None
        if "cupy" in sys.modules:
            stored, inner, gpu = store_value(rt, result, task_id)
            return (stored,), ((inner,) if inner else None), ((0,) if gpu else None)
        collector = _collector  # collect_refs(), inlined: once per task
        outer = collector.oids
        inner = collector.oids = []
        try:
            stored = ser.to_stored(result, rt.new_segment_name)
        finally:
            collector.oids = outer
        return (stored,), ((list(dict.fromkeys(inner)),) if inner else None), None
    if num_returns == 0:
        return (), None, None
    try:
        items = tuple(result)
    except TypeError:
        raise ValueError(f"Task returned a {type(result).__name__}, but num_returns="
                         f"{num_returns} needs a sequence of that many values") from None
    if len(items) != num_returns:
        raise ValueError(f"Task returned {len(items)} objects, but num_returns={num_returns}.")
    packed = []
    try:
        for i, x in enumerate(items):
            packed.append(store_value(rt, x, task_id + i))
    except BaseException:  # the task fails: what the first results exported goes
        _gpu.release([task_id + i for i in range(len(packed))])
        raise
    inner = tuple(refs for _, refs, _ in packed)
    gpu = tuple(i for i, (_, _, exported) in enumerate(packed) if exported)
    return (tuple(stored for stored, _, _ in packed), (inner if any(inner) else None),
            gpu or None)

def store_value(rt, value, oid):
    """(stored form, ids of the refs inside, whether cupy arrays went out as IPC
    handles) of `value` stored as object `oid`."""
    if "cupy" not in sys.modules:  # no cupy array can be in it
        stored, inner = collect_refs(ser.to_stored, value, rt.new_segment_name)
        return stored, inner, False
    with _gpu.exporting(oid) as gpu:
        stored, inner = collect_refs(ser.to_stored, value, rt.new_segment_name)
    return stored, inner, gpu.exported

# ------------------------------------------------ the API inside a task
