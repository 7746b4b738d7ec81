"""W8: memory. RSS and PSS of each worker process and of everything else the engine started
(Ray: gcs, raylet, dashboard, agents...), after a warm-up, in MB."""
import os

import pytest

import _results
from _peers import ENGINES
from _procs import cmdline, memory_mb
from _tasks import no_op, warm_numpy


def total(measured, key):
    values = [m[key] for m in measured]
    return None if None in values else sum(values)


@pytest.mark.benchmark(group="W8 memory")
@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_memory(benchmark, engine, engines):
    # Warm up as real use would: many small tasks, and numpy imported in the workers.
    engine.run_all(no_op, [()] * 500)
    engine.run_all(warm_numpy, [()] * 20)

    def measure():
        workers, others = engines.processes()
        return ([dict(pid=p, **memory_mb(p)) for p in sorted(workers)],
                [dict(pid=p, **memory_mb(p)) for p in sorted(others)])

    workers, others = benchmark.pedantic(measure, rounds=1, iterations=1)
    assert workers, "no worker processes found"
    name = engine.name
    _results.record("W8wrss", name, total(workers, "rss") / len(workers))
    if total(workers, "pss") is not None:
        _results.record("W8wpss", name, total(workers, "pss") / len(workers))
    _results.record("W8orss", name, total(others, "rss") or 0.0)
    if total(workers + others, "pss") is not None:
        _results.record("W8pss", name, total(workers + others, "pss"))
    _results.details[f"W8 {name}"] = {
        "driver": dict(pid=os.getpid(), **memory_mb(os.getpid())),
        "workers": [dict(m, cmd=cmdline(m["pid"])[:100]) for m in workers],
        "others": [dict(m, cmd=cmdline(m["pid"])[:100]) for m in others]}
