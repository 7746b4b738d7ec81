"""What a session looks like from outside: the live counters behind `shmray status`,
and the snapshot (objects, tasks, functions, resources) behind the other commands.

    housekeeping ─► counters(session) ─► the status words (_status_area.DriverStatus)
    a CLI request / timeline() ─► snapshot(session) ─► _snapshot (plain data)

Read-only: nothing here changes the session. Called under the session's lock.
"""
from __future__ import annotations

import sys

from .. import _snapshot, _status_area
from .tasks import HISTORY


def counters(session) -> tuple:
    """The live counters (_status_area.COUNTERS, in order), for the status words."""
    workers = session.pool.workers
    running = on_workers = 0
    for w in workers:
        if w.inflight:  # its first task runs, and help tasks on top of a blocked one
            running += 1 + (sum(1 for s in w.inflight if s.helping) if w.rpcs else 0)
            on_workers += len(w.inflight)
    queued = sum(len(q) for q in session.scheduler.ready.values())
    queued += session.envs.waiting_count()  # for their runtime_env
    tasks = session.tasks
    waiting = max(0, len(tasks.tasks) - queued - on_workers)  # for their inputs
    queued += on_workers - running
    store = session.store
    spilled_bytes = store.statistics().spilled_bytes if store.spilled else 0
    submitted = tasks.finished + tasks.failed + len(tasks.tasks)  # every task ends in one
    return (len(workers), sum(1 for w in workers if w.rpcs), submitted, tasks.finished,
            tasks.failed, queued, waiting, running, len(store.values), store.shm_bytes,
            store.capacity, store.spilled, spilled_bytes)


def snapshot(session) -> dict:
    """The session as plain data (what `shmray status/memory/list` print)."""
    session.store.process_refs()
    return _snapshot.snapshot(
        session.session_info, dict(zip(_status_area.COUNTERS, counters(session))),
        {"total": session.cluster_resources(), "available": session.available_now()},
        {fn_id: name for fn_id, (_, name) in session.functions.items()},
        session.pool.workers, session.store, task_records(session),
        list(session.tasks.tasks.values()))


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
