"""What ``init()`` returns: Ray's RayContext, holding what is true of this session."""
from __future__ import annotations

import os
import sys

from .util._node import NODE_IP_ADDRESS


class RayContext(dict):
    """What ``init`` returns (Ray's RayContext): `address_info` with Ray's keys, each
    what is true for this session (None where shmray has no such thing: no dashboard,
    no GCS, no raylet socket) and shmray's own (session_name, driver_pid); read as a
    dict it is the same (Ray's older form). `dashboard_url` is None (no dashboard).
    ``with shmray.init(): ...`` shuts the session down at the end."""

    def __init__(self, address_info: dict, dashboard_url=None):
        super().__init__(address_info)
        self.dashboard_url = dashboard_url
        self.python_version = "{}.{}.{}".format(*sys.version_info[:3])

    @property
    def address_info(self) -> dict:
        return dict(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        from ._api import shutdown

        shutdown()

    def disconnect(self):
        from ._api import shutdown

        shutdown()


def context_of(rt) -> RayContext:
    """The RayContext of the process's runtime `rt` (a session, local mode, a cluster)."""
    if rt.is_cluster:
        return RayContext({"node_id": rt.ray.get_runtime_context().get_node_id(),
                           "node_ip_address": rt.ray.util.get_node_ip_address(),
                           "driver_pid": os.getpid(), "address": rt.address})
    return RayContext({
        "node_ip_address": NODE_IP_ADDRESS, "node_id": rt.node_id, "address": "local",
        "session_dir": getattr(rt, "session_root", None),  # (local mode keeps no files)
        "webui_url": None, "gcs_address": None, "redis_address": None,
        "object_store_address": None, "raylet_socket_name": None,
        "metrics_export_port": None, "dashboard_agent_listen_port": None,
        "session_name": rt.prefix.rstrip("_"), "driver_pid": os.getpid()})
