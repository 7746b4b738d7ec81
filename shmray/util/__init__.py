"""Helpers under ``shmray.util``, as under ``ray.util``. The heavier ones (``queue``,
``multiprocessing``, ``joblib``, ``state``) are imported when first used: every worker
imports this package."""
import importlib

from .. import _context
from . import debug, scheduling_strategies
from .actor_pool import ActorPool
from .completion import as_completed, map_unordered
from ._node import get_node_instance_id, get_node_ip_address
from .check_serialize import inspect_serializability
from .debug import disable_log_once_globally, enable_periodic_logging, log_once
from .serialization import deregister_serializer, register_serializer
from .placement_group import (PlacementGroup, get_current_placement_group, get_placement_group,
                              placement_group, placement_group_table, remove_placement_group)


def list_named_actors(all_namespaces: bool = False) -> list:
    """The names of the live named actors of this namespace; with all_namespaces, a
    dict per actor: {"name": ..., "namespace": ...} (Ray's ``list_named_actors``)."""
    rt = _context.get_runtime()
    if rt.is_cluster:  # (see shmray._cluster)
        return rt.call("util.list_named_actors", all_namespaces=all_namespaces)
    found = rt.named_actors(bool(all_namespaces))
    if all_namespaces:
        return [{"name": name, "namespace": ns} for name, ns in found]
    return found


__all__ = ["scheduling_strategies", "list_named_actors", "PlacementGroup", "placement_group",
           "remove_placement_group", "get_placement_group", "placement_group_table",
           "get_current_placement_group", "get_node_ip_address", "get_node_instance_id",
           "inspect_serializability", "register_serializer", "deregister_serializer",
           "log_once", "disable_log_once_globally", "enable_periodic_logging", "debug",
           "ActorPool", "as_completed", "map_unordered", "queue", "multiprocessing", "joblib",
           "state"]

_ON_FIRST_USE = ("queue", "multiprocessing", "joblib", "state")


def __getattr__(name):
    if name in _ON_FIRST_USE:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
