"""The functions every engine runs. Plain module-level functions, so that every engine ships
them the same way: by reference (multiprocessing pickles them by name; shmray, Ray and loky
find this module on the driver's sys.path). Also how a test runs and times the W1/W2 bodies
that bench/ shares with the CLI (shmray._workloads) on an engine of _peers."""
from __future__ import annotations

import importlib
import sys
import time

import numpy as np


def no_op(*_):
    """W1/W2: all that is measured is the framework. Takes and ignores an item for Pool.map.
    Not shmray._workloads.no_op: a worker of loky or Ray that unpickled that one would import
    shmray, and W8 would count shmray in the peers' memory."""


def small_tasks(engine):
    """The W1/W2 bodies (shmray._workloads.SmallTasks) on a running engine of _peers, driven
    through what the adapter wraps: the module (shmray, Ray), the Pool or the executor."""
    from shmray import _workloads  # here, not at the top: shmray must not load in the peers'
    # workers, which import this module to find the task functions (see no_op)
    handle = next(getattr(engine, name) for name in ("mod", "pool", "executor")
                  if hasattr(engine, name))
    return _workloads.small_tasks(handle, no_op)


def time_batches(benchmark, batch, n, warm_up, rounds):
    """pytest-benchmark's counterpart of shmray._workloads.median_seconds: batch(warm_up)
    untimed (it ships the function to every worker), then `rounds` rounds of one batch(n).
    Returns what the last batch returned."""
    batch(warm_up)
    return benchmark.pedantic(batch, (n,), rounds=rounds, iterations=1)


def small_items(n):
    """W14: a generator task yielding n small items (what is measured is the streaming)."""
    for i in range(n):
        yield i


def large_items(n, nbytes):
    """W15: a generator task yielding n arrays of `nbytes` each (made once: the stream is
    measured, not the making)."""
    block = np.ones(nbytes // 8)
    for _ in range(n):
        yield block


def puts_in_a_task(module_name, n, nbytes):
    """W15's comparison: seconds a task takes to put what large_items yields, each ref
    dropped after its put (the store's write path in a worker, without the stream)."""
    engine = importlib.import_module(module_name)
    block = np.ones(nbytes // 8)
    start = time.perf_counter()
    for _ in range(n):
        engine.put(block)
    return time.perf_counter() - start


def busy(loops):
    """W3: CPU work of a fixed size. A loop count, not a deadline: a worker that loses its core
    to the driver takes longer, and that lost time must show up in the efficiency."""
    for _ in range(loops):
        pass


def loops_per_ms() -> float:
    """How many busy() loops take one millisecond on this machine (the best of 5 tries)."""
    n = 200_000
    best = min(_timed(busy, n) for _ in range(5))
    return n / (best * 1e3)


def _timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def first_element(array, i):
    """W4: read one element of an array that arrived as an argument (or was resolved from a
    ref by shmray/Ray)."""
    return float(array[i, 0])


def warm_numpy():
    """W8 warm-up: makes every worker import numpy, as real tasks do."""
    return float(np.zeros(4).sum())


# -- multiprocessing.shared_memory, the way the pool peers share a large array --------------

def attach(name):
    """Open an existing segment without the resource tracker: before Python 3.13 attaching
    registers the segment, and a worker's tracker would unlink it when the worker exits
    (bpo-39959). `track=False` is the 3.13 spelling of the same."""
    from multiprocessing import resource_tracker, shared_memory
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name, track=False)
    register = resource_tracker.register
    resource_tracker.register = lambda *args: None
    try:
        return shared_memory.SharedMemory(name)
    finally:
        resource_tracker.register = register


def shm_element(name, shape, dtype, i):
    """W4 via shared memory: attach, read one element, detach."""
    shm = attach(name)
    value = float(np.ndarray(shape, dtype, buffer=shm.buf)[i, 0])  # view dropped before close
    shm.close()
    return value


def timed_shm_get(name, shape, dtype):
    """W6 for the pool peers: seconds to attach a segment and view it as an array (their 'get'),
    measured inside the worker."""
    start = time.perf_counter()
    shm = attach(name)
    array = np.ndarray(shape, dtype, buffer=shm.buf)
    elapsed = time.perf_counter() - start
    del array
    shm.close()
    return elapsed


def timed_get(module_name, box):
    """W6 for shmray/Ray: seconds `get` takes inside a task. The ref travels two levels deep
    (`[[ref]]`) because shmray resolves refs one level inside lists before the task runs, which
    would leave nothing for this get to do; Ray resolves neither level."""
    engine = importlib.import_module(module_name)
    ref = box[0][0]
    start = time.perf_counter()
    array = engine.get(ref)
    elapsed = time.perf_counter() - start
    del array
    return elapsed
