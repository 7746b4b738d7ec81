"""What a session looks like from outside: the live counters behind `shmray status`,
and the snapshot (objects, tasks, actors, functions, resources) behind the other commands.

    housekeeping ─► counters(session) ─► the status words (_status_area.DriverStatus)
    a CLI request / timeline() ─► snapshot(session) ─► _snapshot (plain data)

Read-only: nothing here changes the session. Called under the session's lock.
"""
from __future__ import annotations

import sys

from .. import _serialization as ser, _status_area
from .actors import ALIVE, PENDING, RESTARTING
from .tasks import HISTORY


def counters(session) -> tuple:
    """The live counters (_status_area.COUNTERS, in order), for the status words.
    Every housekeeping round: O(workers + actors), never O(tasks)."""
    pool = session.pool
    running = on_workers = 0
    for w in pool.workers:
        if w.inflight:  # its first task runs, and help tasks on top of a blocked one
            running += 1 + (sum(1 for s in w.inflight if s.helping) if w.rpcs else 0)
            on_workers += len(w.inflight)
    for w in pool.actor_workers:  # (an actor's calls are tasks of the task table too)
        if w.inflight:
            running += min(len(w.inflight), w.actor.max_concurrency if w.actor else 1)
            on_workers += len(w.inflight)
    queued = session.scheduler.queued_count()
    queued += session.envs.waiting_count()  # for their runtime_env
    states = {PENDING: 0, ALIVE: 0, RESTARTING: 0}
    for actor in session.actors.by_id.values():
        states[actor.state] = states.get(actor.state, 0) + 1
        if actor.worker is None and actor.waiting:  # (with a worker, only inputs hold
            # calls back) calls whose inputs are there wait for their actor's worker
            queued += sum(1 for spec in actor.waiting if spec.runnable)
    tasks = session.tasks
    waiting = max(0, len(tasks.tasks) - queued - on_workers)  # for their inputs
    queued += on_workers - running
    store = session.store
    spilled_bytes = store.statistics().spilled_bytes if store.spilled else 0
    submitted = tasks.finished + tasks.failed + len(tasks.tasks)  # every task ends in one
    return (len(pool.workers), sum(1 for w in pool.workers if w.rpcs), submitted,
            tasks.finished, tasks.failed, queued, waiting, running, len(store.values),
            store.shm_bytes, store.capacity, store.spilled, spilled_bytes,
            len(pool.actor_workers), states[PENDING], states[ALIVE], states[RESTARTING])


def snapshot(session) -> dict:
    """The session as plain data (what `shmray status/memory/list` print)."""
    from .. import _snapshot  # (here: housekeeping's counters never need it)

    session.store.process_refs()
    workers = session.pool.snapshot[0]
    snap = _snapshot.snapshot(
        session.session_info, dict(zip(_status_area.COUNTERS, counters(session))),
        {"total": session.cluster_resources(), "available": session.available_now()},
        {fn_id: name for fn_id, (_, name) in session.functions.items()},
        workers, session.store, task_records(session),
        list(session.tasks.tasks.values()), actor_rows(session), actor_functions(session),
        session.generators.rows(), job_id=session.job_id,
        extras=_snapshot.TaskExtras(failures(session), running_since(workers)))
    groups = session.groups
    snap["placement_groups"] = [dict(groups.row(g), is_detached=g.spec.lifetime == "detached")
                                for g in groups.groups.values()]
    return snap


def failures(session) -> dict:
    """(task id, attempt) -> "Type: message" of the latest failed tasks (their
    errors' stored forms carry it: nothing is unpickled here)."""
    return {(task_id, attempt): message
            for task_id, attempt, message in session.tasks.failures}


def running_since(workers) -> dict:
    """task id (hex) -> when it started (CLOCK_MONOTONIC ns), for the task each worker
    runs now, from its own words (the driver learns a start only at the task's end)."""
    since = {}
    for w in workers:
        words = _status_area.read_worker(w.channel.mm)
        if words["task_id"] is not None:
            since[words["task_id"]] = words["since_ns"]
    return since


def actor_rows(session) -> list:
    """The actors' rows (ActorTable.rows), with what Ray's ActorState also says: the
    resources an actor holds, whether it is detached, and why a dead one died."""
    table = session.actors
    rows = table.rows()
    for row in rows:
        actor = table.by_id.get(int(row["actor_id"], 16)) or \
            table.graveyard.get(int(row["actor_id"], 16))
        if actor is None:
            continue
        row["required_resources"] = dict(actor.held)
        row["detached"] = actor.detached
        row["death"] = None if actor.death is None else ser.error_message(actor.death)
    return rows


def actor_functions(session) -> dict:
    """fn id -> _snapshot.ACTOR_CREATION_TASK or ACTOR_TASK, for the classes of the
    live actors and of those kept dead (their task rows say what they were)."""
    from .. import _snapshot

    kinds = {}
    table = session.actors
    for actor in list(table.by_id.values()) + list(table.graveyard.values()):
        handle = actor.handle
        if handle.class_id not in kinds:
            kinds[handle.class_id] = _snapshot.ACTOR_CREATION_TASK
            kinds.update((m[1], _snapshot.ACTOR_TASK) for m in handle.methods)
    return kinds


def task_records(session) -> list:
    """The latest HISTORY finished tasks, oldest first: the workers' records (of the
    live workers, and those kept from workers gone) and the driver's own."""
    records = list(session.tasks.history) + list(session.pool.gone_history)
    for w in session.pool.snapshot[0]:  # task workers and actors
        records += _status_area.read_history(w.channel.mm, w.pid)
    records.sort(key=lambda r: r[3][2])
    return records[-HISTORY:]


def write_snapshot(session, request):
    """Answer a CLI's request for a snapshot (from housekeeping)."""
    try:
        _status_area.write_snapshot(session.session_root, snapshot(session))
    except OSError as e:  # a full /tmp must not break the session
        print(f"shmray: could not write the status snapshot: {e}", file=sys.stderr)
    session.status.served(request)
