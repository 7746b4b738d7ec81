"""W14/W15: generator tasks, their items consumed as they are yielded.

W14: one task yields 10,000 small items; the caller gets each ref's value as it comes
(items/s). shmray's own W1 rate is timed in rounds alternating with it: its target is half
of W1's. W15: one task yields 100 arrays of 10 MB; each is got (shmray maps it) and
dropped (GB/s), against shmray's put of the same arrays in the driver (alternating; it
reuses freed segments) and in a task (fresh segments, as the generator's worker writes)."""
import numpy as np
import pytest

import _results
from _actors import time_batches_alternating
from _tasks import large_items, puts_in_a_task, small_items, small_tasks, time_batches

ITEMS = 10_000
SCALED = {"ray": 2_000}    # Ray streams ~8,000 items/s here; a rate, so fewer only shortens
WARM_UP = 200
ROUNDS = {"ray": 3}
DEFAULT_ROUNDS = 5
ARRAYS, ARRAY_BYTES = 100, 10 << 20


def consume_small(engine):
    gen_fn, get = engine._r(small_items), engine.mod.get

    def batch(n):
        total = 0
        for ref in gen_fn.remote(n):
            total += get(ref)
        assert total == n * (n - 1) // 2
    return batch


def consume_large(engine):
    gen_fn, get = engine._r(large_items), engine.mod.get

    def batch(n):
        for ref in gen_fn.remote(n, ARRAY_BYTES):
            array = get(ref)
            assert array.nbytes == ARRAY_BYTES
            del array, ref
    return batch


def put_arrays(engine):
    """The driver's put of what W15's task yields, each ref dropped after its put."""
    block = np.ones(ARRAY_BYTES // 8)

    def batch(n):
        for _ in range(n):
            engine.mod.put(block)
    return batch


@pytest.mark.benchmark(group="W14 generator, small items")
@pytest.mark.parametrize("engine", ["shmray", "ray"], indirect=True)
def test_small_items(benchmark, engine):
    n = SCALED.get(engine.name, ITEMS)
    rounds = ROUNDS.get(engine.name, DEFAULT_ROUNDS)
    if engine.name == "shmray":  # and W1's tasks in the rounds between (same count, 20,000)
        task_s = time_batches_alternating(
            benchmark, consume_small(engine),
            lambda k: small_tasks(engine).async_batch(2 * k), n, WARM_UP, rounds)
        _results.record("W14", "tasks", 2 * n / task_s)
    else:
        time_batches(benchmark, consume_small(engine), n, WARM_UP, rounds)
    _results.record("W14", engine.name, n / _results.median(benchmark))


@pytest.mark.benchmark(group="W15 generator, 100 x 10 MB")
@pytest.mark.parametrize("engine", ["shmray", "ray"], indirect=True)
def test_large_items(benchmark, engine):
    rounds = ROUNDS.get(engine.name, DEFAULT_ROUNDS)
    if engine.name == "shmray":
        put_s = time_batches_alternating(benchmark, consume_large(engine), put_arrays(engine),
                                         ARRAYS, 2, rounds)
        _results.record("W15", "ref", ARRAYS * ARRAY_BYTES / put_s / 1e9)
        task_puts = engine._r(puts_in_a_task)
        seconds = sorted(engine.get(task_puts.remote("shmray", ARRAYS, ARRAY_BYTES))
                         for _ in range(3))
        _results.record("W15", "tasks", ARRAYS * ARRAY_BYTES / seconds[1] / 1e9)
    else:
        time_batches(benchmark, consume_large(engine), ARRAYS, 2, rounds)
    _results.record("W15", engine.name, ARRAYS * ARRAY_BYTES / _results.median(benchmark) / 1e9)
