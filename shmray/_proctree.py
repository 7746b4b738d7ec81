"""Processes: whether one still runs (`pid_alive`), and process trees: every
descendant of a process, ended together.

A worker's tasks may start processes (subprocess, multiprocessing, os.fork), and
those may start more or leave the worker's process group (setsid). When a worker
ends, for whatever reason, they end with it: `end_tree` walks /proc for the
descendants, stopping each as it is found so that none forks while the walk goes
on, then kills them all.
"""
from __future__ import annotations

import os
import signal


def pid_alive(pid: int) -> bool:
    """Does process `pid` run? A zombie (exited, not reaped by its parent yet) does not:
    a driver that died under a parent that does not wait for it stays one. Nor does
    one being reaped: its /proc entry goes a moment before kill() stops finding it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except ProcessLookupError:  # reaped between open and read
        return False
    except FileNotFoundError:  # reaped before the open (where /proc is there to tell)
        return not os.path.isdir("/proc/self")
    except (OSError, IndexError):  # unreadable here: it runs
        return True


def process_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (R, S, Z, ...), or None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _children(pid: int) -> list:
    """The live children of `pid`, from /proc/PID/task/TID/children."""
    found = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            pass
    return found


def end_tree(root: int, root_too: bool):
    """SIGKILL every descendant of `root` (and `root` if root_too). Each is stopped
    as soon as it is found, and the tree walked again until it holds no new one: a
    stopped process forks no more, so none slips out between the walk and the kill."""
    stopped, todo = set(), [root]
    if root_too:
        _signal(root, signal.SIGSTOP)
    while todo:
        for pid in _children(todo.pop()):
            if pid not in stopped:
                stopped.add(pid)
                _signal(pid, signal.SIGSTOP)
                todo.append(pid)
        if not todo:  # once more from the top: what was forked while it was walked
            todo = [pid for pid in (root, *stopped) if set(_children(pid)) - stopped]
    for pid in (*stopped, root) if root_too else stopped:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int):
    try:
        os.kill(pid, sig)
    except OSError:
        pass
