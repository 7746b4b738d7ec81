"""Regression tests from the adversarial review of actors: each is a bug a small real
program found (the comment above it says what went wrong, and where)."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

import shmray
from shmray import _context
from shmray.exceptions import GetTimeoutError


@shmray.remote
class Plain:
    def __init__(self, x=None):
        pass

    def pid(self):
        return os.getpid()

    def quit(self):
        shmray.actor.exit_actor()


class Boom(BaseException):
    """Not an Exception: what a method may raise all the same."""


@shmray.remote(max_concurrency=2)
class Threaded:
    def bad(self):
        raise Boom("boom")

    def ok(self):
        return 1


@shmray.remote
class Async:
    async def bad(self):
        raise Boom("boom")

    async def ok(self):
        return 1


def _segments():
    return {n for n in os.listdir("/dev/shm") if n.startswith("shmray_")}


# ------------------------------------------------------------ placement
# Was: ActorTable._dead released an ended
# actor's resources, but ActorTable.unplaced was retried only in MessageLoop.drain when a
# message had been handled; a pending actor then waited forever (kill, del, exit_actor)
@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["kill", "del", "exit_actor", "terminate"])
def test_a_pending_actor_is_placed_when_an_actor_frees_its_cpus(fresh, how):
    fresh.init(num_cpus=2)
    big = Plain.options(num_cpus=2).remote()
    fresh.get(big.pid.remote())
    waiting = Plain.options(num_cpus=1).remote()
    ref = waiting.pid.remote()
    time.sleep(0.3)  # its creation waits for a CPU
    if how == "kill":
        fresh.kill(big)
    elif how == "del":
        del big
    elif how == "exit_actor":
        big.quit.remote()
    else:
        big.__ray_terminate__.remote()
    assert isinstance(fresh.get(ref, timeout=10), int)  # (Ray 2.60: placed at once)


# ------------------------------------------------------------ lost calls
# Was: ThreadedCalls._run / AsyncCalls._run send no Done when the method raises a
# BaseException that is not an Exception (it escapes into the thread pool / asyncio
# task): the call hangs forever, stays in w.inflight, and the actor can never end
@pytest.mark.timeout(60)
@pytest.mark.parametrize("cls", [Threaded, Async], ids=["threaded", "async"])
def test_a_base_exception_in_a_concurrent_actor_call_is_not_lost(ray, cls):
    h = cls.remote()
    assert ray.get(h.ok.remote()) == 1
    ref = h.bad.remote()
    try:
        ray.get(ref, timeout=10)
    except GetTimeoutError:
        pytest.fail("the call was lost: no result and no error")
    except Exception:
        pass  # an error of some kind (Ray: the actor's worker dies, RayActorError)


# ------------------------------------------------------------ leaks
@shmray.remote
def _get_if_exists_in_a_task(big):
    h = Plain.options(name="review-exists", get_if_exists=True).remote(big)
    return shmray.get(h.pid.remote())


# Was: ActorLife.on_actor_create drops the creation arguments a worker stored (a
# /dev/shm segment for large ones) when the actor exists already (get_if_exists, or
# ActorAlreadyExistsError); ActorFacade.create_actor unlinks them in the driver's case
@pytest.mark.timeout(60)
def test_get_if_exists_in_a_task_leaves_no_segment(ray):
    a = Plain.options(name="review-exists").remote()
    pid = ray.get(a.pid.remote())
    big = np.zeros(2_000_000, dtype=np.uint8)
    assert ray.get(_get_if_exists_in_a_task.remote(big)) == pid  # (warm the pool up)
    before = _segments()
    for _ in range(3):
        assert ray.get(_get_if_exists_in_a_task.remote(big)) == pid
    time.sleep(0.3)
    assert not {n for n in _segments() - before if "_w" in n}
    ray.kill(a)


# Was: ActorOptions.creation makes a new TaskOptions for every creation (and
# ActorMethod.options one per call); TaskTable.verdicts keeps each, keyed by id(),
# for the whole session
@pytest.mark.timeout(60)
def test_creating_actors_does_not_grow_driver_state(ray):
    session = _context.runtime
    a = Plain.remote()
    ray.get(a.pid.remote())
    del a
    before = len(session.tasks.verdicts)
    for _ in range(20):
        a = Plain.remote()
        ray.get(a.pid.options(name="named-call").remote())
        del a
    assert len(session.tasks.verdicts) - before < 5


# ------------------------------------------------------------ Ray's API
# Was: shmray.actor._methods_of gives __ray_ready__ no value (Ray 2.60: True) and
# __ray_terminate__ num_returns=0 (Ray 2.60: .remote() returns an ObjectRef)
@pytest.mark.timeout(60)
def test_ray_ready_and_ray_terminate_as_in_ray(ray):
    a = Plain.remote()
    assert ray.get(a.__ray_ready__.remote()) is True
    ref = a.__ray_terminate__.remote()
    assert isinstance(ref, shmray.ObjectRef)
    with pytest.raises(shmray.exceptions.RayActorError):
        ray.get(ref, timeout=10)


# Was: Ray names it ray.exceptions.PendingCallsLimitExceeded; shmray only has
# PendingCallsLimitExceededError (code written for Ray gets AttributeError)
def test_pending_calls_limit_error_has_rays_name():
    from shmray import exceptions
    assert issubclass(exceptions.PendingCallsLimitExceeded, exceptions.RayError)


# Was: ActorState.pending_calls counts len(actor.waiting), which holds the actor's
# own creation until it is placed/sent: a new actor with max_pending_calls=1 refuses its
# first call (Ray 2.60: the first call runs, returns 1)
@pytest.mark.timeout(60)
def test_max_pending_calls_does_not_count_the_creation(ray):
    a = Plain.options(max_pending_calls=1).remote()
    assert isinstance(ray.get(a.pid.remote(), timeout=10), int)
    b = Plain.options(max_pending_calls=2).remote()
    assert len(ray.get([b.pid.remote(), b.pid.remote()], timeout=10)) == 2
