"""A seeded stress run of actors: sync, threaded and async actors created, called
from the driver and from tasks, crashed, killed, restarted and dropped at random.
Afterwards every call resolved (to its value, or to an actor error: never a hang),
each actor's counter went up by one per call between its restarts, and shutdown left
no process or segment of the session.

The default size is small (CI runs it); a longer run:
    SHMRAY_ACTOR_STRESS_OPS=5000 python -m pytest -m stress tests/test_actor_stress.py -q
"""
from __future__ import annotations

import asyncio
import os
import random
import threading

import pytest

import shmray
from shmray import _shm
from shmray.exceptions import RayActorError

pytestmark = [pytest.mark.stress, pytest.mark.timeout(300)]
OPS = int(os.environ.get("SHMRAY_ACTOR_STRESS_OPS", "400"))
SEED = int(os.environ.get("SHMRAY_ACTOR_STRESS_SEED", "16"))


@shmray.remote
class SyncCounter:
    def __init__(self):
        self.n = 0

    def inc(self):
        self.n += 1
        return self.n

    def crash(self):
        os._exit(1)


@shmray.remote(max_concurrency=4)
class ThreadedCounter:
    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()

    def inc(self):
        with self.lock:
            self.n += 1
            return self.n

    def crash(self):
        os._exit(1)


@shmray.remote
class AsyncCounter:
    def __init__(self):
        self.n = 0

    async def inc(self):
        await asyncio.sleep(0)
        self.n += 1
        return self.n

    async def crash(self):
        os._exit(1)


@shmray.remote
def call_from_task(handle, times):
    return [shmray.get(handle.inc.remote()) for _ in range(times)]


KINDS = [SyncCounter, ThreadedCounter, AsyncCounter]


def test_actors_under_random_crashes_kills_and_drops(fresh):
    print(f"seed {SEED}, {OPS} operations")
    rnd = random.Random(SEED)
    session = fresh.init(num_cpus=2)
    live = []          # handles still held
    calls = []         # (handle, ref, epoch) of the driver's calls
    task_calls = []    # refs of tasks calling actors
    epochs = {}        # actor id -> crashes/kills so far (its counter restarts)
    ordered = {}       # actor id -> runs one call at a time (a sync actor)
    for _ in range(OPS):
        op = rnd.random()
        if op < 0.12 or not live:
            cls = rnd.choice(KINDS)
            handle = cls.options(max_restarts=rnd.choice([0, 1, -1])).remote()
            live.append(handle)
            epochs[handle._actor_id] = 0
            ordered[handle._actor_id] = cls is SyncCounter
        elif op < 0.75:
            h = rnd.choice(live)
            calls.extend((h, h.inc.remote(), epochs[h._actor_id])
                         for _ in range(rnd.randint(1, 5)))
        elif op < 0.82:
            task_calls.append(call_from_task.remote(rnd.choice(live), rnd.randint(1, 3)))
        elif op < 0.88:
            h = rnd.choice(live)
            h.crash.remote()
            epochs[h._actor_id] += 1
        elif op < 0.93:
            h = rnd.choice(live)
            fresh.kill(h, no_restart=rnd.random() < 0.7)
            epochs[h._actor_id] += 1
        else:
            live.remove(rnd.choice(live))  # dropped: it ends once its calls are done
    by_actor = {}
    for h, ref, epoch in calls:
        try:
            value = fresh.get(ref, timeout=60)
        except RayActorError:
            continue
        by_actor.setdefault((h._actor_id, epoch), []).append(value)
    answered = sum(len(v) for v in by_actor.values())
    print(f"{len(calls)} calls from the driver, {answered} answered, the rest lost with "
          f"their actor's death; {len(task_calls)} tasks calling actors")
    assert answered > len(calls) // 4  # (most actors live long enough to answer)
    for (actor_id, epoch), values in by_actor.items():
        # within one life, each call counts once; a sync actor runs the driver's calls
        # in order: increasing (tasks' calls interleave, so not consecutive)
        assert len(set(values)) == len(values), (actor_id, epoch, values)
        if ordered[actor_id]:
            assert values == sorted(values), (actor_id, epoch, values)
    for ref in task_calls:
        try:
            values = fresh.get(ref, timeout=60)
        except RayActorError:
            continue
        assert len(set(values)) == len(values)
    prefix = session["session_name"] + "_"
    driver = os.getpid()
    fresh.shutdown()
    assert _shm.list_names(prefix) == []
    assert not [p for p, d in _shm.worker_processes() if d == driver]
