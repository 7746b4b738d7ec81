"""`shmray list` with Ray's records: --filter (=, !=, repeated), --detail, `list objects`
and `list workers`, a failed task's message, Ray's state names in text and JSON, and
`shmray memory` naming the task behind each result.

The session (another process, as in test_cli_status) ran three tasks (one result
kept), a task that failed, an actor alive and one killed; a task runs until the test
says stop and another waits for its result."""
from __future__ import annotations

import textwrap

import pytest

from test_cli_status import _cli, _human, _json, _start, _stop

pytestmark = pytest.mark.timeout(120)

SESSION = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import shmray as ray

    marks = sys.argv[1]
    ray.init(num_cpus=2)

    @ray.remote
    def quick(i):
        return i

    @ray.remote
    def broken(n):
        raise ValueError(f"{n} is not a good number")

    @ray.remote
    def holder():
        open(os.path.join(marks, "holding"), "w").close()
        while not os.path.exists(os.path.join(marks, "stop")):
            time.sleep(0.02)
        return "held"

    @ray.remote
    def follower(x):
        return x

    @ray.remote
    class Box:
        def pid(self):
            return os.getpid()

    kept = quick.remote(41)
    assert ray.get([kept, quick.remote(1), quick.remote(2)]) == [41, 1, 2]
    try:
        ray.get(broken.remote(13))
    except ValueError:
        pass
    array = ray.put(np.zeros(1024 * 1024 // 8))
    box = Box.remote()
    ray.get(box.pid.remote())
    gone = Box.remote()
    ray.get(gone.pid.remote())
    ray.kill(gone)
    held = holder.remote()
    waiting = follower.remote(held)
    while not os.path.exists(os.path.join(marks, "holding")):
        time.sleep(0.01)
    print("READY", os.getpid(), kept.hex(), flush=True)
    assert ray.get(waiting) == "held"
    ray.shutdown()
    print("DONE", flush=True)
""")


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("list")
    proc, marks, pid = _start(tmp, "main", SESSION)
    yield {"pid": str(pid)}
    _stop(proc, marks)


def _list(session, *args):
    return _json("list", *args, "--session", session["pid"])


def _names(rows):
    return sorted(r["name"] for r in rows)


def test_filters_with_rays_keys_and_values(session):
    (failed,) = _list(session, "tasks", "--filter", "state=FAILED")
    assert (failed["name"], failed["error_type"]) == ("broken", "TASK_EXECUTION_EXCEPTION")
    assert set(failed) == {"task_id", "attempt_number", "name", "state", "job_id", "actor_id",
                           "type", "func_or_class_name", "parent_task_id", "node_id",
                           "worker_id", "worker_pid", "error_type"}  # Ray's base columns
    assert _list(session, "tasks", "--filter", "STATE=failed") == [failed]  # any case
    unfinished = _list(session, "tasks", "--filter", "state!=FINISHED", "--filter",
                       "type=NORMAL_TASK")
    assert {(r["name"], r["state"]) for r in unfinished} == {
        ("holder", "RUNNING"), ("follower", "PENDING_ARGS_AVAIL"), ("broken", "FAILED")}
    holder = next(r for r in unfinished if r["name"] == "holder")
    on_its_worker = _list(session, "tasks", "--filter", f"worker_pid={holder['worker_pid']}",
                          "--filter", "state=RUNNING")
    assert on_its_worker == [holder]
    calls = _list(session, "tasks", "--filter", "type=ACTOR_TASK")
    assert _names(calls) == ["Box.pid", "Box.pid"]
    (dead,) = _list(session, "actors", "--filter", "state=DEAD")
    assert dead["class_name"] == "Box" and dead["pid"] > 0
    assert {a["state"] for a in _list(session, "actors", "--filter", "class_name=box")} == \
        {"ALIVE", "DEAD"}


def test_detail_adds_the_detail_columns(session):
    (failed,) = _list(session, "tasks", "--filter", "name=broken", "--detail")
    assert failed["error_message"] == "ValueError: 13 is not a good number"
    assert failed["start_time_ms"] <= failed["end_time_ms"] and failed["language"] == "PYTHON"
    (holder,) = _list(session, "tasks", "--filter", "name=holder", "--detail")
    assert holder["required_resources"] == {"CPU": 1.0} and holder["end_time_ms"] is None

    text = _human("list", "tasks", "--filter", "name=broken", "--detail", "--session",
                  session["pid"])
    lines = text.splitlines()
    assert lines[0].startswith("- task_id: ") and "  name: broken" in lines
    assert "  error_message: ValueError: 13 is not a good number" in lines


def test_text_tables_use_rays_state_names_and_show_the_error(session):
    lines = _human("list", "tasks", "--session", session["pid"]).splitlines()
    rows = {line.split()[1]: i for i, line in enumerate(lines) if not line.startswith(" ")}
    assert "PENDING_ARGS_AVAIL" in lines[rows["follower"]] and "RUNNING" in lines[rows["holder"]]
    assert lines[rows["broken"]].split()[2] == "FAILED"
    assert lines[rows["broken"] + 1] == "    error: ValueError: 13 is not a good number"
    assert sum(line.startswith("    error: ") for line in lines) == 1


def test_list_objects_and_memory_name_the_task_behind_a_result(session, tmp_path):
    objects = _list(session, "objects")
    assert {o["call_site"] for o in objects} >= {"quick", "put"}
    kept = next(o for o in objects if o["call_site"] == "quick")
    assert (kept["type"], kept["pid"]) == ("DRIVER", int(session["pid"]))
    assert kept["task_status"] == "FINISHED" and kept["reference_type"] == "LOCAL_REFERENCE"
    assert _list(session, "objects", "--filter", f"object_id={kept['object_id']}") == [kept]

    memory = _json("memory", "--session", session["pid"])
    row = next(o for o in memory["objects"] if o["object_id"] == kept["object_id"])
    assert (row["where"], row["created_by"], row["task_id"]) == ("inline", "quick",
                                                                  kept["object_id"])
    text = _human("memory", "--session", session["pid"])
    assert any(line.startswith(kept["object_id"]) and line.endswith("quick")
               for line in text.splitlines())
    listed = _human("list", "objects", "--session", session["pid"])
    assert listed.splitlines()[0].split() == ["OBJECT", "ID", "SIZE", "STATUS", "REFERENCE",
                                              "TYPE", "CREATED", "BY"]


def test_list_workers(session):
    workers = _list(session, "workers")
    (driver,) = [w for w in workers if w["worker_type"] == "DRIVER"]
    assert driver["pid"] == int(session["pid"]) and driver["is_alive"] is True
    running = {r["worker_pid"] for r in _list(session, "tasks", "--filter", "state=RUNNING")}
    assert running <= {w["pid"] for w in workers if w["worker_type"] == "WORKER"}
    assert _list(session, "workers", "--filter", "worker_type=DRIVER") == [driver]
    text = _human("list", "workers", "--session", session["pid"])
    assert any(line.split()[:2] == [session["pid"], "DRIVER"] for line in text.splitlines())


def test_limit_says_how_many_more_there_are(session):
    out = _cli("list", "tasks", "--limit", "2", "--json", "--session", session["pid"])
    assert out.returncode == 0 and out.stderr.startswith("(")
    assert "more not shown: raise --limit, or narrow with --filter" in out.stderr


@pytest.mark.parametrize("args, words", [
    (["tasks", "--filter", "colour=red"], "The given filter column 'colour' is not supported "
                                          "for tasks. Supported filter columns: actor_id"),
    (["tasks", "--filter", "state"], "invalid filter 'state': give key=value or key!=value"),
    (["tasks", "--filter", "=FAILED"], "invalid filter '=FAILED'"),
    (["workers", "--filter", "pid=many"], "pid='many' for an integer column"),
    (["sessions", "--filter", "state=FAILED"], "--filter and --detail apply to tasks"),
])
def test_a_bad_filter_is_a_one_line_usage_error(session, args, words):
    out = _cli("list", *args, "--session", session["pid"])
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("shmray list: error: ") and words in out.stderr
