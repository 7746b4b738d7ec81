"""W5: put bandwidth of a 100 MB array (GB/s), next to a plain numpy copy into memory that is
already touched (the ceiling: a put cannot beat one memcpy). Two ways: the previous round's ref
freed (its memory can be written again), or every ref kept (nothing to reuse; the session idle
for a second before each put, as between the steps of a program)."""

import time

import numpy as np
import pytest

import _results
from _shared_arrays import SharedArrays

SHAPE = (1_250, 10_000)   # 100 MB of float64
ROUNDS = 10
KEPT_ROUNDS = 5     # 600 MB held at the end, the warm-up's included
IDLE = 1.0          # seconds before each kept put, outside the clock
GROUP = "W5 put 100 MB"


def gb_per_s(benchmark, nbytes):
    return nbytes / _results.median(benchmark) / 1e9


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", ["ref"], indirect=True)
def test_numpy_copy(benchmark, engine):
    source = np.ones(SHAPE)
    target = np.zeros(SHAPE)
    target.fill(1.0)  # touch every page first: no page faults in the timed copies
    benchmark.pedantic(np.copyto, (target, source), rounds=ROUNDS, iterations=1,
                       warmup_rounds=1)
    _results.record("W5", "ref", gb_per_s(benchmark, source.nbytes))
    _results.record("W5kept", "ref", gb_per_s(benchmark, source.nbytes))


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", ["shmray", "ray"], indirect=True)
def test_put(benchmark, engine):
    source = np.ones(SHAPE)
    held = []

    def put():
        held.append(engine.put(source))

    # held.clear() frees the previous round's ref outside the clock, as a loop that overwrites
    # its ref would.
    benchmark.pedantic(put, setup=held.clear, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    held.clear()
    _results.record("W5", engine.name, gb_per_s(benchmark, source.nbytes))


@pytest.mark.benchmark(group=GROUP + ", refs kept")
@pytest.mark.parametrize("engine", ["shmray", "ray"], indirect=True)
def test_put_refs_kept(benchmark, engine):
    source = np.ones(SHAPE)
    held = []

    def put():
        held.append(engine.put(source))

    benchmark.pedantic(put, setup=lambda: time.sleep(IDLE), rounds=KEPT_ROUNDS, iterations=1,
                       warmup_rounds=1)
    held.clear()
    _results.record("W5kept", engine.name, gb_per_s(benchmark, source.nbytes))


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", ["pool"], indirect=True)
def test_shared_memory_copy(benchmark, engine):
    """The pool peers' 'put': a new segment and a copy into it (engine-independent: any pool
    user does this; shown in the Pool column)."""
    source = np.ones(SHAPE)
    segments = SharedArrays()
    benchmark.pedantic(segments.copy_in, args=(source,), setup=segments.free, rounds=ROUNDS,
                       iterations=1, warmup_rounds=1)
    segments.free()
    _results.record("W5", "pool", gb_per_s(benchmark, source.nbytes))
