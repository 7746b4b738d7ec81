"""Helpers under ``shmray.util``, as under ``ray.util``. Every process that imports
shmray imports this package (the options import ``scheduling_strategies``), so what
else it offers is imported when first used: its submodules (``queue``,
``multiprocessing``, ``joblib``, ``state``, ...) and the names they define
(``ActorPool``, ``placement_group``, ...)."""
import importlib

from .. import _context
from . import debug, scheduling_strategies
from ._node import get_node_instance_id, get_node_ip_address
from .debug import disable_log_once_globally, enable_periodic_logging, log_once
# (here, not on first use: the function placement_group must stay the package's name, never
# the submodule an `import shmray.util.placement_group` would set)
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

_ON_FIRST_USE = ("queue", "multiprocessing", "joblib", "state", "actor_pool", "completion",
                 "check_serialize", "serialization")
# name -> the submodule that defines it, imported when the name is first read
_DEFINED_IN = {
    "ActorPool": "actor_pool", "as_completed": "completion", "map_unordered": "completion",
    "inspect_serializability": "check_serialize", "register_serializer": "serialization",
    "deregister_serializer": "serialization"}


def __getattr__(name):
    if name in _DEFINED_IN:
        value = getattr(importlib.import_module(f"{__name__}.{_DEFINED_IN[name]}"), name)
        globals()[name] = value
        return value
    if name in _ON_FIRST_USE:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_ON_FIRST_USE) | set(_DEFINED_IN))
