"""init(local_mode=True): tasks and actor calls run in the driver's own process, in
submission order, when submitted, with a normal session's results and errors; a
breakpoint() inside a task stops in the driver's terminal (a real pdb session)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import shmray
from shmray.exceptions import (ActorDiedError, ObjectLostError, RayTaskError,
                               TaskUnschedulableError)

pytestmark = pytest.mark.timeout(60)

ran = []  # what the tasks did, in order (they run in this process)


@shmray.remote
def square(x):
    ran.append(x)
    return x * x


@shmray.remote
def total(values):
    return sum(values)


@shmray.remote
def where():
    return os.getpid()


@pytest.fixture
def local(fresh):
    fresh.init(local_mode=True, num_cpus=2)
    ran.clear()
    return fresh


def test_tasks_run_here_in_submission_order_with_a_sessions_results(local):
    refs = [square.remote(i) for i in range(10)]
    assert ran == list(range(10))  # each ran when it was submitted
    assert local.get(total.remote(refs)) == 285  # refs inside a list are resolved
    assert local.get(where.remote()) == os.getpid()
    @local.remote(num_returns=2)
    def pair(x):
        return x, -x

    assert local.get(list(pair.remote(4))) == [4, -4]

    @local.remote
    def nested(n):
        return local.get(square.remote(n)) + 1

    assert local.get(nested.remote(5)) == 26


def test_errors_are_raised_at_get_as_in_a_session(local):
    @local.remote
    def fails():
        raise KeyError("in the task")

    ref = fails.remote()  # nothing raised here
    with pytest.raises(RayTaskError) as info:
        local.get(ref)
    assert isinstance(info.value, KeyError) and "in the task" in str(info.value)
    with pytest.raises(KeyError):
        local.get(total.remote([ref]))  # a failed input fails the task that takes it
    with pytest.raises(TaskUnschedulableError):
        local.get(square.options(num_gpus=1).remote(2))

    attempts = []

    @local.remote(max_retries=2, retry_exceptions=[ValueError])
    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise ValueError("again")
        return "third"

    assert local.get(flaky.remote()) == "third" and len(attempts) == 3


def test_values_are_copies_and_refs_free_their_objects(local):
    array = np.zeros(4)
    ref = local.put(array)
    got = local.get(ref)
    got[0] = 1.0  # writable, and nobody else sees it
    assert local.get(ref)[0] == 0.0 and array[0] == 0.0

    @local.remote
    def mutate(a):
        a[1] = 5.0
        return a

    assert local.get(mutate.remote(array))[1] == 5.0 and array[1] == 0.0
    rt = shmray._context.runtime
    before = len(rt.values)
    refs = [local.put(np.ones(1000)) for _ in range(50)]
    assert len(rt.values) == before + 50
    oid = refs[0]._id
    del refs, ref
    local.get(local.put(0))  # (the drops are counted at the next call)
    assert oid not in rt.values
    with pytest.raises(ObjectLostError):
        local.get(shmray.ObjectRef(oid))
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"shmray_{os.getpid()}_")]


def test_wait_futures_and_generators(local):
    refs = [square.remote(i) for i in range(3)]
    assert local.wait(refs, num_returns=2, timeout=0) == (refs[:2], refs[2:])
    assert asyncio.run(_awaited(refs[2])) == 4

    @local.remote
    def count(n):
        for i in range(n):
            yield i
        raise ValueError("after the items")

    gen = count.remote(3)
    assert isinstance(gen, shmray.ObjectRefGenerator)
    assert [local.get(next(gen)) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="after the items"):
        local.get(next(gen))
    with pytest.raises(StopIteration):
        next(gen)

    @local.remote(num_returns="dynamic")
    def parts():
        yield from "ab"

    assert local.get(list(local.get(parts.remote()))) == ["a", "b"]


async def _awaited(ref):
    return await ref


def test_actors_run_in_this_process(local):
    @local.remote
    class Counter:
        def __init__(self, start):
            self.n = start

        def incr(self):
            self.n += 1
            return self.n, os.getpid()

        async def later(self, x):
            await asyncio.sleep(0)
            return x * 2

        def items(self):
            yield from range(self.n)

        def quit(self):
            shmray.actor.exit_actor()

    c = Counter.options(name="counter").remote(1)
    assert local.get([c.incr.remote() for _ in range(2)]) == [(2, os.getpid()),
                                                              (3, os.getpid())]
    assert local.get(c.later.remote(21)) == 42
    assert local.get(list(c.items.remote())) == [0, 1, 2]
    assert local.get(local.get_actor("counter").incr.remote())[0] == 4
    assert local.util.list_named_actors() == ["counter"]
    with pytest.raises(ValueError, match="already taken"):
        Counter.options(name="counter").remote(0)
    local.kill(c)
    with pytest.raises(ActorDiedError):
        local.get(c.incr.remote())

    @local.remote
    class Broken:
        def __init__(self):
            raise RuntimeError("no instance")

        def f(self):
            return 1

    with pytest.raises(ActorDiedError, match="no instance"):
        local.get(Broken.remote().f.remote())
    q = Counter.remote(0)
    with pytest.raises(ActorDiedError):
        local.get(q.quit.remote())
    with pytest.raises(ActorDiedError):
        local.get(q.incr.remote())


PDB_SESSION = textwrap.dedent("""
    import shmray as ray
    ray.init(local_mode=True)

    @ray.remote
    def task(x):
        y = x + 1
        breakpoint()
        return y * 2

    print("RESULT", ray.get(task.remote(20)), flush=True)
    ray.shutdown()
""")


def test_a_breakpoint_in_a_task_stops_in_the_drivers_pdb(tmp_path):
    script = tmp_path / "debug_me.py"
    script.write_text(PDB_SESSION)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONBREAKPOINT"}
    # pdb reads its commands from the driver's stdin: print y, change it, go on
    out = subprocess.run([sys.executable, str(script)], input="p y\ny = 49\nc\n",
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "(Pdb)" in out.stdout and "debug_me.py" in out.stdout
    assert "\n21\n" in out.stdout.replace("(Pdb) ", "\n")  # `p y` inside the task
    assert "RESULT 98" in out.stdout  # the task went on with the value set in pdb
