"""shmray.util.state: Ray's state API over a real session (workers running, tasks
failing and retried, actors alive and dead), from the driver and from inside tasks and
actors, and from another process by address."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import shmray
from shmray.util.state import (ActorState, RayStateApiException, TaskState, get_actor,
                               get_objects, get_task, get_worker, list_actors, list_objects,
                               list_tasks, list_workers, summarize_actors, summarize_tasks)

pytestmark = pytest.mark.timeout(120)


@shmray.remote
def refuses(x):
    raise ValueError(f"cannot take {x}")


@shmray.remote(max_retries=2, retry_exceptions=True)
def flaky():
    raise OSError("disk gone")


@shmray.remote
def once():
    return 1


@shmray.remote(num_cpus=2)
def hog(started, path):
    open(started, "w").close()
    while not os.path.exists(path):
        time.sleep(0.01)
    return "hogged"


@shmray.remote
def after(x):
    return x


@shmray.remote
def squeezed():
    return "ran"


@shmray.remote
class Keeper:
    def __init__(self, fail=False):
        if fail:
            raise RuntimeError("no keeping today")

    def pid(self):
        return os.getpid()

    def tasks_seen(self):
        return [(t.name, t.state) for t in list_tasks(
            filters=[("type", "=", "ACTOR_TASK"), ("state", "=", "RUNNING")])]


@shmray.remote
def small_result():
    return "tiny"


@shmray.remote
def where():
    return os.getpid(), shmray.get_runtime_context().get_worker_id()


@shmray.remote
def introspect():
    me = list_tasks(filters=[("name", "=", "introspect")], detail=True)
    return [(t.state, t.worker_pid, t.start_time_ms is not None) for t in me], os.getpid()


@shmray.remote
def counted(i):
    if i == 0:
        raise KeyError(i)
    return i


@shmray.remote
def many(i):
    return i


def _until(predicate, seconds=30.0):
    """Poll `predicate` until it returns something true (its value), or fail."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def _named(name, **kw):
    return list_tasks(filters=[("name", "=", name)], **kw)


def test_a_failed_task_has_its_error_type_and_message(ray):
    ref = refuses.remote(7)
    with pytest.raises(ValueError):
        ray.get(ref)
    (task,) = list_tasks(filters=[("name", "=", "refuses"), ("state", "=", "FAILED")],
                         detail=True)
    assert isinstance(task, TaskState) and task["state"] == task.get("state") == "FAILED"
    assert (task.error_type, task.error_message) == ("TASK_EXECUTION_EXCEPTION",
                                                     "ValueError: cannot take 7")
    assert task.task_id == ref.task_id() and task.attempt_number == 0
    assert task.type == "NORMAL_TASK" and task.func_or_class_name == "refuses"
    assert task.job_id == ray.get_runtime_context().get_job_id()
    assert task.node_id == ray.get_runtime_context().get_node_id()
    assert task.start_time_ms <= task.end_time_ms <= time.time() * 1000
    workers = {w.worker_id: w.pid for w in list_workers()}
    assert workers[task.worker_id] == task.worker_pid  # a live worker ran it
    # Without detail the detail columns are None (as Ray leaves them); strings compare
    # case-insensitively; != excludes.
    (brief,) = list_tasks(filters=[("name", "=", "refuses"), ("STATE", "=", "failed")])
    assert brief.error_type == "TASK_EXECUTION_EXCEPTION" and brief.error_message is None
    assert brief.start_time_ms is None
    assert list_tasks(filters=[("name", "=", "refuses"), ("state", "!=", "FAILED")]) == []


def test_retried_attempts_are_rows_and_get_task_returns_them(ray):
    ref = flaky.remote()
    with pytest.raises(OSError):
        ray.get(ref)
    attempts = get_task(ref)
    assert isinstance(attempts, list)
    assert sorted(t.attempt_number for t in attempts) == [0, 1, 2]
    assert {(t.state, t.error_type) for t in attempts} == {("FAILED", "TASK_EXECUTION_EXCEPTION")}
    # the last attempt's message (the driver keeps it); the type's name for the others
    assert [t.error_message for t in sorted(attempts, key=lambda t: t.attempt_number)] == \
        ["OSError", "OSError", "OSError: disk gone"]
    done = once.remote()
    assert ray.get(done) == 1
    single = get_task(done.task_id())  # one attempt: the record itself, every column
    assert single.state == "FINISHED" and single.end_time_ms is not None
    assert get_task("f" * 32) is None


def test_states_of_unfinished_tasks(ray, tmp_path):
    started, go = tmp_path / "started", tmp_path / "go"
    held = hog.remote(str(started), str(go))
    try:
        _until(started.exists)  # (its worker's words say so before it runs)
        waiting = after.remote(held)      # its input is not there yet
        queued = squeezed.remote()        # no CPU free while hog runs
        states = {t.name: t for t in list_tasks(filters=[("state", "!=", "FINISHED")],
                                                detail=True)}
        assert states["hog"].state == "RUNNING" and states["hog"].worker_pid is not None
        assert states["hog"].start_time_ms is not None and states["hog"].end_time_ms is None
        assert states["hog"].required_resources == {"CPU": 2.0}
        assert states["after"].state == "PENDING_ARGS_AVAIL"
        assert states["after"].worker_pid is None
        assert states["squeezed"].state == "PENDING_NODE_ASSIGNMENT"
        # the timeline shows the running task too, until now
        (running,) = [e for e in ray.timeline() if e["ph"] == "X" and e["name"] == "hog"]
        assert running["args"]["state"] == "RUNNING" and running["dur"] > 0
        assert running["tid"] == states["hog"].worker_pid
    finally:
        go.write_text("")  # (a failure above must not leave the session's CPUs taken)
    assert ray.get([waiting, queued]) == ["hogged", "ran"]
    assert {t.state for t in _named("hog") + _named("after")} == {"FINISHED"}


def test_actors_alive_and_dead_and_their_calls(ray):
    alive = Keeper.options(name="keeper").remote()
    pid = ray.get(alive.pid.remote())
    killed = Keeper.remote()
    ray.get(killed.pid.remote())
    ray.kill(killed)
    broken = Keeper.remote(fail=True)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(broken.pid.remote())

    mine = _until(lambda: (lambda a: a if len(a) == 3 and
                           sum(x.state == "DEAD" for x in a) == 2 else None)(
        list_actors(filters=[("class_name", "=", "Keeper")], detail=True)))
    by_id = {a.actor_id: a for a in mine}
    keeper = by_id[alive._actor_id.hex()]
    assert isinstance(keeper, ActorState)
    assert (keeper.state, keeper.name, keeper.pid, keeper.num_restarts) == ("ALIVE", "keeper",
                                                                            pid, 0)
    assert keeper.death_cause is None and keeper.is_detached is False
    dead_killed = by_id[killed._actor_id.hex()]
    assert "killed" in dead_killed.death_cause["actor_died_error_context"]["error_message"]
    dead_broken = by_id[broken._actor_id.hex()]
    assert dead_broken.state == "DEAD"
    assert "no keeping today" in dead_broken.death_cause["actor_died_error_context"][
        "error_message"]
    assert [a.actor_id for a in list_actors(filters=[("class_name", "=", "keeper"),
                                                     ("state", "=", "alive")])] == \
        [keeper.actor_id]
    assert get_actor(keeper.actor_id).ray_namespace == keeper.ray_namespace
    assert get_actor("0" * 32) is None
    # its calls are ACTOR_TASK rows naming it; the actor sees its own call running
    assert ray.get(alive.tasks_seen.remote()) == [("Keeper.tasks_seen", "RUNNING")]
    calls = list_tasks(filters=[("name", "=", "Keeper.pid"), ("actor_id", "=", keeper.actor_id)])
    assert [(c.type, c.state, c.worker_pid) for c in calls] == [("ACTOR_TASK", "FINISHED", pid)]
    (init,) = list_tasks(filters=[("name", "=", "Keeper.__init__"),
                                  ("actor_id", "=", dead_broken.actor_id)])
    assert (init.type, init.state, init.error_type) == ("ACTOR_CREATION_TASK", "FAILED",
                                                        "ACTOR_DIED")
    assert "RuntimeError: no keeping today" in get_task(init.task_id).error_message
    summary = summarize_actors()["cluster"]
    assert summary["summary"]["Keeper"]["state_counts"] == {"ALIVE": 1, "DEAD": 2}
    assert summary["summary_by"] == "class" and summary["total_actors"] >= 3
    ray.kill(alive)


def test_objects_name_the_task_or_put_that_made_them(ray):
    big = ray.put(np.zeros(2 * 1024 * 1024 // 8))
    result = small_result.remote()
    ray.get(result)
    rows = {o.object_id: o for o in list_objects(limit=10_000)}
    assert rows[big.hex()].call_site == "put" and rows[big.hex()].object_size >= 2 * 1024 * 1024
    assert rows[result.hex()].call_site == "small_result"  # inline, named by its task
    assert rows[result.hex()].task_status == "FINISHED"
    assert rows[result.hex()].reference_type == "LOCAL_REFERENCE"
    assert {(o.type, o.pid) for o in rows.values()} == {("DRIVER", os.getpid())}
    (only,) = get_objects(result.hex())
    assert only.object_id == result.hex()
    assert list_objects(filters=[("call_site", "=", "small_result")])[0].object_id == result.hex()
    assert get_objects("0" * 32) == []


def test_workers_are_the_driver_and_the_processes_running_tasks(ray):
    pid, worker_id = ray.get(where.remote())
    workers = list_workers()
    (driver,) = [w for w in workers if w.worker_type == "DRIVER"]
    assert driver.pid == os.getpid() and driver.is_alive is True
    assert driver.worker_id == ray.get_runtime_context().get_worker_id()
    assert get_worker(worker_id).pid == pid
    (by_pid,) = list_workers(filters=[("pid", "=", str(pid)), ("is_alive", "=", "true")])
    assert by_pid.worker_type == "WORKER" and by_pid.ip == "127.0.0.1"
    assert list_workers(filters=[("is_alive", "=", "false")]) == []


def test_from_inside_a_task(ray):
    seen, pid = ray.get(introspect.remote())
    assert seen == [("RUNNING", pid, True)]
    assert _named("introspect")[0].state == "FINISHED"
    # this session named by its driver pid or "auto": the same records
    for address in (str(os.getpid()), "auto"):
        (again,) = list_tasks(address=address, filters=[("name", "=", "introspect")])
        assert (again.state, again.worker_pid) == ("FINISHED", pid)


def test_summarize_tasks_counts_per_name_and_state(ray):
    refs = [counted.remote(i) for i in range(4)]
    ray.wait(refs, num_returns=4)
    summary = summarize_tasks()["cluster"]
    assert summary["summary"]["counted"] == {"func_or_class_name": "counted",
                                             "type": "NORMAL_TASK",
                                             "state_counts": {"FINISHED": 3, "FAILED": 1}}
    assert summary["summary_by"] == "func_name" and summary["total_tasks"] >= 4


def test_limit(ray):
    ray.get([many.remote(i) for i in range(5)])
    assert len(list_tasks(filters=[("name", "=", "many")], limit=2)) == 2
    assert len(_named("many")) == 5


@pytest.mark.parametrize("call, error, words", [
    (lambda: list_tasks(filters=[("colour", "=", "red")]), RayStateApiException,
     "'colour' is not supported for tasks. Supported filter columns: actor_id"),
    (lambda: list_actors(filters=[("error_message", "=", "x")]), RayStateApiException,
     "'error_message' is not supported for actors"),
    (lambda: list_tasks(filters=[("state", ">", "FAILED")]), ValueError,
     "Unsupported filter predicate '>' is given. Available predicates: =, !=."),
    (lambda: list_tasks(filters=[("state", "FAILED")]), ValueError,
     "Provide (key, predicate, value) tuples"),
    (lambda: list_tasks(filters="state=FAILED"), TypeError, "list of (key, predicate, value)"),
    (lambda: list_tasks(filters=[("worker_pid", "=", "abc")]), ValueError,
     "worker_pid='abc' for an integer column"),
    (lambda: list_workers(filters=[("is_alive", "=", "maybe")]), ValueError,
     "for a boolean column"),
    (lambda: list_tasks(limit=0), ValueError, "limit must be at least 1, got 0"),
    (lambda: list_tasks(limit="5"), TypeError, "limit must be an integer, got str"),
    (lambda: list_tasks(timeout=-1), ValueError, "timeout must be a positive number"),
    (lambda: list_tasks(address=6379), TypeError, "address must be a string or None"),
    (lambda: list_tasks(address="no-such-session"), ConnectionError,
     "No live shmray session matches 'no-such-session'"),
    (lambda: get_task(12), TypeError, "id must be a task id (str) or an ObjectRef, got int"),
    (lambda: get_actor(None), TypeError, "id must be a string, got NoneType"),
])
def test_bad_input_is_a_clear_error(ray, call, error, words):
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)


OTHER_SESSION = textwrap.dedent("""
    import os, sys
    import shmray as ray
    ray.init(num_cpus=1)

    @ray.remote
    def elsewhere():
        raise LookupError("in the other session")

    try:
        ray.get(elsewhere.remote())
    except LookupError:
        pass
    print("READY", os.getpid(), ray._context.runtime.tag, flush=True)
    sys.stdin.readline()  # until the test is done
    ray.shutdown()
""")


def test_another_session_by_its_driver_pid_or_tag(ray, tmp_path):
    script = tmp_path / "other.py"
    script.write_text(OTHER_SESSION)
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY"), line + proc.stderr.read()
        _, pid, tag = line.split()
        for address in (pid, tag):
            (task,) = list_tasks(address=address, detail=True)
            assert (task.name, task.state, task.error_message) == (
                "elsewhere", "FAILED", "LookupError: in the other session")
            assert task.job_id == f"{int(pid):08x}"
        assert _named("elsewhere") == []  # this process's own session knows none
        (driver,) = list_workers(address=pid, filters=[("worker_type", "=", "DRIVER")])
        assert driver.pid == int(pid)
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read()


def _run(code: str, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, **env))


def test_without_a_session_or_in_local_mode(tmp_path):
    out = _run("""
        from shmray.util.state import list_tasks
        try:
            list_tasks()
        except ConnectionError as e:
            print("ConnectionError:", e)
    """, TMPDIR=str(tmp_path))  # (where sessions are looked for: none there)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ConnectionError: No shmray session is running on this "
                                 "machine"), out.stdout
    out = _run("""
        import shmray as ray
        from shmray.util.state import list_tasks
        ray.init(local_mode=True)
        try:
            list_tasks()
        except RuntimeError as e:
            print("RuntimeError:", e)
        ray.shutdown()
    """)
    assert out.returncode == 0, out.stderr
    assert "a program in local mode (init(local_mode=True)) has none" in out.stdout
