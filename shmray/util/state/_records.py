"""A session's snapshot (shmray._snapshot) as Ray's state records: one dict per task
attempt, actor, object or worker, with every column of common.TaskState, ActorState,
ObjectState or WorkerState (the detail ones too: filters may name them).

    snapshot["tasks"]   ─► task_records    (unfinished first, then the latest finished)
    snapshot["actors"]  ─► actor_records   (live ones first, then the latest dead)
    snapshot["objects"] ─► object_records  (largest first)
    snapshot["workers"] ─► worker_records  (the driver, then the workers)

The CLI's `list` and the Python API (api.py) print and return these same records.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from ... import _snapshot
from .common import ActorState, ObjectState, PlacementGroupState, TaskState, WorkerState

IP = "127.0.0.1"  # one machine: every process's address
LANGUAGE = "PYTHON"
ENDED = (_snapshot.FINISHED, _snapshot.FAILED)


def worker_id(node_id: str, pid):
    """A process's worker id, as get_runtime_context().get_worker_id() says it: the
    node id's first 48 hex digits, then the pid's 8."""
    return None if not pid else node_id[:48] + f"{pid:08x}"


# Ray's ErrorType names (a TaskState's error_type) for shmray's own errors, by the
# exception type's name a task row keeps ("WorkerExit": the task ended its process);
# an exception of the task's own code is TASK_EXECUTION_EXCEPTION.
ERROR_TYPES = {
    "WorkerCrashedError": "WORKER_DIED", "WorkerExit": "WORKER_DIED",
    "TaskCancelledError": "TASK_CANCELLED", "ObjectLostError": "OBJECT_LOST",
    "OutOfMemoryError": "OUT_OF_MEMORY", "RuntimeEnvSetupError": "RUNTIME_ENV_SETUP_FAILED",
    "TaskUnschedulableError": "TASK_UNSCHEDULABLE_ERROR",
    "RayActorError": "ACTOR_DIED", "ActorDiedError": "ACTOR_DIED",
    "ActorUnavailableError": "ACTOR_UNAVAILABLE",
    "TaskPlacementGroupRemoved": "TASK_PLACEMENT_GROUP_REMOVED",
    "ActorPlacementGroupRemoved": "ACTOR_PLACEMENT_GROUP_REMOVED"}
TASK_EXECUTION_EXCEPTION = "TASK_EXECUTION_EXCEPTION"


def error_type(exception_name):
    return None if exception_name is None else \
        ERROR_TYPES.get(exception_name, TASK_EXECUTION_EXCEPTION)


def job_id(snap: dict) -> str:
    return snap.get("job_id") or f"{snap['session']['driver_pid']:08x}"


def _epoch_ms(snap: dict, monotonic_seconds):
    """A CLOCK_MONOTONIC time of the snapshot's rows as Unix milliseconds."""
    if monotonic_seconds is None:
        return None
    return round((monotonic_seconds + snap["taken"] - snap["monotonic"]) * 1000)


def task_records(snap: dict) -> list:
    rows = snap["tasks"]
    ended = [r for r in rows if r["state"] in ENDED]
    unfinished = [r for r in rows if r["state"] not in ENDED]
    job, node = job_id(snap), snap["session"]["node_id"]
    return [{
        "task_id": r["task_id"], "attempt_number": r["attempt"], "name": r["name"],
        "state": r["state"], "job_id": job, "actor_id": r.get("actor_id"),
        "type": r.get("type", _snapshot.NORMAL_TASK), "func_or_class_name": r["name"],
        "parent_task_id": r.get("parent_task_id"),
        "node_id": node if r["worker_pid"] else None,  # (None: not placed yet)
        "worker_id": worker_id(node, r["worker_pid"]), "worker_pid": r["worker_pid"],
        "error_type": error_type(r["error"]), "language": LANGUAGE,
        "required_resources": r.get("required_resources"),
        "placement_group_id": r.get("placement_group_id"),
        "start_time_ms": _epoch_ms(snap, r["start"]), "end_time_ms": _epoch_ms(snap, r["end"]),
        "error_message": r.get("error_message") or r["error"],
        "is_debugger_paused": False,
    } for r in unfinished + ended[::-1]]


def actor_records(snap: dict) -> list:
    rows = snap.get("actors") or []
    dead = [r for r in rows if r["state"] == _snapshot.ACTOR_DEAD]
    live = [r for r in rows if r["state"] != _snapshot.ACTOR_DEAD]
    job, node = job_id(snap), snap["session"]["node_id"]
    return [{
        "actor_id": r["actor_id"], "class_name": r["class_name"], "state": r["state"],
        "job_id": job, "name": r["name"], "node_id": node, "pid": r["pid"] or 0,
        "ray_namespace": r["namespace"],
        "required_resources": r.get("required_resources"),
        "death_cause": None if not r.get("death") else
        {"actor_died_error_context": {"error_message": r["death"]}},
        "is_detached": r.get("detached"), "num_restarts": r["restarts"],
        "num_restarts_due_to_lineage_reconstruction": 0,
        "num_restarts_due_to_node_preemption": 0,
    } for r in live + dead[::-1]]


# An object's reference types, strongest first (Ray's names): the one its row says.
def _reference_type(o: dict) -> str:
    if o["created_by"] == "an actor's token":
        return "ACTOR_HANDLE"
    if o["pinned_by_workers"]:
        return "PINNED_IN_MEMORY"
    if o["needed_by_tasks"]:
        return "USED_BY_PENDING_TASK"
    if o["driver_refs"] or o["borrowers"]:
        return "LOCAL_REFERENCE"
    if o["contained_in"]:
        return "CAPTURED_IN_OBJECT"
    return "UNKNOWN_STATUS"


def object_records(snap: dict) -> list:
    attempts = {r["task_id"]: r["attempt"] for r in snap["tasks"]}
    driver = snap["session"]["driver_pid"]
    return [{
        "object_id": o["object_id"], "object_size": o["size"],
        "task_status": _snapshot.FAILED if o["where"] == "error" else _snapshot.FINISHED,
        "attempt_number": attempts.get(o.get("task_id"), 0),
        "reference_type": _reference_type(o), "call_site": o["created_by"],
        "type": "DRIVER", "pid": driver, "ip": IP,  # (the driver owns every object)
    } for o in snap["objects"]]


def worker_records(snap: dict) -> list:
    node = snap["session"]["node_id"]
    driver = snap["session"]["driver_pid"]
    processes = [(driver, "DRIVER", snap["session"]["started"])]
    processes += [(w["pid"], "WORKER", None) for w in snap["workers"] if w["pid"]]
    return [{
        "worker_id": worker_id(node, pid), "is_alive": True, "worker_type": kind,
        "exit_type": None, "node_id": node, "ip": IP, "pid": pid,
        "start_time_ms": None if started is None else round(started * 1000),
    } for pid, kind, started in processes]


def placement_group_records(snap: dict) -> list:
    job = job_id(snap)
    return [{
        "placement_group_id": g["placement_group_id"], "name": g["name"],
        "creator_job_id": job, "state": g["state"], "is_detached": g["is_detached"],
        "bundles": [{"bundle_id": f"{g['placement_group_id']}_{i}",
                     "node_id": g["bundles_to_node_id"].get(i),
                     "unit_resources": dict(bundle)} for i, bundle in g["bundles"].items()],
        "stats": dict(g["stats"]),
    } for g in snap.get("placement_groups", ())]


def truncated(snap: dict, kind: str) -> str | None:
    """Why the snapshot does not hold every `kind` ("objects"), or None."""
    if kind == "objects":
        store = snap["store"]
        if store["objects_listed"] < store["objects"]:
            return (f"the session holds {store['objects']:,} objects; a snapshot lists the "
                    f"largest {store['objects_listed']:,}")
    return None


class Kind(NamedTuple):
    """A kind of record: its schema (common.*State) and how a snapshot gives them."""
    schema: type
    build: Callable


KINDS = {"tasks": Kind(TaskState, task_records), "actors": Kind(ActorState, actor_records),
         "objects": Kind(ObjectState, object_records),
         "workers": Kind(WorkerState, worker_records),
         "placement groups": Kind(PlacementGroupState, placement_group_records)}
