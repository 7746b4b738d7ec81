"""The main-job demo: the seed's task patterns run on a fresh session, each timed, then
small-task throughput and round-trip latency measured against multiprocessing.Pool."""
from __future__ import annotations

import os
import sys
import textwrap
import time
from collections import Counter

import numpy as np

import shmray as ray
from . import _shm, _workloads

THROUGHPUT_TASKS = 20_000
QUICK_THROUGHPUT_TASKS = 2_000
ROUND_TRIPS = 1_000
SLEEP_TASKS = 8
SLEEP_SECONDS = 0.25
ARRAY_SHAPE = (1_250, 10_000)  # 12.5 M float64 = 100 MB
ARRAY_READERS = 100

NAME_WIDTH = 18
TIME_WIDTH = 8   # "999.9 ms"
LINE_WIDTH = 100
RESULT_INDENT = NAME_WIDTH + 2 + TIME_WIDTH + 2


@ray.remote
def worker_pid():
    return os.getpid()


@ray.remote
def sleep_then_double(x):
    time.sleep(SLEEP_SECONDS)
    return x * 2


# The seed's "复杂依赖" (complex dependencies): a diamond task_a -> task_b, task_c -> task_d.
@ray.remote
def task_a():
    return "A"


@ray.remote
def task_b(a_result):
    return f"B({a_result})"


@ray.remote
def task_c(a_result):
    return f"C({a_result})"


@ray.remote
def task_d(b_result, c_result):
    return f"D({b_result}, {c_result})"


@ray.remote
def count_words(text):
    return Counter(text.split())


@ray.remote
def merge_counts(counters):
    total = Counter()
    for counter in counters:
        total.update(counter)
    return total


@ray.remote
def add_one(x):
    return x + 1


@ray.remote
def double(x):
    return x * 2


@ray.remote
def square(x):
    return x ** 2


@ray.remote
def sum_all(numbers):
    return sum(numbers)


@ray.remote(num_returns=3)
def one_two_three():
    return 1, 2, 3


@ray.remote
def read_element(array, row):
    return array[row, 0]


@ray.remote
class RunningTotal:
    """The seed's next step, an actor: state kept in its own process between calls."""

    def __init__(self):
        self.total = 0

    def add(self, x):
        self.total += x
        return self.total


def run(num_cpus=None, quick=False):
    """Start a shmray session, run every pattern, print one table row each, shut down."""
    if ray.is_initialized():  # fail before the baseline's seconds, not after
        raise RuntimeError("the demo times a fresh session: call shmray.shutdown() first")
    processes = num_cpus if num_cpus is not None else len(os.sched_getaffinity(0))
    tasks = QUICK_THROUGHPUT_TASKS if quick else THROUGHPUT_TASKS
    # The baseline runs first, before shmray exists (see _workloads.measure_pool).
    pool_figures = _workloads.measure_pool(processes, tasks, ROUND_TRIPS)

    print(f"shmray {ray.__version__} demo: Python {sys.version.split()[0]}, baseline "
          f"multiprocessing.Pool({processes})\n")
    print(f"{'pattern':<{NAME_WIDTH}}  {'time':>{TIME_WIDTH}}  what it computed, and how")
    print(f"{'-' * NAME_WIDTH}  {'-' * TIME_WIDTH}  {'-' * (LINE_WIDTH - RESULT_INDENT)}")
    start = time.perf_counter()
    session = ray.init(num_cpus=num_cpus)  # outside the try: a failed init has nothing to stop
    try:
        pid = ray.get(worker_pid.remote())
        workers = int(ray.cluster_resources()["CPU"])
        print_row("init -> 1st result", time.perf_counter() - start,
                  f"first task ran in worker pid {pid}",
                  f"fresh session, {workers} workers: from calling init() to the first "
                  f"get() back")

        show_parallel_map(workers)
        show_dependency_diamond()
        show_map_reduce()
        show_fork_join()
        show_pipeline()
        show_multiple_returns()
        show_large_array()
        show_small_tasks(tasks, pool_figures, processes)
        show_actor(tasks)

        start = time.perf_counter()
        ray.shutdown()
        left = _shm.list_names(session["session_name"] + "_")
        print_row("shutdown", time.perf_counter() - start,
                  f"{len(left)} shared-memory segments left behind", "workers stopped")
    finally:
        ray.shutdown()  # a no-op after the row above; frees everything if a pattern failed


def show_parallel_map(workers):
    serial = SLEEP_TASKS * SLEEP_SECONDS
    doubled, elapsed = timed(lambda: ray.get([sleep_then_double.remote(i)
                                              for i in range(SLEEP_TASKS)]))
    print_row("parallel map", elapsed, f"{doubled}  speed-up {serial / elapsed:.2f}×",
              f"{SLEEP_TASKS} tasks × sleep {SLEEP_SECONDS} s, then double, on {workers} "
              f"workers; serially: {serial:.2f} s")


def show_dependency_diamond():
    def diamond():
        a_ref = task_a.remote()
        return ray.get(task_d.remote(task_b.remote(a_ref), task_c.remote(a_ref)))

    result, elapsed = timed(diamond)
    print_row("dependency diamond", elapsed, result,
              "task_a feeds task_b and task_c, which both feed task_d")


def show_map_reduce():
    texts = ["hello world", "hello ray", "world of distributed"]
    # As in the seed, the reducer gets a list of refs: shmray resolves refs one level
    # inside a list argument, so merge_counts sees the Counters themselves.
    counts, elapsed = timed(lambda: ray.get(merge_counts.remote(
        [count_words.remote(text) for text in texts])))
    print_row("map-reduce", elapsed, repr(counts),
              f"word count of {len(texts)} texts: a count_words task per text, one "
              f"merge_counts task over their refs")


def show_fork_join():
    result, elapsed = timed(lambda: ray.get(sum_all.remote([square.remote(x) for x in range(10)])))
    print_row("fork-join", elapsed, str(result),
              "sum of the squares of 0..9: 10 square tasks joined by one sum_all task")


def show_pipeline():
    def pipeline(x):
        return ray.get(square.remote(double.remote(add_one.remote(x))))

    results, elapsed = timed(lambda: [pipeline(x) for x in range(5)])
    print_row("pipeline", elapsed, str(results),
              "((x + 1) * 2) ** 2 for x in 0..4: three chained stage tasks per x")


def show_multiple_returns():
    values, elapsed = timed(lambda: ray.get(one_two_three.remote()))
    print_row("multiple returns", elapsed, str(values),
              "one task with num_returns=3 returns three refs")


def show_large_array():
    array = np.arange(np.prod(ARRAY_SHAPE), dtype=np.float64).reshape(ARRAY_SHAPE)
    megabytes = array.nbytes / 1e6
    array_ref, elapsed = timed(lambda: ray.put(array))
    print_row("put large array", elapsed, f"{megabytes:.0f} MB float64 array {ARRAY_SHAPE}",
              "written once into shared memory")
    elements, elapsed = timed(lambda: ray.get([read_element.remote(array_ref, row)
                                               for row in range(ARRAY_READERS)]))
    correct = elements == array[:ARRAY_READERS, 0].tolist()
    print_row("read shared array", elapsed,
              f"{ARRAY_READERS} elements read, {'all correct' if correct else 'WRONG VALUES'}",
              f"{ARRAY_READERS} tasks each map the array zero-copy and read one element; a "
              f"copy per task would move {ARRAY_READERS * megabytes / 1e3:.0f} GB")


def show_small_tasks(tasks, pool_figures, processes):
    """The throughput row (W1) and the round-trip row (W2), each against the Pool's figure."""
    pool_rate, pool_round_trip = pool_figures
    rate, round_trip = _workloads.measure(_workloads.small_tasks(ray), tasks, ROUND_TRIPS)
    print_row("small-task rate", tasks / rate,
              f"shmray {rate:,.0f} tasks/s vs Pool({processes}) {pool_rate:,.0f} tasks/s: "
              f"speed-up {rate / pool_rate:.2f}×",
              f"{tasks:,} no-op tasks submitted, then all fetched (Pool: apply_async)")
    print_row("round trip", round_trip,
              f"shmray {round_trip * 1e6:.1f} µs vs Pool({processes}) "
              f"{pool_round_trip * 1e6:.1f} µs: speed-up {pool_round_trip / round_trip:.2f}×",
              f"submit one no-op task and get its result, {ROUND_TRIPS:,} times (Pool: apply)")


def show_actor(calls):
    """An actor's calls: the running total is right, at what rate and round trip."""
    total = RunningTotal.remote()
    ray.get(total.add.remote(0))  # created and ready
    last, elapsed = timed(lambda: ray.get([total.add.remote(1) for _ in range(calls)])[-1])
    print_row("actor calls", elapsed,
              f"running total {last:,} after {calls:,} calls: {calls / elapsed:,.0f} calls/s",
              "a stateful actor (its own process) called in a burst, then every result "
              "fetched; calls from one caller run in order")
    _, round_trips = timed(lambda: [ray.get(total.add.remote(0)) for _ in range(ROUND_TRIPS)])
    print_row("actor round trip", round_trips / ROUND_TRIPS,
              f"{round_trips / ROUND_TRIPS * 1e6:.1f} µs per call",
              f"call the actor and get the result, {ROUND_TRIPS:,} times")


def timed(compute):
    """(what compute() returns, seconds it took)."""
    start = time.perf_counter()
    result = compute()
    return result, time.perf_counter() - start


def print_row(name, seconds, answer, how):
    """One table row: the answer on the first line, how it was computed below it."""
    width = LINE_WIDTH - RESULT_INDENT
    lines = textwrap.wrap(answer, width) + textwrap.wrap(how, width, break_on_hyphens=False)
    print(f"{name:<{NAME_WIDTH}}  {format_duration(seconds):>{TIME_WIDTH}}  {lines[0]}")
    for line in lines[1:]:
        print(" " * RESULT_INDENT + line)
    sys.stdout.flush()  # show progress row by row even when piped


def format_duration(seconds):
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"
