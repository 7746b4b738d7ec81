"""POSIX shared-memory segments: naming, creating, mapping, unlinking.

Every segment of a session is named ``shmray_<driver pid>_<session tag>_<what>``, so
a session's leftovers can be found by prefix and a dead driver's recognised by pid.
Readers map segments MAP_PRIVATE: pages are shared until a reader writes, and a
write copies only the touched page (DESIGN.md decision 5).
"""
from __future__ import annotations

import mmap
import os

import posix_ipc

from .exceptions import ObjectStoreFullError

PREFIX = "shmray_"
SHM_DIR = "/dev/shm"
CHECK_SPACE_FROM = 1 << 20  # smaller segments: a statvfs would cost more than they risk


def session_prefix(driver_pid: int, tag: str) -> str:
    return f"{PREFIX}{driver_pid}_{tag}_"


def create(name: str, size: int) -> mmap.mmap:
    """Create a new segment of `size` bytes and map it shared, read-write.

    Segments are sparse until written: a segment larger than what /dev/shm has left
    would be created fine and then kill its writer with SIGBUS. So the free space is
    checked first, and a clear ObjectStoreFullError raised instead."""
    if size >= CHECK_SPACE_FROM:
        st = os.statvfs(SHM_DIR)
        free = st.f_bavail * st.f_frsize
        if size > free:
            raise ObjectStoreFullError(
                f"Failed to store an object of {size:,} bytes: {SHM_DIR} has {free:,} bytes "
                f"free. Free objects (drop their refs) or enlarge {SHM_DIR}.")
    seg = posix_ipc.SharedMemory("/" + name, posix_ipc.O_CREX, mode=0o600, size=max(size, 1))
    try:
        return mmap.mmap(seg.fd, max(size, 1))
    finally:
        seg.close_fd()


def attach(name: str, size: int | None = None, populate: bool = False) -> mmap.mmap:
    """Map an existing segment shared, read-write (rings, control areas, pooled
    segments). `populate` maps every page now, in one call, not one fault each."""
    seg = posix_ipc.SharedMemory("/" + name)
    try:
        flags = mmap.MAP_SHARED | (mmap.MAP_POPULATE if populate else 0)
        return mmap.mmap(seg.fd, seg.size if size is None else size, flags=flags)
    finally:
        seg.close_fd()


class SegmentGone(Exception):
    """The segment a stored form names is no longer there (its object was spilled to
    disk or freed since the form was handed out): ask the driver again."""


def map_private(name: str, size: int) -> mmap.mmap:
    """Map an existing segment copy-on-write: writes stay in this process."""
    try:
        seg = posix_ipc.SharedMemory("/" + name)
    except posix_ipc.ExistentialError:
        raise SegmentGone(name) from None
    try:
        return mmap.mmap(seg.fd, size, flags=mmap.MAP_PRIVATE,
                         prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        seg.close_fd()


def unlink(name: str) -> bool:
    try:
        posix_ipc.unlink_shared_memory("/" + name)
        return True
    except posix_ipc.ExistentialError:
        return False


def list_names(prefix: str = PREFIX) -> list[str]:
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def unlink_prefix(prefix: str) -> list[str]:
    """Unlink every segment whose name starts with `prefix`; return the names removed."""
    return [n for n in list_names(prefix) if unlink(n)]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reclaim_dead_sessions() -> list[str]:
    """Unlink segments of sessions whose driver process no longer exists."""
    removed = []
    for name in list_names():
        try:
            pid = int(name[len(PREFIX):].split("_", 1)[0])
        except ValueError:
            continue
        if not pid_alive(pid) and unlink(name):
            removed.append(name)
    return removed
