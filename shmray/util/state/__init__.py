"""Ray's state API (``ray.util.state``): the session's tasks, actors, objects and
workers as Ray's records, from the driver or inside a task (see api.py)."""
from .api import (get_actor, get_objects, get_placement_group, get_task, get_worker,
                  list_actors, list_objects, list_placement_groups, list_tasks, list_workers,
                  summarize_actors, summarize_tasks)
from .common import ActorState, ObjectState, PlacementGroupState, TaskState, WorkerState
from .exception import RayStateApiException

__all__ = ["get_actor", "get_objects", "get_task", "get_worker", "list_actors", "list_objects",
           "list_tasks", "list_workers", "summarize_actors", "summarize_tasks", "ActorState",
           "ObjectState", "TaskState", "WorkerState", "RayStateApiException",
           "list_placement_groups", "get_placement_group", "PlacementGroupState"]
