"""What the object store holds, as `shmray status` and `shmray memory` report it."""
from __future__ import annotations

from dataclasses import dataclass

from . import _serialization as ser
from ._protocol import ERROR, INLINE, SHM, SPILLED


ACTOR_TOKEN = "an actor's token"  # (what every handle of an actor holds a ref to)


@dataclass(frozen=True)
class StoreStats:
    objects: int
    pending: int
    inline_bytes: int
    shm_bytes: int
    shm_segments: int
    kept_until_shutdown: int
    spilled: int
    spilled_bytes: int
    warm: dict                  # segments kept for reuse (SegmentPoolStats' fields)


@dataclass(frozen=True)
class ObjectInfo:
    object_id: str
    size: int
    where: str                  # "inline", "shared memory", "spilled" or "error"
    created_by: str | None      # a task's name, "put", ...: kept for objects not inline
    driver_refs: int            # ObjectRef instances in the driver
    borrowers: int              # references held by workers
    contained_in: int           # stored objects whose value holds its ref
    needed_by_tasks: int        # unfinished tasks that take it (as input or inside args)
    pinned_by_workers: int      # tasks on workers that were handed it (never spilled)
    kept_until_shutdown: bool   # its ref was pickled outside shmray

    @property
    def reference_count(self) -> int:
        return self.driver_refs + self.borrowers + self.contained_in + self.needed_by_tasks


def objects(store) -> list:
    """One ObjectInfo per stored object, largest first (what `shmray status` lists)."""
    where = {INLINE: "inline", SHM: "shared memory", ERROR: "error",
             SPILLED: "spilled"}
    infos = [ObjectInfo(f"{oid:032x}", _size(s), where[s[0]], _creator(store, oid),
                        store._local.get(oid, 0), store._borrowed.get(oid, 0),
                        store._contained.get(oid, 0), store._needed.get(oid, 0),
                        store._pinned.get(oid, 0), oid in store.escaped)
             for oid, s in store.values.items()]
    return sorted(infos, key=lambda i: -i.size)


def _creator(store, oid):
    """What made the object, where the store knows it (its creator is kept for objects
    in shared memory; an actor's token is always small). A task's result is named
    after its task by the snapshot (_snapshot.object_rows), from the task rows."""
    creator = store._creators.get(oid)
    if creator is None and oid in store.tokens:
        return ACTOR_TOKEN
    return creator


def statistics(store) -> StoreStats:
    inline = shm = segs = spilled_bytes = 0
    for s in store.values.values():
        if s[0] == SHM:
            shm += s[2]
            segs += 1
        elif s[0] == SPILLED:
            spilled_bytes += s[2]
        else:
            inline += ser.stored_size(s)
    return StoreStats(len(store.values), len(store.pending), inline, shm, segs,
                      len(store.escaped), store.spilled, spilled_bytes,
                      store.segments.statistics()._asdict())


def _size(stored) -> int:
    return stored[2] if stored[0] in (SHM, SPILLED) else ser.stored_size(stored)
