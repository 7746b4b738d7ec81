"""The crash matrix, for actors: a method that raises, sys.exit, os._exit, SIGKILL, a
constructor that raises, each without and with restarts; retries of calls across
restarts; nothing left behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import shmray
from shmray import _shm
from shmray.exceptions import (ActorDiedError, ActorUnavailableError, RayActorError,
                               RayTaskError, TaskCancelledError)

from shmray._shm import worker_processes

pytestmark = pytest.mark.timeout(60)


@shmray.remote
class Fragile:
    def __init__(self, fail_init=False):
        if fail_init:
            raise ValueError("bad init")
        self.calls = 0

    def ping(self):
        self.calls += 1
        return self.calls

    def pid(self):
        return os.getpid()

    def exit_once(self, marker):
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return "second attempt"

    def crash(self, how):
        if how == "raise":
            raise RuntimeError("method failed")
        if how == "sys.exit":
            sys.exit(3)
        if how == "os._exit":
            os._exit(7)
        if how == "SIGKILL":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "SIGSEGV":
            os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(60)


CRASHES = ["os._exit", "SIGKILL", "SIGSEGV"]


def _restarts(actor, *, fresh_calls: int):
    """The actor answers again, restarted (its state new: `calls` counts from 1)."""
    assert shmray.get(actor.ping.remote(), timeout=20) == fresh_calls


@pytest.mark.parametrize("restarts", [0, 2])
def test_a_raising_method_never_ends_the_actor(ray, restarts):
    a = Fragile.options(max_restarts=restarts).remote()
    pid = ray.get(a.pid.remote())
    with pytest.raises(RuntimeError, match="method failed") as info:
        ray.get(a.crash.remote("raise"))
    assert isinstance(info.value, RayTaskError)
    assert ray.get(a.ping.remote()) == 1
    assert ray.get(a.pid.remote()) == pid


@pytest.mark.parametrize("how", CRASHES)
def test_a_dying_actor_without_restarts_is_dead(ray, how):
    a = Fragile.remote()
    ray.get(a.ping.remote())
    call = a.crash.remote(how)
    queued = a.ping.remote()
    for ref in (call, queued):
        with pytest.raises(ActorDiedError) as info:
            ray.get(ref, timeout=20)
        assert isinstance(info.value, RayActorError)
    expected = {"os._exit": "exit code 7", "SIGKILL": "SIGKILL", "SIGSEGV": "SIGSEGV"}[how]
    assert expected in str(info.value)
    with pytest.raises(ActorDiedError, match=expected):
        ray.get(a.ping.remote(), timeout=20)


@pytest.mark.parametrize("how", CRASHES)
def test_a_dying_actor_with_restarts_comes_back(ray, how):
    a = Fragile.options(max_restarts=1).remote()
    first_pid = ray.get(a.pid.remote())
    ray.get(a.ping.remote())
    with pytest.raises(ActorUnavailableError, match="restarting"):
        ray.get(a.crash.remote(how), timeout=20)
    _restarts(a, fresh_calls=1)
    assert ray.get(a.pid.remote()) != first_pid
    # its one restart is spent: the next death is its last
    with pytest.raises(ActorDiedError):
        ray.get(a.crash.remote(how), timeout=20)
    with pytest.raises(ActorDiedError):
        ray.get(a.ping.remote(), timeout=20)


def test_restarting_forever(ray):
    a = Fragile.options(max_restarts=-1).remote()
    for _ in range(3):
        ray.get(a.ping.remote())
        with pytest.raises(ActorUnavailableError):
            ray.get(a.crash.remote("os._exit"), timeout=20)
    _restarts(a, fresh_calls=1)


@pytest.mark.parametrize("restarts", [0, 2])
def test_sys_exit_ends_the_actor_on_purpose(ray, restarts):
    """sys.exit in a method is an intentional exit, as in Ray: no restart."""
    a = Fragile.options(max_restarts=restarts).remote()
    ray.get(a.ping.remote())
    with pytest.raises(ActorDiedError, match="sys.exit"):
        ray.get(a.crash.remote("sys.exit"), timeout=20)
    with pytest.raises(ActorDiedError, match="on purpose"):
        ray.get(a.ping.remote(), timeout=20)


@pytest.mark.parametrize("restarts", [0, 2])
def test_a_raising_constructor_kills_the_actor(ray, restarts):
    a = Fragile.options(max_restarts=restarts).remote(fail_init=True)
    for _ in range(2):
        with pytest.raises(ActorDiedError) as info:
            ray.get(a.ping.remote(), timeout=20)
        err = info.value
        assert err.actor_init_failed
        assert "bad init" in str(err) and "creation task" in str(err)
        assert isinstance(err, RayActorError)


def test_max_task_retries_runs_a_lost_call_again(ray, tmp_path):
    a = Fragile.options(max_restarts=1, max_task_retries=1).remote()
    ray.get(a.ping.remote())
    marker = str(tmp_path / "died-once")
    lost = a.exit_once.remote(marker)   # its first attempt takes the process down
    queued = a.ping.remote()            # sent to the dead process too
    assert ray.get(lost, timeout=20) == "second attempt"
    assert ray.get(queued, timeout=20) == 1  # on the restarted actor: fresh state


def test_without_task_retries_a_lost_call_fails(ray, tmp_path):
    a = Fragile.options(max_restarts=1).remote()
    ray.get(a.ping.remote())
    with pytest.raises(ActorUnavailableError):
        ray.get(a.exit_once.remote(str(tmp_path / "m")), timeout=20)
    assert ray.get(a.exit_once.remote(str(tmp_path / "m")), timeout=20) == "second attempt"


def test_kill_with_restart_brings_it_back(ray):
    a = Fragile.options(max_restarts=1).remote()
    ray.get(a.ping.remote())
    ray.kill(a, no_restart=False)
    _restarts(a, fresh_calls=1)
    ray.kill(a)
    with pytest.raises(ActorDiedError, match="kill"):
        ray.get(a.ping.remote(), timeout=20)


def test_kill_of_an_actor_being_created(ray):
    @ray.remote
    class SlowStart:
        def __init__(self):
            time.sleep(30)

        def ping(self):
            return 1

    s = SlowStart.remote()
    ref = s.ping.remote()
    time.sleep(0.3)
    ray.kill(s)
    with pytest.raises(ActorDiedError):
        ray.get(ref, timeout=10)


def _no_workers_of(driver_pid, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not [p for p, d in worker_processes() if d == driver_pid]:
            return True
        time.sleep(0.1)
    return False


def _no_segments_of(driver_pid):
    return not [n for n in os.listdir("/dev/shm") if n.startswith(f"shmray_{driver_pid}_")]


def test_shutdown_ends_every_actor(fresh, gone):
    fresh.init(num_cpus=2)
    actors = [Fragile.remote() for _ in range(3)]
    detached = Fragile.options(lifetime="detached", name="to-shutdown").remote()
    pids = fresh.get([a.pid.remote() for a in actors] + [detached.pid.remote()])
    busy = actors[0].crash.remote("sleep")
    fresh.shutdown()
    del busy
    assert gone(pids)
    assert _no_segments_of(os.getpid())


def test_a_killed_driver_leaves_no_actor(tmp_path, gone):
    out = tmp_path / "pids"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, time, shmray
        shmray.init(num_cpus=2)
        @shmray.remote
        class A:
            def pid(self):
                return os.getpid()
        actors = [A.remote() for _ in range(2)]
        named = A.options(name="n", lifetime="detached").remote()
        pids = shmray.get([a.pid.remote() for a in actors + [named]])
        open({str(out)!r}, "w").write(" ".join(map(str, pids)))
        time.sleep(60)
    """)], cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    deadline = time.monotonic() + 30
    while not (out.exists() and out.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [int(p) for p in out.read_text().split()]
    proc.kill()
    proc.wait()
    assert gone(pids, 10)
    _shm.reclaim_dead_sessions()
    assert _no_segments_of(proc.pid)


def test_ctrl_c_in_the_driver_leaves_no_actor():
    code = """
        import os, signal, threading, time, shmray
        shmray.init(num_cpus=2)
        @shmray.remote
        class A:
            def wait(self):
                time.sleep(60)
        a = A.remote()
        ref = a.wait.remote()
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            shmray.get(ref)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        time.sleep(60)  # the test interrupts this one too: the driver ends on Ctrl-C
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                            stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        assert proc.stdout.readline().strip() == "interrupted"
        assert [p for p, d in worker_processes() if d == proc.pid]  # the actor is alive
        proc.send_signal(signal.SIGINT)  # a second Ctrl-C ends the program
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert _no_workers_of(proc.pid)
    assert _no_segments_of(proc.pid)


def test_cancelling_a_call_of_an_async_actor_still_starting_never_kills_it(fresh, monkeypatch):
    # A spawned actor's process takes a while to import: a cancel then must not reach
    # it as a SIGINT it does not handle yet (it would die of KeyboardInterrupt).
    monkeypatch.setenv("SHMRAY_START_METHOD", "spawn")
    fresh.init(num_cpus=2)

    @fresh.remote
    class Waits:
        async def forever(self):
            import asyncio
            await asyncio.Event().wait()

        def alive(self):
            return True

    for _ in range(3):
        actor = Waits.remote()
        ref = actor.forever.remote()
        fresh.cancel(ref)
        with pytest.raises(TaskCancelledError):
            fresh.get(ref, timeout=60)
        assert fresh.get(actor.alive.remote(), timeout=60)
