"""The status CLI and the timeline with actors: `shmray status` counts them and lists
their workers, `shmray list actors` (text and --json), actor calls on the timeline.

The session (another process, as in test_cli_status) has a named actor that ran five
calls, an actor killed after one call, one that holds 2 CPUs and runs a call until
the test says stop, and so one that waits for a CPU to be created (a call queued for
it); its driver sits in a long `get` meanwhile."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from test_cli_status import _human, _json, _stop

pytestmark = pytest.mark.timeout(120)

SESSION = textwrap.dedent("""
    import os, sys, time
    import shmray as ray

    marks = sys.argv[1]
    ray.init(num_cpus=2)

    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n, os.getpid()

        def hold(self):
            open(os.path.join(marks, "holding"), "w").close()
            while not os.path.exists(os.path.join(marks, "stop")):
                time.sleep(0.02)
            return "held"

    @ray.remote
    def quick(i):
        return i

    assert ray.get([quick.remote(i) for i in range(3)]) == [0, 1, 2]
    counter = Counter.options(name="counter").remote()
    done = ray.get([counter.incr.remote() for _ in range(5)])
    assert [n for n, _ in done] == [1, 2, 3, 4, 5]
    doomed = Counter.remote()
    _, doomed_pid = ray.get(doomed.incr.remote())
    ray.kill(doomed)
    holder = Counter.options(num_cpus=2).remote()  # every CPU, for its life
    held = holder.hold.remote()
    while not os.path.exists(os.path.join(marks, "holding")):
        time.sleep(0.01)
    waiting = Counter.options(num_cpus=1).remote()  # never placed while the holder lives
    queued = waiting.incr.remote()
    print("READY", os.getpid(), done[0][1], doomed_pid, flush=True)
    assert ray.get(held) == "held"
    ray.shutdown()
    print("DONE", flush=True)
""")


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("actors")
    marks = tmp / "marks"
    marks.mkdir()
    script = tmp / "actors.py"
    script.write_text(SESSION)
    proc = subprocess.Popen([sys.executable, str(script), str(marks)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise AssertionError(f"session did not start: {line}{proc.stderr.read()}")
    except BaseException:  # (a timeout too) its workers end with it
        proc.kill()
        proc.wait()
        raise
    pid, counter, doomed = map(int, line.split()[1:])
    yield {"pid": pid, "counter": counter, "doomed": doomed}
    _stop(proc, marks)


def _actors(session):
    return _json("list", "actors", "--session", str(session["pid"]))


def test_status_counts_actors_and_marks_their_workers(session):
    data = _json("status", "--session", str(session["pid"]))
    d = data["driver"]
    assert (d["actors_alive"], d["actors_pending"], d["actors_restarting"]) == (2, 1, 0)
    assert d["actor_workers"] == 2 and d["workers"] >= 2
    # the holder's call runs; the waiting actor's creation and call wait for a CPU
    assert (d["tasks_running"], d["tasks_queued"], d["tasks_waiting_for_inputs"]) == (1, 2, 0)
    assert [a["state"] for a in data["actors"]].count("DEAD") == 1
    actors = {w["pid"]: w["actor"] for w in data["workers"] if w["actor"]}
    assert len(actors) == 2 and len(data["workers"]) == d["workers"] + 2
    assert actors[session["counter"]]["class_name"] == "Counter"
    assert actors[session["counter"]]["name"] == "counter"
    names = data["functions"]
    running = [w for w in data["workers"] if w["actor"] and w["state"] == "running"]
    assert [names[str(w["fn_id"])] for w in running] == ["Counter.hold"]

    text = _human("status", "--session", str(session["pid"]))
    assert "actors: 2 alive, 1 pending creation, 0 restarting, 1 dead" in text
    task_table, actor_table = text.split("\nactors:")
    rows = {int(line.split()[0]): line for line in actor_table.splitlines()[1:]
            if line.strip() and line.split()[0].isdigit()}
    assert set(rows) == set(actors)
    assert "Counter 'counter'" in rows[session["counter"]]
    assert any("running" in line and "Counter.hold" in line for line in rows.values())
    assert str(session["counter"]) not in task_table  # listed once, as an actor


def test_list_actors_text_and_json(session):
    rows = _actors(session)
    by_state = {}
    for r in rows:
        by_state.setdefault(r["state"], []).append(r)
    assert [len(by_state[s]) for s in ("ALIVE", "PENDING_CREATION", "DEAD")] == [2, 1, 1]
    assert [r["state"] for r in rows][-1] == "DEAD"  # the live ones first
    counter = next(r for r in rows if r["name"] == "counter")
    assert counter["class_name"] == "Counter" and counter["pid"] == session["counter"]
    assert len(counter["actor_id"]) == 32 and counter["ray_namespace"].startswith("anonymous-")
    assert "num_restarts" not in counter  # (a detail column)
    holder = next(r for r in by_state["ALIVE"] if r is not counter)
    pending = by_state["PENDING_CREATION"][0]
    assert pending["pid"] == 0  # (Ray's: 0 until its process exists)
    dead = by_state["DEAD"][0]
    assert dead["pid"] == session["doomed"]
    detailed = {r["actor_id"]: r for r in _json("list", "actors", "--detail", "--session",
                                                 str(session["pid"]))}
    assert detailed[counter["actor_id"]]["num_restarts"] == 0
    assert detailed[counter["actor_id"]]["death_cause"] is None
    cause = detailed[dead["actor_id"]]["death_cause"]["actor_died_error_context"]
    assert "killed by shmray.kill()" in cause["error_message"]
    assert detailed[holder["actor_id"]]["required_resources"] == {"CPU": 2.0}

    text = _human("list", "actors", "--session", str(session["pid"]))
    lines = text.splitlines()
    assert lines[0].split() == ["ACTOR", "ID", "CLASS", "NAME", "STATE", "PID", "CALLS",
                                "RUNNING"]
    cells = {line.split()[0]: line.split() for line in lines[1:]}
    assert cells[counter["actor_id"]][1:6] == ["Counter", "counter", "ALIVE",
                                               str(session["counter"]), "5"]
    assert cells[dead["actor_id"]][3:6] == ["DEAD", str(session["doomed"]), "1"]  # one call
    assert cells[holder["actor_id"]][-1] == "hold"
    assert cells[pending["actor_id"]][3] == "PENDING_CREATION"  # Ray's name, as in --json
    assert len(_json("list", "actors", "--limit", "2", "--session", str(session["pid"]))) == 2


def test_list_tasks_says_which_rows_are_actor_calls(session):
    rows = _json("list", "tasks", "--detail", "--session", str(session["pid"]))
    kinds = {}
    for r in rows:
        kinds.setdefault(r["name"], set()).add(r["type"])
    assert kinds["quick"] == {"NORMAL_TASK"}
    assert kinds["Counter.__init__"] == {"ACTOR_CREATION_TASK"}
    assert kinds["Counter.incr"] == kinds["Counter.hold"] == {"ACTOR_TASK"}
    hold = next(r for r in rows if r["name"] == "Counter.hold")
    assert hold["state"] == "RUNNING" and hold["start_time_ms"] is not None
    actors = {a["actor_id"]: a for a in _actors(session)}
    assert actors[hold["actor_id"]]["state"] == "ALIVE"
    calls = [r for r in rows if r["name"] == "Counter.incr" and r["state"] == "FINISHED"]
    counter = next(a for a in actors.values() if a["name"] == "counter")
    assert sum(r["actor_id"] == counter["actor_id"] for r in calls) == 5
    assert {r["actor_id"] for r in rows if r["type"] == "NORMAL_TASK"} == {None}


def test_timeline_shows_actor_calls_on_the_actors_tracks(session, tmp_path):
    out = _human("timeline", "trace.json", "--session", str(session["pid"]), cwd=tmp_path)
    events = json.loads((tmp_path / "trace.json").read_text())
    calls = [e for e in events if e["ph"] == "X" and e["name"] == "Counter.incr"]
    (hold,) = [e for e in events if e["ph"] == "X" and e["name"] == "Counter.hold"]
    assert hold["args"]["state"] == "RUNNING"  # (until now)
    assert sorted(e["tid"] for e in calls) == sorted([session["doomed"]] + [session["counter"]] * 5)
    assert all(e["cat"] == "actor_task" for e in calls)
    tracks = {e["tid"]: e["args"]["name"] for e in events
              if e["ph"] == "M" and e["name"] == "thread_name"}
    assert tracks[session["counter"]] == f"actor Counter 'counter' pid {session['counter']}"
    assert tracks[session["doomed"]] == f"actor Counter pid {session['doomed']}"  # gone
    quick = {e["tid"] for e in events if e["ph"] == "X" and e["name"] == "quick"}
    assert quick and all(tracks[t].startswith("worker pid") for t in quick)
    assert f"{sum(1 for e in events if e['ph'] == 'X')} task(s) written" in out


def test_timeline_in_the_program_names_a_restarted_actors_tracks(fresh):
    fresh.init(num_cpus=1)

    @fresh.remote(max_restarts=1)
    class Phoenix:
        def pid(self):
            return __import__("os").getpid()

    p = Phoenix.remote()
    first = fresh.get(p.pid.remote(), timeout=60)
    fresh.kill(p, no_restart=False)
    second = fresh.get(p.pid.remote(), timeout=60)
    assert first != second
    events = fresh.timeline()
    calls = [e for e in events if e["ph"] == "X" and e["name"].endswith("Phoenix.pid")]
    assert sorted(e["tid"] for e in calls) == sorted([first, second])
    tracks = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and "tid" in e}
    for pid in (first, second):  # the first process's track too, though its pid is gone
        assert tracks[pid].startswith("actor ") and tracks[pid].endswith(f"Phoenix pid {pid}")

    from shmray import _context
    snap = _context.runtime.snapshot()
    (row,) = snap["actors"]
    assert (row["state"], row["restarts"], row["pid"]) == ("ALIVE", 1, second)
    assert snap["counters"]["actors_alive"] == 1 and snap["counters"]["actor_workers"] == 1


def test_list_actors_fits_in_100_columns_with_long_names_and_big_numbers():
    from shmray import _cli_text

    row = {"actor_id": "f" * 32, "class_name": "AVeryLongActorClassName" * 2,
           "name": "a-long-actor-name" * 3, "namespace": "", "state": "RESTARTING",
           "pid": 4_194_304, "restarts": 1_000, "calls_done": 12_345_678, "pending_calls": 0,
           "current_method": "AVeryLongActorClassName.a_long_method_name", "started": 0.0}
    text = _cli_text.actors([row, dict(row, state="PENDING_CREATION", pid=None)])
    assert all(len(line) <= 100 for line in text.splitlines()), text
    assert "RESTARTING" in text and " PENDING_CREATION " in text and "12345678" in text
