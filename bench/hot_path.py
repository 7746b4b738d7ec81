"""Where W1's time goes: driver-side and worker-side cost per task, in microseconds.

W1 (bench/README.md) submits 20,000 no-op tasks with ``[f.remote() for _ in range(20_000)]``
and then calls ``shmray.get(refs)``. This script measures it twice and prints both side by side.

1. End to end, on ``shmray.init(num_cpus=2)``: throughput, and CPU time per task of the
   driver (``time.process_time``: all its threads, the background pump included) and of the
   workers (utime + stime from /proc/PID/stat; it counts 10 ms ticks, so this one is the mean
   over all rounds). Worker CPU includes spin-waiting for the next task
   (``shmray._driver.session.WORKER_SPIN``): it bounds their useful work from above.

2. Stage by stage: the real functions on a task's path, timed with ``time.perf_counter_ns``
   in this process: the live (idle) Session's driver side, its task workers swapped for
   CPUS stand-ins (WorkerHandles on private channels) that ``WorkerRuntime``s here read. A
   cycle is W1's steady state: tasks submitted while every worker is busy, which
   ``lane.submit`` batches under the pipeline depth (``Dispatcher.send_batch`` pushes each
   Tasks message), then more, which it hands to ``Dispatcher.place_or_queue`` (queued); the
   workers pop, decode and run them (``run_task``, its Done compact: ``pack_done``); the
   driver handles the Dones in C (``lane.drain``), sends the queued tasks as settle does
   (``dispatch_queued``), gets the values (``not_stored``, ``values_of`` ->
   ``inline_values``) and counts the refs dropped (``lane.process_refs``). Submissions are
   timed whole (``f.remote()``), as ``lane.submit``, and by the Python methods it calls, in
   turn. A way that only some of W1's tasks take weighs in the sums by their share, counted
   in one more round. "of which" rows break a stage down and are not added again. These
   loops run hot-cache and uncontended, so a side's sum falls short of its measured CPU: the
   rest is the glue (``Session._submit``'s and ``MessageLoop``'s Python: drain, settle, and
   get's pump, which spins while it waits), garbage collection, cache misses on rings the
   other core writes, and, for workers, the serve loop and mostly spin-waiting.

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
import contextlib
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import types

import shmray
from shmray import _protocol, _ring, _serialization as ser, _shm
from shmray._cring import pop_any
from shmray._crecords import not_stored, pack_done
from shmray._object_ref import ObjectRef
from shmray._scheduler import PIPELINE_MAX, PIPELINE_SECONDS
from shmray._worker_pool import WorkerHandle
from shmray._worker_runtime import WorkerRuntime
from shmray._worker_tasks import pack_results, run_task

CPUS = 2
TASKS = 20_000       # one W1 round
WARM_UP = 1_000      # ships the function to every worker before the clock starts
ROUNDS = 9
PIPELINED = CPUS * PIPELINE_MAX   # tasks per stage-by-stage cycle that lane.submit batches,
QUEUED = PIPELINED // 2           # and that it queues (the pipelines full)
STEP_TASKS = {"lane": PIPELINED, "queued": QUEUED, "dispatch": QUEUED}
KINDS = ("remote", "lane", "parts")  # how a cycle times the submissions, in turn
CYCLES = 20 * len(KINDS)          # after one warm-up cycle of each kind
PYSPY_RATE = 1000    # samples/s: higher rates perturb a 2-core machine
PYSPY_TOP = 12
CONTROL, CHANNEL = "hotpath_ctl", "hotpath_ch"   # the stand-ins' segment names

# (side, key, label, part, way): a part is one piece of the stage above it, not summed; a
# way ("lane": lane.submit places the task, "queued": it is queued) is taken by a share of
# W1's tasks only (None: by every task), and the sums weigh the row by that share.
ROWS = (
    ("driver", "remote_lane", "f.remote(): lane.submit batches it", False, "lane"),
    ("driver", "submit_lane", "lane.submit()", True, "lane"),
    ("driver", "send_batch_lane", "Dispatcher.send_batch(), per task", True, "lane"),
    ("driver", "remote_queued", "f.remote(): every pipeline full, queued", False, "queued"),
    ("driver", "submit_queued", "lane.submit()", True, "queued"),
    ("driver", "place_or_queue_queued", "Dispatcher.place_or_queue()", True, "queued"),
    ("driver", "dispatch", "Dispatcher.dispatch_queued(), per task", False, "queued"),
    ("driver", "place_dispatch", "Scheduler.place()", True, "queued"),
    ("driver", "send_batch_dispatch", "Dispatcher.send_batch(), per task", True, "queued"),
    ("driver", "drain", "lane.drain(): compact Dones, handled in C", False, None),
    ("driver", "pop_any", "pop_any(), per Done", True, None),
    ("driver", "get", "shmray.get(refs), every value stored", False, None),
    ("driver", "not_stored", "_crecords.not_stored()", True, None),
    ("driver", "values", "values_of() -> inline_values()", True, None),
    ("driver", "drop", "refs dropped: each one's hook queues it", False, None),
    ("driver", "process_refs", "lane.process_refs()", False, None),
    ("worker", "pop", "Ring.pop() on the task ring, per task", False, None),
    ("worker", "decode", "_ring.decode(Tasks), per task", False, None),
    ("worker", "run", "_worker_tasks.run_task()", False, None),
    ("worker", "call", "no_op()", True, None),
    ("worker", "result", "pack_results(None)", True, None),
    ("worker", "pack_done", "_crecords.pack_done(): the compact Done", True, None),
    ("worker", "send_done", "send_done(): Ring.push(Done)", True, None),
)


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


# ------------------------------------------------------------- stage by stage

def queued_share(f, session) -> float:
    """The share of W1's tasks that lane.submit hands to Dispatcher.place_or_queue (the
    pipelines full: queued, sent later by dispatch_queued), counted in one more round."""
    dispatch, calls = session.dispatch, itertools.count()
    place_or_queue = dispatch.place_or_queue
    dispatch.place_or_queue = lambda *args: (next(calls), place_or_queue(*args))[1]
    try:
        shmray.get([f.remote() for _ in range(TASKS)])
    finally:
        del dispatch.place_or_queue
    return next(calls) / TASKS


class TaskPath:
    """W1's per-task path through the real functions, in this process: the driver's side on
    the live (idle) Session, with CPUS stand-in workers, each read by a WorkerRuntime here."""

    def __init__(self, session, f, control):
        self.s, self.f, self.doorbell = session, f, control.doorbell
        # The no-op's mean run time, as W1 leaves it (the pipeline depth follows from it),
        # at most what keeps the full depth: a task preempted here must not shrink it.
        self.request, self.fn_mean = f._options.request, min(
            session.scheduler.fn_mean[f._fn_id], PIPELINE_SECONDS / PIPELINE_MAX / 2)
        self.times = collections.defaultdict(list)  # key -> µs per task, one per cycle
        self.ns, self.count = collections.Counter(), collections.Counter()  # this cycle's
        self.step, self.handles, self.runtimes = None, [], []
        func = _protocol.Func(_protocol.FUNC, f._fn_id, *session.functions[f._fn_id])
        for i in range(CPUS):
            channel = _ring.Channel(f"{session.prefix}{CHANNEL}{i}", create=True,
                                    doorbell=control.doorbell)
            # The driver's handle of the worker (it reads only proc.pid of its process).
            h = WorkerHandle(-1 - i, types.SimpleNamespace(pid=os.getpid()), channel, None,
                             False)
            rt = WorkerRuntime({"driver_pid": os.getpid(), "resolve_nested_refs": True,
                                "node_id": session.node_id, "control": control.name,
                                "channel": channel.name, "session_prefix": session.prefix,
                                "object_prefix": session.object_prefix})
            rt.receive(func, blocked=False)  # what the 1st send_task ships, as received
            h.fns.add(f._fn_id)
            self.handles.append(h)
            self.runtimes.append(rt)
        self.rings = tuple(h.channel.results for h in self.handles)

    def add(self, key, ns, n):
        if key is not None:
            self.ns[key] += ns
            self.count[key] += n

    @contextlib.contextmanager
    def clock(self, key, n):
        """Time the block into this cycle's figure of `key` (n tasks; None: untimed)."""
        start = time.perf_counter_ns()
        yield
        self.add(key, time.perf_counter_ns() - start, n)

    def cycle(self, kind):
        """W1's steady state, once: PIPELINED tasks submitted while every worker is busy,
        QUEUED more; the workers run QUEUED of them, the driver handles their Dones and
        sends the queued tasks; the workers run the rest, the driver handles their Dones,
        gets the values and drops the refs. `kind`, what of the submissions is timed:
        "remote" (f.remote()), "lane" (lane.submit()), "parts" (the methods it calls)."""
        s, sched = self.s, self.s.scheduler
        sched.fn_mean[self.f._fn_id] = self.fn_mean
        with s.lock:
            for h in self.handles:  # every worker busy: the request does not fit what is free
                s.ledger.charge(h, self.request)
        refs = self.submit(kind, "lane", PIPELINED)
        assert not sched.ready and all(len(h.inflight) == PIPELINE_MAX for h in self.handles)
        refs += self.submit(kind, "queued", QUEUED)
        assert sum(map(len, sched.ready.values())) == QUEUED
        self.drain(self.work(QUEUED // CPUS))
        self.step, sched.fn_mean[self.f._fn_id] = "dispatch", self.fn_mean
        with s.lock, self.clock(None if kind == "parts" else "dispatch", QUEUED):
            s.dispatch.dispatch_queued(True)  # as settle does, inside a burst
        assert not sched.ready and "place_or_queue_lane" not in self.ns
        self.drain(self.work())
        ids = [r._id for r in refs]
        self.parts(ids)
        self.get_and_drop(refs)
        assert not s.tasks.tasks and not any(oid in s.store.values for oid in ids)
        for key, ns in self.ns.items():
            self.times[key].append(ns / self.count[key] / 1e3)
        self.ns.clear()
        self.count.clear()

    def submit(self, kind, way, n):
        """n tasks submitted as W1's loop does, inside its burst; their refs."""
        s, f = self.s, self.f
        self.step, s.lane.last_submit, s.lane.waited = way, time.monotonic(), False
        if kind == "remote":  # (_submit's drain, every 16th call, finds the pump lock taken)
            with self.clock(f"remote_{way}", n):
                return [f.remote() for _ in range(n)]
        args = itertools.repeat((f._fn_id, f._name, f._options, ser.NO_ARGS), n)
        with s.lock, self.clock(f"submit_{way}" if kind == "lane" else None, n):
            return list(itertools.starmap(s.lane.submit, args))

    def work(self, n=None):
        """Each worker pops Tasks messages and runs their tasks, whole messages, until it
        has run n or more (None: all there are); returns how many they ran."""
        with self.s.lock:  # (what a burst left batched: pushed, as get's pump does)
            self.s.dispatch.flush()
        clock, ran = time.perf_counter_ns, 0
        for rt in self.runtimes:
            mine = 0
            while n is None or mine < n:
                t0 = clock()
                data = rt._tasks.pop()
                t1 = clock()
                if data is None:
                    assert n is None, "a worker has fewer tasks than the cycle gave it"
                    break
                tasks = _ring.decode(data)[1]
                t2 = clock()
                for task in tasks:
                    run_task(rt, *task)
                for key, ns in (("pop", t1 - t0), ("decode", t2 - t1), ("run", clock() - t2)):
                    self.add(key, ns, len(tasks))
                mine += len(tasks)
            ran += mine
        return ran

    def drain(self, n):
        """The driver handles the n Dones waiting, all in C, as MessageLoop._drain does."""
        with self.s.lock, self.clock("drain", n):
            got = self.s.lane.drain(self.rings, self.doorbell, tuple(self.handles), n)
        assert got == n, f"lane.drain: {got!r}, not {n} compact Dones handled"

    def parts(self, ids):
        """The pieces of run_task, on this cycle's tasks; the Dones send_done pushes again
        are popped by pop_any, as lane.drain does, and not handled."""
        n, rt = len(ids), self.runtimes[0]
        fn = rt.fns[self.f._fn_id][0]
        with self.clock("call", n):
            for _ in ids:
                fn()
        args = [(rt, None, 1, oid) for oid in ids]
        with self.clock("result", n):
            results = list(itertools.starmap(pack_results, args))
        now, limit = time.monotonic_ns(), rt.results.max_message
        args = [(oid, r[0], now, now, None, None, False, limit) for oid, r in zip(ids, results)]
        with self.clock("pack_done", n):
            dones = list(itertools.starmap(pack_done, args))
        for i, rt in enumerate(self.runtimes):
            mine = dones[i::CPUS]
            with self.clock("send_done", len(mine)):
                list(map(rt.send_done, mine))
        args = itertools.repeat((self.rings, self.doorbell, 0.0, 0.0, 0), n)
        with self.clock("pop_any", n):
            popped = list(itertools.starmap(pop_any, args))
        assert None not in popped and pop_any(self.rings, self.doorbell, 0.0, 0.0, 0) is None

    def get_and_drop(self, refs):
        """get, as W1 calls it, and its pieces; then the refs dropped, and counted."""
        s, store, n = self.s, self.s.store, len(refs)
        assert not not_stored(refs, ObjectRef, store.pending, store.values)  # (get waits not)
        with self.clock("get", n):
            shmray.get(refs)
        with self.clock("not_stored", n):
            not_stored(refs, ObjectRef, store.pending, store.values)
        with self.clock("values", n):
            ser.values_of(refs, store.values)
        with self.clock("drop", n):
            refs.clear()
        with s.lock, self.clock("process_refs", n):
            s.lane.process_refs()
        assert not store.drop_queue

    @contextlib.contextmanager
    def wrapped(self):
        """Each call of the Python methods that lane.submit and dispatch_queued call, timed
        into the figure of the step under way (per task of the step), less what the
        clock itself adds to one call's time (the least of back-to-back readings)."""
        clock = time.perf_counter_ns
        own = min(-clock() + clock() for _ in range(1000))
        methods = [(self.s.dispatch, "send_batch"), (self.s.dispatch, "place_or_queue"),
                   (self.s.scheduler, "place")]

        def timed(name, fn):
            def call(*args):
                start = clock()
                try:
                    return fn(*args)
                finally:
                    key = f"{name}_{self.step}"
                    self.ns[key] += clock() - start - own
                    self.count[key] = STEP_TASKS[self.step]
            return call
        for obj, name in methods:
            setattr(obj, name, timed(name, getattr(obj, name)))
        try:
            yield
        finally:
            for obj, name in methods:
                delattr(obj, name)


def stages(f, session) -> dict:
    """Median µs per task of every stage over CYCLES cycles, after a warm-up cycle of each
    kind. The session's task workers are swapped for the stand-ins meanwhile, and the pump
    lock held keeps its background thread off them. The stand-ins' segments are named
    under the session's prefix (shutdown removes them too) and unlinked at the end; their
    mappings stay valid until the process exits."""
    pool, lane = session.pool, session.lane
    control = _ring.ControlArea(session.prefix + CONTROL, create=True)
    saved, path = (pool.workers, lane.rr), None
    try:
        with session.loop.pump_lock:
            path = TaskPath(session, f, control)
            with session.lock:
                pool.workers = list(path.handles)
            for i in range(len(KINDS) + CYCLES):
                kind = KINDS[i % len(KINDS)]
                with path.wrapped() if kind == "parts" else contextlib.nullcontext():
                    path.cycle(kind)
                if i == len(KINDS) - 1:
                    path.times.clear()
    finally:
        with session.lock:
            pool.workers, lane.rr = saved
            for h in path.handles if path else ():
                session.dispatch.unwoken.pop(h, None)
                session.ledger.uncharge(h)
        for name in [f"{CHANNEL}{i}" for i in range(CPUS)] + [CONTROL]:
            _shm.unlink(session.prefix + name)
    return {key: statistics.median(v) for key, v in path.times.items()}


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
                           "glue: _submit, drain, settle, get's spin"),
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
        f"{e2e['rate']:,.0f}). {weights['queued']:.0%} of W1's tasks find every pipeline "
        f"full: lane.submit hands them to Dispatcher.place_or_queue, which queues them, and "
        f"settle sends them (dispatch_queued), in Python. Largest driver costs, µs per task "
        f"of W1 (a way's weighed by its share): "
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
            share = queued_share(f, session)
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
