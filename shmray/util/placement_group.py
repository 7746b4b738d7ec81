"""Placement groups, as in ``ray.util.placement_group``: reserve bundles of resources
at once, then run tasks and actors in them (PlacementGroupSchedulingStrategy).

On one node every strategy but STRICT_SPREAD places all bundles here; a group the
node can never hold is a ValueError at once, where Ray would leave it pending
forever. The driver keeps the groups (shmray._driver.placement_groups); inside a
task these functions ask it over the worker's ring.
"""
from __future__ import annotations

import math
import numbers
import os

from .. import _context
from .._placement import STRATEGIES, GroupSpec, group_of
from ._on_cluster import ray_counterpart


class PlacementGroupID:
    """A placement group's id (Ray's PlacementGroupID: ``hex()``, ``binary()``)."""

    __slots__ = ("_hex",)

    def __init__(self, hex_id: str):
        self._hex = hex_id

    def hex(self) -> str:
        return self._hex

    def binary(self) -> bytes:
        return bytes.fromhex(self._hex)

    def __eq__(self, other):
        return isinstance(other, PlacementGroupID) and other._hex == self._hex

    def __hash__(self):
        return hash(self._hex)

    def __repr__(self):
        return f"PlacementGroupID({self._hex})"


class PlacementGroup:
    """A handle to a placement group (it pickles: tasks and actors can be given one)."""

    def __init__(self, id: PlacementGroupID, bundles=None):
        self.id = id
        self._bundles = None if bundles is None else [dict(b) for b in bundles]

    @property
    def bundle_specs(self) -> list:
        """Its bundles, as the dicts it was made of."""
        if self._bundles is None:  # (a handle made from an id: get_current_placement_group)
            row = placement_group_table(self)
            self._bundles = [row["bundles"][i] for i in sorted(row["bundles"])] if row else []
        return [dict(b) for b in self._bundles]

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    @property
    def is_empty(self) -> bool:
        return self.id is None

    def ready(self):
        """An ObjectRef that is ready (its value this group) once the group is placed."""
        strategy = _strategies().PlacementGroupSchedulingStrategy(self, -1)
        return _ready_check.options(scheduling_strategy=strategy).remote(self)

    def wait(self, timeout_seconds: float = 30) -> bool:
        """True once the group is placed, False if it is not within `timeout_seconds`."""
        from .. import wait

        ready, _ = wait([self.ready()], timeout=timeout_seconds)
        return bool(ready)

    def __eq__(self, other):
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"PlacementGroup(id={self.id.hex()}, bundles={self._bundles})"

    def __reduce__(self):
        return PlacementGroup, (self.id, self._bundles)


def _strategies():
    from . import scheduling_strategies

    return scheduling_strategies


def _ready(group):
    return group


_ready_check = None  # the remote function behind ready(): made on first use


def placement_group(bundles, strategy: str = "PACK", name: str = "", lifetime=None,
                    _soft_target_node_id=None, bundle_label_selector=None) -> PlacementGroup:
    """Reserve `bundles` (a list of {resource: amount} dicts) on the node; a
    PlacementGroup at once, placed now or as soon as the resources are free
    (`ready()`, `wait()`). ValueError if this node can never hold it."""
    ray = ray_counterpart("ray.util", "placement_group")
    if ray is not None:
        return ray(bundles, strategy=strategy, name=name, lifetime=lifetime,
                   _soft_target_node_id=_soft_target_node_id,
                   bundle_label_selector=bundle_label_selector)
    global _ready_check
    spec = GroupSpec(os.urandom(16).hex(), _checked_bundles(bundles),
                     _checked_strategy(strategy), _checked_name(name), None,
                     _checked_lifetime(lifetime))
    if _ready_check is None:
        from .. import remote

        _ready_check = remote(num_cpus=0, max_retries=0)(_ready)
    _context.get_runtime().placement_group_op("create", spec)
    return PlacementGroup(PlacementGroupID(spec.group_id), spec.bundles)


def _checked_bundles(bundles) -> tuple:
    if not isinstance(bundles, (list, tuple)) or not bundles:
        raise ValueError(f"The placement group `bundles` argument must be a non-empty list "
                         f"of dicts, got {bundles!r}")
    made = []
    for i, bundle in enumerate(bundles):
        if not isinstance(bundle, dict):
            raise ValueError(f"bundles[{i}] must be a dict of resource amounts, got {bundle!r}")
        for key, amount in bundle.items():
            if not isinstance(key, str):
                raise ValueError(f"bundles[{i}]: resource names must be str, got {key!r}")
            if (isinstance(amount, bool) or not isinstance(amount, numbers.Real)
                    or not math.isfinite(amount) or amount < 0):
                raise ValueError(f"bundles[{i}][{key!r}] must be a non-negative number, "
                                 f"got {amount!r}")
        if not any(bundle.values()):
            raise ValueError(f"Bundles cannot be an empty dictionary or resources with only "
                             f"0 values: bundles[{i}] is {bundle!r}")
        made.append({k: float(v) for k, v in bundle.items() if v})
    return tuple(made)


def _checked_strategy(strategy):
    if strategy not in STRATEGIES:
        raise ValueError(f"Invalid placement group strategy {strategy!r}: it must be one of "
                         f"{', '.join(map(repr, STRATEGIES))}")
    return strategy


def _checked_name(name):
    if not isinstance(name, str):
        raise TypeError(f"The placement group `name` must be a str, got {name!r}")
    return name


def _checked_lifetime(lifetime):
    if lifetime not in (None, "detached"):
        raise ValueError(f"Placement group `lifetime` must be either None or 'detached', "
                         f"got {lifetime!r}")
    return lifetime


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Remove the group: its resources go back to the node; the tasks and actors in it
    end (tasks not started fail with TaskPlacementGroupRemoved)."""
    ray = ray_counterpart("ray.util", "remove_placement_group")
    if ray is not None:
        return ray(placement_group)
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"remove_placement_group() takes a PlacementGroup, got "
                        f"{placement_group!r}")
    _context.get_runtime().placement_group_op("remove", placement_group.id.hex())


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The live group of that name in this job's namespace; ValueError if none."""
    ray = ray_counterpart("ray.util", "get_placement_group")
    if ray is not None:
        return ray(placement_group_name)
    if not isinstance(placement_group_name, str) or not placement_group_name:
        raise ValueError(f"Please supply a non-empty placement group name, got "
                         f"{placement_group_name!r}")
    spec = _context.get_runtime().placement_group_op("get", (placement_group_name, None))
    if spec is None:
        raise ValueError(f"Failed to look up placement group with name: {placement_group_name}")
    return PlacementGroup(PlacementGroupID(spec.group_id), spec.bundles)


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict:
    """Every group of the session, by hex id (or the one given), as Ray's table shows
    them: placement_group_id, name, bundles, bundles_to_node_id, strategy, state, stats."""
    ray = ray_counterpart("ray.util", "placement_group_table")
    if ray is not None:
        return ray(placement_group)
    if placement_group is not None and not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"placement_group_table() takes a PlacementGroup or None, got "
                        f"{placement_group!r}")
    key = None if placement_group is None else placement_group.id.hex()
    return _context.get_runtime().placement_group_op("table", key) or {}


def get_current_placement_group() -> PlacementGroup | None:
    """The group the running task or actor is in; None in the driver and outside groups."""
    ray = ray_counterpart("ray.util", "get_current_placement_group")
    if ray is not None:
        return ray()
    rt = _context.runtime
    if rt is None:
        return None
    host = rt.actor_host  # (the driver's request is empty: no group)
    found = group_of(host.held if host is not None else rt.current_request)
    return None if found is None else PlacementGroup(PlacementGroupID(found[0]))


__all__ = ["PlacementGroup", "PlacementGroupID", "placement_group", "remove_placement_group",
           "get_placement_group", "placement_group_table", "get_current_placement_group"]
