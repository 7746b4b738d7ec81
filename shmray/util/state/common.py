"""The records the state API returns, with Ray's names (``ray.util.state.common``):
TaskState, ActorState, ObjectState, WorkerState, PlacementGroupState.

Each field is a column; its metadata says whether `filters` may name it and whether
it is a detail column (filled only with ``detail=True``, None otherwise), as in Ray.
A record reads as an object (``t.state``) and as a dict (``t["state"]``, ``t.get``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Optional

DEFAULT_LIMIT = 100        # Ray's: rows a list_* call returns unless told
DEFAULT_RPC_TIMEOUT = 30   # Ray's: seconds a call waits for its session


def column(*, filterable: bool, detail: bool = False, kind: type = str):
    """A record's field: `kind` (str, int, bool, dict, list) is what a filter's value
    is converted to (a CLI's "--filter worker_pid=123" compares as a number)."""
    metadata = {"filterable": filterable, "detail": detail, "kind": kind}
    return field(default=None, metadata=metadata) if detail else field(metadata=metadata)


class StateSchema:
    """What every record says about its columns (Ray's class methods, same names)."""

    @classmethod
    def list_columns(cls, detail: bool = True) -> list:
        return [f.name for f in fields(cls) if detail or not f.metadata["detail"]]

    @classmethod
    def columns(cls) -> set:
        return set(cls.list_columns(detail=True))

    @classmethod
    def filterable_columns(cls) -> set:
        return {f.name for f in fields(cls) if f.metadata["filterable"]}

    @classmethod
    def base_columns(cls) -> set:
        return set(cls.list_columns(detail=False))

    @classmethod
    def detail_columns(cls) -> set:
        return set(cls.list_columns(detail=True))

    @classmethod
    def column_kind(cls, name: str) -> type:
        return next(f.metadata["kind"] for f in fields(cls) if f.name == name)

    @classmethod
    def from_record(cls, record: dict, detail: bool):
        """The record of a dict with every column; without `detail`, the detail
        columns are None (as Ray leaves them)."""
        return cls(**{f.name: record.get(f.name) if detail or not f.metadata["detail"]
                      else None for f in fields(cls)})

    def asdict(self) -> dict:
        return asdict(self)

    def __getitem__(self, key):
        return getattr(self, key)

    def __setitem__(self, key, value):
        setattr(self, key, value)

    def get(self, key, default=None):
        return getattr(self, key, default)


@dataclass
class TaskState(StateSchema):
    """A task attempt. `state`: PENDING_ARGS_AVAIL (waiting for its inputs),
    PENDING_NODE_ASSIGNMENT (for resources), SUBMITTED_TO_WORKER (queued on a worker),
    RUNNING, FINISHED or FAILED. `type`: NORMAL_TASK, ACTOR_CREATION_TASK, ACTOR_TASK."""
    task_id: str = column(filterable=True)
    attempt_number: int = column(filterable=True, kind=int)
    name: str = column(filterable=True)
    state: str = column(filterable=True)
    job_id: str = column(filterable=True)
    actor_id: Optional[str] = column(filterable=True)
    type: str = column(filterable=True)
    func_or_class_name: str = column(filterable=True)
    parent_task_id: Optional[str] = column(filterable=True)
    node_id: Optional[str] = column(filterable=True)
    worker_id: Optional[str] = column(filterable=True)
    worker_pid: Optional[int] = column(filterable=True, kind=int)
    error_type: Optional[str] = column(filterable=True)
    language: Optional[str] = column(filterable=True, detail=True)
    required_resources: Optional[dict] = column(filterable=False, detail=True, kind=dict)
    runtime_env_info: Optional[dict] = column(filterable=False, detail=True, kind=dict)
    placement_group_id: Optional[str] = column(filterable=True, detail=True)
    events: Optional[list] = column(filterable=False, detail=True, kind=list)
    profiling_data: Optional[dict] = column(filterable=False, detail=True, kind=dict)
    creation_time_ms: Optional[int] = column(filterable=False, detail=True, kind=int)
    start_time_ms: Optional[int] = column(filterable=False, detail=True, kind=int)
    end_time_ms: Optional[int] = column(filterable=False, detail=True, kind=int)
    task_log_info: Optional[dict] = column(filterable=False, detail=True, kind=dict)
    error_message: Optional[str] = column(filterable=False, detail=True)
    is_debugger_paused: Optional[bool] = column(filterable=True, detail=True, kind=bool)
    call_site: Optional[str] = column(filterable=False, detail=True)
    label_selector: Optional[dict] = column(filterable=False, detail=True, kind=dict)
    fallback_strategy: Optional[dict] = column(filterable=False, detail=True, kind=dict)


@dataclass
class ActorState(StateSchema):
    """An actor. `state`: PENDING_CREATION, ALIVE, RESTARTING or DEAD; `pid` 0 until
    its process exists."""
    actor_id: str = column(filterable=True)
    class_name: str = column(filterable=True)
    state: str = column(filterable=True)
    job_id: str = column(filterable=True)
    name: Optional[str] = column(filterable=True)
    node_id: Optional[str] = column(filterable=True)
    pid: Optional[int] = column(filterable=True, kind=int)
    ray_namespace: Optional[str] = column(filterable=True)
    serialized_runtime_env: Optional[str] = column(filterable=False, detail=True)
    required_resources: Optional[dict] = column(filterable=False, detail=True, kind=dict)
    death_cause: Optional[dict] = column(filterable=False, detail=True, kind=dict)
    is_detached: Optional[bool] = column(filterable=False, detail=True, kind=bool)
    placement_group_id: Optional[str] = column(filterable=True, detail=True)
    repr_name: Optional[str] = column(filterable=True, detail=True)
    num_restarts: Optional[int] = column(filterable=False, detail=True, kind=int)
    num_restarts_due_to_lineage_reconstruction: Optional[int] = column(
        filterable=False, detail=True, kind=int)
    num_restarts_due_to_node_preemption: Optional[int] = column(
        filterable=False, detail=True, kind=int)
    call_site: Optional[str] = column(filterable=False, detail=True)
    label_selector: Optional[dict] = column(filterable=False, detail=True, kind=dict)
    fallback_strategy: Optional[dict] = column(filterable=False, detail=True, kind=dict)


@dataclass
class ObjectState(StateSchema):
    """An object in the store (one row per object: its strongest reference's type).
    `object_size` in bytes; `call_site`: what created it (a task's name, "put", ...);
    `task_status`: FINISHED, or FAILED for a task's stored error."""
    object_id: str = column(filterable=True)
    object_size: int = column(filterable=True, kind=int)
    task_status: str = column(filterable=True)
    attempt_number: int = column(filterable=True, kind=int)
    reference_type: str = column(filterable=True)
    call_site: Optional[str] = column(filterable=True)
    type: str = column(filterable=True)
    pid: int = column(filterable=True, kind=int)
    ip: str = column(filterable=True)


@dataclass
class WorkerState(StateSchema):
    """A live process of the session: the driver (DRIVER) or a worker (WORKER, an
    actor's included)."""
    worker_id: str = column(filterable=True)
    is_alive: bool = column(filterable=True, kind=bool)
    worker_type: str = column(filterable=True)
    exit_type: Optional[str] = column(filterable=True)
    node_id: str = column(filterable=True)
    ip: str = column(filterable=True)
    pid: int = column(filterable=True, kind=int)
    exit_detail: Optional[str] = column(filterable=False, detail=True)
    worker_launch_time_ms: Optional[int] = column(filterable=False, detail=True, kind=int)
    worker_launched_time_ms: Optional[int] = column(filterable=False, detail=True, kind=int)
    start_time_ms: Optional[int] = column(filterable=False, detail=True, kind=int)
    end_time_ms: Optional[int] = column(filterable=False, detail=True, kind=int)
    debugger_port: Optional[int] = column(filterable=True, detail=True, kind=int)
    num_paused_threads: Optional[int] = column(filterable=True, detail=True, kind=int)


@dataclass
class PlacementGroupState(StateSchema):
    """A placement group of the session (removed ones too): `state` PENDING, CREATED
    or REMOVED; `bundles` one dict per bundle (bundle_id, node_id, unit_resources)."""
    placement_group_id: str = column(filterable=True)
    name: str = column(filterable=True)
    creator_job_id: str = column(filterable=True)
    state: str = column(filterable=True)
    bundles: Optional[list] = column(filterable=False, detail=True, kind=list)
    is_detached: Optional[bool] = column(filterable=True, detail=True, kind=bool)
    stats: Optional[dict] = column(filterable=False, detail=True, kind=dict)
