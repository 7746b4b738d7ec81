"""Where W1's time goes: driver-side and worker-side cost per task, in microseconds.

W1 (bench/README.md) submits 20,000 no-op tasks with ``[f.remote() for _ in range(20_000)]``
and then calls ``shmray.get(refs)``. This script measures it twice and prints both side by side.

1. End to end, on ``shmray.init(num_cpus=2)``: throughput, and CPU time per task of the
   driver (``time.process_time``: all its threads, the background pump included) and of the
   workers (utime + stime from /proc/PID/stat; it counts 10 ms ticks, so this one is the mean
   over all rounds). Worker CPU includes spin-waiting for the next task
   (``shmray._driver.session.WORKER_SPIN``): it bounds their useful work from above.

2. Stage by stage: the real functions on one task's path, each timed with
   ``time.perf_counter_ns`` over a batch of tasks in this process. The driver side places
   each task as W1 does (every worker busy: ``Scheduler._pipeline``) and submits it into a
   private channel (``Dispatcher.send_task`` to a stand-in worker handle); a
   ``WorkerRuntime`` in this process pops and runs those tasks (``_worker_tasks.run_task``
   pushes the real Done messages); the driver side pops and handles them
   (``MessageLoop.on_done`` → ``TaskTable.on_done`` → ``TaskTable.finish``), reads the
   values as ``get`` does and drops the refs. "of which" rows break a stage down and are
   not added again. These loops run hot-cache and uncontended, so the sum of a side's stages
   falls short of its measured CPU: the rest is the glue between stages (``Session.submit``'s
   own code, ``TaskTable.add``, ``MessageLoop.drain``, ``Dispatcher.place_or_queue`` and
   ``dispatch_queued``, locks), garbage collection, cache misses on rings the other core
   writes, and, for workers, mostly spin-waiting.

Reading it: with 2 cores, the wall time per task is at least the driver's CPU per task (one
thread does all the driver's work) and at least half of all the CPU per task (driver + the
workers' stages). When the driver's share exceeds half of that 2-core budget, that is when
it exceeds the workers' useful work, the driver is the bottleneck.

Every figure is a median over repetitions; this is a shared 2-core VM, so expect tens of
percent of noise between runs.

    python bench/hot_path.py             # about 2 s
    python bench/hot_path.py --py-spy    # and the submit loop's top functions: 5 s more
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import mmap
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
from shmray._cring import HEADER_SIZE, Ring, pop_any
from shmray._driver.spec import TaskSpec
from shmray._object_ref import ObjectRef, new_base_id
from shmray._worker_pool import WorkerHandle
from shmray._worker_runtime import WorkerRuntime
from shmray._worker_tasks import pack_results, run_task

CPUS = 2
TASKS = 20_000       # one W1 round
WARM_UP = 1_000      # ships the function to every worker before the clock starts
ROUNDS = 9
BATCH = 2_000        # tasks per stage-by-stage batch
BATCHES = 9
PYSPY_RATE = 1000    # samples/s: higher rates perturb a 2-core machine
PYSPY_TOP = 12
CONTROL, CHANNEL = "hotpath_ctl", "hotpath_ch"   # the private channel's segment names

# (side, key, label, part): a part is one piece of the stage above it, not summed.
ROWS = (
    ("driver", "new_id", "new_base_id()", False),
    ("driver", "spec", "TaskSpec(...)", False),
    ("driver", "ref", "ObjectRef(...), what .remote() returns", False),
    ("driver", "own", "ObjectStore.own(): the driver's ref counted", False),
    ("driver", "place", "Scheduler.place(), every worker busy", False),
    ("driver", "send", "Dispatcher.send_task()", False),
    ("driver", "encode_task", "_ring.encode(Tasks), per task", True),
    ("driver", "push_task", "Ring.push(Tasks), per task", True),
    ("driver", "pop_any", "pop_any() on the result ring", False),
    ("driver", "decode_done", "_ring.decode(Done)", False),
    ("driver", "on_done", "MessageLoop.on_done() -> TaskTable.finish()", False),
    ("driver", "values", "get: ser.values_of() -> from_stored()", False),
    ("driver", "drop", "ref dropped -> ObjectStore.process_refs()", False),
    ("worker", "pop", "Ring.pop() on the task ring", False),
    ("worker", "decode_task", "_ring.decode(Tasks), per task", False),
    ("worker", "run", "_worker_tasks.run_task()", False),
    ("worker", "args", "NO_ARGS recognised (nothing unpickled)", True),
    ("worker", "call", "no_op()", True),
    ("worker", "result", "pack_results(None)", True),
    ("worker", "encode_done", "_ring.encode(Done)", True),
    ("worker", "push_done", "Ring.push(Done)", True),
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

class TaskPath:
    """One task's path through the real functions, in this process: the driver's side on the
    live (idle) Session, talking over a private channel to a WorkerRuntime of its own."""

    def __init__(self, session, f, channel, doorbell):
        self.session, self.f, self.doorbell = session, f, doorbell
        self.times = collections.defaultdict(list)
        # The driver's handle of the worker (it reads only proc.pid of its process).
        self.handle = WorkerHandle(-1, types.SimpleNamespace(pid=os.getpid()), channel, None,
                                   False)
        self.worker = WorkerRuntime({"driver_pid": os.getpid(), "resolve_nested_refs": True,
                                     "node_id": session.node_id,
                                     "control": session.prefix + CONTROL,
                                     "channel": channel.name, "session_prefix": session.prefix,
                                     "object_prefix": session.object_prefix})
        fn_bytes, name = session.functions[f._fn_id]
        # What the 1st send_task ships (a Func record), as the worker's loop receives it.
        self.worker.receive(_protocol.Func(_protocol.FUNC, f._fn_id, fn_bytes, name),
                            blocked=False)
        self.handle.fns.add(f._fn_id)
        self.scratch = Ring(mmap.mmap(-1, HEADER_SIZE + _ring.TASK_RING_BYTES), create=True)

    def timed(self, key, fn, args):
        """[fn(*a) for a in args], timed into times[key] (µs per call)."""
        args = list(args)
        with self.clock(key, len(args)):
            return list(itertools.starmap(fn, args))

    @contextlib.contextmanager
    def clock(self, key, n):
        """Time the block into times[key], as µs per task of n tasks."""
        start = time.perf_counter_ns()
        yield
        self.times[key].append((time.perf_counter_ns() - start) / n / 1e3)

    def batch(self):
        """BATCH tasks through every stage of their path, one stage at a time; returns the
        first Tasks message's list of task tuples and the first Done record."""
        session, f, handle, worker, timed = (self.session, self.f, self.handle, self.worker,
                                             self.timed)
        sched, store, dispatch = session.scheduler, session.store, session.dispatch
        ids = timed("new_id", new_base_id, itertools.repeat((), BATCH))
        specs = timed("spec", TaskSpec,
                      [(i, f._fn_id, f._name, f._options, ser.NO_ARGS, None, True) for i in ids])
        refs = timed("ref", ObjectRef, [(i, True) for i in ids])
        with session.lock:  # what TaskTable.add counts for the driver's refs
            timed("own", store.own, [(i,) for i in ids])
        with session.lock:
            with self.every_worker_busy(specs[0].request):
                timed("place", sched.place, [(s,) for s in specs])
            with self.clock("send", BATCH):  # batched, as inside W1's burst of submissions
                try:
                    for s in specs:
                        dispatch.send_task(handle, s, True)
                    for w in list(dispatch.batched):  # as MessageLoop.settle pushes them
                        dispatch.send_batch(w)
                finally:
                    dispatch.unwoken.pop(handle, None)
        with self.clock("pop", BATCH):
            messages = list(iter(worker._tasks.pop, None))
        with self.clock("decode_task", BATCH):
            batches = [_protocol.Tasks(*_ring.decode(data)).tasks for data in messages]
        task_tuples = [task for batch in batches for task in batch]
        timed("run", run_task, [(worker, *task) for task in task_tuples])
        results = timed("pop_any", pop_any, itertools.repeat(
            ((handle.channel.results,), self.doorbell, 0.0, 0.0, 0), BATCH))
        done_msgs = timed("decode_done", _ring.decode, [(data,) for _, data in results])
        with session.lock:
            timed("on_done", session.loop.on_done, [(handle, *msg) for msg in done_msgs])
        with self.clock("values", BATCH):
            ser.values_of(refs, store.values)
        with self.clock("drop", BATCH):
            refs.clear()
            with session.lock:
                store.process_refs()
        return batches[0], done_msgs[0]

    @contextlib.contextmanager
    def every_worker_busy(self, request):
        """Charge every (idle) worker, as during W1: place() then queues tasks behind busy
        workers (Scheduler._pipeline) and returns one without charging it."""
        ledger, workers = self.session.ledger, self.session.pool.workers
        assert all(w.idle for w in workers), "the session must be idle"
        for w in workers:
            ledger.charge(w, request)
        try:
            yield
        finally:
            for w in workers:
                ledger.uncharge(w)

    def parts(self, first_batch, done):
        """The pieces of send_task and run_task, on real messages; the pushes go to a
        scratch ring that nobody reads (emptied, untimed, after each batch)."""
        timed, worker, scratch = self.timed, self.worker, self.scratch
        per_batch = len(first_batch)  # a batch as W1's burst sends them
        task_data = timed("encode_task", _ring.encode, itertools.repeat(
            ((_protocol.TASKS, first_batch), self.handle.ring, self.session.prefix),
            BATCH // per_batch))
        self.times["encode_task"][-1] /= per_batch
        done_tuple = done  # the plain tuple run_task encodes, as decode returns it
        done_data = timed("encode_done", _ring.encode, itertools.repeat(
            (done_tuple, worker.results, worker.spill_prefix), BATCH))
        for key, data, per_push in (("push_task", task_data[0], per_batch),
                                    ("push_done", done_data[0], 1)):
            timed(key, scratch.push, itertools.repeat((data,), BATCH // per_push))
            self.times[key][-1] /= per_push
            while scratch.pop() is not None:
                pass
        timed("args", ser.NO_ARGS[1].__eq__, itertools.repeat((ser.NO_ARGS[1],), BATCH))
        fn_id = _protocol.Task(*first_batch[0]).fn_id
        timed("call", worker.fns[fn_id][0], itertools.repeat((), BATCH))
        timed("result", pack_results, itertools.repeat((worker, None, 1, 0), BATCH))


def stages(f, session) -> dict:
    """Median µs per task of every stage over BATCHES batches, after a warm-up batch. The
    private channel's segments are named under the session's prefix (shutdown removes
    them too) and unlinked at the end; their mappings stay valid until the process exits."""
    control = _ring.ControlArea(session.prefix + CONTROL, create=True)
    try:
        channel = _ring.Channel(session.prefix + CHANNEL, create=True,
                                doorbell=control.doorbell)
        path = TaskPath(session, f, channel, control.doorbell)
        for i in range(BATCHES + 1):
            path.parts(*path.batch())
            if i == 0:
                path.times.clear()
    finally:
        _shm.unlink(session.prefix + CHANNEL)
        _shm.unlink(session.prefix + CONTROL)
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


def print_stages(costs, e2e) -> dict:
    """The stage table, each side against its measured CPU; returns each side's stage sum."""
    print(f"Stage by stage: the real functions, {BATCH:,}-task batches in this process, "
          f"median of {BATCHES}\n")
    print(f"  {'stage':<52} {'µs/task':>8}")
    measured = {"driver": ("driver CPU per task, end to end", e2e["driver"],
                           "glue: submit, TaskTable.add, drain..."),
                "worker": ("worker CPU per task, end to end", e2e["workers"],
                           "mostly spin-waiting")}
    sums = {}
    for side, (label, cpu, rest) in measured.items():
        print(f"  {side}")
        rows = [(key, text, part) for s, key, text, part in ROWS if s == side]
        for key, text, part in rows:
            figure = f"{f'({costs[key]:.2f})':>9}" if part else f"{costs[key]:>8.2f}"
            print(f"    {'of which ' if part else ''}{text:<{48 - 9 * part}} {figure}")
        sums[side] = sum(costs[key] for key, _, part in rows if not part)
        print(f"    {'= sum of the stages':<48} {sums[side]:>8.2f}")
        print(f"    {label:<48} {cpu:>8.2f}")
        print(f"    {'not in the stages':<48} {cpu - sums[side]:>8.2f}   ({rest})")
    print()
    return sums


def print_reading(costs, e2e, sums):
    driver, useful, wall = e2e["driver"], sums["worker"], e2e["wall"]
    half_budget = (driver + useful) / CPUS
    bottleneck = driver > half_budget
    largest = sorted([(text, costs[key]) for side, key, text, part in ROWS
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
        f"{e2e['rate']:,.0f}). Largest driver costs, µs per task: "
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
        costs = None if args.end_to_end_only else stages(f, session)
    finally:
        shmray.shutdown()
    print_end_to_end(e2e)
    if costs is not None:
        print_reading(costs, e2e, print_stages(costs, e2e))
    if args.py_spy:
        print_profile()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
