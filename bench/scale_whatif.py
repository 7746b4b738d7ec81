"""W18's what-ifs: the changes its README section proposes for files this suite does not own,
tried by patching a running driver, so that what each would buy is measured before anyone
writes it. Measurement only: it reaches into the driver's internals, and the patches are not
safe in general (see each one).

    python bench/scale_whatif.py ids [--pairs 3]    # ~6 minutes
    python bench/scale_whatif.py drop [--n 200000]  # ~15 s

ids: W1 at 20,000 and at 1,000,000 tasks, fresh processes, alternating the driver as it is
     and a driver whose new task ids hash to consecutive values (`new_base_id` patched in
     the session: the ids keep their layout, `base + i` and `task_id_of`, but the counter
     part steps by 2^16's inverse modulo 2^61 - 1, CPython's int hash modulus, so that
     hash(id) steps by 1), and the same with the garbage collector off (what it would
     save if ObjectRefs, which can hold no cycle, were not tracked by it: a bound, since
     TaskSpecs and the rest go untracked too). Prints the rate, the driver's CPU per task
     (all its threads) and the time in garbage collection per task (gen 2 apart).
drop: 200,000 results fetched and dropped (W18's drop), then how much of the RSS comes back
     as it is, once the store's tables are rebuilt at their live size (dicts and sets never
     shrink when keys leave), and once glibc's heap is trimmed as well (malloc_trim).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

import _scale

M61 = (1 << 61) - 1  # CPython hashes an int as its value modulo this
VARIANTS = ("as-is", "sequential-hash", "sequential-hash, gc-off")


def sequential_hash_ids():
    """A new_base_id whose ids hash to consecutive values (see the top)."""
    from itertools import count
    step = pow(1 << 16, -1, M61)
    prefix = int.from_bytes(os.urandom(6), "little") << 80  # above the 61 + 16 bits
    counter = count(1)
    return lambda: prefix | (next(counter) * step % M61) << 16


def child_ids(n, variant):
    import shmray
    from shmray._driver import session
    if variant.startswith("sequential-hash"):
        session.new_base_id = sequential_hash_ids()
    if variant.endswith("gc-off"):
        gc.disable()
    in_gc = {0: 0.0, 1: 0.0, 2: 0.0}
    started = [0.0]

    def timed(phase, info):
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            in_gc[info["generation"]] += time.perf_counter() - started[0]

    engine = _scale.Child("shmray", False)
    gc.callbacks.append(timed)
    results = []
    for _ in range(5 if n <= 20_000 else 1):
        _scale.settle()
        in_gc.update({0: 0.0, 1: 0.0, 2: 0.0})
        cpu, wall = time.process_time(), time.perf_counter()
        refs = [engine.tasks.submit() for _ in range(n)]
        shmray.get(refs)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        results.append({"rate": n / wall, "cpu_us": 1e6 * cpu / n,
                        "gc_us": 1e6 * sum(in_gc.values()) / n, "gc2_us": 1e6 * in_gc[2] / n})
        del refs
    gc.callbacks.remove(timed)
    engine.stop()
    results.sort(key=lambda r: r["rate"])
    return results[len(results) // 2]


def child_drop(n):
    import ctypes
    engine = _scale.Child("shmray", False)
    out = engine.drop(n)
    base = engine.base_mem[0]
    before = base + out["before_rss_per_task"] * n

    def back():
        return (before - _scale.memory()[0]) / (before - base)

    session = engine.session
    store = session.store
    result = {"as_is": out["came_back"],
              "tables_mb": {name: sys.getsizeof(getattr(store, name)) / 2**20
                            for name in ("values", "_local", "pending")}}
    # Not safe while a get runs: it holds the old dict (see README, W18). None runs here.
    with session.lock:
        store.values, store._local = dict(store.values), dict(store._local)
        store.pending = set(store.pending)
        session.tasks.tasks = dict(session.tasks.tasks)
    _scale.settle()
    result["tables_rebuilt"] = back()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    result["and_malloc_trim"] = back()
    engine.stop()
    return result


def run_child(*args):
    out = subprocess.run([sys.executable, __file__, "_child", *map(str, args)],
                         capture_output=True, text=True, timeout=_scale.CHILD_TIMEOUT,
                         cwd=_scale.BENCH_DIR)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("ids", "drop", "_child"))
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--n", type=int, default=200_000)
    args, rest = parser.parse_known_args()
    if args.what == "_child":
        kind = rest[0]
        out = child_ids(int(rest[1]), rest[2]) if kind == "ids" else child_drop(int(rest[1]))
        print(json.dumps(out))
    elif args.what == "ids":
        print(f"{'driver':23s} {'tasks':>9s} {'tasks/s':>9s} {'driver CPU':>11s} {'gc':>7s} "
              f"{'gen 2':>7s}   (µs per task)")
        for _ in range(args.pairs):
            for variant in VARIANTS:
                for n in (20_000, 1_000_000):
                    r = run_child("ids", n, variant)
                    print(f"{variant:23s} {n:>9,} {r['rate']:>9,.0f} {r['cpu_us']:>11.2f} "
                          f"{r['gc_us']:>7.2f} {r['gc2_us']:>7.2f}", flush=True)
    else:
        r = run_child("drop", args.n)
        print(f"{args.n:,} results dropped; the store's tables then (MB): "
              + ", ".join(f"{k} {v:.1f}" for k, v in r["tables_mb"].items()))
        print(f"  RSS back, as it is:                     {r['as_is']:.2f}")
        print(f"  tables rebuilt at their live size:      {r['tables_rebuilt']:.2f}")
        print(f"  and glibc's heap trimmed (malloc_trim): {r['and_malloc_trim']:.2f}")


if __name__ == "__main__":
    main()
