"""The status CLI (issue 7) against a real session in another process: `shmray status`,
`memory`, `list tasks`, `summary tasks`, `timeline`, `list sessions`, `cleanup`.

The session runs a finished batch, a failed task, a task that runs until told to
stop, one blocked in get on it, and holds three large objects; its driver sits in
a long `get` meanwhile (the CLI must read it without its help beyond a snapshot)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from shmray import _shm

pytestmark = pytest.mark.timeout(120)

MB = 1024 * 1024
SESSION = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import shmray as ray

    marks = sys.argv[1]
    ray.init(num_cpus=3)

    def mark(name):
        with open(os.path.join(marks, name), "w") as f:
            f.write(str(os.getpid()))

    @ray.remote
    def quick(i):
        return i

    @ray.remote
    def bad():
        raise KeyError("nope")

    @ray.remote
    def holder():
        mark("holder")
        while not os.path.exists(os.path.join(marks, "stop")):
            time.sleep(0.02)
        return "held"

    @ray.remote
    def waiter(box):
        mark("waiter")
        return ray.get(box[0][0])

    assert ray.get([quick.remote(i) for i in range(10)]) == list(range(10))
    try:
        ray.get(bad.remote())
    except KeyError:
        pass
    arrays = [ray.put(np.zeros(n * 1024 * 1024 // 8)) for n in (2, 3, 5)]
    held = holder.remote()
    blocked = waiter.remote([[held]])
    while not all(os.path.exists(os.path.join(marks, m)) for m in ("holder", "waiter")):
        time.sleep(0.01)
    print("READY", os.getpid(), flush=True)
    assert ray.get(blocked) == "held"  # the long get, until the test says stop
    ray.shutdown()
    print("DONE", flush=True)
""")


def _cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "shmray", *args], capture_output=True,
                          text=True, timeout=60, env=env, cwd=cwd)


def _json(*args):
    out = _cli(*args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _human(*args, cwd=None):
    out = _cli(*args, cwd=cwd)
    assert out.returncode == 0, out.stderr
    assert all(len(line) <= 100 for line in out.stdout.splitlines()), out.stdout
    return out.stdout


def _start(tmp_path, name, script=SESSION):
    marks = tmp_path / name
    marks.mkdir()
    path = tmp_path / f"{name}.py"
    path.write_text(script)
    proc = subprocess.Popen([sys.executable, str(path), str(marks)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        raise AssertionError(f"session did not start: {line}{proc.stderr.read()}")
    return proc, marks, int(line.split()[1])


def _stop(proc, marks):
    (marks / "stop").write_text("")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "DONE" in out, err


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("status")
    proc, marks, pid = _start(tmp, "main")
    pids = {m: int((marks / m).read_text()) for m in ("holder", "waiter")}
    yield {"pid": pid, "holder": pids["holder"], "waiter": pids["waiter"], "tmp": tmp}
    _stop(proc, marks)


def test_status_shows_workers_states_and_current_tasks(session):
    data = _json("status", "--session", str(session["pid"]))
    assert data["session"]["driver_pid"] == session["pid"]
    assert data["snapshot_fresh"]  # the driver answered although it sits in a get
    workers = {w["pid"]: w for w in data["workers"]}
    assert len(workers) >= 3
    names = data["functions"]
    holder, waiter = workers[session["holder"]], workers[session["waiter"]]
    assert holder["state"] == "running" and names[str(holder["fn_id"])] == "holder"
    assert waiter["state"] == "blocked in get" and names[str(waiter["fn_id"])] == "waiter"
    assert all(w["state"] == "idle" for p, w in workers.items()
               if p not in (session["holder"], session["waiter"]))
    assert holder["tasks_done"] + waiter["tasks_done"] <= 11
    assert sum(w["tasks_done"] for w in workers.values()) == 11  # 10 quick + 1 bad
    assert all(w["rss_bytes"] > 1 * MB for w in workers.values())
    d = data["driver"]
    assert (d["tasks_finished"], d["tasks_failed"], d["tasks_running"]) == (10, 1, 2)
    assert d["objects"] == 3 and d["shm_bytes"] >= 10 * MB
    assert data["resources"]["total"]["CPU"] == 3.0

    text = _human("status", "--session", str(session["pid"]))
    rows = {int(line.split()[0]): line for line in text.splitlines()
            if line.strip() and line.split()[0].isdigit()}
    assert "blocked in get" in rows[session["waiter"]] and "waiter" in rows[session["waiter"]]
    assert "running" in rows[session["holder"]] and "holder" in rows[session["holder"]]
    assert "10 finished, 1 failed" in text and "3 objects" in text


def test_memory_lists_objects_largest_first_with_totals(session):
    data = _json("memory", "--session", str(session["pid"]))
    sizes = [o["size"] for o in data["objects"]]
    assert sizes == sorted(sizes, reverse=True)
    large = [o for o in data["objects"] if o["where"] == "shared memory"]
    assert [round(o["size"] / MB) for o in large] == [5, 3, 2]
    assert all(o["created_by"] == "put" and o["reference_count"] == 1 for o in large)
    assert data["store"]["objects"] == 3 and data["store"]["shm_segments"] == 3

    text = _human("memory", "--session", str(session["pid"]))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["OBJECT", "ID", "SIZE"]
    assert [line.split()[1:3] for line in lines[1:4]] == [["5.0", "MiB"], ["3.0", "MiB"],
                                                         ["2.0", "MiB"]]
    assert lines[-1].startswith("3 objects: 10.0 MiB in shared memory")


def test_list_and_summary_of_tasks(session):
    rows = _json("list", "tasks", "--session", str(session["pid"]))
    by_name = {}
    for r in rows:
        by_name.setdefault(r["name"], []).append(r)
    assert [r["state"] for r in by_name["quick"]] == ["FINISHED"] * 10
    assert by_name["bad"][0]["state"] == "FAILED"
    assert by_name["bad"][0]["error_type"] == "TASK_EXECUTION_EXCEPTION"  # Ray's ErrorType
    assert by_name["holder"][0]["state"] == "RUNNING"
    assert by_name["holder"][0]["worker_pid"] == session["holder"]
    assert by_name["waiter"][0]["worker_pid"] == session["waiter"]
    assert rows[0]["state"] == "RUNNING"  # unfinished first
    assert len(_json("list", "tasks", "--limit", "3", "--session", str(session["pid"]))) == 3
    detailed = _json("list", "tasks", "--detail", "--session", str(session["pid"]))
    holder = next(r for r in detailed if r["name"] == "holder")
    assert holder["start_time_ms"] is not None  # from the worker's words
    assert holder["end_time_ms"] is None

    text = _human("list", "tasks", "--session", str(session["pid"]))
    assert text.splitlines()[0].split()[:3] == ["TASK", "ID", "NAME"]
    assert sum(" quick " in line and "FINISHED" in line for line in text.splitlines()) == 10
    assert any("KeyError: 'nope'" in line for line in text.splitlines())

    groups = {g["name"]: g for g in _json("summary", "tasks", "--session", str(session["pid"]))}
    assert (groups["quick"]["total"], groups["quick"]["FINISHED"]) == (10, 10)
    assert groups["bad"]["FAILED"] == 1 and groups["holder"]["RUNNING"] == 1
    text = _human("summary", "tasks", "--session", str(session["pid"]))
    assert text.splitlines()[1].split()[:2] == ["quick", "10"]


def test_timeline_is_chrome_trace_json_with_one_event_per_task(session, tmp_path):
    path = tmp_path / "trace.json"
    out = _human("timeline", "trace.json", "--session", str(session["pid"]), cwd=tmp_path)
    assert "13 task(s) written to trace.json (2 running, until now)" in out
    events = json.loads(path.read_text())
    tasks = [e for e in events if e["ph"] == "X"]
    assert len(tasks) == 13  # 10 quick, bad, and the holder and the waiter running now
    assert sorted(e["name"] for e in tasks) == ["bad", "holder"] + ["quick"] * 10 + ["waiter"]
    for e in tasks:
        assert e["pid"] == session["pid"] and isinstance(e["tid"], int)
        assert e["dur"] >= 0 and e["ts"] > 1e15  # microseconds since the epoch
    running = {e["name"]: e for e in tasks if e["args"]["state"] == "RUNNING"}
    assert set(running) == {"holder", "waiter"}
    assert running["holder"]["tid"] == session["holder"] and running["holder"]["dur"] > 0
    (bad,) = [e for e in tasks if e["name"] == "bad"]
    assert bad["args"]["error"] == "KeyError" and bad["args"]["error_message"] == "KeyError: 'nope'"
    named = {e["tid"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {e["tid"] for e in tasks} <= named


def test_list_sessions_and_choosing_one(session):
    sessions = _json("list", "sessions")
    assert session["pid"] in [s["driver_pid"] for s in sessions]
    out = _cli("status", "--session", "1")
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert "No live shmray session matches '1'" in out.stderr


def test_every_command_says_so_in_one_line_when_there_is_no_session(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))  # where sessions are looked for
    for args in (["status"], ["memory"], ["list", "tasks"], ["summary", "tasks"],
                 ["timeline"]):
        out = _cli(*args, env=env)
        assert out.returncode == 1, args
        assert out.stderr.strip() == ("No shmray session is running on this machine (a session "
                                      "lives from shmray.init() to shutdown()).")


def test_status_watch_refreshes_until_ctrl_c(session):
    proc = subprocess.Popen([sys.executable, "-m", "shmray", "status", "--watch", "0.1",
                             "--session", str(session["pid"])], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.count("\x1b[H\x1b[2J") >= 2 and out.count("shmray session:") >= 2


IDLE_SESSION = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import shmray as ray
    ray.init(num_cpus=2)
    big = ray.put(np.zeros(1024 * 1024))
    print("READY", os.getpid(), flush=True)
    time.sleep(600)
""")


def test_cleanup_removes_a_killed_sessions_leftovers_and_leaves_a_live_one(session, tmp_path):
    proc, _, pid = _start(tmp_path, "killed", IDLE_SESSION)
    prefix = f"shmray_{pid}_"
    assert _shm.list_names(prefix)
    os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    out = _human("cleanup")
    assert any(line.startswith(f"removed /dev/shm/{prefix}") for line in out.splitlines())
    assert not _shm.list_names(prefix)
    assert not [d for d in os.listdir(_shm.sessions_root()) if d.startswith(f"session_{pid}_")]
    deadline = time.monotonic() + 10  # workers killed by cleanup, or gone on their own
    while _workers_of(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _workers_of(pid)
    # the live session is untouched and still answers
    assert _shm.list_names(f"shmray_{session['pid']}_")
    assert _json("status", "--session", str(session["pid"]))["snapshot_fresh"]


def _workers_of(driver_pid):
    return [pid for pid, driver in _shm.worker_processes() if driver == driver_pid]


def test_long_status_lines_wrap_within_100_columns():
    """Many custom resources, big counts, 12,345 objects: still 100 columns at most."""
    from shmray import _cli_text

    total = {"CPU": 64.0, "memory": 1e12, "object_store_memory": 3e11,
             **{f"accelerator_slot_{i}": 4.0 for i in range(12)}}
    snapshot = {"resources": {"total": total, "available": {k: v / 2 for k, v in total.items()}},
                "functions": {}, "workers": [], "monotonic": 0.0,
                "store": {"objects": 12_345, "objects_listed": 10_000, "shm_bytes": 5 << 40,
                          "shm_segments": 12_000, "inline_bytes": 1 << 30, "spilled": 9_999,
                          "spilled_bytes": 3 << 40, "capacity": 8 << 40}, "objects": [],
                "actors": [{"state": "DEAD"}] * 1_000}
    driver = {"heartbeat_ns": 0, "workers": 64, "blocked_workers": 3, "tasks_submitted": 10**9,
              "tasks_finished": 10**9 - 10**6, "tasks_failed": 1_234_567, "tasks_queued": 999_999,
              "tasks_waiting_for_inputs": 123_456, "tasks_running": 64, "objects": 12_345,
              "shm_bytes": 5 << 40, "capacity": 8 << 40, "spilled": 9_999,
              "spilled_bytes": 3 << 40, "actor_workers": 123_456, "actors_pending": 1_000_000,
              "actors_alive": 123_456, "actors_restarting": 99_999}
    info = {"driver_pid": 1, "tag": "t", "started": time.time(), "python": "cpython 3.11",
            "argv": ["x" * 300]}
    live = {"driver": driver, "workers": [], "monotonic_ns": 0}
    text = _cli_text.status(info, live, snapshot, True, [info]) + "\n" + _cli_text.memory(snapshot)
    assert all(len(line) <= 100 for line in text.splitlines()), text
    assert "accelerator_slot_11 2/4" in text and "12,345 objects" in text
    assert "99,999 restarting, 1,000 dead" in text


def test_timeline_in_the_program_keeps_tasks_of_workers_that_exited(fresh, tmp_path):
    fresh.init(num_cpus=1)

    @fresh.remote(max_calls=1)
    def once():
        return os.getpid()

    @fresh.remote
    def fails():
        raise ValueError("no")

    pids = [fresh.get(once.remote(), timeout=60) for _ in range(3)]  # three workers, gone
    with pytest.raises(ValueError):
        fresh.get(fails.remote(), timeout=60)
    path = tmp_path / "trace.json"
    assert fresh.timeline(str(path)) is None
    events = [e for e in json.loads(path.read_text()) if e["ph"] == "X"]
    # (names are qualified: these functions are local to the test)
    assert sorted(e["tid"] for e in events if e["name"].endswith("once")) == sorted(pids)
    failed = [e for e in events if e["name"].endswith("fails")]
    assert len(failed) == 1 and failed[0]["args"]["error"] == "ValueError"
    # without a file: the same events as a list (timestamps from another wall-clock read)
    again = [e for e in fresh.timeline() if e["ph"] == "X"]
    assert [(e["name"], e["tid"], e["dur"]) for e in again] == \
        [(e["name"], e["tid"], e["dur"]) for e in events]
