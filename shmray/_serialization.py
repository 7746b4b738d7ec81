"""Values to stored form and back: inline bytes for small values, shm for large ones.

    value ──pickle 5 (cloudpickle when needed)──► meta + out-of-band buffers
         small (≤ INLINE_MAX): (INLINE, meta, buffers)          travels in the ring
         large:                (SHM, name, size, meta_len, layout) written once into
                                a segment, mapped copy-on-write by every reader (each
                                mapping tracked: see _mappings); how its bytes are
                                laid out and written: _segment_writer
         an error:             (ERROR, pickled exception, its cause's type name,
                                "Type: message" of its cause)

Plain pickle is tried first because it is ~8x faster than cloudpickle for small
values; anything it cannot pickle by value correctly (lambdas, local classes,
names defined in ``__main__`` — a worker has a different ``__main__``) goes
through cloudpickle.
"""
from __future__ import annotations

import os
import pickle

from . import _mappings, _segment_writer, _shm
from ._crecords import inline_values, set_none_stored
from ._object_ref import ObjectRef, collect_refs
from ._protocol import ERROR, INLINE, SHM, SPILLED
from .exceptions import RayActorError, RayError, RayTaskError

# Ray's max_direct_call_object_size: values up to this travel inline.
INLINE_MAX = 100 * 1024

NO_ARGS = (INLINE, pickle.dumps(((), {}), protocol=5), ())  # f.remote(): stored once
NONE = (INLINE, pickle.dumps(None, protocol=5), ())         # a task that returns None
set_none_stored(NONE)  # (a compact Done of a None result reads back as this one form)
_MAIN_MARK = b"__main__"


class ArgRef:
    """Placeholder for the i-th resolved dependency inside pickled task arguments."""

    __slots__ = ("i",)

    def __init__(self, i):
        self.i = i

    def __reduce__(self):
        return (ArgRef, (self.i,))


def cloudpickle_dumps(value, protocol=None, buffer_callback=None) -> bytes:
    """cloudpickle.dumps. cloudpickle is imported by the first value that needs it (a
    lambda, a class of ``__main__``...): about a third of what ``import shmray`` took,
    which a program of plain values never pays (see bench/README.md, W7)."""
    import cloudpickle

    return cloudpickle.dumps(value, protocol=protocol, buffer_callback=buffer_callback)


# The picklers dumps uses: pickle's and cloudpickle's, or, while the user has
# serializers registered, ones that consult them (set by _custom_serializers).
_plain_dumps, _cloud_dumps = pickle.dumps, cloudpickle_dumps


def use_picklers(plain_dumps, cloud_dumps):
    """Pickle with these from now on (pickle.dumps's and cloudpickle.dumps's signature)."""
    global _plain_dumps, _cloud_dumps
    _plain_dumps, _cloud_dumps = plain_dumps, cloud_dumps


# What pickling raises for a value it cannot handle. Anything else comes from the
# value's own __reduce__ or __getstate__ and goes to the caller as it is (Ray does
# the same): a task whose result raises Boom while pickled fails with Boom.
_PICKLING_ERRORS = (pickle.PicklingError, TypeError, AttributeError)


def dumps(value, buffers=None) -> bytes:
    """Pickle `value` (protocol 5); out-of-band buffers go to `buffers` if given."""
    cb = None if buffers is None else buffers.append
    try:
        data = _plain_dumps(value, protocol=5, buffer_callback=cb)
        if _MAIN_MARK not in data:
            return data
    except _PICKLING_ERRORS:
        pass  # e.g. a lambda or a local class: cloudpickle can do it by value
    if buffers is not None:
        buffers.clear()
    try:
        return _cloud_dumps(value, protocol=5, buffer_callback=cb)
    except _PICKLING_ERRORS as e:
        raise TypeError(f"Could not serialize {_describe(value)}: {type(e).__name__}: {e}") from e



def _describe(value) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__module__}.{type(value).__qualname__} object {text}"


def to_stored(value, shm_name=None, write_large=None, warm=True):
    """Serialize `value`. Large values go into a segment: written by
    `write_large(meta, buffers)` if given, else into a segment named `shm_name()`
    (by this process's installed SegmentWriter when `warm`, else a new one); with neither,
    they stay inline. `warm` False: a segment its owner unlinks itself (a task's
    arguments), never kept mapped by its writer."""
    buffers = []
    meta = dumps(value, buffers)
    if not buffers and (len(meta) <= INLINE_MAX or (shm_name is None and write_large is None)):
        return (INLINE, meta, ())  # the common case: a small value, no arrays
    size = len(meta) + sum(b.raw().nbytes for b in buffers)
    if size <= INLINE_MAX or (shm_name is None and write_large is None):
        return (INLINE, meta, tuple(b.raw().tobytes() for b in buffers))
    if write_large is not None:
        return write_large(meta, buffers)
    writer = _segment_writer.installed
    if warm and writer is not None:  # (a worker's: into a warm segment)
        return writer.write(shm_name(), meta, buffers)
    return _segment_writer.write_segment(shm_name(), meta, buffers)


def from_stored(stored):
    """The value a stored form holds; arrays come back writable (copy-on-write for shm).
    Each segment mapped is tracked (_mappings) until the last array on it dies."""
    kind = stored[0]
    if kind == INLINE:
        bufs = stored[2]
        if not bufs:
            return pickle.loads(stored[1])
        return pickle.loads(stored[1], buffers=[bytearray(b) for b in bufs])
    if kind == SHM or kind == SPILLED:  # a segment, or a spilled object's file
        _, name, size, meta_len, layout = stored
        mm = _shm.map_private(name, size)
        if kind == SHM:  # (a spilled object's file is never written again)
            _mappings.track(name, mm)
        view = memoryview(mm)
        return pickle.loads(view[:meta_len], buffers=[view[o:o + n] for o, n in layout])
    raise load_error(stored)


def stored_size(stored) -> int:
    if stored[0] == INLINE:
        return len(stored[1]) + sum(len(b) for b in stored[2])
    if stored[0] == SHM or stored[0] == SPILLED:
        return stored[2]
    return len(stored[1])


# ------------------------------------------------------------------ errors

def error_stored(exc: BaseException):
    """Stored form of an error (a RayError the user will see raised by ``get``)."""
    cause = exc.cause if isinstance(exc, RayTaskError) else exc
    # The name and the message travel beside the pickle: the driver reads them (history,
    # status, the state API) without unpickling the user's exception, which would run
    # the user's code.
    message = _message_line(cause)
    try:
        return (ERROR, cloudpickle_dumps(exc, protocol=5), type(cause).__name__, message)
    except Exception as e:
        return (ERROR, pickle.dumps(RayError(f"{type(exc).__name__}: {exc} (unpicklable: {e})")),
                type(cause).__name__, message)


ERROR_MESSAGE_MAX = 1000  # characters of an error's message kept beside its pickle


def _message_line(exc: BaseException) -> str:
    """"Type: message" of an exception, at most ERROR_MESSAGE_MAX characters."""
    try:
        text = str(exc)
    except Exception:  # (a user's __str__ that raises)
        text = ""
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= ERROR_MESSAGE_MAX else line[:ERROR_MESSAGE_MAX - 3] + "..."


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def task_error_stored(function_name: str, exc: BaseException, skip_frames: int = 0):
    """Stored form of an exception raised by the user's task code; the first
    `skip_frames` frames (the worker's own) are left out of the traceback."""
    import traceback  # (here: imported by the first error, not by every start-up)

    if isinstance(exc, RayActorError):  # an actor's death (its __init__ raised): the
        return error_stored(exc)       # error itself, as Ray raises it
    tb_obj = exc.__traceback__
    for _ in range(skip_frames):
        if tb_obj is not None and tb_obj.tb_next is not None:
            tb_obj = tb_obj.tb_next
    # (and shmray's own frames above the user's: a generator's items are pulled by
    # _worker_generators)
    while (tb_obj is not None and tb_obj.tb_next is not None
           and os.path.dirname(tb_obj.tb_frame.f_code.co_filename) == _PACKAGE_DIR):
        tb_obj = tb_obj.tb_next
    tb = _bounded("".join(traceback.format_exception(type(exc), exc, tb_obj)))
    # A nested task's error re-raised here: its cause is the root cause (a chain of
    # RayTaskErrors as deep as the recursion would not even pickle).
    cause = exc.cause if isinstance(exc, RayTaskError) else exc
    try:
        cloudpickle_dumps(cause, protocol=5)
    except Exception as e:
        cause = RayError(f"Exception {type(exc).__module__}.{type(exc).__name__} isn't "
                         f"serializable: {e}.\nOriginal exception details:\n{tb}")
    return error_stored(RayTaskError(function_name, tb, cause))


# A traceback holds the texts of the nested tasks' errors under it: a recursion of
# tasks thousands deep would carry megabytes up every level. The start (this task's
# frames) and the end (the root cause) are kept.
TRACEBACK_HEAD_LINES = 60
TRACEBACK_TAIL_LINES = 140


def _bounded(tb: str) -> str:
    lines = tb.split("\n")
    if len(lines) <= TRACEBACK_HEAD_LINES + TRACEBACK_TAIL_LINES:
        return tb
    left_out = len(lines) - TRACEBACK_HEAD_LINES - TRACEBACK_TAIL_LINES
    return "\n".join(lines[:TRACEBACK_HEAD_LINES]
                     + [f"  ... ({left_out} lines of nested tasks' tracebacks left out) ..."]
                     + lines[-TRACEBACK_TAIL_LINES:])


def load_error(stored) -> BaseException:
    exc = pickle.loads(stored[1])
    if isinstance(exc, RayTaskError):
        return exc.as_instanceof_cause()
    return exc


def loads_retry_types(data: bytes) -> tuple:
    """The exception types of a task's retry_exceptions list, as the Task record
    carries them (cloudpickled: they may be local classes)."""
    return tuple(pickle.loads(data))


def error_name(stored) -> str:
    """The type name of the exception an error's stored form holds (the user's own
    exception's, for a failed task)."""
    return stored[2]


def error_message(stored) -> str:
    """"Type: message" of the exception an error's stored form holds."""
    return stored[3]


# Values of these types hold no ObjectRef: pickling them needs no collecting of refs.
REF_FREE = frozenset({type(None), bool, int, float, complex, str, bytes})


def args_hold_no_refs(args: tuple, kwargs: dict) -> bool:
    for a in args:
        if type(a) not in REF_FREE:
            return False
    for a in kwargs.values():
        if type(a) not in REF_FREE:
            return False
    return True


# ------------------------------------------------------------ task arguments

def pack_args(task_name: str, args: tuple, kwargs: dict, nested: bool, shm_name):
    """A task's arguments as the task record carries them, in the driver and in a
    worker alike: (stored form of (args, kwargs) with the refs to resolve replaced by
    ArgRef, the ids of those refs or None, the ids of the refs pickled inside the
    arguments (the task holds their objects until it ends) or None). TypeError
    naming the argument that cannot be pickled."""
    if not args and not kwargs:
        return NO_ARGS, None, None
    args, kwargs, deps = extract_refs(args, kwargs, nested)
    try:
        if args_hold_no_refs(args, kwargs):
            return to_stored((args, kwargs), shm_name, None, False), deps, None
        stored, held = collect_refs(to_stored, (args, kwargs), shm_name, None, False)
        return stored, deps, held or None
    except TypeError as e:
        raise TypeError(collect_refs(_unpicklable_argument, task_name, args, kwargs,
                                     e)[0]) from None


def _unpicklable_argument(task_name, args, kwargs, error) -> str:
    """Name the argument that could not be pickled (refs pickled meanwhile are
    collected by the caller, and dropped)."""
    for where, value in [(f"argument {i}", a) for i, a in enumerate(args)] + \
                        [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]:
        try:
            dumps(value)
        except TypeError as e:
            return f"Could not serialize {where} of task {task_name}: {e}"
    return f"Could not serialize the arguments of task {task_name}: {error}"


_CONTAINERS = (list, tuple, dict)


def extract_refs(args: tuple, kwargs: dict, nested: bool):
    """Replace the ObjectRefs that will be resolved before the task runs by ArgRef
    placeholders: top-level arguments, and one level inside list/tuple/dict
    arguments when `nested` (DESIGN.md decision 2).

    Returns (args, kwargs, refs): refs is None when there were none (the common,
    fast case) and the arguments are returned untouched.
    """
    for a in (*args, *kwargs.values()):
        t = type(a)
        if t is ObjectRef or (nested and t in _CONTAINERS and _holds_ref(a)):
            break
    else:
        return args, kwargs, None
    refs = []

    def to_placeholder(x):
        if type(x) is ObjectRef:
            refs.append(x._id)
            return ArgRef(len(refs) - 1)
        return x

    return (*_map_args(args, kwargs, to_placeholder, nested), refs)


def _holds_ref(container) -> bool:
    items = container.values() if type(container) is dict else container
    for x in items:
        if type(x) is ObjectRef:
            return True
    return False


def fill_refs(args: tuple, kwargs: dict, values: list):
    """Inverse of extract_refs: put resolved values where the placeholders are."""
    return _map_args(args, kwargs, lambda x: values[x.i] if type(x) is ArgRef else x, True)


def _map_args(args, kwargs, f, nested):
    """Apply f to each argument, and to the items of list/tuple/dict ones if nested."""

    def one(a):
        t = type(a)
        if nested and t in _CONTAINERS:
            if t is list:
                return [f(x) for x in a]
            if t is tuple:
                return tuple(f(x) for x in a)
            return {k: f(v) for k, v in a.items()}
        return f(a)

    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}


def values_of(refs: list, stored: dict) -> list:
    """What ``get`` returns: each ref's value from its stored form (the first error
    raises); items that are not refs are already values and pass through."""
    if type(refs) is list and type(stored) is dict:  # every one small and inline: in C
        out = inline_values(refs, stored, ObjectRef, pickle.loads)
        if out is not None:
            return out
    out = []
    loads = pickle.loads
    for r in refs:
        if type(r) is not ObjectRef:
            out.append(r)
            continue
        s = stored[r._id]
        if s[0] == INLINE and not s[2]:  # a small value: from_stored's first case, inlined
            out.append(loads(s[1]))
        elif s[0] == ERROR:
            raise load_error(s)
        else:
            out.append(from_stored(s))
    return out
