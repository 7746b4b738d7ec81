"""Ray's state API (``ray.util.state``): the session's tasks, actors, objects and
workers as Ray's records, from the driver or inside a task (see api.py)."""
from .api import (get_actor, get_objects, get_task, get_worker, list_actors, list_objects,
                  list_tasks, list_workers, summarize_actors, summarize_tasks)
from .common import ActorState, ObjectState, TaskState, WorkerState
from .exception import RayStateApiException

__all__ = ["get_actor", "get_objects", "get_task", "get_worker", "list_actors", "list_objects",
           "list_tasks", "list_workers", "summarize_actors", "summarize_tasks", "ActorState",
           "ObjectState", "TaskState", "WorkerState", "RayStateApiException"]
