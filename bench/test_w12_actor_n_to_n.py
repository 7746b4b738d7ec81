"""W12: n:n actor calls. 2 caller tasks, each handed one of 2 actors as an argument, call it
many times; timed from the 2 callers submitted to both results in hand (calls/s, the 2
callers' calls together). Two ways to call: each call waited for before the next
(`get(h.f.remote())` in a loop), or all of a caller's calls submitted, then one get.

A call from a task is the driver's too: the caller's worker sends it to the driver, which
sends it to the actor's worker, and the result comes back the same way. multiprocessing's
callers (manual actors of their own) write to their actor's pipe directly."""
import pytest

import _results
from _actors import CallLoop, Echo, batch_calls, manual_actors, running_actors, sync_calls

ACTORS = 2
CALLS = {"sync": 2_000, "batch": 10_000}          # per caller
SCALED = {"ray": {"sync": 500, "batch": 2_000}}   # Ray: ~2,000 sync calls/s here in all
WARM_UP = 100
ROUNDS = {"ray": 3}
DEFAULT_ROUNDS = 5
GROUP = "W12 n:n actor calls"
ROW = {"sync": "W12sync", "batch": "W12batch"}
CALLERS = {"sync": sync_calls, "batch": batch_calls}


@pytest.fixture(params=list(CALLS))
def way(request):
    return request.param


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", ["shmray", "ray"], indirect=True)
def test_callers_to_actors(benchmark, engine, way):
    n = SCALED.get(engine.name, CALLS)[way]
    caller = CALLERS[way]

    def one_round(n):
        return engine.run_all(caller, [(engine.module_name, h, n) for h in actors])

    with running_actors(engine, ACTORS) as actors:
        one_round(WARM_UP)  # ships the caller to both workers, each of them calls once
        counts = benchmark.pedantic(one_round, (n,), rounds=ROUNDS.get(engine.name,
                                                                       DEFAULT_ROUNDS),
                                    iterations=1)
    assert counts == [n] * ACTORS
    _results.record(ROW[way], engine.name, ACTORS * n / _results.median(benchmark))


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine_name", ["pool"])
def test_manual_callers(benchmark, engine_name, no_engine, way):
    """2 manual actors, and 2 more as the callers, each calling one of them over its pipes (no
    engine runs: these 4 processes are all there is)."""
    n = CALLS[way]
    method = f"{way}_calls"

    def one_round(n):
        for c in callers:  # both start before either is waited for
            c.send(method, n)
        return [c.recv() for c in callers]

    with manual_actors([Echo() for _ in range(ACTORS)]) as actors, \
            manual_actors([CallLoop(a) for a in actors]) as callers:
        one_round(WARM_UP)
        counts = benchmark.pedantic(one_round, (n,), rounds=DEFAULT_ROUNDS, iterations=1)
    assert counts == [n] * ACTORS
    _results.record(ROW[way], "pool", ACTORS * n / _results.median(benchmark))
