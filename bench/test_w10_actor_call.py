"""W10: sync actor call. Call one actor's method from the driver and wait for its result,
2,000 times (µs per call). Next to it, shmray's own task round trip (W2's shape), timed in the
test that follows, a second later: an actor's call is one record each way on its worker's
ring, as a task is, and should cost about as much.

Not in alternate rounds (as W11 does): a sync round trip costs about 4 times as much while the
driver runs on the core of the worker it waits for (the worker is pinned to its core; the
driver spins for the reply on that same core before it sleeps), and after a switch between the
actor's worker and a task's, the first few thousand calls ran in that slow mode (the kernel
moving the driver off the new one's core, as far as one can tell). Alternate rounds fell in it;
a warm-up of 2,000 calls before each test's rounds lets it pass."""
import pytest

import _results
from _actors import Echo, manual_actors, running_actors
from _tasks import small_tasks, time_batches

CALLS = 2_000
WARM_UP = 2_000
ROUNDS = {"ray": 3}      # Ray: ~0.7 ms a call here, 1.4 s a round
DEFAULT_ROUNDS = 9       # shmray's rounds are short, and the core each ends up on moves them
GROUP = "W10 sync actor call"


def call_loop(call):
    """n sync calls of call(), as a batch for time_batches."""
    def calls(n):
        for _ in range(n):
            call()
    return calls


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", ["shmray", "ray"], indirect=True)
def test_actor_call(benchmark, engine):
    warm_up = WARM_UP if engine.name == "shmray" else CALLS // 10   # (Ray: 1.4 s for 2,000)
    with running_actors(engine, 1) as (actor,):
        f, get = actor.f, engine.get
        time_batches(benchmark, call_loop(lambda: get(f.remote())), CALLS, warm_up,
                     ROUNDS.get(engine.name, DEFAULT_ROUNDS))
    _results.record("W10", engine.name, _results.median(benchmark) / CALLS * 1e6)


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", ["shmray"], indirect=True)
def test_task_round_trip(benchmark, engine):
    """shmray's W2, here so that W10's 'tasks' ratio is taken in the same run, a second after
    the actor's figure."""
    time_batches(benchmark, small_tasks(engine).round_trips, CALLS, WARM_UP, DEFAULT_ROUNDS)
    _results.record("W10", "tasks", _results.median(benchmark) / CALLS * 1e6)


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine_name", ["pool"])
def test_manual_actor_call(benchmark, engine_name, no_engine):
    """multiprocessing's actor: a process of its own, a pipe each way (no engine runs)."""
    with manual_actors([Echo()]) as (actor,):
        time_batches(benchmark, call_loop(lambda: actor.call("f")), CALLS, WARM_UP,
                     DEFAULT_ROUNDS)
    _results.record("W10", "pool", _results.median(benchmark) / CALLS * 1e6)
