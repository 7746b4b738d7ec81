"""Where W1's time goes: driver-side and worker-side cost per task, in microseconds.

W1 (bench/README.md) submits 20,000 no-op tasks with ``[f.remote() for _ in range(20_000)]``
and then calls ``shmray.get(refs)``. This script measures it twice and prints both side by side.

1. End to end, on ``shmray.init(num_cpus=2)``: throughput, and CPU time per task of the
   driver (``time.process_time``: all its threads, the background pump included) and of the
   workers (utime + stime from /proc/PID/stat; it counts 10 ms ticks, so this one is the mean
   over all rounds). Worker CPU includes spin-waiting for the next task
   (``shmray._driver.session.WORKER_SPIN``): it bounds their useful work from above.

2. Stage by stage (bench/_hot_path_stages.py): the real functions on a task's path, timed
   with ``time.perf_counter_ns`` in this process: the live (idle) Session's driver side, its
   task workers swapped for CPUS stand-ins (WorkerHandles on private channels) that
   ``WorkerRuntime``s here read. A cycle is W1's steady state: tasks submitted while every
   worker is busy, which ``lane.submit`` batches under the pipeline depth (each batch
   pushed as one Tasks message, in C: csrc/lane_send.c), then more, which it queues in C
   (every pipeline full); the workers pop, decode and run them (``run_task``, its Done
   compact: ``pack_done``); the driver handles the Dones in C (``lane.drain``), places the
   queued tasks in C as settle does (``lane.dispatch_queued``),
   gets the values (``not_stored``, ``values_of`` -> ``inline_values``) and counts the refs
   dropped (``lane.process_refs``). Submissions are timed whole (``f.remote()``, which
   RemoteBase takes to the lane in C) and as ``lane.submit``, in turn. A way that
   only some of W1's tasks take weighs in the sums by their share, counted in one more
   round: most are queued, as once one task is, every next one finds the queue ahead of it
   until the workers empty it. A cycle that calls the Python the lane stands for
   (``Dispatcher.place_or_queue``, ``dispatch_queued``, ``send_task``, ``send_batch``,
   ``push_batches``, ``Scheduler.place``, ``push``) fails the run; in W1, ``dispatch_queued`` (and ``place`` in it) runs only in
   settle's housekeeping, every 20 ms, the others not at all. "of which" rows break a
   stage down and are not added again. These loops run hot-cache and uncontended, so a
   side's sum falls short of its measured CPU: the rest is the glue (``MessageLoop``'s
   Python: drain, settle, and get's pump, which spins while it waits),
   garbage collection, cache misses on rings the other core writes, and, for workers, the
   serve loop and mostly spin-waiting.

Reading it: with 2 cores, the wall time per task is at least the driver's CPU per task (one
thread does all the driver's work) and at least half of all the CPU per task (driver + the
workers' stages). When the driver's share exceeds half of that 2-core budget, that is when
it exceeds the workers' useful work, the driver is the bottleneck.

Every figure is a median over repetitions; this is a shared 2-core VM, so expect tens of
percent of noise between runs.

    python bench/hot_path.py             # about 3 s
    python bench/hot_path.py --py-spy    # and the submit loop's top functions: 5 s more
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import shmray
from _hot_path_stages import CPUS, CYCLES, PIPELINED, QUEUED, ROWS, queued_share, stages

TASKS = 20_000       # one W1 round
WARM_UP = 1_000      # ships the function to every worker before the clock starts
ROUNDS = 9
PYSPY_RATE = 1000    # samples/s: higher rates perturb a 2-core machine
PYSPY_TOP = 12


def no_op():
    """The W1 task: all that is measured is the framework."""


# ------------------------------------------------------------------ end to end

def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the name, field 2, may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def w1_round(f, pids) -> dict:
    """One W1 round; µs per task of wall and CPU time, by phase."""
    workers0, cpu0, t0 = sum(map(cpu_seconds, pids)), time.process_time(), time.perf_counter()
    refs = [f.remote() for _ in range(TASKS)]
    cpu1, t1 = time.process_time(), time.perf_counter()
    shmray.get(refs)
    del refs  # as in the W1 benchmark, dropping the refs is inside the timed round
    cpu2, t2, workers2 = time.process_time(), time.perf_counter(), sum(map(cpu_seconds, pids))
    per_task = 1e6 / TASKS
    return {"rate": TASKS / (t2 - t0), "wall": (t2 - t0) * per_task,
            "wall_submit": (t1 - t0) * per_task, "wall_get": (t2 - t1) * per_task,
            "driver": (cpu2 - cpu0) * per_task, "driver_submit": (cpu1 - cpu0) * per_task,
            "driver_get": (cpu2 - cpu1) * per_task, "workers": (workers2 - workers0) * per_task}


def end_to_end(f, session) -> dict:
    """Median of each figure over ROUNDS rounds of W1, after a warm-up; worker CPU is the
    mean, as /proc counts whole ticks (10 ms, or 0.5 µs per task in one round)."""
    pids = [w.pid for w in session.pool.workers]
    shmray.get([f.remote() for _ in range(WARM_UP)])
    rounds = [w1_round(f, pids) for _ in range(ROUNDS)]
    figures = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    figures["workers"] = statistics.fmean(r["workers"] for r in rounds)
    return figures


# --------------------------------------------------------------------- report

def print_end_to_end(e2e):
    print(f"W1 end to end: {TASKS:,} no-op tasks, shmray.init(num_cpus={CPUS}), "
          f"median of {ROUNDS} rounds\n")
    rows = [("throughput", f"{e2e['rate']:,.0f}", "tasks/s", ""),
            ("wall per task", f"{e2e['wall']:.2f}", "µs",
             f"submit loop {e2e['wall_submit']:.2f}, get {e2e['wall_get']:.2f}"),
            ("driver CPU per task", f"{e2e['driver']:.2f}", "µs",
             f"submit loop {e2e['driver_submit']:.2f}, get {e2e['driver_get']:.2f}"),
            (f"worker CPU per task, {CPUS} workers", f"{e2e['workers']:.2f}", "µs",
             "spin-waiting included; mean of the rounds"),
            (f"budget: {CPUS} cores x wall", f"{CPUS * e2e['wall']:.2f}", "core-µs", "")]
    for label, value, unit, note in rows:
        print(f"  {label:<32} {value:>9} {unit:<8} {f'({note})' if note else ''}".rstrip())
    print()


def print_stages(costs, weights, e2e) -> dict:
    """The stage table, each side against its measured CPU; returns each side's stage sum,
    each row weighed by the share of W1's tasks that take its way."""
    print(f"Stage by stage: the real functions in this process, medians of {CYCLES} cycles "
          f"of {PIPELINED + QUEUED} tasks\n(a way that only some of W1's tasks take: µs per "
          f"task that takes it, and their share)\n")
    print(f"  {'stage':<52} {'µs/task':>8}  {'share':>7}")
    measured = {"driver": ("driver CPU per task, end to end", e2e["driver"],
                           "glue: drain, settle, get's spin"),
                "worker": ("worker CPU per task, end to end", e2e["workers"],
                           "serve loop, mostly spin-waiting")}
    sums = {}
    for side, (label, cpu, rest) in measured.items():
        print(f"  {side}")
        rows = [(key, text, part, way) for s, key, text, part, way in ROWS if s == side]
        for key, text, part, way in rows:
            figure = f"{f'({costs[key]:.2f})':>9}" if part else f"{costs[key]:>8.2f}"
            share = "" if part or way is None else f"{weights[way]:>9.0%}"
            print(f"    {'of which ' if part else ''}{text:<{48 - 9 * part}} {figure}{share}")
        sums[side] = sum(costs[key] * weights[way] for key, _, part, way in rows if not part)
        print(f"    {'= sum of the stages, as W1 takes them':<48} {sums[side]:>8.2f}")
        print(f"    {label:<48} {cpu:>8.2f}")
        print(f"    {'not in the stages':<48} {cpu - sums[side]:>8.2f}   ({rest})")
    print()
    return sums


def print_reading(costs, weights, e2e, sums):
    driver, useful, wall = e2e["driver"], sums["worker"], e2e["wall"]
    half_budget = (driver + useful) / CPUS
    bottleneck = driver > half_budget
    largest = sorted([(text, costs[key] * weights[way]) for side, key, text, part, way in ROWS
                      if side == "driver" and not part]
                     + [("the glue between the stages", driver - sums["driver"])],
                     key=lambda item: item[1], reverse=True)[:4]
    print("Reading:")
    print(textwrap.fill(
        f"The driver spends {driver:.1f} µs of CPU per task, {driver / wall:.0%} of the "
        f"{wall:.1f} µs wall time per task; the workers' stages add up to {useful:.1f} µs. "
        f"Half of the {CPUS}-core budget for all the work, ({driver:.1f} + {useful:.1f}) / "
        f"{CPUS} = {half_budget:.1f} µs, is {'below' if bottleneck else 'above'} the driver's "
        f"{driver:.1f} µs: the driver {'is' if bottleneck else 'is not'} the bottleneck, and "
        f"one driver thread caps W1 at {1e6 / driver:,.0f} tasks/s (measured "
        f"{e2e['rate']:,.0f}). {weights['queued']:.0%} of W1's tasks find a queue ahead of "
        f"them (every pipeline full): lane.submit queues them, and settle places them as "
        f"results free room (lane.dispatch_queued), both in C. Largest driver costs, µs per "
        f"task of W1 (a way's weighed by its share): "
        + ", ".join(f"{text} {cost:.2f}" for text, cost in largest) + ".",
        width=96, initial_indent="  ", subsequent_indent="  "))


# --------------------------------------------------------------------- py-spy

def print_profile():
    """Record W1 (--end-to-end-only, in a child) with py-spy; print the top functions by self
    time of the submit loop: the samples inside ``f.remote()`` called from w1_round."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "w1.txt")
        run = subprocess.run(["py-spy", "record", "-r", str(PYSPY_RATE), "--nolineno", "-f",
                              "raw", "-o", out, "--", sys.executable, os.path.abspath(__file__),
                              "--end-to-end-only"], capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"py-spy failed:\n{run.stderr[-2000:]}")
        in_rounds, self_time = 0, collections.Counter()
        with open(out) as f:
            for line in f:  # frame;frame;...;leaf frame COUNT
                stack, _, count = line.rstrip("\n").rpartition(" ")
                if "w1_round" in stack:
                    in_rounds += int(count)
                    if "RemoteFunction.remote" in stack:
                        self_time[stack.rsplit(";", 1)[-1]] += int(count)
    submit = sum(self_time.values())
    print(f"\npy-spy at {PYSPY_RATE} Hz, W1's submit loop: {submit:,} samples inside f.remote(), "
          f"{submit / in_rounds:.0%} of the rounds'.")
    print("Top functions by self time:")
    for frame, n in self_time.most_common(PYSPY_TOP):
        print(f"  {n / submit:>6.1%}  {frame}")


# ----------------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--end-to-end-only", action="store_true",
                        help="measure W1 end to end only (what --py-spy records)")
    parser.add_argument("--py-spy", action="store_true",
                        help="also profile the submit loop with py-spy (must be on PATH)")
    args = parser.parse_args(argv)
    if args.py_spy and shutil.which("py-spy") is None:
        parser.error("--py-spy: py-spy is not on PATH (pip install py-spy)")
    shmray.init(num_cpus=CPUS)
    try:
        session = shmray._context.runtime  # the driver's Session
        f = shmray.remote(no_op)
        e2e = end_to_end(f, session)
        if not args.end_to_end_only:
            share = queued_share(f, session, TASKS)
            weights, costs = {"lane": 1 - share, "queued": share, None: 1.0}, stages(f, session)
    finally:
        shmray.shutdown()
    print_end_to_end(e2e)
    if not args.end_to_end_only:
        print_reading(costs, weights, e2e, print_stages(costs, weights, e2e))
    if args.py_spy:
        print_profile()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
