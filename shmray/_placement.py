"""Placement groups as resources, Ray's way: a created group turns its bundles'
reservation into resources of its own, and a task in a bundle asks for those.

    bundles [{"CPU": 2}, {"CPU": 1}] of group <id>  ──reserved──►
        CPU_group_0_<id>: 2   CPU_group_1_<id>: 1   CPU_group_<id>: 3   (the "any bundle" total)
        bundle_group_0_<id>: 1000   bundle_group_1_<id>: 1000   bundle_group_<id>: 2000
    a task {"CPU": 1} in bundle 1 ──► {CPU_group_1_<id>: 1, CPU_group_<id>: 1,
                                       bundle_group_1_<id>: 0.001, bundle_group_<id>: 0.001}

The scheduler and the ledger need nothing else: a task in a group waits until its
group exists and its bundle has room, exactly as for any resource. The bundle_group
sliver makes even a zero-resource task wait for its group, and tells a worker which
group it runs in. Both processes import this module; it imports nothing of shmray.
"""
from __future__ import annotations

import re

from ._records import NamedTuple

# Ray's bundle resource: every bundle holds this much, every task in it asks for a sliver.
BUNDLE_UNITS = 1000.0
BUNDLE_SLIVER = 0.001
_BUNDLE_NAME = re.compile(r"^bundle_group_(?:(\d+)_)?([0-9a-f]+)$")


def group_name(resource: str, group_hex: str, index: int = -1) -> str:
    return (f"{resource}_group_{group_hex}" if index < 0
            else f"{resource}_group_{index}_{group_hex}")


def in_group(request: tuple, group_hex: str, index: int) -> tuple:
    """`request` (sorted (name, amount) pairs) as a task in bundle `index` of the group
    asks for it (-1: any bundle)."""
    made = {}
    for name, amount in request:
        made[group_name(name, group_hex)] = amount
        if index >= 0:
            made[group_name(name, group_hex, index)] = amount
    made[group_name("bundle", group_hex)] = BUNDLE_SLIVER
    if index >= 0:
        made[group_name("bundle", group_hex, index)] = BUNDLE_SLIVER
    return tuple(sorted(made.items()))


def group_resources(bundles, group_hex: str) -> dict:
    """The resources a created group adds to the node (its bundles as their own)."""
    made = {group_name("bundle", group_hex): BUNDLE_UNITS * len(bundles)}
    for i, bundle in enumerate(bundles):
        made[group_name("bundle", group_hex, i)] = BUNDLE_UNITS
        for name, amount in bundle.items():
            if amount:
                wildcard = group_name(name, group_hex)
                made[wildcard] = made.get(wildcard, 0.0) + float(amount)
                made[group_name(name, group_hex, i)] = float(amount)
    return made


def group_of(request) -> tuple | None:
    """(group hex, bundle index or -1) of the group a task with `request` runs in, or None."""
    found = None
    for name, _ in request:
        if name.startswith("bundle_group_"):
            m = _BUNDLE_NAME.match(name)
            if m is not None:
                index = -1 if m.group(1) is None else int(m.group(1))
                if found is None or index > found[1]:
                    found = (m.group(2), index)
    return found


def is_gpu(name: str) -> bool:
    """Whether `name` counts GPUs once per task: "GPU", or a group's any-bundle GPU total
    (a task in a bundle asks for both its bundle's and the total: devices go once)."""
    return name == "GPU" or (name.startswith("GPU_group_") and name.count("_") == 2)


STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class GroupSpec(NamedTuple):
    """A placement group as asked for (placement_group()), checked at the API edge."""
    group_id: str               # hex
    bundles: tuple              # of {resource: amount} dicts
    strategy: str               # one of STRATEGIES
    name: str                   # "" for none
    namespace: str | None       # None: the job's
    lifetime: str | None        # None or "detached"
