"""A few-second side-by-side of shmray and multiprocessing.Pool: small-task throughput, sync
round trip and start-up, each as a ratio. The full suite, with more workloads and more peers
(ProcessPoolExecutor, loky, Ray), is ``pytest bench/ --benchmark-only``.

Ratios are taken within one run on purpose: absolute times drift on a shared machine, the
ratio of two engines measured a moment apart much less.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import _workloads

TASKS, QUICK_TASKS = 5_000, 1_000
CALLS, QUICK_CALLS = 1_000, 200
ROUNDS, QUICK_ROUNDS = 3, 1
LAUNCHES, QUICK_LAUNCHES = 3, 1


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
    startup = {name: _workloads.startup_ms(name, workers, launches) for name in ("shmray", "pool")}
    pool_rate, pool_call = _workloads.measure_pool(workers, tasks, calls, rounds)
    shmray.init(num_cpus=workers)
    try:
        ours_rate, ours_call = _workloads.measure(_workloads.small_tasks(shmray), tasks, calls,
                                                  rounds)
    finally:
        shmray.shutdown()

    results = {
        f"small tasks, async (tasks/s; {tasks:,})": (ours_rate, pool_rate, "higher"),
        f"sync round trip (us/call; {calls:,})": (ours_call * 1e6, pool_call * 1e6, "lower"),
        f"start-up to 1st result (ms; {launches}x)": (startup["shmray"], startup["pool"],
                                                      "lower"),
    }
    print_table(results, workers, rounds)
    return {name: (ours, theirs) for name, (ours, theirs, _) in results.items()}


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
