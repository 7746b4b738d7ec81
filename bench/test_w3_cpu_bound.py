"""W3: CPU-bound tasks. 2,000 tasks of 1 ms busy work on 2 workers; ideal: 1 s."""
import functools

import pytest

import _results
from _peers import ENGINES, WORKERS
from _tasks import busy, loops_per_ms

TASKS = 2_000
TASK_MS = 1.0
IDEAL_S = TASKS * TASK_MS / 1e3 / WORKERS
ROUNDS = 3


@functools.lru_cache(maxsize=None)
def task_loops():
    """Loops for one 1 ms task, calibrated once per session so every engine gets the same
    work (in the driver: the workers are the same kind of process on the same cores)."""
    return round(loops_per_ms() * TASK_MS)


@pytest.mark.benchmark(group="W3 CPU-bound 1 ms tasks")
@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_cpu_bound_efficiency(benchmark, engine):
    args = [(task_loops(),)] * TASKS
    engine.run_all(busy, args[:20])
    benchmark.pedantic(engine.run_all, (busy, args), rounds=ROUNDS, iterations=1)
    _results.record("W3", engine.name, IDEAL_S / _results.median(benchmark))
