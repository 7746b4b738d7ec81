"""W16: Pool.map, the stdlib's API, on shmray's shmray.util.multiprocessing.Pool, on the
stdlib's multiprocessing.Pool itself and on Ray's ray.util.multiprocessing.Pool, each of
2 processes, default chunksize (4 chunks per process).

small: a no-op over a list of 100,000 ints (items/s). big: 1,000 distinct 1 MB arrays,
each read at one element (items/s): shmray writes each chunk's arrays into one shared-
memory segment (pickle 5, out of band) that the worker maps; the stdlib pickles each
through its pipes; Ray puts them in its object store."""
import numpy as np
import pytest

import _results
from _pool_peers import array_head, pool_of
from _tasks import no_op

SMALL_ITEMS = 100_000
BIG_ITEMS, BIG_BYTES = 1_000, 1 << 20
ROUNDS = {"small": {"ray": 3}, "big": {"pool": 3, "ray": 2}}
DEFAULT_ROUNDS = {"small": 10, "big": 5}
ENGINES = ["shmray", "pool", "ray"]


@pytest.mark.benchmark(group="W16 Pool.map, 100,000 items")
@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_map_small_items(benchmark, engine):
    items = list(range(SMALL_ITEMS))
    with pool_of(engine) as pool:
        pool.map(no_op, items)  # untimed: the first map's chunks warm every worker
        results = benchmark.pedantic(pool.map, (no_op, items), iterations=1,
                                     rounds=ROUNDS["small"].get(engine.name,
                                                                DEFAULT_ROUNDS["small"]))
    assert len(results) == SMALL_ITEMS
    _results.record("W16small", engine.name, SMALL_ITEMS / _results.median(benchmark))


@pytest.mark.benchmark(group="W16 Pool.map, 1,000 x 1 MB")
@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_map_big_items(benchmark, engine):
    # Made per test, dropped after it (as W4's): no engine forks from a driver holding it.
    arrays = [np.full(BIG_BYTES // 8, float(i)) for i in range(BIG_ITEMS)]
    with pool_of(engine) as pool:
        pool.map(array_head, arrays[:100])
        results = benchmark.pedantic(pool.map, (array_head, arrays), iterations=1,
                                     rounds=ROUNDS["big"].get(engine.name,
                                                              DEFAULT_ROUNDS["big"]))
    assert results == [float(i) for i in range(BIG_ITEMS)]
    _results.record("W16big", engine.name, BIG_ITEMS / _results.median(benchmark))
