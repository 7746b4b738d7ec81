"""Process trees and memory from /proc (W8), without psutil."""
from __future__ import annotations

import os


def _ppid(pid: int):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces and ')'.
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(root: int) -> set:
    """Every live process below `root` (children, grandchildren, ...)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _ppid(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def comm(pid: int) -> str:
    """The process name (shmray's workers name themselves 'shmray:<driver pid>')."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def cmdline(pid: int) -> str:
    """The command line as the process shows it (Ray's workers rename themselves 'ray::...')."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _kib_field(path: str, field: str):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def memory_mb(pid: int) -> dict:
    """{'rss': MB, 'pss': MB or None}: RSS counts shared pages in full for every process that
    maps them; PSS splits them between the sharers, so PSS sums to what the processes cost."""
    rss = _kib_field(f"/proc/{pid}/status", "VmRSS:")
    pss = _kib_field(f"/proc/{pid}/smaps_rollup", "Pss:")
    return {"rss": None if rss is None else rss / 1024,
            "pss": None if pss is None else pss / 1024}
