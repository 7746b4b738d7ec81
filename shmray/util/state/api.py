"""Ray's state API (``ray.util.state``) over a session's status area: what its
tasks, actors, objects and workers are doing, as Ray's records.

    list_tasks(filters=[("state", "=", "FAILED")], detail=True, limit=100)
      ─► _source.snapshot(address)  (this session, or a live one on this machine)
      ─► _records.task_records      (every column, Ray's names and state names)
      ─► _filters.matches, limit    ─► [TaskState, ...] (detail columns None unless asked)

Works in the driver and inside a task or an actor. On the Ray-cluster path
(``shmray.init(address=...)``) each function is Ray's own ``ray.util.state`` one.
"""
from __future__ import annotations

from .._on_cluster import ray_counterpart
from . import _filters, _records, _source
from .common import (DEFAULT_LIMIT, DEFAULT_RPC_TIMEOUT, ActorState, ObjectState,
                     PlacementGroupState, TaskState, WorkerState)
from .exception import RayStateApiException

# What the errors call each kind of record (and its key in _records.KINDS).
_NAMES = {kind.schema: name for name, kind in _records.KINDS.items()}


def _on_cluster(name: str):
    """Ray's ``ray.util.state.<name>`` on the Ray-cluster path, else None."""
    return ray_counterpart("ray.util.state", name)


def _check_limit(limit) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an integer, got {type(limit).__name__}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return limit


def _records_of(schema, address, timeout, filters=None, raise_on_missing_output=True) -> list:
    """Every record of one kind, the filters applied (the arguments checked first)."""
    what = _NAMES[schema]
    checked = _filters.check(filters, schema, what)
    snap = _source.snapshot(address, _source.check_timeout(timeout))
    missing = _records.truncated(snap, what)
    if missing and raise_on_missing_output:
        raise RayStateApiException(
            f"Failed to retrieve all {what}: {missing}. To get what there is, set "
            f"raise_on_missing_output=False.")
    return [r for r in _records.KINDS[what].build(snap) if _filters.matches(r, checked)]


def _list(schema, address, filters, limit, timeout, detail, raise_on_missing_output) -> list:
    _check_limit(limit)
    records = _records_of(schema, address, timeout, filters, raise_on_missing_output)
    return [schema.from_record(r, bool(detail)) for r in records[:limit]]


def _by_id(schema, key: str, id, address, timeout) -> list:
    if not isinstance(id, str):
        raise TypeError(f"id must be a string, got {type(id).__name__}")
    records = _records_of(schema, address, timeout, [(key, "=", id)], False)
    return [schema.from_record(r, True) for r in records]


# ------------------------------------------------------------------ lists
def _lister(schema, name: str, doc: str):
    """Ray's ``list_<kind>`` for the records of `schema` (Ray's own on the cluster path)."""
    def list_records(address=None, filters=None, limit=DEFAULT_LIMIT,
                     timeout=DEFAULT_RPC_TIMEOUT, detail=False, raise_on_missing_output=True,
                     _explain=False) -> list:
        ray_fn = _on_cluster(name)
        if ray_fn is not None:
            return ray_fn(address=address, filters=filters, limit=limit, timeout=timeout,
                          detail=detail, raise_on_missing_output=raise_on_missing_output,
                          _explain=_explain)
        return _list(schema, address, filters, limit, timeout, detail, raise_on_missing_output)

    list_records.__name__ = list_records.__qualname__ = name
    list_records.__doc__ = doc
    return list_records


list_tasks = _lister(
    TaskState, "list_tasks",
    "The session's task attempts as TaskState records: the unfinished ones first, then "
    "the latest finished (the latest 10,000 are remembered).")


list_actors = _lister(
    ActorState, "list_actors",
    "The session's actors as ActorState records: the live ones first, then the latest "
    "dead (up to 1,000).")


list_objects = _lister(
    ObjectState, "list_objects",
    "The objects in the session's store as ObjectState records, largest first.")


list_workers = _lister(
    WorkerState, "list_workers",
    "The session's live processes as WorkerState records: the driver, then its workers "
    "(task workers and actors').")


list_placement_groups = _lister(
    PlacementGroupState, "list_placement_groups",
    "The session's placement groups as PlacementGroupState records (removed ones too).")


# ------------------------------------------------------------------ by id
def _getter(schema, key: str, name: str, doc: str):
    """Ray's ``get_<kind>`` of one record of `schema` by its `key` column, or None
    (Ray's own on the cluster path)."""
    def get_record(id, address=None, timeout=DEFAULT_RPC_TIMEOUT, _explain=False):
        ray_fn = _on_cluster(name)
        if ray_fn is not None:
            return ray_fn(id, address=address, timeout=timeout, _explain=_explain)
        found = _by_id(schema, key, id, address, timeout)
        return found[0] if found else None

    get_record.__name__ = get_record.__qualname__ = name
    get_record.__doc__ = doc
    return get_record


def get_task(id, address=None, timeout=DEFAULT_RPC_TIMEOUT, _explain=False):
    """The task `id` (its hex id, or an ObjectRef it returned), with every column:
    None if unknown, its TaskState if it ran once, else a list, one per attempt."""
    ray_fn = _on_cluster("get_task")
    if ray_fn is not None:
        return ray_fn(id, address=address, timeout=timeout, _explain=_explain)
    if not isinstance(id, str):
        task_id = getattr(id, "task_id", None)
        if task_id is None:
            raise TypeError(f"id must be a task id (str) or an ObjectRef, got "
                            f"{type(id).__name__}")
        id = task_id()
        id = id if isinstance(id, str) else id.hex()
    found = _by_id(TaskState, "task_id", id, address, timeout)
    if not found:
        return None
    return found[0] if len(found) == 1 else found


get_actor = _getter(
    ActorState, "actor_id", "get_actor",
    "The actor `id` (hex) as an ActorState with every column, or None.")


def get_objects(id, address=None, timeout=DEFAULT_RPC_TIMEOUT, _explain=False) -> list:
    """The object `id` (hex) as a list of ObjectState (empty if it is not stored)."""
    ray_fn = _on_cluster("get_objects")
    if ray_fn is not None:
        return ray_fn(id, address=address, timeout=timeout, _explain=_explain)
    return _by_id(ObjectState, "object_id", id, address, timeout)


get_worker = _getter(
    WorkerState, "worker_id", "get_worker",
    "The worker `id` (a WorkerState's worker_id) with every column, or None.")


get_placement_group = _getter(
    PlacementGroupState, "placement_group_id", "get_placement_group",
    "The PlacementGroupState of the group with that hex id, or None.")


# ------------------------------------------------------------------ summaries
def summarize_tasks(address=None, timeout=DEFAULT_RPC_TIMEOUT, raise_on_missing_output=True,
                    _explain=False) -> dict:
    """Task attempts per name and state, as Ray's summary: {"cluster": {"summary":
    {name: {"func_or_class_name", "type", "state_counts"}}, "total_tasks",
    "total_actor_tasks", "total_actor_scheduled", "summary_by": "func_name"}}."""
    ray_fn = _on_cluster("summarize_tasks")
    if ray_fn is not None:
        return ray_fn(address=address, timeout=timeout,
                      raise_on_missing_output=raise_on_missing_output, _explain=_explain)
    summary, totals = {}, {"NORMAL_TASK": 0, "ACTOR_TASK": 0, "ACTOR_CREATION_TASK": 0}
    for task in _records_of(TaskState, address, timeout):
        key = task["name"] or task["func_or_class_name"]
        group = summary.setdefault(key, {"func_or_class_name": key, "type": task["type"],
                                         "state_counts": {}})
        counts = group["state_counts"]
        counts[task["state"]] = counts.get(task["state"], 0) + 1
        totals[task["type"]] = totals.get(task["type"], 0) + 1
    return {"cluster": {"summary": summary, "total_tasks": totals["NORMAL_TASK"],
                        "total_actor_tasks": totals["ACTOR_TASK"],
                        "total_actor_scheduled": totals["ACTOR_CREATION_TASK"],
                        "summary_by": "func_name"}}


def summarize_actors(address=None, timeout=DEFAULT_RPC_TIMEOUT, raise_on_missing_output=True,
                     _explain=False) -> dict:
    """Actors per class and state, as Ray's summary: {"cluster": {"summary":
    {class: {"class_name", "state_counts"}}, "total_actors", "summary_by": "class"}}."""
    ray_fn = _on_cluster("summarize_actors")
    if ray_fn is not None:
        return ray_fn(address=address, timeout=timeout,
                      raise_on_missing_output=raise_on_missing_output, _explain=_explain)
    summary = {}
    actors = _records_of(ActorState, address, timeout)
    for actor in actors:
        group = summary.setdefault(actor["class_name"], {"class_name": actor["class_name"],
                                                         "state_counts": {}})
        counts = group["state_counts"]
        counts[actor["state"]] = counts.get(actor["state"], 0) + 1
    return {"cluster": {"summary": summary, "total_actors": len(actors),
                        "summary_by": "class"}}
