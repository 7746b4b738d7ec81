"""Where a pool's chunks run: the session's task workers, or one actor per process slot.

    TaskSlots   a pool without initializer or maxtasksperchild: each chunk is a shmray
                task (the session's warm workers; creating the pool starts nothing)
    ActorSlots  with them (or with actor-only options): Ray's design, one actor per
                process slot, the initializer run once in it, replaced after
                maxtasksperchild chunks (its last chunks finish first)

Both keep at most `processes` chunks running, and one more queued per slot where that
cannot raise the parallelism, so that a worker never waits for the next chunk. The
dispatcher thread alone calls them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import shmray
from shmray.exceptions import RayActorError

from ._chunk import PoolWorker, run_chunk

QUEUED_PER_SLOT = 1   # chunks waiting at a worker behind the running one

# Options that only an actor has: asking for one makes the pool's slots actors.
ACTOR_ONLY_OPTIONS = frozenset({
    "max_restarts", "max_task_retries", "max_concurrency", "max_pending_calls", "namespace",
    "get_if_exists", "lifetime", "concurrency_groups", "allow_out_of_order_execution"})

_pool_chunk = shmray.remote(max_retries=0)(run_chunk)  # a chunk is not run twice
_PoolActor = shmray.remote(num_cpus=0)(PoolWorker)     # (Ray's PoolActor holds no CPU)


class TaskSlots:
    """Chunks as tasks of the session, `window` of them submitted at a time."""

    kind = "tasks"
    batch_applies = True  # apply_async calls may share a task

    def __init__(self, processes: int, remote_args: dict, session_cpus: float):
        # ray_remote_args are the actors' options in Ray's pool: checked as such (the
        # actor-only ones give an ActorSlots pool), then those of the tasks.
        _PoolActor.options(**remote_args)
        options = {"name": "Pool", **remote_args}
        self._remote = _pool_chunk.options(**options)
        num_cpus = options.get("num_cpus", 1)
        # Queued chunks can only raise the parallelism above `processes` when the
        # session's CPUs could run more of them at once.
        pipelined = num_cpus > 0 and processes * num_cpus >= session_cpus
        self.window = processes * (1 + QUEUED_PER_SLOT) if pipelined else processes
        self.running = {}     # ref -> Call

    def has_room(self) -> bool:
        return len(self.running) < self.window

    def room(self) -> int:
        return self.window - len(self.running)

    def submit(self, call, chunk, shared_refs) -> object:
        ref = self._remote.remote(call.func, chunk, *shared_refs)
        self.running[ref] = call
        return ref

    def finished(self, ref, error) -> object:
        """The Call of `ref`, which ended (with `error`, or None)."""
        return self.running.pop(ref)

    def stop(self) -> list:
        """close(): nothing of its own to end. Refs to wait for before join returns."""
        return []

    def kill(self) -> None:
        """terminate(): the chunks not ended are cancelled: those not started never run,
        the running ones get KeyboardInterrupt (shmray.cancel). The workers are the
        session's: they stay, warm, for its other tasks."""
        for ref in list(self.running):
            try:
                shmray.cancel(ref)
            except Exception:
                pass  # (ended meanwhile)


class _Placement(NamedTuple):
    """Where an actor slot's call went: the slot, and its actor then (it may be replaced
    while the call runs)."""
    slot: "_Slot"
    actor: object


@dataclass(eq=False)
class _Slot:
    actor: object
    sent: int = 0        # chunks sent to this actor
    running: int = 0     # chunks sent to this slot and not ended


class ActorSlots:
    """One actor per process slot (Ray's Pool)."""

    kind = "actors"

    def __init__(self, processes: int, remote_args: dict, initializer, initargs: tuple,
                 maxtasksperchild):
        self._actor_class = _PoolActor.options(**remote_args) if remote_args else _PoolActor
        self._init = (initializer, initargs)
        self._max_sent = maxtasksperchild
        # maxtasksperchild counts tasks: each apply_async call must be one.
        self.batch_applies = maxtasksperchild is None
        self.slots = [_Slot(self._new_actor()) for _ in range(processes)]
        self.running = {}     # ref -> Call
        self._ending = []     # __ray_terminate__ refs of actors replaced or closed

    def _new_actor(self):
        return self._actor_class.remote(*self._init)

    def has_room(self) -> bool:
        return any(s.running <= QUEUED_PER_SLOT for s in self.slots)

    def room(self) -> int:
        return sum(max(0, 1 + QUEUED_PER_SLOT - s.running) for s in self.slots)

    def submit(self, call, chunk, shared_refs) -> object:
        slot = min(self.slots, key=lambda s: s.running)
        ref = slot.actor.run.remote(call.func, chunk, *shared_refs)
        call.slot = _Placement(slot, slot.actor)
        slot.running += 1
        slot.sent += 1
        self.running[ref] = call
        if self._max_sent is not None and slot.sent >= self._max_sent:
            # Its calls so far run first; the new actor starts meanwhile.
            self._ending.append(slot.actor.__ray_terminate__.remote())
            slot.actor, slot.sent = self._new_actor(), 0
        return ref

    def finished(self, ref, error):
        call = self.running.pop(ref)
        slot = call.slot.slot
        slot.running -= 1
        if isinstance(error, RayActorError) and not error.actor_init_failed \
                and call.slot.actor is slot.actor:
            slot.actor, slot.sent = self._new_actor(), 0  # it died: the slot gets a new one
        return call

    def stop(self) -> list:
        """close(): every actor ends after its calls; the refs that say they have."""
        for slot in self.slots:
            self._ending.append(slot.actor.__ray_terminate__.remote())
        ending, self._ending = self._ending, []
        return ending

    def kill(self) -> None:
        for slot in self.slots:
            shmray.kill(slot.actor, no_restart=True)
        for call in self.running.values():
            shmray.kill(call.slot.actor, no_restart=True)  # (a replaced one still running)
