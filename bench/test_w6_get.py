"""W6: get of a stored array, in the driver and inside a task (µs), at 100 MB and at 1 MB:
a zero-copy get maps the array instead of copying it, so its cost should not grow with size."""
import statistics
from multiprocessing import shared_memory

import numpy as np
import pytest

import _results
from _tasks import timed_get, timed_shm_get

SHAPES = {"100MB": (1_250, 10_000), "1MB": (125, 1_000)}   # float64
ROWS = {"100MB": ("W6d100", "W6t100"), "1MB": ("W6d1", "W6t1")}
DRIVER_ROUNDS = 50
TASK_ROUNDS = 30
GROUP = "W6 get"


@pytest.fixture(params=list(SHAPES))
def size(request):
    return request.param


def in_task(benchmark, call):
    """Time `call` (a task that returns the seconds its get took, measured in the worker) with
    the benchmark fixture, and return the median of what the worker measured, in µs."""
    inside = []
    benchmark.pedantic(lambda: inside.append(call()), rounds=TASK_ROUNDS, iterations=1,
                       warmup_rounds=3)
    return statistics.median(inside[3:]) * 1e6


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", ["shmray", "ray"], indirect=True)
def test_get_in_driver(benchmark, engine, size):
    ref = engine.put(np.ones(SHAPES[size]))

    def get_once():
        engine.get(ref)  # and drop it again, inside the clock: a get-and-use cycle

    benchmark.pedantic(get_once, rounds=DRIVER_ROUNDS, iterations=1, warmup_rounds=3)
    _results.record(ROWS[size][0], engine.name, _results.median(benchmark) * 1e6)


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", ["shmray", "ray"], indirect=True)
def test_get_in_task(benchmark, engine, size):
    box = [[engine.put(np.ones(SHAPES[size]))]]  # two levels deep: see _tasks.timed_get
    us = in_task(benchmark, lambda: engine.call(timed_get, engine.module_name, box))
    _results.record(ROWS[size][1], engine.name, us)


@pytest.fixture
def segment(size):
    """The pool peers' stored array: a shared-memory segment holding it."""
    shape = SHAPES[size]
    array = np.ones(shape)
    shm = shared_memory.SharedMemory(create=True, size=array.nbytes)
    np.ndarray(shape, array.dtype, buffer=shm.buf)[:] = array
    yield shm.name, shape, array.dtype.str
    shm.close()
    shm.unlink()


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", ["pool"], indirect=True)
def test_attach_in_driver(benchmark, engine, size, segment):
    """The pool peers' get: attach the segment, view it as an array, detach."""
    benchmark.pedantic(timed_shm_get, segment, rounds=DRIVER_ROUNDS, iterations=1,
                       warmup_rounds=3)
    _results.record(ROWS[size][0], "pool", _results.median(benchmark) * 1e6)


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", ["pool"], indirect=True)
def test_attach_in_task(benchmark, engine, size, segment):
    us = in_task(benchmark, lambda: engine.call(timed_shm_get, *segment))
    _results.record(ROWS[size][1], "pool", us)
