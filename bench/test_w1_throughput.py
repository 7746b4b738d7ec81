"""W1: small-task async throughput. Submit 20,000 no-op tasks, then get every result."""
import pytest

import _results
from _peers import ENGINES
from _tasks import no_op, small_tasks, time_batches

TASKS = 20_000
WARM_UP = 1_000          # ships the function to every worker before the clock starts
ROUNDS = {"ray": 2}      # Ray does ~2,000 tasks/s here: 10 s a round
DEFAULT_ROUNDS = 5


@pytest.mark.benchmark(group="W1 small-task throughput")
@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_async_throughput(benchmark, engine):
    results = time_batches(benchmark, small_tasks(engine).async_batch, TASKS, WARM_UP,
                           ROUNDS.get(engine.name, DEFAULT_ROUNDS))
    assert len(results) == TASKS
    rate = TASKS / _results.median(benchmark)
    _results.record("W1", engine.name, rate)
    if engine.name == "shmray":  # shmray has no map: its per-task rate stands against Pool.map
        _results.record("W1map", "shmray", rate)


@pytest.mark.benchmark(group="W1 small-task throughput")
@pytest.mark.parametrize("engine", ["pool"], indirect=True)
def test_pool_map_throughput(benchmark, engine):
    """The Pool's best case for many small items: map sends them in chunks."""
    results = time_batches(benchmark, lambda n: engine.map(no_op, range(n)), TASKS, WARM_UP,
                           DEFAULT_ROUNDS)
    assert len(results) == TASKS
    _results.record("W1map", engine.name, TASKS / _results.median(benchmark))
