"""What the session looks like, as plain data: the driver's snapshot, task rows, traces.

    Session ── snapshot(...) ──► dict (JSON-ready) ──► _status_area.write_snapshot
    snapshot["tasks"] ── chrome_trace() ──► Chrome-trace events (timeline), a track per
                                           worker (an actor's named after its class)
    snapshot["tasks"] ── summarize()    ──► per-function counts and times
    snapshot ── shmray.util.state ──► Ray's records (TaskState, ActorState, ...)

Times in task rows are CLOCK_MONOTONIC seconds, shared by every process on the
machine; a snapshot carries `taken` (wall clock) and `monotonic` (the same moment)
to turn them into dates. The CLI and the driver's `timeline()` share these
functions: the CLI on a snapshot it read, the driver on one it just built.
"""
from __future__ import annotations

import dataclasses
import time

from . import _store_info
from ._object_ref import task_id_of
from ._records import NamedTuple

# 2: "actors", task rows' "type", workers' "actor"; 3: "generators"; 4: "job_id", task rows'
# "error_message", "actor_id", "parent_task_id", "required_resources", "placement_group_id",
# a running task's "start", objects' "task_id"
SNAPSHOT_VERSION = 4
MAX_OBJECTS = 10_000        # object rows in a snapshot, largest first (totals count all)
MAX_LIVE_TASKS = 10_000     # rows of unfinished tasks in a snapshot

FINISHED, FAILED = "FINISHED", "FAILED"
RUNNING = "RUNNING"
SUBMITTED_TO_WORKER = "SUBMITTED_TO_WORKER"           # on a worker, behind another task
PENDING_NODE_ASSIGNMENT = "PENDING_NODE_ASSIGNMENT"   # waiting for resources
PENDING_ARGS_AVAIL = "PENDING_ARGS_AVAIL"             # waiting for its inputs
STATES = (RUNNING, SUBMITTED_TO_WORKER, PENDING_NODE_ASSIGNMENT, PENDING_ARGS_AVAIL, FINISHED,
          FAILED)
# What a task row is (Ray's TaskType names): a function's task, an actor's __init__, a
# call of an actor's method.
NORMAL_TASK, ACTOR_CREATION_TASK, ACTOR_TASK = "NORMAL_TASK", "ACTOR_CREATION_TASK", "ACTOR_TASK"
# Ray's actor states (the rows of _driver.actors.ActorState.row)
ACTOR_PENDING, ACTOR_ALIVE = "PENDING_CREATION", "ALIVE"
ACTOR_RESTARTING, ACTOR_DEAD = "RESTARTING", "DEAD"


def task_row(task_id, name, kind, state, attempt, pid=None, start=None, end=None,
             error=None) -> dict:
    """A task row (times: CLOCK_MONOTONIC seconds; `error`: the exception's type name)."""
    return {"task_id": f"{task_id:032x}", "name": name, "type": kind, "state": state,
            "attempt": attempt, "worker_pid": pid, "start": start, "end": end, "error": error,
            "error_message": None, "actor_id": None, "parent_task_id": None,
            "required_resources": None, "placement_group_id": None}


def finished_rows(records, functions: dict, actor_functions=None) -> list:
    """Task rows of task records: (task id, fn id, attempt, (worker pid or None, start
    ns or None, end ns), error type name or None); `functions`: fn id -> name;
    `actor_functions`: fn id -> the type of the actors' classes and methods."""
    kinds = actor_functions or {}
    return [task_row(task_id, functions.get(fn_id, "?"), kinds.get(fn_id, NORMAL_TASK),
                     FAILED if error else FINISHED, attempt, pid,
                     None if start is None else start * 1e-9,
                     None if end is None else end * 1e-9, error)
            for task_id, fn_id, attempt, (pid, start, end), error in records]


def live_row(spec, state: str, pid=None) -> dict:
    kind = NORMAL_TASK if spec.actor is None else \
        ACTOR_CREATION_TASK if spec.creates else ACTOR_TASK
    row = task_row(spec.task_id, spec.name, kind, state, spec.attempt, pid)
    if spec.actor is not None:
        row["actor_id"] = f"{spec.actor.actor_id:032x}"
    if spec.parent is not None:  # (None: submitted by the driver)
        row["parent_task_id"] = f"{spec.parent:032x}"
    row["required_resources"] = dict(spec.request)
    group = getattr(getattr(spec.options, "scheduling_strategy", None), "placement_group", None)
    if group is not None:
        row["placement_group_id"] = group.id.hex()
    return row


def live_tasks(specs, workers) -> list:
    """Rows of the tasks not finished yet: on a worker (running, or queued behind the
    running one), waiting for a worker, or waiting for their inputs."""
    rows = []
    on_workers = set()
    for w in workers:
        batched = {task[0] for task in w.batch}  # not pushed to the worker yet
        # A threaded or async actor runs up to max_concurrency calls at once.
        at_once = w.actor.max_concurrency if w.actor is not None else 1
        for i, spec in enumerate(w.inflight):
            running = (i < at_once and spec.task_id not in batched) or spec.helping
            rows.append(live_row(spec, RUNNING if running else SUBMITTED_TO_WORKER, w.pid))
            on_workers.add(spec.task_id)
    for spec in specs:
        if len(rows) >= MAX_LIVE_TASKS:
            break
        if spec.task_id in on_workers:
            continue
        rows.append(live_row(spec, PENDING_ARGS_AVAIL if spec.unresolved
                             else PENDING_NODE_ASSIGNMENT))
    return rows


class TaskExtras(NamedTuple):
    """What the driver knows of tasks beyond their rows: the messages of the failed
    ones ((task id, attempt) -> "Type: message"), and the start (CLOCK_MONOTONIC ns)
    of the running ones, from their workers' words (task id -> ns)."""
    failures: dict
    running_since: dict


def snapshot(session: dict, counters: dict, resources: dict, functions: dict, workers,
             store, history, specs, actors=(), actor_functions=None, generators=(),
             job_id=None, extras=None) -> dict:
    """The driver's state as JSON-ready data (see the module docstring). `workers`:
    task workers and actors' (with their `actor`); `actors`: actor rows
    (_driver.actors.ActorState.row), live and recently dead; `generators`: the
    streaming generator tasks still running (_driver.generators.Stream.row);
    `extras`: a TaskExtras."""
    stats = store.statistics()
    objects = _store_info.objects(store)
    actors = list(actors)
    tasks = finished_rows(history, functions, actor_functions) + live_tasks(specs, workers)
    complete_tasks(tasks, extras or TaskExtras({}, {}), _actor_pids(actors, workers))
    return {
        "version": SNAPSHOT_VERSION,
        "taken": time.time(),
        "monotonic": time.monotonic(),
        "session": session,
        "job_id": job_id,
        "counters": counters,
        "resources": resources,
        "functions": {str(fn_id): name for fn_id, name in functions.items()},
        "workers": [{"index": w.index, "pid": w.pid, "core": w.core, "gpus": list(w.gpus),
                     "extra": w.extra, "tasks_queued": max(0, len(w.inflight) - 1),
                     "blocked": w.blocked, "retiring": w.retiring,
                     "tasks_done": w.tasks_done, "channel": w.channel.name,
                     "actor": worker_actor(w.actor)}
                    for w in workers],
        "store": {**dataclasses.asdict(stats), "capacity": store.capacity,
                  "objects_listed": min(len(objects), MAX_OBJECTS)},
        "objects": object_rows(objects[:MAX_OBJECTS], tasks),
        "tasks": tasks,
        "actors": actors,
        "generators": list(generators),
    }


def complete_tasks(rows: list, extras: TaskExtras, actor_pids: dict):
    """Fill in what the rows alone do not say: a failed task's message, a running
    task's start, and which actor ran a finished call (by its worker's pid)."""
    for row in rows:
        state = row["state"]
        if state == FAILED:
            row["error_message"] = extras.failures.get((int(row["task_id"], 16),
                                                        row["attempt"]))
        elif state == RUNNING and row["start"] is None:
            since = extras.running_since.get(row["task_id"])
            if since is not None:
                row["start"] = since * 1e-9
        if row["actor_id"] is None and row["type"] != NORMAL_TASK:
            row["actor_id"] = actor_pids.get(row["worker_pid"])


def _actor_pids(actor_rows: list, workers) -> dict:
    """worker pid -> the actor id it is (or was, for the dead actors listed)."""
    pids = {row["pid"]: row["actor_id"] for row in actor_rows if row["pid"]}
    pids.update((w.pid, f"{w.actor.actor_id:032x}") for w in workers if w.actor is not None)
    return pids


def object_rows(infos: list, tasks: list) -> list:
    """The objects' rows: a task's result names its task (`created_by`, `task_id`),
    also when small (the store names only the creators of objects in shared memory)."""
    names = {row["task_id"]: row["name"] for row in tasks}
    rows = []
    for info in infos:
        task_id = f"{task_id_of(int(info.object_id, 16)):032x}"
        row = {**dataclasses.asdict(info), "reference_count": info.reference_count,
               "task_id": task_id if task_id in names else None}
        if row["created_by"] is None:
            row["created_by"] = names.get(task_id)
        rows.append(row)
    return rows


def worker_actor(actor):
    """Which actor a worker is (None: a task worker)."""
    if actor is None:
        return None
    return {"actor_id": f"{actor.actor_id:032x}", "class_name": actor.class_name,
            "name": actor.name or ""}


def join_workers(live_workers: list, snap) -> None:
    """Complete the workers' words (_status_area.read_live) with the snapshot's view:
    which actor each is (`actor`, None: a task worker, or one the snapshot, older,
    does not know), and a starting worker's pid and core (its words not written yet)."""
    known = {w["index"]: w for w in snap["workers"]} if snap else {}
    for w in live_workers:
        seen = known.get(w["index"])
        if seen is not None and not w["pid"]:
            w.update(pid=seen["pid"], core=seen["core"])
        w["actor"] = seen.get("actor") if seen is not None else None


def chrome_trace(snap: dict) -> list:
    """Chrome-trace events (chrome://tracing, Perfetto): one complete ("X") event per
    task that ran or runs now (until the snapshot's moment), on a track per worker, in
    microseconds since the epoch. An actor's calls are named "Class.method"; its track
    "actor Class ...": a restarted actor's earlier processes too (their rows are actor
    calls)."""
    offset = snap["taken"] - snap["monotonic"]
    driver = snap["session"]["driver_pid"]
    events, tracks = [], {}
    for row in snap["tasks"]:
        if row["start"] is None or row["state"] not in (FINISHED, FAILED, RUNNING):
            continue
        pid = row["worker_pid"]
        kind = row.get("type", NORMAL_TASK)  # (a snapshot of version 1 has none)
        if pid not in tracks or kind != NORMAL_TASK:
            # An actor's method names are "Class.method" (class names may hold dots).
            tracks[pid] = row["name"].rsplit(".", 1)[0] if kind != NORMAL_TASK else None
        end = snap["monotonic"] if row["end"] is None else row["end"]  # (running: until now)
        args = {"task_id": row["task_id"], "attempt": row["attempt"], "state": row["state"]}
        if row["error"]:
            args["error"] = row["error"]
            if row.get("error_message"):
                args["error_message"] = row["error_message"]
        events.append({
            "name": row["name"], "cat": "task" if kind == NORMAL_TASK else "actor_task",
            "ph": "X", "pid": driver, "tid": pid,
            "ts": (row["start"] + offset) * 1e6,
            "dur": max(0.0, end - row["start"]) * 1e6, "args": args})
    names = {a["pid"]: a["name"] for a in snap.get("actors", ()) if a["pid"] and a["name"]}
    meta = [{"name": "process_name", "ph": "M", "pid": driver,
             "args": {"name": f"shmray session (driver pid {driver})"}}]
    meta += [{"name": "thread_name", "ph": "M", "pid": driver, "tid": pid,
              "args": {"name": track_name(pid, actor_class, names.get(pid))}}
             for pid, actor_class in tracks.items()]
    return meta + events


def track_name(pid, actor_class, actor_name) -> str:
    """A timeline track's name: the worker's pid, and for an actor its class (and the
    actor's name, if it has one)."""
    if actor_class is None:
        return f"worker pid {pid}"
    named = f" {actor_name!r}" if actor_name else ""
    return f"actor {actor_class}{named} pid {pid}"


def summarize(rows: list) -> list:
    """Per function name: tasks in each state, and the run time of the finished ones."""
    by_name = {}
    for row in rows:
        s = by_name.setdefault(row["name"], {"name": row["name"], "total": 0,
                                             **{state: 0 for state in STATES},
                                             "run_seconds": 0.0, "timed": 0})
        s["total"] += 1
        s[row["state"]] += 1
        if row["start"] is not None and row["end"] is not None:
            s["run_seconds"] += row["end"] - row["start"]
            s["timed"] += 1
    out = []
    for s in by_name.values():
        timed = s.pop("timed")
        s["mean_seconds"] = s["run_seconds"] / timed if timed else None
        out.append(s)
    return sorted(out, key=lambda s: -s["total"])
