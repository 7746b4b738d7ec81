"""W13: a 100 MB array handed to an actor. The array is put once; each call is
`get(h.consume.remote(ref))`, and the actor reads one element of it (µs per call).

The actor maps the array, it does not copy it: each call also returns what holds the bytes of
the array the actor got (_actors.backing: shmray's is a view of an mmap of its segment, Ray's
one of its plasma store), and the test fails on a copy. The `ref` column is one 100 MB memcpy,
measured in the same run: a call that copied the array could not take less. The `tasks` column
is a shmray task handed the same ref, timed in rounds alternating with the actor's."""
import numpy as np
import pytest

import _results
from _actors import (MAPPED, Echo, consume, is_a_copy, manual_actors, running_actors,
                     shared_array, time_batches_alternating)

SHAPE = (1_250, 10_000)   # 12.5 M float64 = 100 MB
ROUNDS = {"ray": 20, "shmray": 30}
PICKLED_ROUNDS = 3        # the array through a pipe: ~0.3 s a call
DEFAULT_ROUNDS = 30
WARM_UP = 3
GROUP = "W13 100 MB to an actor"


def big_array():
    # Made per test and dropped after it, as W4's: no engine forks from a driver holding it.
    return np.arange(np.prod(SHAPE), dtype=np.float64).reshape(SHAPE)


def record_backing(engine_name, kinds):
    """Every call saw the same holder, not a copy; it goes to the JSON's details."""
    assert len(set(kinds)) == 1, kinds
    _results.details.setdefault("W13 backing", {})[engine_name] = kinds[0]
    return kinds[0]


def call_batch(call):
    """n calls of call() (one round is one call: n is 1), for time_batches_alternating."""
    def calls(n):
        return [call() for _ in range(n)]
    return calls


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", ["ref"], indirect=True)
def test_memcpy(benchmark, engine):
    """What one copy of the array costs here: np.copyto into memory already touched."""
    source = big_array()
    target = np.zeros(SHAPE)
    target.fill(1.0)  # every page touched first: no page faults in the timed copies
    benchmark.pedantic(np.copyto, (target, source), rounds=10, iterations=1, warmup_rounds=1)
    us = _results.median(benchmark) * 1e6
    _results.record("W13arg", "ref", us)
    _results.record("W13shm", "ref", us)


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", ["shmray", "ray"], indirect=True)
def test_actor_given_ref(benchmark, engine):
    array = big_array()
    ref = engine.put(array)
    seen = []
    rounds = ROUNDS.get(engine.name, DEFAULT_ROUNDS)
    with running_actors(engine, 1) as (actor,):
        consume_ref = actor.consume.remote

        def actor_call():
            kind, value = engine.get(consume_ref(ref))
            seen.append(kind)
            return value

        if engine.name == "shmray":  # and a task given the same ref, between the actor's rounds
            task_kinds = []

            def task_call():
                kind, value = engine.call(consume, ref)
                task_kinds.append(kind)
                return value

            task_s = time_batches_alternating(benchmark, call_batch(actor_call),
                                              call_batch(task_call), 1, WARM_UP, rounds)
            assert task_kinds[0] == MAPPED and len(set(task_kinds)) == 1, task_kinds
            _results.record("W13arg", "tasks", task_s * 1e6)
            _results.record("W13shm", "tasks", task_s * 1e6)
        else:
            call_batch(actor_call)(WARM_UP)
            benchmark.pedantic(actor_call, rounds=rounds, iterations=1)
        assert actor_call() == array[0, 0]
    kind = record_backing(engine.name, seen)
    assert not is_a_copy(kind), f"{engine.name}'s actor got a copy of the array ({kind})"
    if engine.name == "shmray":
        assert kind == MAPPED
    us = _results.median(benchmark) * 1e6
    _results.record("W13arg", engine.name, us)
    _results.record("W13shm", engine.name, us)


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine_name", ["pool"])
def test_manual_actor_pickled(benchmark, engine_name, no_engine):
    """What a multiprocessing user writes first: the array itself in the call, pickled
    through the pipe into the actor's process, every call."""
    array = big_array()
    with manual_actors([Echo()]) as (actor,):
        actor.call("consume", array)
        kind, value = benchmark.pedantic(actor.call, ("consume", array), rounds=PICKLED_ROUNDS,
                                         iterations=1)
    assert value == array[0, 0] and is_a_copy(kind), kind
    _results.record("W13arg", "pool", _results.median(benchmark) * 1e6)


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine_name", ["pool"])
def test_manual_actor_shared_memory(benchmark, engine_name, no_engine):
    """What a careful multiprocessing user writes: the array copied into a SharedMemory
    segment once, its name in each call; the actor attaches and views it."""
    array = big_array()
    with shared_array(array) as segment, manual_actors([Echo()]) as (actor,):
        for _ in range(WARM_UP):
            actor.call("consume_shm", *segment)
        kind, value = benchmark.pedantic(actor.call, ("consume_shm", *segment),
                                         rounds=DEFAULT_ROUNDS, iterations=1)
    assert value == array[0, 0] and kind == MAPPED, kind
    _results.record("W13shm", "pool", _results.median(benchmark) * 1e6)

