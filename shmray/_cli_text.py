"""Human-readable reports of a session, as the CLI prints them: aligned tables that
fit in 100 columns. Input is plain data (_status_area.read_live, a _snapshot snapshot);
output is text. Nothing here reads or changes a session."""
from __future__ import annotations

import os
import time

from . import _snapshot

WIDTH = 100
STATUS_ACTOR_ROWS = 20  # actors' workers listed by `shmray status` (all: `list actors`)

def size(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def duration(seconds) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def wrapped(label: str, parts: list) -> list:
    """`label` then the parts, comma-separated, in lines at most WIDTH wide (the
    continuation lines indented)."""
    lines, line = [], label
    for i, part in enumerate(parts):
        text = part + ("," if i < len(parts) - 1 else "")
        if len(line) + 1 + len(text) > WIDTH and line.strip():
            lines.append(line)
            line = "   "
        line += (" " if line.strip() else "") + text
    lines.append(line)
    return lines


def table(headers, rows, flexible=(), right=(), floor=8, last=()) -> list:
    """Lines of an aligned table at most WIDTH wide: the `flexible` columns (indexes)
    are cut with "~" when the rest leaves them too little room (to `floor` characters,
    or their header's width), then, if that is not enough, the `last` ones (ids: cut
    only when the numbers beside them are huge); `right` columns are right-aligned."""
    cells = [[str(c) for c in headers]] + [[("-" if c is None else str(c)) for c in r]
                                           for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    excess = sum(widths) + 2 * (len(widths) - 1) - WIDTH
    for group in (sorted(flexible, key=lambda i: -widths[i]), last):
        for i in group:
            if excess <= 0:
                break
            cut = min(excess, widths[i] - max(len(headers[i]), floor))
            if cut > 0:
                widths[i] -= cut
                excess -= cut
    lines = []
    for row in cells:
        out = []
        for i, (text, w) in enumerate(zip(row, widths)):
            if len(text) > w:
                text = text[:w - 1] + "~"
            out.append(text.rjust(w) if i in right else text.ljust(w))
        lines.append("  ".join(out).rstrip())
    return lines


def status(info: dict, live: dict, snapshot, fresh: bool, sessions: list) -> str:
    """`shmray status`: the session, resources, tasks, workers, actors, object store.
    `live`: _status_area.read_live's, its workers joined with the snapshot
    (_snapshot.join_workers: which of them are actors)."""
    d = live["driver"]
    now = time.time()
    lines = [f"shmray session: driver pid {info['driver_pid']} (tag {info['tag']}), up "
             f"{duration(now - info['started'])}, {info['python']}"]
    if info.get("argv"):
        lines.append(f"  command: {' '.join(info['argv'])}"[:WIDTH])
    if len(sessions) > 1:
        others = ", ".join(str(s["driver_pid"]) for s in sessions if s is not info)
        lines.append(f"  other live sessions (choose with --session PID): {others}"[:WIDTH])
    beat = (live["monotonic_ns"] - d["heartbeat_ns"]) / 1e9
    if not fresh or beat > 2.0:
        lines.append(f"  note: the driver has not answered for {beat:.1f}s (busy outside "
                     f"shmray?); counters below are that old")
    if snapshot is not None:
        total, free = snapshot["resources"]["total"], snapshot["resources"]["available"]
        parts = []
        for key in ("CPU", "GPU", "memory", "object_store_memory"):
            if key in total:
                used = total[key] - free.get(key, 0.0)
                fmt = size if "memory" in key else (lambda v: f"{v:g}")
                parts.append(f"{key} {fmt(used)}/{fmt(total[key])}")
        custom = [k for k in total if k not in ("CPU", "GPU", "memory", "object_store_memory")
                  and not k.startswith("node:")]
        parts += [f"{k} {total[k] - free.get(k, 0.0):g}/{total[k]:g}" for k in custom]
        lines += wrapped("resources used:", parts)
    lines += wrapped("tasks:", [
        f"{d['tasks_running']:,} running", f"{d['tasks_queued']:,} queued",
        f"{d['tasks_waiting_for_inputs']:,} waiting for inputs",
        f"{d['tasks_finished']:,} finished", f"{d['tasks_failed']:,} failed",
        f"{d['tasks_submitted']:,} submitted"])
    functions = snapshot["functions"] if snapshot else {}
    rows, actor_rows = [], []
    for w in live["workers"]:
        name = functions.get(str(w["fn_id"]), "?") if w["fn_id"] is not None else None
        since = None if w["since_ns"] is None else (live["monotonic_ns"] - w["since_ns"]) / 1e9
        row = [w["pid"], "-" if w["core"] is None else w["core"], w["state"], name,
               duration(since), w["tasks_done"], size(w["rss_bytes"])]
        actor = w.get("actor")
        if actor:
            actor_rows.append(row[:3] + [actor_label(actor)] + row[3:])
        else:
            rows.append(row)
    lines.append(f"workers: {d['workers']} ({d['blocked_workers']} blocked in get/wait)")
    lines += ["  " + line for line in table(
        ["PID", "CORE", "STATE", "CURRENT TASK", "FOR", "DONE", "RSS"], rows,
        flexible=(3,), right=(0, 1, 5, 6))]
    lines += _status_actors(d, snapshot, actor_rows)
    lines += _status_generators(snapshot)
    store = [f"{size(d['shm_bytes'])} of {size(d['capacity'])} in shared memory",
             f"{d['objects']:,} objects"]
    if d["spilled"]:
        store.append(f"{d['spilled']:,} spilled ({size(d['spilled_bytes'])})")
    lines += wrapped("object store:", store)
    return "\n".join(lines)


def _status_generators(snapshot) -> list:
    """A row per streaming generator task still producing: its items so far."""
    rows = (snapshot or {}).get("generators") or []
    if not rows:
        return []
    lines = [f"generators: {len(rows):,} streaming"]
    lines += ["  " + line for line in table(
        ["TASK", "TASK ID", "ITEMS", "CONSUMED", "STATE"],
        [[g["name"], g["task_id"][:16], g["items"], g["consumed"],
          "paused (backpressure)" if g["paused"] else "running"] for g in rows[:STATUS_ACTOR_ROWS]],
        flexible=(0,), right=(2, 3))]
    return lines


def actor_label(actor: dict) -> str:
    """An actor as one cell: its class, and its name if it has one."""
    return f"{actor['class_name']} {actor['name']!r}" if actor["name"] else actor["class_name"]


def _status_actors(d: dict, snapshot, rows: list) -> list:
    """The actor counts (the driver's words; the dead from the snapshot), then a row per
    actor's worker (its calls: tasks to the worker's words), at most STATUS_ACTOR_ROWS."""
    counts = [f"{d['actors_alive']:,} alive", f"{d['actors_pending']:,} pending creation",
              f"{d['actors_restarting']:,} restarting"]
    if snapshot is not None:
        dead = sum(1 for a in snapshot["actors"] if a["state"] == _snapshot.ACTOR_DEAD)
        counts.append(f"{dead:,} dead")
    lines = wrapped("actors:", counts)
    if not rows:
        return lines
    more = len(rows) - STATUS_ACTOR_ROWS
    lines += ["  " + line for line in table(
        ["PID", "CORE", "STATE", "ACTOR", "CURRENT CALL", "FOR", "DONE", "RSS"],
        rows[:STATUS_ACTOR_ROWS], flexible=(3, 4), right=(0, 1, 6, 7))]
    if more > 0:
        lines.append(f"  ... and {more:,} more (shmray list actors)")
    return lines


def actors(rows: list) -> str:
    """`shmray list actors`: one row per actor (the snapshot's rows), in the order
    given; RUNNING: the method it runs now (the calls waiting: `status --json`'s
    pending_calls; its restarts: --detail's num_restarts)."""
    table_rows = [[r["actor_id"], r["class_name"], r["name"] or "-", r["state"], r["pid"],
                   r["calls_done"],
                   r["current_method"] and r["current_method"].rsplit(".", 1)[-1]]
                  for r in rows]
    return "\n".join(table(["ACTOR ID", "CLASS", "NAME", "STATE", "PID", "CALLS", "RUNNING"],
                           table_rows, flexible=(1, 2, 6), right=(4, 5), floor=6,
                           last=(0,)))  # (the 32 digits of an id leave little room)


def memory(snapshot: dict) -> str:
    """`shmray memory`: one row per object, largest first, then totals."""
    rows = [[o["object_id"], size(o["size"]), o["where"], o["reference_count"],
             o["created_by"] or "-"] for o in snapshot["objects"]]
    lines = table(["OBJECT ID", "SIZE", "WHERE", "REFS", "CREATED BY"], rows,
                  flexible=(4,), right=(1, 3))
    st = snapshot["store"]
    listed = "" if st["objects_listed"] == st["objects"] else \
        f" (the largest {st['objects_listed']:,} listed)"
    if st.get("warm"):  # (a snapshot of an older version has none)
        lines += warm_segments(st["warm"])
    lines += wrapped(f"{st['objects']:,} objects{listed}:", [
        f"{size(st['shm_bytes'])} in shared memory ({st['shm_segments']:,} segments)",
        f"{size(st['inline_bytes'])} inline",
        f"{st['spilled']:,} spilled ({size(st['spilled_bytes'])})",
        f"capacity {size(st['capacity'])}"])
    return "\n".join(lines)


def warm_segments(warm: dict) -> list:
    """The lines of `shmray memory` about the segments kept for reuse (_segment_pool)."""
    pressure = "now" if warm["pressure"] else "none now"
    return wrapped(f"warm segments: {warm['free_segments']:,} free "
                   f"({size(warm['free_bytes'])}; budget {size(warm['budget'])}):", [
        f"{warm['reserve_segments']:,} of them pre-faulted, unused ({size(warm['reserve_bytes'])})",
        f"{warm['draining']:,} freed but still mapped by a reader",
        f"{warm['reused']:,} reused, {warm['created']:,} created by the driver, "
        f"{warm['prefaulted']:,} pre-faulted",
        f"memory pressure {pressure} ({warm['returned']:,} returned under it)"])


def tasks(records: list, snapshot: dict) -> str:
    """`shmray list tasks`: one row per task attempt (state._records' records, in the
    order given); TOOK: its run time, so far for a running one (from the snapshot's
    rows: the records' times are whole milliseconds). A failed one's error (its
    message's first line) follows its row, on a line of its own."""
    rows = {(r["task_id"], r["attempt"]): r for r in snapshot["tasks"]}
    table_rows = []
    for r in records:
        row = rows.get((r["task_id"], r["attempt_number"]))
        start, end = (row["start"], row["end"]) if row else (None, None)
        took = None if start is None else max(0.0, (snapshot["monotonic"] if end is None
                                                    else end) - start)
        table_rows.append([r["task_id"], r["name"], r["state"], r["attempt_number"],
                           r["worker_pid"], duration(took)])
    lines = table(["TASK ID", "NAME", "STATE", "TRY", "WORKER", "TOOK"], table_rows,
                  flexible=(1,), right=(3, 4, 5), last=(0,))
    out = lines[:1]
    for r, line in zip(records, lines[1:]):
        out.append(line)
        error = r["error_message"] or r["error_type"]
        if error:
            out.append(f"    error: {error.strip().split(chr(10), 1)[0]}"[:WIDTH])
    return "\n".join(out)


def objects(records: list) -> str:
    """`shmray list objects`: one row per object (state._records' records)."""
    rows = [[r["object_id"], size(r["object_size"]), r["task_status"], r["reference_type"],
             r["call_site"]] for r in records]
    return "\n".join(table(["OBJECT ID", "SIZE", "STATUS", "REFERENCE TYPE", "CREATED BY"],
                           rows, flexible=(4,), right=(1,), last=(0,)))


def workers(records: list) -> str:
    """`shmray list workers`: the driver and the session's workers."""
    rows = [[r["pid"], r["worker_type"], r["is_alive"], r["worker_id"]] for r in records]
    return "\n".join(table(["PID", "TYPE", "ALIVE", "WORKER ID"], rows, right=(0,),
                           last=(3,)))


def detail(records: list) -> str:
    """`shmray list ... --detail`: each record as a block of "column: value" lines; a
    dict's items go on indented lines, so do a long or multi-line text's lines."""
    blocks = []
    for record in records:
        lines = _fields(record, "  ")
        lines[0] = "-" + lines[0][1:]
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def _fields(items: dict, indent: str) -> list:
    lines = []
    for key, value in items.items():
        head = f"{indent}{key}:"
        if isinstance(value, dict) and value:
            lines.append(head)
            lines += _fields(value, indent + "  ")
            continue
        text = "-" if value is None else "''" if value == "" else str(value).expandtabs(4)
        if "\n" not in text and len(head) + 1 + len(text) <= WIDTH:
            lines.append(f"{head} {text}")
            continue
        lines.append(head)
        room = WIDTH - len(indent) - 2
        for part in text.split("\n"):
            lines += [indent + "  " + part[at:at + room] for at in range(0, len(part), room)]
    return lines


def summary(groups: list) -> str:
    """`shmray summary tasks`: per function name, tasks in each state."""
    rows = [[g["name"], g["total"], g[_snapshot.RUNNING], g[_snapshot.SUBMITTED_TO_WORKER]
             + g[_snapshot.PENDING_NODE_ASSIGNMENT] + g[_snapshot.PENDING_ARGS_AVAIL],
             g[_snapshot.FINISHED], g[_snapshot.FAILED], duration(g["mean_seconds"])]
            for g in groups]
    return "\n".join(table(["NAME", "TOTAL", "RUNNING", "PENDING", "FINISHED", "FAILED",
                            "MEAN RUN"], rows, flexible=(0,), right=(1, 2, 3, 4, 5, 6)))


def sessions(found: list) -> str:
    rows = [[s["driver_pid"], s["tag"], duration(time.time() - s["started"]),
             " ".join(s.get("argv") or []), os.path.basename(s["directory"])] for s in found]
    return "\n".join(table(["DRIVER PID", "TAG", "UP", "COMMAND", "DIRECTORY"], rows,
                           flexible=(3,), right=(0,)))
