"""W4: fan-out of a large array. One 100 MB float64 array, 100 tasks each read one element;
timed from the array in the driver to the 100 results back (ms)."""

import numpy as np
import pytest

import _results
from _shared_arrays import SharedArrays
from _tasks import first_element, shm_element

SHAPE = (1_250, 10_000)   # 12.5 M float64 = 100 MB
READERS = 100
ROUNDS = {"ray": 3}
DEFAULT_ROUNDS = 5
POOL_PEERS = ["pool", "ppe", "loky"]
GROUP = "W4 fan-out 100 MB"


def big_array():
    # Made per test and dropped after it: the driver must not hold 100 MB when a later
    # engine forks its workers from it.
    return np.arange(np.prod(SHAPE), dtype=np.float64).reshape(SHAPE)


def warm_up(engine):
    engine.run_all(first_element, [(np.zeros((1, 1)), 0)] * 4)


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", ["shmray", "ray"], indirect=True)
def test_put_then_refs(benchmark, engine):
    """Put once, then every task gets the ref: each worker maps the array, none copies it."""
    array = big_array()
    held = []

    def one_round():
        ref = engine.put(array)
        held.append(ref)  # released by the setup of the next round, outside the clock
        return engine.run_all(first_element, [(ref, i) for i in range(READERS)])

    warm_up(engine)
    values = benchmark.pedantic(one_round, setup=held.clear,
                                rounds=ROUNDS.get(engine.name, DEFAULT_ROUNDS), iterations=1,
                                warmup_rounds=1)
    held.clear()
    assert values == array[:READERS, 0].tolist()
    ms = _results.median(benchmark) * 1e3
    _results.record("W4arg", engine.name, ms)
    _results.record("W4shm", engine.name, ms)


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", POOL_PEERS, indirect=True)
def test_array_as_argument(benchmark, engine):
    """What a pool user writes first: the array is pickled into every task. One round: each
    task costs ~0.25 s of pickling and piping 100 MB, ~25 s in all."""
    array = big_array()
    warm_up(engine)
    values = benchmark.pedantic(engine.run_all,
                                (first_element, [(array, i) for i in range(READERS)]),
                                rounds=1, iterations=1)
    assert values == array[:READERS, 0].tolist()
    _results.record("W4arg", engine.name, _results.median(benchmark) * 1e3)


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", POOL_PEERS, indirect=True)
def test_shared_memory(benchmark, engine):
    """What a careful pool user writes: copy into multiprocessing.shared_memory once, pass the
    name, every task attaches. The copy counts, as shmray's put does."""
    array = big_array()
    segments = SharedArrays()

    def one_round():
        shm = segments.copy_in(array)
        return engine.run_all(shm_element, [(shm.name, SHAPE, array.dtype.str, i)
                                            for i in range(READERS)])

    values = benchmark.pedantic(one_round, setup=segments.free, rounds=DEFAULT_ROUNDS,
                                iterations=1, warmup_rounds=1)
    segments.free()
    assert values == array[:READERS, 0].tolist()
    _results.record("W4shm", engine.name, _results.median(benchmark) * 1e3)
