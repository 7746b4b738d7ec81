"""This node's address and instance id (Ray's ``ray.util.get_node_ip_address`` and
``get_node_instance_id``)."""
from __future__ import annotations

import os

from ._on_cluster import ray_counterpart

# The address shmray gives its one node everywhere: nodes()' NodeManagerAddress, the
# node:127.0.0.1 resource, init()'s address_info. A resource request built from
# get_node_ip_address() (Ray's idiom: {f"node:{ip}": 0.01}) names this node.
NODE_IP_ADDRESS = "127.0.0.1"


def get_node_ip_address(address: str = "8.8.8.8:53") -> str:
    """The IP address of this node, as its resources and nodes() name it. `address`
    (Ray's: the route towards it picks the interface) changes nothing on one node."""
    ray_own = ray_counterpart("ray.util", "get_node_ip_address")
    if ray_own is not None:
        return ray_own(address)
    if not isinstance(address, str):
        raise TypeError(f"address must be a 'host:port' str, got {address!r}")
    return NODE_IP_ADDRESS


def get_node_instance_id() -> str:
    """The cloud instance id of this node: RAY_CLOUD_INSTANCE_ID, as Ray reads it, or
    '' (not a cloud instance)."""
    ray_own = ray_counterpart("ray.util", "get_node_instance_id")
    if ray_own is not None:
        return ray_own()
    return os.environ.get("RAY_CLOUD_INSTANCE_ID", "")


__all__ = ["get_node_ip_address", "get_node_instance_id"]
