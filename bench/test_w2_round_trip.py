"""W2: sync round trip. Submit one no-op task and wait for its result, 2,000 times."""
import pytest

import _results
from _peers import ENGINES
from _tasks import small_tasks, time_batches

CALLS = 2_000
WARM_UP = 200
ROUNDS = {"ray": 3}      # ~1.5 ms a call: 3 s a round
DEFAULT_ROUNDS = 5


@pytest.mark.benchmark(group="W2 sync round trip")
@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_round_trip(benchmark, engine):
    time_batches(benchmark, small_tasks(engine).round_trips, CALLS, WARM_UP,
                 ROUNDS.get(engine.name, DEFAULT_ROUNDS))
    _results.record("W2", engine.name, _results.median(benchmark) / CALLS * 1e6)
