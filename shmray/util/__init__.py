"""Helpers under ``shmray.util``, as under ``ray.util``."""
from .. import _context
from . import debug, scheduling_strategies
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
           "log_once", "disable_log_once_globally", "enable_periodic_logging", "debug"]
