"""POSIX shared-memory segments: naming, creating, mapping, unlinking.

Every segment of a session is named ``shmray_<driver pid>_<session tag>_<what>``, so
a session's leftovers can be found by prefix and a dead driver's recognised by pid.
Readers map segments MAP_PRIVATE: pages are shared until a reader writes, and a
write copies only the touched page (DESIGN.md decision 5).

An object's segment that no process maps any more is renamed to its *free name*,
``<its name>.f<capacity>``, by the driver (see _segment_pool); a process that wants to
write a new object takes one by renaming it to the object's name (claim). A rename is
atomic: of the processes that try, one gets the segment, and once the driver has
unlinked a free name (reclaim) nobody can take it.
"""
from __future__ import annotations

import errno
import mmap
import os
import signal

import posix_ipc

from . import _proctree
from ._proctree import pid_alive, process_state  # (callers know them as _shm's)
from .exceptions import ObjectStoreFullError

PREFIX = "shmray_"
SHM_DIR = "/dev/shm"
CHECK_SPACE_FROM = 1 << 20  # smaller segments: fallocate fails fast enough on its own


def session_prefix(driver_pid: int, tag: str) -> str:
    return f"{PREFIX}{driver_pid}_{tag}_"


def _open(name: str, create: bool = False) -> tuple[int, int]:
    """(fd, size) of segment `name`: a POSIX shared-memory object, or a file when the
    name is an absolute path (objects of a session whose /dev/shm is too small).
    Created empty: create() gives it its size."""
    if name.startswith("/"):
        fd = os.open(name, os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0), 0o600)
        return fd, os.fstat(fd).st_size
    seg = posix_ipc.SharedMemory("/" + name, posix_ipc.O_CREX if create else 0, mode=0o600)
    return seg.fd, seg.size


def create(name: str, size: int, what: str = "an object", allocate=True) -> mmap.mmap:
    """Create a new segment of `size` bytes, backed by memory, and map it shared,
    read-write; ObjectStoreFullError (naming `what`) if its file system cannot hold it.
    `allocate` False: its pages are to be allocated by the caller, a range at a time
    (see allocate()), before they are written.

    A segment's pages are allocated when first written: one larger than what its file
    system has left would be created fine and then kill its writer with SIGBUS at the
    first page that does not fit. So every page is allocated now (fallocate: on tmpfs
    about as fast as the page faults it saves, which then find their pages there).
    Large ones are checked against the free space first: a fallocate that cannot
    succeed would take all the free memory before it fails."""
    size = max(size, 1)
    where = os.path.dirname(name) if name.startswith("/") else SHM_DIR
    if size >= CHECK_SPACE_FROM and size > free_bytes(where):
        raise full_error(size, where, what)
    fd, _ = _open(name, create=True)
    try:
        if not allocate:
            os.ftruncate(fd, size)
            return mmap.mmap(fd, size)
        try:
            os.posix_fallocate(fd, 0, size)  # also sets the size
        except OSError as e:
            if e.errno in _FULL_ERRNOS:
                raise full_error(size, where, what) from None
            os.ftruncate(fd, size)  # a file system that cannot: sparse, as before
        return mmap.mmap(fd, size)
    except BaseException:  # (a Ctrl-C too) no segment without its owner
        unlink(name)
        raise
    finally:
        os.close(fd)


_FULL_ERRNOS = (errno.ENOSPC, errno.ENOMEM, errno.EFBIG, errno.EDQUOT)


def allocate(name: str, offset: int, length: int, what: str = "an object"):
    """Allocate the pages of bytes [offset, offset + length) of segment `name` (made by
    create(allocate=False)); ObjectStoreFullError if its file system cannot hold them."""
    fd, _ = _open(name)
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as e:
        if e.errno in _FULL_ERRNOS:
            raise full_error(length, SHM_DIR, what) from None  # (else: pages fault in)
    finally:
        os.close(fd)


def free_bytes(where: str = SHM_DIR) -> int:
    st = os.statvfs(where)
    return st.f_bavail * st.f_frsize


def full_error(size: int, where: str, what: str = "an object") -> ObjectStoreFullError:
    try:
        free = f"{free_bytes(where):,}"
    except OSError:
        free = "too few"
    return ObjectStoreFullError(
        f"Failed to store {what} of {size:,} bytes: {where} has {free} bytes free. "
        f"Free objects (drop their refs) or enlarge {where}.")


def attach(name: str, size: int | None = None, populate: bool = False) -> mmap.mmap:
    """Map an existing segment shared, read-write (rings, control areas, pooled
    segments). `populate` maps every page now, in one call, not one fault each."""
    fd, actual = _open(name)
    try:
        flags = mmap.MAP_SHARED | (mmap.MAP_POPULATE if populate else 0)
        return mmap.mmap(fd, actual if size is None else size, flags=flags)
    finally:
        os.close(fd)


def map_readonly(name: str) -> mmap.mmap:
    """Map an existing segment read-only (the status CLI: it looks, never touches)."""
    fd = os.open(os.path.join(SHM_DIR, name), os.O_RDONLY)
    try:
        return mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    finally:
        os.close(fd)


class SegmentGone(Exception):
    """The segment a stored form names is no longer there (its object was spilled to
    disk or freed since the form was handed out): ask the driver again."""


def map_private(name: str, size: int) -> mmap.mmap:
    """Map an existing segment copy-on-write: writes stay in this process."""
    try:
        fd, _ = _open(name)
    except (posix_ipc.ExistentialError, FileNotFoundError):
        raise SegmentGone(name) from None
    try:
        return mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)


def path_of(name: str) -> str:
    """The file of segment `name` (a POSIX shared-memory object is a file in SHM_DIR)."""
    return name if name.startswith("/") else os.path.join(SHM_DIR, name)


FREE_MARK = ".f"  # a free segment's name: <the name it had>.f<capacity>


def free_name(name: str, capacity: int) -> str:
    return f"{name}{FREE_MARK}{capacity}"


def object_names(prefix: str) -> list[str]:
    """The objects' names that start with `prefix`: segments in /dev/shm, or files for
    a prefix that is a directory's path (file-backed objects, see Session)."""
    if not prefix.startswith("/"):
        return list_names(prefix)
    directory, start = os.path.split(prefix)
    try:
        return [os.path.join(directory, n) for n in os.listdir(directory)
                if n.startswith(start)]
    except FileNotFoundError:
        return []


def free_segments(object_prefix: str) -> list[tuple[str, int]]:
    """(free name, capacity) of the session's free segments (objects' prefix
    `object_prefix`: in /dev/shm, or a directory's path for file-backed objects)."""
    found = []
    for name in object_names(object_prefix):
        _, mark, capacity = name.rpartition(FREE_MARK)
        if mark and capacity.isdigit():
            found.append((name, int(capacity)))
    return found


def claim(free: str, name: str) -> bool:
    """Take the free segment `free` under the new name `name` (atomic); False if it is
    gone: another process took it, or the driver reclaimed it."""
    try:
        os.rename(path_of(free), path_of(name))
        return True
    except FileNotFoundError:
        return False


def size_of(name: str) -> int | None:
    """The size of segment `name` (its capacity), or None if it is gone."""
    try:
        return os.stat(path_of(name)).st_size
    except FileNotFoundError:
        return None


def reclaim(name: str) -> bool:
    """Unlink segment `name` and give its memory back now, even while writers keep
    mappings of it (their pages would otherwise stay until they unmap). Only for a
    segment that no reader maps (its pages go: a reader would get SIGBUS) and that
    nobody may write (a free one: once unlinked, nobody can claim it). False if it
    was gone already (or claimed by a process meanwhile: then it is that one's)."""
    try:
        fd = os.open(path_of(name), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        if not unlink(name):
            return False
        os.ftruncate(fd, 0)
        return True
    finally:
        os.close(fd)


def unlink(name: str) -> bool:
    try:
        if name.startswith("/"):
            os.unlink(name)
        else:
            posix_ipc.unlink_shared_memory("/" + name)
        return True
    except (posix_ipc.ExistentialError, FileNotFoundError):
        return False


def discard(name: str, mm: mmap.mmap | None):
    """Unlink segment `name` and close the writer's mapping of it. A copy that an
    exception interrupted may leave views of the mapping (in its traceback, in copy
    threads still running): the mapping then goes with the last of them."""
    unlink(name)
    if mm is not None:
        try:
            mm.close()
        except BufferError:
            pass


def shm_size() -> int:
    """How many bytes /dev/shm can hold in all (a default Docker container: 64 MB)."""
    try:
        st = os.statvfs(SHM_DIR)
        return st.f_blocks * st.f_frsize
    except OSError:
        return 0


SESSION_DIR_PREFIX = "session_"


def sessions_root() -> str:
    """<tmp>/shmray-sessions: one directory per session, and the session_latest link.
    (Not <tmp>/shmray: a script run from <tmp> would import that directory as the
    shmray package.)"""
    return os.path.join(temp_dir(), "shmray-sessions")


def temp_dir() -> str:
    """tempfile.gettempdir()'s answer ($TMPDIR, $TEMP or $TMP if a writable directory,
    else /tmp), without tempfile's import (a millisecond of every init)."""
    for var in ("TMPDIR", "TEMP", "TMP"):
        path = os.environ.get(var)
        if path and os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK):
            return os.path.abspath(path)
    return "/tmp"


def session_root(session_prefix: str) -> str:
    """The session's directory outside /dev/shm (status files, spilled objects,
    file-backed ones): session_<driver pid>_<tag>, so a dead session's is recognised
    by its driver's pid."""
    pid_tag = session_prefix[len(PREFIX):].rstrip("_")
    return os.path.join(sessions_root(), f"{SESSION_DIR_PREFIX}{pid_tag}")


def session_dir(session_prefix: str, what: str) -> str:
    return os.path.join(session_root(session_prefix), what)


def list_names(prefix: str = PREFIX) -> list[str]:
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def unlink_prefix(prefix: str) -> list[str]:
    """Unlink every segment whose name starts with `prefix`; return the names removed."""
    return [n for n in list_names(prefix) if unlink(n)]


def reclaim_dead_sessions(workers: bool = True) -> list[str]:
    """Remove what sessions whose driver process no longer exists left behind: worker
    processes still running (they exit on their own within a second, unless stuck;
    unless `workers` is False: see kill_orphaned_workers), segments, session
    directories. Returns what was removed: "pid N" for a process, a segment's name, or
    a directory's path."""
    removed = [f"pid {pid}" for pid in kill_orphaned_workers()] if workers else []
    for name in list_names():
        if _orphaned(name, PREFIX) and unlink(name):
            removed.append(name)
    for root, prefix in ((temp_dir(), PREFIX), (sessions_root(), SESSION_DIR_PREFIX)):
        try:
            entries = os.listdir(root)
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.startswith(prefix) and _orphaned(entry, prefix):
                import shutil  # (here: start-up does not need it, nor what it imports)

                shutil.rmtree(os.path.join(root, entry), ignore_errors=True)
                removed.append(os.path.join(root, entry))
    latest = os.path.join(sessions_root(), "session_latest")
    if os.path.islink(latest) and not os.path.exists(latest):
        try:
            os.unlink(latest)
        except OSError:
            pass
    return removed


def _orphaned(name: str, prefix: str) -> bool:
    """Is `name` a session's whose driver (the pid after `prefix`) is gone?"""
    try:
        pid = int(name[len(prefix):].split("_", 1)[0])
    except ValueError:
        return False
    return not pid_alive(pid)


WORKER_COMM = "shmray:"  # a worker's /proc/PID/comm: shmray:<driver pid>


def worker_processes() -> list[tuple[int, int]]:
    """(pid, driver pid) of every live shmray worker on the machine: each names itself
    shmray:<driver pid> in /proc/PID/comm, forked or spawned alike (zombies left out)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
            if not comm.startswith(WORKER_COMM):
                continue
            driver = int(comm[len(WORKER_COMM):])
        except (OSError, ValueError):
            continue
        if process_state(int(entry)) not in ("Z", None):
            found.append((int(entry), driver))
    return found


def kill_orphaned_workers() -> list[int]:
    """SIGKILL the workers whose driver is gone; returns their pids. It reads every
    process's /proc/PID/comm: a few ms on a machine of a hundred processes, which
    init leaves to a thread of its own (see _driver.session)."""
    killed = []
    for pid, driver in worker_processes():
        if not pid_alive(driver):
            try:
                # What its tasks started goes too: first what left its group (the worker
                # still alive, so its pid cannot be anyone else's), then its group.
                _proctree.end_tree(pid, root_too=False)
                if os.getpgid(pid) == pid:  # (a child forked in a task leads none)
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except (ProcessLookupError, PermissionError):
                pass
    return killed
