"""W11: async actor calls. Submit 20,000 calls to one actor, then get every result (calls/s).
shmray's own small-task rate (W1's shape: 20,000 no-op tasks) is timed in the same test, in
rounds alternating with the actor's. The actor runs its calls one at a time on one worker,
W1's tasks on two: what is compared is how fast the driver sends and settles them."""
import pytest

import _results
from _actors import Echo, manual_actors, running_actors, time_batches_alternating
from _tasks import small_tasks, time_batches

CALLS = 20_000
SCALED = {"ray": 5_000}    # Ray does ~5,000 calls/s here: 20,000 would take 4 s a round; the
                           # figure is a rate, so fewer calls only make its rounds shorter
WARM_UP = 1_000
ROUNDS = {"ray": 3}
DEFAULT_ROUNDS = 5
GROUP = "W11 async actor calls"


def submit_then_get(engine, actor):
    """n calls submitted, then all fetched in one get, as W1 does with tasks."""
    f, get = actor.f, engine.get
    return lambda n: get([f.remote() for _ in range(n)])


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", ["shmray", "ray"], indirect=True)
def test_actor_throughput(benchmark, engine):
    calls = SCALED.get(engine.name, CALLS)
    rounds = ROUNDS.get(engine.name, DEFAULT_ROUNDS)
    with running_actors(engine, 1) as (actor,):
        batch = submit_then_get(engine, actor)
        if engine.name == "shmray":  # and its tasks, in the rounds between the actor's
            task_s = time_batches_alternating(benchmark, batch,
                                              small_tasks(engine).async_batch, calls, WARM_UP,
                                              rounds)
            _results.record("W11", "tasks", calls / task_s)
        else:
            time_batches(benchmark, batch, calls, WARM_UP, rounds)
    _results.record("W11", engine.name, calls / _results.median(benchmark))


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine_name", ["pool"])
def test_manual_actor_throughput(benchmark, engine_name, no_engine):
    """multiprocessing's actor: 20,000 requests down one pipe (from a thread), the replies read
    back from the other (no engine runs)."""
    with manual_actors([Echo()]) as (actor,):
        results = time_batches(benchmark, lambda n: actor.call_all([("f", ())] * n), CALLS,
                               WARM_UP, DEFAULT_ROUNDS)
    assert len(results) == CALLS
    _results.record("W11", "pool", CALLS / _results.median(benchmark))
