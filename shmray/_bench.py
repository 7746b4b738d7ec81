"""A few-second side-by-side of shmray and multiprocessing.Pool: small-task throughput, sync
round trip and start-up, each as a ratio. The full suite, with more workloads and more peers
(ProcessPoolExecutor, loky, Ray), is ``pytest bench/ --benchmark-only``.

Ratios are taken within one run on purpose: absolute times drift on a shared machine, the
ratio of two engines measured a moment apart much less.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

TASKS, QUICK_TASKS = 5_000, 1_000
CALLS, QUICK_CALLS = 1_000, 200
ROUNDS, QUICK_ROUNDS = 3, 1
LAUNCHES, QUICK_LAUNCHES = 3, 1
WARM_UP = 200   # ships the function to every worker before the clock starts

# Each start-up script gets its launch time as argv[1] and prints the ms until its first
# result: interpreter start, import, engine start, one task.
STARTUP_SCRIPTS = {
    "shmray": """\
import sys, time
import shmray
shmray.init(num_cpus={n})
@shmray.remote
def one():
    return 1
assert shmray.get(one.remote()) == 1
print((time.time() - float(sys.argv[1])) * 1e3)
""",
    "Pool": """\
import sys, time, multiprocessing
def one():
    return 1
if __name__ == "__main__":
    with multiprocessing.Pool({n}) as pool:
        assert pool.apply(one) == 1
        print((time.time() - float(sys.argv[1])) * 1e3)
""",
}


def no_op():
    """The small-task rows measure only the framework. Module-level: Pool pickles it by name."""


def run(quick=False):
    """Measure, print the table, and return {workload: (shmray, Pool)}."""
    import shmray
    if shmray.is_initialized():
        raise RuntimeError("the bench starts its own session: call shmray.shutdown() first")
    workers = len(os.sched_getaffinity(0))
    tasks, calls = (QUICK_TASKS, QUICK_CALLS) if quick else (TASKS, CALLS)
    rounds = QUICK_ROUNDS if quick else ROUNDS
    launches = QUICK_LAUNCHES if quick else LAUNCHES

    # Start-up first, while this process runs no engine that could take CPU from the launches;
    # then the Pool, forked before shmray has started any thread; then shmray.
    startup = {name: startup_ms(script.format(n=workers), launches)
               for name, script in STARTUP_SCRIPTS.items()}

    pool = multiprocessing.Pool(workers)
    try:
        def pool_batch(n):
            pending = [pool.apply_async(no_op) for _ in range(n)]
            return [r.get() for r in pending]

        pool_rate = tasks / median_seconds(pool_batch, tasks, rounds)
        pool_call = median_seconds(lambda n: [pool.apply(no_op) for _ in range(n)],
                                   calls, rounds) / calls
    finally:
        pool.close()
        pool.join()

    shmray.init(num_cpus=workers)
    try:
        task = shmray.remote(no_op)
        ours_rate = tasks / median_seconds(
            lambda n: shmray.get([task.remote() for _ in range(n)]), tasks, rounds)
        ours_call = median_seconds(lambda n: [shmray.get(task.remote()) for _ in range(n)],
                                   calls, rounds) / calls
    finally:
        shmray.shutdown()

    results = {
        f"small tasks, async (tasks/s; {tasks:,})": (ours_rate, pool_rate, "higher"),
        f"sync round trip (us/call; {calls:,})": (ours_call * 1e6, pool_call * 1e6, "lower"),
        f"start-up to 1st result (ms; {launches}x)": (startup["shmray"], startup["Pool"],
                                                      "lower"),
    }
    print_table(results, workers, rounds)
    return {name: (ours, theirs) for name, (ours, theirs, _) in results.items()}


def median_seconds(batch, n, rounds):
    """Median seconds of batch(n) over `rounds`, after a warm-up batch."""
    batch(WARM_UP)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        batch(n)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def startup_ms(script, launches):
    """Median ms from launching a fresh Python process to its first result."""
    times = []
    for _ in range(launches + 1):       # the first launch reads files from disk: not counted
        launched = time.time()
        out = subprocess.run([sys.executable, "-c", script, repr(launched)],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"start-up script failed:\n{out.stderr[-2000:]}")
        times.append(float(out.stdout.split()[-1]))
    return statistics.median(times[1:])


def print_table(results, workers, rounds):
    print(f"shmray vs multiprocessing.Pool({workers}), {workers} workers each, median of "
          f"{rounds} round(s); ratio = shmray / Pool\n")
    print(f"{'workload':<42} {'shmray':>10} {'Pool':>10} {'ratio':>7}  better")
    print("-" * 80)
    for name, (ours, theirs, better) in results.items():
        print(f"{name:<42} {ours:>10,.1f} {theirs:>10,.1f} {ours / theirs:>7.2f}  {better}")
    print("\nFull suite (more workloads; ProcessPoolExecutor, loky, Ray): "
          "pytest bench/ --benchmark-only")
    sys.stdout.flush()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="shmray bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_TASKS:,} tasks, {QUICK_CALLS} calls, one round, one launch")
    args = parser.parse_args(argv)
    run(quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
