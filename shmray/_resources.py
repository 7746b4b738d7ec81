"""The node's resources: what exists (totals) and what is free (accounting).

A request is a sorted tuple of (name, amount) pairs (TaskOptions.request).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from dataclasses import dataclass

_EPS = 1e-9


def affinity_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def detect_gpus() -> int:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return len([d for d in env.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=5)
            return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            return 0
    return 0


def system_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def node_totals(num_cpus=None, num_gpus=None, resources=None, memory=None) -> dict:
    totals = {
        "CPU": float(len(affinity_cpus()) if num_cpus is None else num_cpus),
        "GPU": float(detect_gpus() if num_gpus is None else num_gpus),
        "memory": float(system_memory() if memory is None else memory),
    }
    for k, v in (resources or {}).items():
        if k in ("CPU", "GPU"):
            raise ValueError("Use the 'num_cpus' and 'num_gpus' keyword instead of 'CPU' and "
                             "'GPU' in 'resources' keyword")
        totals[k] = float(v)
    return totals


def infeasible(totals: dict, request: tuple) -> str | None:
    """Why `request` can never run on this node, or None if it can."""
    for name, amount in request:
        have = totals.get(name, 0.0)
        if amount > have + _EPS:
            return (f"the task requires {{{name}: {amount:g}}} but this node has "
                    f"{{{name}: {have:g}}} (total resources: "
                    f"{ {k: v for k, v in totals.items() if k != 'memory'} })")
    return None


@dataclass(frozen=True)
class ResourceStats:
    total: dict
    available: dict


class ResourceLedger:
    """Free amounts per resource; tasks acquire on start and release on finish."""

    def __init__(self, totals: dict):
        self.totals = dict(totals)
        self.available = dict(totals)

    def fits(self, request: tuple) -> bool:
        avail = self.available
        for name, amount in request:
            if avail.get(name, 0.0) + _EPS < amount:
                return False
        return True

    def acquire(self, request: tuple):
        avail = self.available
        for name, amount in request:
            avail[name] = avail.get(name, 0.0) - amount

    def release(self, request: tuple):
        avail = self.available
        for name, amount in request:
            avail[name] = avail.get(name, 0.0) + amount

    def statistics(self) -> ResourceStats:
        return ResourceStats(dict(self.totals), dict(self.available))


def warn_infeasible(name: str, reason: str):
    warnings.warn(f"Task {name} can never run on this node: {reason}. Its result will be "
                  f"TaskUnschedulableError.", stacklevel=4)
