"""``shmray microbenchmark``: the workloads of ``ray microbenchmark``, under Ray's names,
run on shmray and (when it is installed) on Ray, in one process one after the other, and
printed side by side.

    for each engine (shmray, then ray): init(num_cpus, resources={"custom": 100})
        for each Workload: make(engine, scale) ─► (a call to time, items per call)
            measure(): warm up, then ROUNDS rounds of `seconds` each ─► items per second
        shutdown()
    table: name, shmray per second (± sd), Ray per second, shmray ÷ Ray

Each workload is written once, against Ray's API, and run by both engines unchanged.
The sizes per call are Ray's, times `scale` where a call would take seconds on a small
machine (marked in SCALED); the figures are per item, so they compare at any size.
Top-level imports are the standard library's only: the CLI imports this to parse.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import statistics
import sys
import time
from typing import Callable, NamedTuple

ROUNDS = 4
NUM_CPUS = 2


# ------------------------------------------------------------------ what the tasks run
# (module-level: both engines' workers import this module to run them)
def small_value():
    return b"ok"


def submit_batch(task, n):
    """n calls of the remote function `task`, waited for (inside a task or an actor)."""
    _engine_of(task).get([task.remote() for _ in range(n)])
    return 0


def put_small_many(n):
    engine = _engine_of_running()
    for _ in range(n):
        engine.put(0)


def put_arrays(count, size):
    import numpy as np

    engine = _engine_of_running()
    for _ in range(count):
        engine.put(np.zeros(size, dtype=np.int64))


def refs_in_one_object(n):
    engine = _engine_of_running()
    return [engine.put(0) for _ in range(n)]


def call_each(actors, n):
    """n calls spread over `actors`, waited for (a caller task of n:n)."""
    engine = _engine_of(actors[0])
    engine.get([actors[i % len(actors)].small_value.remote() for i in range(n)])


class Actor:
    def small_value(self):
        return b"ok"

    def small_value_arg(self, x):
        return b"ok"


class AsyncActor:
    async def small_value(self):
        return b"ok"

    async def small_value_with_arg(self, x):
        return b"ok"


class Client:
    """Calls its servers (actors) n times, spread over them (the 1:n workloads)."""

    def __init__(self, servers):
        self.servers = servers

    def small_value_batch(self, n):
        servers = self.servers
        _engine_of(servers[0]).get([servers[i % len(servers)].small_value.remote()
                                    for i in range(n)])


def _engine_of(obj):
    """The engine (shmray or ray) a remote function or actor handle belongs to."""
    return sys.modules[type(obj).__module__.split(".")[0]]


def _engine_of_running():
    """The engine running this task: shmray's worker has a runtime set; else Ray's."""
    shmray = sys.modules.get("shmray")
    if shmray is not None and shmray._context.runtime is not None:
        return shmray
    return importlib.import_module("ray")


# ------------------------------------------------------------------ the workloads
class Workload(NamedTuple):
    name: str                   # Ray's, so that the figures line up with its output
    make: Callable              # (engine, scale) -> (call to time, items per call)


def _remote(engine, target, **options):
    return engine.remote(**options)(target) if options else engine.remote(target)


def _gets(engine, scale):
    ref = engine.put(0)
    return (lambda: engine.get(ref)), 1


def _puts(engine, scale):
    return (lambda: engine.put(0)), 1


def _multi_puts(engine, scale):
    task = _remote(engine, put_small_many)
    return (lambda: engine.get([task.remote(100) for _ in range(10)])), 1000


def _put_gigabytes(engine, scale):
    import numpy as np

    array = np.zeros(max(1, int(100 * 1024 * 1024 * scale)), dtype=np.int64)
    return (lambda: engine.put(array)), array.nbytes / 1e9


def _multi_put_gigabytes(engine, scale):
    size, task = max(1, int(10 * 1024 * 1024 * scale)), _remote(engine, put_arrays)
    return (lambda: engine.get([task.remote(10, size) for _ in range(10)])), 100 * size * 8 / 1e9


def _tasks_and_get_batch(engine, scale):
    task = _remote(engine, small_value)
    return (lambda: engine.get([task.remote() for _ in range(1000)])), 1


def _get_containing_refs(engine, scale):
    ref = _remote(engine, refs_in_one_object).remote(10_000)
    engine.get(ref)
    return (lambda: engine.get(ref)), 1


def _wait_1k_refs(engine, scale):
    task = _remote(engine, small_value)

    def wait_each():
        not_ready = [task.remote() for _ in range(1000)]
        while not_ready:
            _, not_ready = engine.wait(not_ready)
    return wait_each, 1


def _tasks_sync(engine, scale):
    task = _remote(engine, small_value)
    return (lambda: engine.get(task.remote())), 1


def _tasks_async(engine, scale):
    task = _remote(engine, small_value)
    return (lambda: engine.get([task.remote() for _ in range(1000)])), 1000


def _multi_client_tasks(engine, scale):
    n, callers = max(1, int(10_000 * scale)), 4
    task, batch = _remote(engine, small_value), _remote(engine, submit_batch)
    return (lambda: engine.get([batch.remote(task, n) for _ in range(callers)])), n * callers


def _actor_calls(actor_class, sync, **options):
    def make(engine, scale):
        actor = _remote(engine, actor_class, num_cpus=0, **options).remote()
        engine.get(actor.small_value.remote())
        if sync:
            return (lambda: engine.get(actor.small_value.remote())), 1
        return (lambda: engine.get([actor.small_value.remote() for _ in range(1000)])), 1000
    return make


def _async_actor_calls_with_args(engine, scale):
    actor = _remote(engine, AsyncActor, num_cpus=0).remote()
    return (lambda: engine.get([actor.small_value_with_arg.remote(i)
                                for i in range(1000)])), 1000


def _one_to_n(actor_class):
    def make(engine, scale):
        n = max(1, int(5000 * scale))
        servers = [_remote(engine, actor_class, num_cpus=0).remote()
                   for _ in range(max(1, NUM_CPUS // 2))]
        client = _remote(engine, Client, num_cpus=0).remote(servers)
        return (lambda: engine.get(client.small_value_batch.remote(n))), n * len(servers)
    return make


def _n_to_n(actor_class):
    def make(engine, scale):
        n, callers = max(1, int(5000 * scale)), 4
        actors = [_remote(engine, actor_class, num_cpus=0).remote()
                  for _ in range(max(1, NUM_CPUS // 2))]
        work = _remote(engine, call_each)
        return (lambda: engine.get([work.remote(actors, n) for _ in range(callers)])), \
            n * callers
    return make


def _placement_groups(engine, scale):
    from importlib import import_module

    util = import_module(f"{engine.__name__}.util")

    def create_and_remove():
        groups = [util.placement_group([{"custom": 0.001}]) for _ in range(100)]
        for group in groups:
            group.wait(timeout_seconds=30)
        for group in groups:
            util.remove_placement_group(group)
    return create_and_remove, 100


WORKLOADS = [
    Workload("single client get calls (Plasma Store)", _gets),
    Workload("single client put calls (Plasma Store)", _puts),
    Workload("multi client put calls (Plasma Store)", _multi_puts),
    Workload("single client put gigabytes", _put_gigabytes),
    Workload("single client tasks and get batch", _tasks_and_get_batch),
    Workload("multi client put gigabytes", _multi_put_gigabytes),
    Workload("single client get object containing 10k refs", _get_containing_refs),
    Workload("single client wait 1k refs", _wait_1k_refs),
    Workload("single client tasks sync", _tasks_sync),
    Workload("single client tasks async", _tasks_async),
    Workload("multi client tasks async", _multi_client_tasks),
    Workload("1:1 actor calls sync", _actor_calls(Actor, True)),
    Workload("1:1 actor calls async", _actor_calls(Actor, False)),
    Workload("1:1 actor calls concurrent", _actor_calls(Actor, False, max_concurrency=16)),
    Workload("1:n actor calls async", _one_to_n(Actor)),
    Workload("n:n actor calls async", _n_to_n(Actor)),
    Workload("1:1 async-actor calls sync", _actor_calls(AsyncActor, True)),
    Workload("1:1 async-actor calls async", _actor_calls(AsyncActor, False)),
    Workload("1:1 async-actor calls with args async", _async_actor_calls_with_args),
    Workload("1:n async-actor calls async", _one_to_n(AsyncActor)),
    Workload("n:n async-actor calls async", _n_to_n(AsyncActor)),
    Workload("placement group create/removal", _placement_groups),
]
# Sizes per call that `scale` shrinks (Ray's: seconds per call on a 2-core machine).
SCALED = {"single client put gigabytes", "multi client put gigabytes",
          "multi client tasks async", "1:n actor calls async", "n:n actor calls async",
          "1:n async-actor calls async", "n:n async-actor calls async"}


class Figure(NamedTuple):
    name: str
    engine: str
    per_second: float
    sd: float


def measure(call, items_per_call, seconds) -> tuple:
    """Items per second of `call`: mean and standard deviation over ROUNDS rounds of at
    least `seconds` each (and one call), after a warm-up of a quarter of that."""
    start = time.perf_counter()
    while True:
        call()
        if time.perf_counter() - start >= seconds / 4:
            break
    rates = []
    for _ in range(ROUNDS):
        start, count = time.perf_counter(), 0
        while True:
            call()
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        rates.append(items_per_call * count / elapsed)
    return statistics.fmean(rates), statistics.pstdev(rates)


def run_engine(name: str, workloads, seconds: float, scale: float) -> list:
    """Every workload on engine `name` ("shmray" or "ray"), in one session of it."""
    engine = importlib.import_module(name)
    options = {"num_cpus": NUM_CPUS, "resources": {"custom": 100}}
    if name == "ray":
        options.update(include_dashboard=False, log_to_driver=False)
    engine.init(**options)
    figures = []
    try:
        for workload in workloads:
            call, items = workload.make(engine, scale if workload.name in SCALED else 1.0)
            mean, sd = measure(call, items, seconds)
            figures.append(Figure(workload.name, name, mean, sd))
            print(f"  {name}: {workload.name}: {mean:,.2f} per second", file=sys.stderr,
                  flush=True)
    finally:
        engine.shutdown()
    return figures


def table(figures, engines) -> str:
    by = {(f.name, f.engine): f for f in figures}
    names = list(dict.fromkeys(f.name for f in figures))
    width = max(len(n) for n in names)
    head = f"{'workload':<{width}}  " + "  ".join(f"{e + ' /s':>16}" for e in engines)
    if len(engines) == 2:
        head += f"  {engines[0] + ' ÷ ' + engines[1]:>16}"
    lines = [head, "-" * len(head)]
    for name in names:
        row = f"{name:<{width}}  "
        row += "  ".join(_cell(by.get((name, e))) for e in engines)
        mine, theirs = (by.get((name, e)) for e in engines) if len(engines) == 2 else (None,) * 2
        if mine and theirs and theirs.per_second:
            row += f"  {mine.per_second / theirs.per_second:>16.2f}"
        lines.append(row)
    return "\n".join(lines)


def _cell(figure) -> str:
    if figure is None:
        return f"{'-':>16}"
    spread = 100 * figure.sd / figure.per_second if figure.per_second else 0.0
    return f"{figure.per_second:>10,.1f} ±{spread:>3.0f}%"


def add_parser(commands, positive_seconds):
    """The `microbenchmark` command's arguments (called by _cli.build_parser)."""
    cmd = commands.add_parser(
        "microbenchmark", help="Ray's microbenchmark workloads, on shmray and on Ray",
        description="Run the workloads of `ray microbenchmark` under their names (get, put, "
                    "tasks sync/async, actor calls, async actors, wait, placement groups) on "
                    "shmray and, when the real ray is installed, on Ray in the same run; "
                    "print each figure (per second, higher is better) side by side.")
    cmd.add_argument("--seconds", type=positive_seconds, default=1.0,
                     help="length of each of the 4 timed rounds (default 1)")
    cmd.add_argument("--engines", default="shmray,ray",
                     help="comma-separated: shmray, ray (default both; ray skipped, with a "
                          "note, when it is not installed)")
    cmd.add_argument("--filter", default="", metavar="TEXT",
                     help="only the workloads whose name contains TEXT")
    cmd.add_argument("--scale", type=positive_seconds, default=1.0,
                     help="size of the large per-call workloads relative to Ray's "
                          "(default 1)")
    cmd.add_argument("--json", action="store_true", help="print JSON, for scripts")
    return cmd


def main(args) -> int:
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ("shmray", "ray")]
    if unknown or not engines:
        print(f"shmray microbenchmark: --engines takes shmray and ray, got {args.engines!r}",
              file=sys.stderr)
        return 2
    if "ray" in engines and importlib.util.find_spec("ray") is None:
        print("shmray microbenchmark: ray is not installed (pip install 'shmray[cluster]'): "
              "shmray's figures only", file=sys.stderr)
        engines.remove("ray")
    workloads = [w for w in WORKLOADS if args.filter in w.name]
    if not workloads or not engines:
        print(f"shmray microbenchmark: nothing to run (--filter {args.filter!r})",
              file=sys.stderr)
        return 2
    figures = []
    for engine in engines:
        figures += run_engine(engine, workloads, args.seconds, args.scale)
    if args.json:
        print(json.dumps([f._asdict() for f in figures], indent=1))
    else:
        print(table(figures, engines))
    return 0

