"""The node's resources: what exists (totals) and what is free (accounting).

A request is a sorted tuple of (name, amount) pairs (TaskOptions.request).
"""
from __future__ import annotations

import importlib.util
import math
import os
import sys
import warnings

from ._placement import is_gpu
from ._stack import user_stacklevel

EPS = 1e-9


def affinity_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def visible_gpu_ids() -> list[str] | None:
    """The driver's CUDA_VISIBLE_DEVICES as a list of ids, or None when it is unset."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return None
    ids = []
    for d in (d.strip() for d in env.split(",")):
        if not d or d == "-1":  # CUDA stops at the first invalid entry
            break
        ids.append(d)
    return ids


def detect_gpus() -> int:
    """The GPUs of this machine: CUDA_VISIBLE_DEVICES when set, else nvidia-smi's list,
    else cupy's device count. cupy asks in a child process: CUDA initialised in the
    driver would break the workers forked from it."""
    ids = visible_gpu_ids()
    if ids is not None:
        return len(ids)
    if any(os.access(os.path.join(d, "nvidia-smi"), os.X_OK) for d in os.get_exec_path()):
        import subprocess  # (here: most sessions never run one)

        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=5)
            return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            return 0
    return cupy_gpus()[0]


def cupy_gpus() -> tuple[int, str | None]:
    """How many GPUs cupy sees, and when none, why not (no cupy, its error). Asked in
    a child process: CUDA initialised here would keep workers from forking."""
    if importlib.util.find_spec("cupy") is None:
        return 0, "cupy is not installed (pip install shmray[gpu])"
    import subprocess

    try:
        out = subprocess.run(
            [sys.executable, "-c", "import cupy; print(cupy.cuda.runtime.getDeviceCount())"],
            capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            return 0, f"no usable GPU: {(out.stderr.strip().splitlines() or ['?'])[-1]}"
        count = int(out.stdout.strip() or 0)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        return 0, f"cupy could not be asked: {e}"
    return count, None if count else "no GPU"


def _meminfo_bytes(field: str):
    """A size from /proc/meminfo ("MemTotal", "SwapTotal"), or None if unreadable."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def system_memory() -> int:
    total = _meminfo_bytes("MemTotal")
    return total if total is not None else (os.sysconf("SC_PAGE_SIZE")
                                            * os.sysconf("SC_PHYS_PAGES"))


def swap_memory() -> int:
    return _meminfo_bytes("SwapTotal") or 0


def object_store_memory_error(requested: int) -> str | None:
    """Why init(object_store_memory=requested) cannot work here, or None. Objects live
    in shared memory, which RAM and swap back: a store larger than both could only
    fail later, in the middle of the session (and the store's counters are 64-bit)."""
    ram, swap = system_memory(), swap_memory()
    if requested > ram + swap:
        return (f"object_store_memory={requested:,} is more than this machine's memory: "
                f"{ram:,} bytes of RAM + {swap:,} of swap = {ram + swap:,}")
    return None


NODE_IP = "127.0.0.1"
# Ray gives every node a resource named after its address, and the head node one
# more: tasks can ask for a sliver of it to say "run on this node".
NODE_RESOURCES = {f"node:{NODE_IP}": 1.0, "node:__internal_head__": 1.0}


def default_object_store_memory() -> int:
    """Ray's default: 30% of the memory (where it lives is the runtime's choice: /dev/shm
    when it can hold it, else files)."""
    return int(system_memory() * 0.3)


def node_totals(num_cpus=None, num_gpus=None, resources=None, memory=None,
                object_store_memory=None) -> dict:
    totals = {
        "CPU": float(len(affinity_cpus()) if num_cpus is None else num_cpus),
        "GPU": float(detect_gpus() if num_gpus is None else num_gpus),
        "memory": float(system_memory() if memory is None else memory),
        "object_store_memory": float(default_object_store_memory()
                                     if object_store_memory is None else object_store_memory),
        **NODE_RESOURCES,
    }
    for k, v in (resources or {}).items():
        if k in ("CPU", "GPU"):
            raise ValueError("Use the 'num_cpus' and 'num_gpus' keyword instead of 'CPU' and "
                             "'GPU' in 'resources' keyword")
        if k in ("memory", "object_store_memory"):
            raise ValueError(f"Use the '{k}' keyword instead of {k!r} in 'resources' keyword")
        totals[k] = float(v)
    return totals


def infeasible(totals: dict, request: tuple) -> str | None:
    """Why `request` can never run on this node, or None if it can."""
    for name, amount in request:
        have = totals.get(name, 0.0)
        if amount > have + EPS:
            shown = {k: v for k, v in totals.items()
                     if k not in ("memory", "object_store_memory") and k not in NODE_RESOURCES}
            return (f"the task requires {{{name}: {amount:g}}} but this node has "
                    f"{{{name}: {have:g}}} (total resources: {shown})")
    return None


def gpu_device_ids(total_gpus: float) -> list[str]:
    """The ids of the node's GPUs: the driver's CUDA_VISIBLE_DEVICES when set (Ray
    does the same), else 0..n-1 (real or not: init(num_gpus=2) works anywhere)."""
    n = math.ceil(total_gpus - EPS)
    visible = visible_gpu_ids()
    if visible is None:
        return [str(i) for i in range(n)]
    if n > len(visible):
        raise ValueError(f"init(num_gpus={total_gpus:g}) asks for more GPUs than "
                         f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} lists")
    return visible[:n]


class GpuSlots:
    """Which devices a GPU request runs on. A fraction goes to the device with the
    least room that still fits it (so one GPU fills before the next starts, as in
    Ray); a whole number N takes N entirely free devices."""

    def __init__(self, total_gpus: float):
        self.ids = gpu_device_ids(total_gpus)
        self.free = [min(1.0, total_gpus - i) for i in range(len(self.ids))]

    def assign(self, amount: float) -> tuple | None:
        """Device ids for `amount` GPUs now, or None if no device has the room."""
        free = self.free
        if amount < 1 - EPS:
            fits = [i for i in range(len(free)) if free[i] + EPS >= amount]
            if not fits:
                return None
            return (self.ids[min(fits, key=lambda i: (free[i], i))],)
        whole = [i for i in range(len(free)) if free[i] >= 1 - EPS][:round(amount)]
        return tuple(self.ids[i] for i in whole) if len(whole) == round(amount) else None

    def take(self, devices: tuple, amount: float, sign: float = 1.0):
        share = amount if amount < 1 - EPS else 1.0
        for d in devices:
            self.free[self.ids.index(d)] -= sign * share


class ResourceLedger:
    """Free amounts per resource; tasks acquire on start and release on finish.
    GPUs are also accounted per device (GpuSlots): a GPU task holds its devices."""

    def __init__(self, totals: dict):
        self.totals = dict(totals)
        self.available = dict(totals)
        self.releases = 0  # resources given back so far: a queued task may fit since
        self.gpus = GpuSlots(totals.get("GPU", 0.0))

    def fits(self, request: tuple) -> bool:
        avail = self.available
        for name, amount in request:
            if avail.get(name, 0.0) + EPS < amount:
                return False
        return True

    def acquire(self, request: tuple, devices: tuple = ()):
        avail = self.available
        for name, amount in request:
            avail[name] = avail.get(name, 0.0) - amount
            if devices and is_gpu(name):
                self.gpus.take(devices, amount)

    def release(self, request: tuple, devices: tuple = ()):
        self.releases += 1  # (see Dispatcher.place_or_queue)
        avail = self.available
        for name, amount in request:
            if name in avail:  # (not a removed placement group's resource)
                avail[name] += amount
            if devices and is_gpu(name):
                self.gpus.take(devices, amount, -1.0)

    def add(self, resources: dict):
        """New resources (a placement group's, once created: see _placement)."""
        for name, amount in resources.items():
            self.totals[name] = self.totals.get(name, 0.0) + amount
            self.available[name] = self.available.get(name, 0.0) + amount

    def remove(self, names):
        """Resources that exist no more (a removed group's); tasks still holding them
        give back nothing when they end."""
        for name in names:
            self.totals.pop(name, None)
            self.available.pop(name, None)

    def charge(self, w, request: tuple):
        """`w` runs a task with `request`: it holds those resources until uncharged."""
        w.charge = request
        self.acquire(request, w.gpus)

    def uncharge(self, w):
        if w.charge is not None:
            self.release(w.charge, w.gpus)
            w.charge = None


def warn_infeasible(name: str, reason: str):
    warnings.warn(f"Task {name} can never run on this node: {reason}. Its result will be "
                  f"TaskUnschedulableError.", stacklevel=user_stacklevel())

