"""Placement groups in the driver: reserved from the node's resources when they fit,
in the order they were asked for, turned into resources of their own (see
shmray._placement), given back when removed.

    placement_group() ─► create: never fits this node? ValueError at once (Ray would
        wait forever) ─► PENDING ─► place_pending (now, and whenever resources are
        freed): the bundles' sum taken from the node, the group's resources added
        ─► CREATED: its tasks and actors (which waited for those resources) run
    remove_placement_group() ─► its resources leave the node, the reservation comes
        back; its tasks and actors end (PlacementGroupFacade.remove_placement_group)

Every method runs under the session's lock.
"""
from __future__ import annotations

import time

from .._placement import GroupSpec, group_name, group_resources
from .._resources import infeasible

PENDING, CREATED, REMOVED = "PENDING", "CREATED", "REMOVED"


class Group:
    __slots__ = ("spec", "namespace", "state", "resources", "created_at", "asked_at")

    def __init__(self, spec: GroupSpec, namespace: str, asked_at: float = 0.0):
        self.spec = spec
        self.namespace = namespace      # where its name lives
        self.state = PENDING
        self.resources = None           # what it added to the node while CREATED
        self.created_at = None
        self.asked_at = asked_at

    def __repr__(self):
        return f"<placement group {self.spec.group_id} {self.state}>"

    @property
    def reserved(self) -> tuple:
        """Its bundles' sum, as a request: what it takes from the node."""
        total = {}
        for bundle in self.spec.bundles:
            for name, amount in bundle.items():
                total[name] = total.get(name, 0.0) + float(amount)
        return tuple(sorted((k, v) for k, v in total.items() if v))


class PlacementGroupTable:
    def __init__(self, ledger, namespace: str, node_id: str):
        self.ledger = ledger
        self.namespace = namespace
        self.node_id = node_id
        self.groups = {}            # hex -> Group (removed ones too: the table shows them)
        self.pending = []           # Groups not placed yet, in the order asked
        self.named = {}             # (namespace, name) -> Group, while not removed

    def create(self, spec: GroupSpec) -> Group:
        """A new group, placed now if the node has the room; ValueError if it never can."""
        why = self._never_fits(spec)
        if why:
            raise ValueError(why)
        namespace = spec.namespace or self.namespace
        if spec.name and (namespace, spec.name) in self.named:
            raise ValueError(f"A placement group named {spec.name!r} already exists in "
                             f"namespace {namespace!r}; remove it first, or choose another name")
        group = self.groups[spec.group_id] = Group(spec, namespace, asked_at=time.time())
        if spec.name:
            self.named[(namespace, spec.name)] = group
        self.pending.append(group)
        self.place_pending()
        return group

    def _never_fits(self, spec: GroupSpec) -> str | None:
        if spec.strategy == "STRICT_SPREAD" and len(spec.bundles) > 1:
            return (f"placement group with strategy STRICT_SPREAD needs each of its "
                    f"{len(spec.bundles)} bundles on a different node, and this session has "
                    f"one node: it can never be placed (use PACK or SPREAD: on one node they "
                    f"reserve the same resources)")
        reason = infeasible(self.ledger.totals, Group(spec, "").reserved)
        if reason:
            return (f"placement group {list(spec.bundles)} can never be placed on this node: "
                    f"{reason.replace('the task requires', 'its bundles together require')}")
        return None

    def place_pending(self) -> bool:
        """Place the pending groups that fit now, in order; True if any was."""
        placed = False
        ledger = self.ledger
        for group in list(self.pending):
            reserved = group.reserved
            if not ledger.fits(reserved):
                continue
            ledger.acquire(reserved)
            group.resources = group_resources(group.spec.bundles, group.spec.group_id)
            ledger.add(group.resources)
            group.state, group.created_at = CREATED, time.time()
            self.pending.remove(group)
            placed = True
        return placed

    def remove(self, group_id: str) -> Group | None:
        """Remove the group: its resources leave the node and its reservation comes back.
        None if there is no such group (or it was removed already)."""
        group = self.groups.get(group_id)
        if group is None or group.state == REMOVED:
            return None
        if group.state == PENDING:
            self.pending.remove(group)
        else:
            self.ledger.remove(group.resources)
            self.ledger.release(group.reserved)
            group.resources = None
        group.state = REMOVED
        if self.named.get((group.namespace, group.spec.name)) is group:
            del self.named[(group.namespace, group.spec.name)]
        return group

    def lookup(self, name: str, namespace: str | None) -> Group | None:
        return self.named.get((namespace or self.namespace, name))

    def query(self, what: str, arg):
        """The answer to a "table" (arg: a hex id or None) or "get" ((name, namespace))
        PgAsk: a table row (or the table), or the live group's GroupSpec."""
        if what == "table":
            if arg is None:
                return self.table()
            group = self.groups.get(arg)
            return None if group is None else self.row(group)
        if what == "get":
            group = self.lookup(*arg)
            return None if group is None or group.state == REMOVED else group.spec
        raise ValueError(f"unknown placement group operation {what!r}")

    def row(self, group: Group) -> dict:
        """The group as Ray's placement_group_table() shows one."""
        spec = group.spec
        return {
            "placement_group_id": spec.group_id,
            "name": spec.name,
            "bundles": {i: dict(b) for i, b in enumerate(spec.bundles)},
            "bundles_to_node_id": ({i: self.node_id for i in range(len(spec.bundles))}
                                   if group.state == CREATED else {}),
            "strategy": spec.strategy,
            "state": group.state,
            "stats": {"scheduling_state": "FINISHED" if group.state == CREATED else
                      ("REMOVED" if group.state == REMOVED else "QUEUED"),
                      "creation_request_received_ns": int(group.asked_at * 1e9)},
        }

    def table(self) -> dict:
        return {gid: self.row(g) for gid, g in self.groups.items()}


def in_removed_group(request, group_id: str) -> bool:
    """Whether a task or actor with `request` runs in the group `group_id`."""
    wildcard = group_name("bundle", group_id)
    return any(name == wildcard for name, _ in request)
