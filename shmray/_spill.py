"""Spilling: an object's shared-memory segment copied to a file on disk, and back.

    (SHM, name, size, meta_len, layout) ──spill──► (SPILLED, path, size, meta_len, layout)
                                        ◄─restore─

A segment is spilled by copying its bytes into a file of the session's spill
directory; the caller then releases the segment (readers that map it keep their
pages until they unmap: unlinking never changes what they see). A spilled object is
read from its file, mapped like a segment (see _serialization.from_stored), or
restored: copied into a new segment. The file stays until the object is freed: a
SPILLED form handed out stays readable whatever happens to the object meanwhile,
and the object, spilled again, needs no second copy (objects never change).
"""
from __future__ import annotations

import os

from . import _shm
from ._protocol import SHM, SPILLED


def spill(stored, directory: str, file_name: str):
    """Copy an SHM object's bytes to a file; returns its SPILLED stored form. The file is
    named after the object, not the segment: pooled segments are reused under their name."""
    _, name, size, meta_len, layout = stored
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, file_name)
    mm = _shm.map_private(name, size)
    try:
        with open(path, "wb") as f:
            f.write(mm)
    except BaseException:  # a full disk, a Ctrl-C: no partial file is left
        discard((SPILLED, path))
        raise
    finally:
        mm.close()
    return spilled_form(stored, path)


def spilled_form(stored, path: str):
    """The SPILLED form of an SHM object whose bytes are in file `path` already."""
    _, _, size, meta_len, layout = stored
    return (SPILLED, path, size, meta_len, layout)


def restore(spilled, name: str):
    """Copy a spilled object into a new segment `name`; returns its SHM stored form.
    The file stays (see the module's docstring). ObjectStoreFullError if shared
    memory cannot hold it."""
    _, path, size, meta_len, layout = spilled
    mm = _shm.create(name, size)
    try:
        with open(path, "rb") as f:
            f.readinto(memoryview(mm)[:size])
    except BaseException:
        _shm.discard(name, mm)
        raise
    mm.close()
    return (SHM, name, size, meta_len, layout)


def discard(spilled):
    try:
        os.unlink(spilled[1])
    except FileNotFoundError:
        pass


def remove_dir(directory: str):
    import shutil  # (here: start-up does not need it, nor what it imports)

    shutil.rmtree(directory, ignore_errors=True)
