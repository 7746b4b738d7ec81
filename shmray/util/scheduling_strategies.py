"""Scheduling strategies, as in ``ray.util.scheduling_strategies``."""
from __future__ import annotations


class NodeAffinitySchedulingStrategy:
    """Run on the node `node_id`; if it is not this node, run here anyway when `soft`,
    else fail with TaskUnschedulableError (a single node never gains another)."""

    def __init__(self, node_id: str, soft: bool, _spill_on_unavailable: bool = False,
                 _fail_on_unavailable: bool = False):
        if not isinstance(node_id, str):
            raise TypeError(f"node_id must be a str, got {type(node_id).__name__}")
        self.node_id = node_id
        self.soft = bool(soft)
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable

    def __repr__(self):
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft})"

    def __eq__(self, other):
        return (isinstance(other, NodeAffinitySchedulingStrategy)
                and (other.node_id, other.soft) == (self.node_id, self.soft))

    def __hash__(self):
        return hash((self.node_id, self.soft))


class PlacementGroupSchedulingStrategy:
    """Run in `placement_group`'s bundle `placement_group_bundle_index` (-1: any of its
    bundles), using the bundle's reserved resources. With
    `placement_group_capture_child_tasks`, the tasks and actors it starts (with the
    default strategy) run in the same group. `placement_group=None`: not in a group,
    even inside a task whose group captures its children."""

    def __init__(self, placement_group, placement_group_bundle_index: int = -1,
                 placement_group_capture_child_tasks: bool | None = None):
        index = placement_group_bundle_index
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"placement_group_bundle_index must be an int, got {index!r}")
        if placement_group is not None:
            if not hasattr(placement_group, "id") or not hasattr(placement_group, "bundle_count"):
                raise TypeError(f"placement_group must be a PlacementGroup (from "
                                f"shmray.util.placement_group()), got {placement_group!r}")
            count = placement_group.bundle_count
            if not -1 <= index < count:
                raise ValueError(f"placement_group_bundle_index must be -1 (any bundle) or "
                                 f"between 0 and {count - 1} (the group has {count} "
                                 f"bundle{'s' if count != 1 else ''}), got {index}")
        elif index != -1:
            raise ValueError("placement_group_bundle_index is given without a placement_group")
        self.placement_group = placement_group
        self.placement_group_bundle_index = index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks

    def __repr__(self):
        return (f"PlacementGroupSchedulingStrategy(placement_group={self.placement_group!r}, "
                f"placement_group_bundle_index={self.placement_group_bundle_index}, "
                f"placement_group_capture_child_tasks="
                f"{self.placement_group_capture_child_tasks})")

    def _key(self):
        pg = self.placement_group
        return (None if pg is None else pg.id.hex(), self.placement_group_bundle_index,
                bool(self.placement_group_capture_child_tasks))

    def __eq__(self, other):
        return isinstance(other, PlacementGroupSchedulingStrategy) and other._key() == self._key()

    def __hash__(self):
        return hash(self._key())


__all__ = ["NodeAffinitySchedulingStrategy", "PlacementGroupSchedulingStrategy"]
