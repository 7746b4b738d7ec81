"""W18: scale. W1's shape (no-op tasks submitted before any get, then all fetched) at 50 times
its size, and what the driver's memory does meanwhile and after.

Every measurement runs in a fresh Python process, ``python bench/_scale.py ENGINE MODE N``,
which prints one JSON line: a process that ran a batch before keeps the memory it took (the
allocators reuse it), and a second batch's RSS delta would read too low. In the child:

  rate     N tasks submitted, then all fetched (W1 at size N): tasks/s (submit loop and get
           together, W1's figure), and the driver's RSS and PSS delta per task read after the
           submit loop (every task submitted, none fetched). shmray: how many had not finished
           then (its workers keep up with the driver, so nearly all had: what is measured is
           a result not yet fetched).
  queued   every worker held by a gate task (it waits for a file), N tasks submitted behind
           them: the delta per task of N tasks none of which can run; then the gate opens
           and all are fetched.
  drop     N tasks submitted and fetched, then the refs and values dropped at once (``del``):
           how much of the RSS they had added came back, and how many Python objects (gc)
           are still alive beyond the baseline. shmray: how long its store took to free them.

``--trace`` (any mode, not used by the suite: it slows the driver several times) also runs
tracemalloc from the baseline on and reports the bytes per task by allocation site, at the
moment the RSS is read (and, for drop, the sites still holding memory after it).

    python bench/_scale.py shmray rate 1000000
    python bench/_scale.py shmray rate 20000 --rounds 5   # the median of 5 batches
    python bench/_scale.py pool queued 200000 --trace

Module-level functions only, importing no engine at the top: every engine's workers import this
module to find `hold` (W8's rule, see _tasks.no_op).
"""
from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
CHILD_TIMEOUT = 900      # seconds one child may take (Ray's 100,000 tasks: about a minute)
WARM_UP = 1_000          # ships the function to every worker before the baseline is read
TRACE_TOP = 12


def hold(path):
    """A gate task: occupies its worker until `path` exists."""
    while not os.path.exists(path):
        time.sleep(0.001)


# ------------------------------------------------------------------ in the child

def _kib(path, field):
    with open(path) as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return None


def memory():
    """(RSS, PSS) of this process, bytes."""
    return (_kib("/proc/self/status", "VmRSS:") * 1024,
            _kib("/proc/self/smaps_rollup", "Pss:") * 1024)


def settle():
    gc.collect()
    time.sleep(0.05)


class Child:
    def __init__(self, engine_name, trace):
        from _peers import FACTORIES
        from _tasks import no_op, small_tasks
        self.name = engine_name
        self.engine = FACTORIES[engine_name]()
        self.engine.start()
        self.engine.call(no_op)
        self.tasks = small_tasks(self.engine)
        self.tasks.async_batch(WARM_UP)
        self.trace = trace
        self.session = None
        if engine_name == "shmray":
            from shmray import _context
            self.session = _context.runtime

    def stop(self):
        self.engine.stop()

    # -- the baseline and the reads against it
    def baseline(self):
        settle()
        self.base_mem = memory()
        self.base_objects = len(gc.get_objects())
        if self.trace:
            import tracemalloc
            tracemalloc.start()
            self.base_snapshot = tracemalloc.take_snapshot()

    def read(self, n, prefix):
        """RSS/PSS delta per task and gc objects per task since the baseline."""
        rss, pss = memory()
        out = {f"{prefix}rss_per_task": (rss - self.base_mem[0]) / n,
               f"{prefix}pss_per_task": (pss - self.base_mem[1]) / n,
               f"{prefix}rss_mb": rss / 2**20,
               f"{prefix}gc_objects_per_task": (len(gc.get_objects()) - self.base_objects) / n}
        if self.trace:
            out[f"{prefix}sites"] = self.sites(n)
        return out

    def sites(self, n):
        """Bytes per task by allocation site (file:line), the largest first."""
        import tracemalloc
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])
        stats = snap.compare_to(self.base_snapshot, "lineno")
        rows = [(f"{os.path.relpath(s.traceback[0].filename, os.path.dirname(BENCH_DIR))}:"
                 f"{s.traceback[0].lineno}", s.size_diff / n, s.count_diff / n)
                for s in stats[:TRACE_TOP]]
        return {"traced_per_task": sum(s.size_diff for s in stats) / n,
                "top": [{"site": site, "bytes_per_task": round(b, 1),
                         "blocks_per_task": round(c, 3)} for site, b, c in rows]}

    def unfinished(self):
        """shmray: tasks its driver still tracks (submitted, not finished)."""
        return len(self.session.tasks.tasks) if self.session else None

    # -- the modes
    def rate(self, n, rounds=1):
        """The memory is read in the first batch, the rate is the median of `rounds`."""
        submit, fetch_all = self.tasks.submit, self.tasks.fetch_all
        rates, out = [], {}
        for i in range(rounds):
            settle()
            if i == 0:
                self.baseline()
            start = time.perf_counter()
            pending = [submit() for _ in range(n)]
            submitted = time.perf_counter()
            if i == 0:  # (not timed: between the submit loop and the get)
                out.update(self.read(n, ""), unfinished=self.unfinished())
                pause = time.perf_counter() - submitted
            else:
                pause = 0.0
            fetched = time.perf_counter()
            values = fetch_all(pending)
            end = time.perf_counter()
            assert len(values) == n
            rates.append(n / ((submitted - start) + (end - fetched)))
            if i == 0:
                out.update(submit_s=submitted - start, get_s=end - fetched, read_s=pause)
            del pending, values
            if self.trace:
                break
        rates.sort()
        out.update(rate=rates[len(rates) // 2], rates=rates)
        return out

    def queued(self, n):
        from _peers import WORKERS
        folder = tempfile.mkdtemp(prefix="w18_")
        gate = os.path.join(folder, "open")
        try:
            try:
                hold_task = self._remote(hold)
                gates = [hold_task(gate) for _ in range(WORKERS)]
                time.sleep(0.5)  # the gate tasks reach their workers
                self.baseline()
                submit = self.tasks.submit
                start = time.perf_counter()
                pending = [submit() for _ in range(n)]
                submitted = time.perf_counter()
                out = self.read(n, "")
                out.update(unfinished=self.unfinished(), submit_s=submitted - start)
            finally:
                open(gate, "w").close()
            self.tasks.fetch_all(gates)
            assert len(self.tasks.fetch_all(pending)) == n
        finally:
            shutil.rmtree(folder)
        return out

    def _remote(self, fn):
        """submit(*args) of `fn` on this engine (the gate, which takes an argument)."""
        engine = self.engine
        if hasattr(engine, "mod"):
            return engine._r(fn).remote
        if hasattr(engine, "pool"):
            return lambda *args: engine.pool.apply_async(fn, args)
        return lambda *args: engine.executor.submit(fn, *args)

    def drop(self, n):
        self.baseline()
        pending = [self.tasks.submit() for _ in range(n)]
        values = self.tasks.fetch_all(pending)
        settle()
        out = self.read(n, "before_")
        stored_before = len(self.session.store.values) if self.session else None
        start = time.perf_counter()
        del pending, values
        dropped = time.perf_counter()
        if self.session is not None:  # its store frees them as its loop counts the drops
            store = self.session.store
            while len(store.values) > stored_before - n and time.perf_counter() - start < 60:
                time.sleep(0.002)
            out["stored_left"] = len(store.values) - (stored_before - n)
        elif self.name == "ray":  # Ray frees them asynchronously: give it a second
            time.sleep(1.0)
        freed = time.perf_counter()
        out.update(self.read(n, "after_"), del_s=dropped - start, freed_s=freed - start)
        out["came_back"] = 1 - out["after_rss_per_task"] / out["before_rss_per_task"]
        return out


def child_main(argv):
    engine_name, mode, n = argv[0], argv[1], int(argv[2])
    trace = "--trace" in argv
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 1
    child = Child(engine_name, trace)
    try:
        out = child.rate(n, rounds) if mode == "rate" else getattr(child, mode)(n)
    finally:
        child.stop()
    out.update(engine=engine_name, mode=mode, n=n, traced=trace)
    print(json.dumps(out))


# ------------------------------------------------------------------ in the benchmark process

def run(engine_name, mode, n, rounds=1):
    """Run one measurement in a fresh process; its JSON record."""
    cmd = [sys.executable, os.path.join(BENCH_DIR, "_scale.py"), engine_name, mode, str(n),
           "--rounds", str(rounds)]
    # RAY_ADDRESS=local: a Ray of its own, even when another one runs on this machine
    # (ray.init() would join that one, and refuse num_cpus)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT,
                         cwd=BENCH_DIR, env=dict(os.environ, RAY_ADDRESS="local"))
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:])} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    import _scale  # the functions by their module's name, not __main__'s: workers import it
    _scale.child_main(sys.argv[1:])
