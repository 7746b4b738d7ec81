"""The figures the workloads record, and the one table (and JSON) made of them at the end."""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass

from _peers import ENGINES, LABELS


@dataclass
class Row:
    id: str
    title: str
    unit: str
    better: str   # "higher" or "lower": for the figures and for shmray's ratios alike
    note: str


ROWS = [
    Row("W1", "W1 small tasks, async", "tasks/s", "higher",
        "20,000 no-op tasks submitted, then all fetched (Pool: apply_async; executors: "
        "submit/result; shmray, Ray: .remote/get)"),
    Row("W1map", "W1 small tasks, Pool.map", "tasks/s", "higher",
        "Pool.map over 20,000 items (chunked). shmray: its W1 figure, since Ray's API has no map"),
    Row("W2", "W2 sync round trip", "us/call", "lower",
        "one no-op task submitted and fetched, 2,000 times (Pool: apply)"),
    Row("W3", "W3 1 ms CPU tasks", "effic.", "higher",
        "2,000 busy-loop tasks of ~1 ms on 2 workers: ideal (the same loops in 2 bare "
        "processes, same run) / measured; 1.0 is perfect"),
    Row("W4arg", "W4 100 MB to 100 tasks, arg", "ms", "lower",
        "shmray, Ray: put + 100 tasks given the ref. Pool peers: the array pickled into each "
        "task (one round: ~25 s each)"),
    Row("W4shm", "W4 100 MB to 100 tasks, shm", "ms", "lower",
        "Pool peers: multiprocessing.shared_memory create + copy, 100 tasks attach by name. "
        "shmray, Ray: the same put + ref run as the row above"),
    Row("W5", "W5 put 100 MB", "GB/s", "higher",
        "repeated puts, the previous ref freed. ref: numpy copy into already touched memory; "
        "Pool column: SharedMemory create + copy (any pool peer would do the same)"),
    Row("W5kept", "W5 put 100 MB, refs kept", "GB/s", "higher",
        "repeated puts, every ref kept (no segment to reuse), a second idle before each (outside "
        "the clock: shmray's warm reserve fills then). ref: as W5"),
    Row("W6d100", "W6 get 100 MB, in driver", "us", "lower",
        "get of a stored array, dropped again. Pool column: SharedMemory attach + ndarray view"),
    Row("W6t100", "W6 get 100 MB, in a task", "us", "lower",
        "timed inside the worker. Pool column: SharedMemory attach + view in a Pool task"),
    Row("W6d1", "W6 get 1 MB, in driver", "us", "lower", "as W6 100 MB: flat in size"),
    Row("W6t1", "W6 get 1 MB, in a task", "us", "lower", "as W6 100 MB: flat in size"),
    Row("W7", "W7 start-up, 1st result", "ms", "lower",
        "fresh Python process: launch, import, start the engine, get one result"),
    Row("W8wrss", "W8 RSS per worker", "MB", "lower",
        "VmRSS of each task worker after warm-up, mean"),
    Row("W8wpss", "W8 PSS per worker", "MB", "lower",
        "PSS (shared pages split between sharers) of each task worker, mean"),
    Row("W8orss", "W8 other processes, RSS", "MB", "lower",
        "every non-worker process the engine started (Ray: gcs, raylet, dashboard, agents...)"),
    Row("W8pss", "W8 everything started, PSS", "MB", "lower",
        "PSS of workers + other processes: what the engine costs beyond the driver"),
    Row("W9", "W9 1 GB cupy chain, per hop", "ms", "lower",
        "a 1 GB cupy array through 4 GPU tasks, each returning it to the next (shmray: CUDA "
        "IPC handles; ref: the same hops through host memory, .get() then cupy.asarray); "
        "only with cupy and a GPU"),
    Row("W10", "W10 actor call, sync", "us/call", "lower",
        "one actor method call submitted and fetched, 2,000 times. Pool column: a process of "
        "its own serving calls over a pipe (no pool: multiprocessing has no actors); tasks: "
        "shmray's W2 round trip, same run"),
    Row("W11", "W11 actor calls, async", "calls/s", "higher",
        "20,000 calls to one actor submitted, then all fetched (Ray: 5,000). Pool column: the "
        "same to a process over a pipe; tasks: shmray's W1 (20,000 tasks), same run"),
    Row("W12sync", "W12 n:n actor calls, sync", "calls/s", "higher",
        "2 caller tasks, each handed one of 2 actors, call it in a loop, each call waited for. "
        "Pool column: 2 caller processes calling 2 actor processes over pipes"),
    Row("W12batch", "W12 n:n actor calls, batch", "calls/s", "higher",
        "the same, each caller submitting all its calls, then one get"),
    Row("W13arg", "W13 100 MB to an actor, arg", "us/call", "lower",
        "an actor call given a 100 MB array: shmray, Ray: a ref of a put; the actor reads one "
        "element. Pool column: the array pickled through the pipe. ref: one 100 MB memcpy; "
        "tasks: a shmray task given the ref"),
    Row("W13shm", "W13 100 MB to an actor, shm", "us/call", "lower",
        "Pool column: the array in a SharedMemory segment, its name in the call; the rest as "
        "the row above"),
    Row("W14", "W14 generator, small items", "items/s", "higher",
        "one generator task yielding 10,000 ints, each ref got as it comes (Ray: 2,000 a "
        "round); tasks: shmray's W1 (20,000 tasks), in rounds alternating with it"),
    Row("W15", "W15 generator, 100 x 10 MB", "GB/s", "higher",
        "one generator task yielding 100 arrays of 10 MB, each got (mapped) as it comes, then "
        "dropped; ref: shmray's put of the same 100 arrays in the driver (freed segments reused), "
        "alternating; tasks: the same puts in a task (the worker's freed segments reused), "
        "median of 3"),
    Row("W16small", "W16 Pool.map, 100,000 items", "items/s", "higher",
        "Pool(2).map of a no-op over a list of 100,000 ints, default chunksize: shmray's "
        "shmray.util.multiprocessing.Pool, the stdlib's, Ray's ray.util.multiprocessing.Pool"),
    Row("W16big", "W16 Pool.map, 1,000 x 1 MB", "items/s", "higher",
        "the same Pools' map over 1,000 distinct 1 MB float64 arrays, each read at one element "
        "(shmray: each chunk's arrays in one shared-memory segment, mapped by the worker; the "
        "stdlib: pickled through its pipes; Ray: its object store)"),
    Row("W17small", "W17 joblib, 10,000 calls", "calls/s", "higher",
        "joblib.Parallel(n_jobs=2) of 10,000 no-op calls, auto batches, pool made per call: "
        "shmray's 'ray' backend, joblib's loky (its reusable workers), Ray's 'ray' backend"),
    Row("W17array", "W17 joblib, 100 MB to 40", "ms", "lower",
        "joblib.Parallel(n_jobs=2) of 40 calls each given the same 100 MB array (a column "
        "mean): shmray puts it once; loky memmaps it (hash, file); Ray puts it once"),
    Row("W18small", "W18 W1 at 20,000 tasks", "tasks/s", "higher",
        "W1's batch in a fresh process: 20,000 no-op tasks submitted, then all fetched (median "
        "of 5 batches, Ray: 1; Pool: apply_async)"),
    Row("W18big", "W18 W1 at 1,000,000 tasks", "tasks/s", "higher",
        "the same at 1,000,000 tasks, one batch (Ray: 50,000)"),
    Row("W18flat", "W18 rate 1M / rate 20k", "ratio", "higher",
        "the row above over the one before: 1.0 is a rate flat in size"),
    Row("W18bytes", "W18 bytes/task, not fetched", "B", "lower",
        "the driver's RSS after the 1,000,000-task submit loop minus before it, per task "
        "(Ray: 50,000); PSS and gc objects in latest.json"),
    Row("W18queued", "W18 bytes/task, queued", "B", "lower",
        "the same, 200,000 tasks held behind a gate task on every worker (Ray: 20,000)"),
    Row("W18drop", "W18 200k dropped, RSS back", "fract.", "higher",
        "200,000 results fetched, then refs and values dropped at once: (RSS before - after) / "
        "(before - baseline); 1.0: all back (Ray: 20,000)"),
]
ROW_BY_ID = {row.id: row for row in ROWS}
COLUMNS = ENGINES + ("ref", "tasks")   # tasks: shmray's own tasks, for its actors' rows
PEERS = COLUMNS[1:]

figures = {}   # row id -> {engine: value}
details = {}   # free-form extras for the JSON (W8 per-process lists, W4 task counts)
skipped = {}   # engine -> why it did not run


def record(row_id, engine, value):
    assert row_id in ROW_BY_ID and engine in COLUMNS, (row_id, engine)
    figures.setdefault(row_id, {})[engine] = value


def ratio(row_id, peer):
    values = figures.get(row_id, {})
    ours, theirs = values.get("shmray"), values.get(peer)
    if ours is None or not theirs:
        return None
    return ours / theirs


def fmt(value):
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_ratio(value):
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def table_lines():
    name_w, unit_w, num_w, rat_w = 28, 8, 11, 10
    # Only the columns that hold a figure: 'tasks' has figures in the actors' rows alone, and
    # a run of a few engines or workloads would otherwise print columns of dashes.
    columns = [c for c in COLUMNS if any(c in values for values in figures.values())]
    peers = [c for c in columns if c in PEERS]
    head = (f"{'workload':<{name_w}} {'unit':<{unit_w}} {'better':<6}"
            + "".join(f"{LABELS.get(c, c):>{num_w}}" for c in columns) + "  "
            + "".join(f"{'/' + LABELS.get(c, c):>{rat_w}}" for c in peers))
    lines = ["shmray throughput suite: figures are medians over rounds; the '/peer' columns are "
             "shmray's figure divided by the peer's.",
             "'better' applies to the figures and to the ratios: higher -> a ratio above 1 means "
             "shmray wins; lower -> a ratio below 1 means shmray wins.",
             head, "-" * len(head)]
    for row in ROWS:
        if row.id not in figures:
            continue
        values = figures[row.id]
        lines.append(f"{row.title:<{name_w}} {row.unit:<{unit_w}} {row.better:<6}"
                     + "".join(f"{fmt(values.get(c)):>{num_w}}" for c in columns) + "  "
                     + "".join(f"{fmt_ratio(ratio(row.id, c)):>{rat_w}}" for c in peers))
    lines.append("")
    lines += [f"  {row.id}: {row.note}" for row in ROWS if row.id in figures]
    lines += [f"  {LABELS.get(e, e)} skipped: {why}" for e, why in skipped.items()]
    return lines


def machine():
    cpu = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                    if line.startswith("Model name")), "")
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "cpu": cpu,
            "python": sys.version.split()[0], "platform": platform.platform()}


def versions():
    found = {}
    for name in ("shmray", "ray", "loky", "numpy"):
        module = sys.modules.get(name)
        if module is not None:
            found[name] = getattr(module, "__version__", "?")
    return found


def as_json():
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "ratio": "shmray / peer; 'better' says which way is good",
        "rows": [{"id": row.id, "workload": row.title, "unit": row.unit, "better": row.better,
                  "note": row.note, "figures": figures[row.id],
                  "ratios": {peer: ratio(row.id, peer) for peer in PEERS
                             if ratio(row.id, peer) is not None}}
                 for row in ROWS if row.id in figures],
        "skipped": skipped,
        "details": details,
    }


def write_json(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(as_json(), f, indent=2, default=str)
        f.write("\n")


def median(benchmark):
    """Median seconds per round of the benchmark just run."""
    stats = getattr(benchmark, "stats", None)
    if not stats:
        import pytest
        pytest.skip("nothing was timed (--benchmark-disable)")
    return stats.stats.median
