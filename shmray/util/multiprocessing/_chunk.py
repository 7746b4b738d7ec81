"""What a pool sends to a worker and what runs there: a Chunk of calls of one function.

    driver: Chunk(mode, items) + the large arrays' refs ──task or actor call──►
    worker: run_chunk(func, chunk, *shared) ──► map, starmap: [results] or Failure (the
                                                  first error fails the chunk)
                                                apply: (seconds, [(ok, result or Failure)])
                                                  (each call of its own apply_async)

One task (or actor call) runs a whole chunk, as the stdlib pool's workers run one
chunk per task. The worker imports this module only: the pool's thread, results and
registries stay in the driver.
"""
from __future__ import annotations

import itertools
import os
import pickle
import time
import traceback

from ..._serialization import dumps  # (plain pickle, else cloudpickle: as results travel)

# How a chunk's items are calls: func(item), func(*item), or item (f, args, kwargs): f(*args, **kwargs)
MAP, STARMAP, APPLY = 0, 1, 2
_THIS_FILE = os.path.abspath(__file__)


class Shared:
    """Stands, inside a chunk's items, for the `index`-th large array passed beside the
    chunk as an ObjectRef: the array was put in the object store once, and the worker
    maps it instead of unpickling a copy."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index

    def __reduce__(self):
        return (Shared, (self.index,))


class Chunk:
    """The calls one task runs. Not a list: shmray resolves refs one level inside list
    arguments (DESIGN.md decision 2) and would scan every item for them; a pool passes
    the items as they are, refs included, as the stdlib pool does."""

    __slots__ = ("mode", "items", "has_shared")

    def __init__(self, mode: int, items: list, has_shared: bool = False):
        self.mode = mode
        self.items = items
        self.has_shared = has_shared

    def __reduce__(self):
        return (Chunk, (self.mode, self.items, self.has_shared))


class Failure:
    """A chunk whose function raised: the exception and the worker's traceback text
    (the driver raises the exception with that text as its cause, as the stdlib does).
    An exception that cannot travel is described instead (`unpicklable`: why)."""

    __slots__ = ("error", "traceback", "unpicklable", "description")

    def __init__(self, error, traceback_text: str, unpicklable: str = "",
                 description: str = ""):
        self.error = error
        self.traceback = traceback_text
        self.unpicklable = unpicklable
        self.description = description

    def __reduce__(self):
        return (Failure, (self.error, self.traceback, self.unpicklable, self.description))


def run_chunk(func, chunk: Chunk, *shared):
    """Run every call of `chunk` (see the module's diagram for what comes back)."""
    items = _restore(chunk.mode, chunk.items, shared) if chunk.has_shared else chunk.items
    if chunk.mode == APPLY:
        return _run_calls(items)
    try:
        if chunk.mode == MAP:
            return list(map(func, items))
        return list(itertools.starmap(func, items))
    except Exception as e:
        return _failure(e)


def _run_calls(items):
    """apply_async calls, batched: each succeeds or fails on its own, its result that
    cannot travel included; the time they took tells the pool how many to batch."""
    start = time.perf_counter()
    outcomes = []
    for f, args, kwargs in items:
        try:
            value = f(*args, **kwargs)
        except Exception as e:
            outcomes.append((False, _failure(e)))
            continue
        try:  # (out of band: an array's bytes are not copied by this check)
            dumps(value, [])
        except Exception as e:
            outcomes.append((False, Failure(None, "", f"{type(e).__name__}: {e}", repr(value))))
            continue
        outcomes.append((True, value))
    return time.perf_counter() - start, outcomes


def _restore(mode, items, shared):
    """The items with each Shared placeholder replaced by its array (top level of an
    item, of a starmap tuple, or of an apply's args and kwargs, where the pool put it)."""
    def value(x):
        return shared[x.index] if type(x) is Shared else x

    if mode == MAP:
        return [value(x) for x in items]
    if mode == STARMAP:
        return [tuple(value(x) for x in item) for item in items]
    return [(f, tuple(value(x) for x in args), {k: value(v) for k, v in kwargs.items()})
            for f, args, kwargs in items]


def _failure(error: Exception) -> Failure:
    # The traceback starts at the user's code, below this module's own frames.
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None and \
            os.path.abspath(tb.tb_frame.f_code.co_filename) == _THIS_FILE:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(error), error, tb))
    text = f'\n"""\n{text}"""'
    error.__traceback__ = None  # (frames do not travel; the text does)
    try:
        # Checked here, where the worker can still say what it was: an exception that
        # does not survive a round trip (one whose __init__ wants other arguments than
        # its args) would otherwise fail in the driver, far from its cause.
        pickle.loads(dumps(error))
    except Exception as why:
        return Failure(None, text, f"{type(why).__name__}: {why}", repr(error))
    return Failure(error, text)


class PoolWorker:
    """One process slot of a pool with an initializer or maxtasksperchild: an actor that
    runs the initializer once, then chunks (Ray's PoolActor)."""

    def __init__(self, initializer=None, initargs=()):
        if initializer is not None:
            initializer(*initargs)

    def run(self, func, chunk: Chunk, *shared):
        return run_chunk(func, chunk, *shared)
