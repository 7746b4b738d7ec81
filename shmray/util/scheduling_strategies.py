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


__all__ = ["NodeAffinitySchedulingStrategy"]
