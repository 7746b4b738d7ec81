"""The throughput workloads, written once for every place that times them: the demo
(``python -m shmray demo``), the short bench (``python -m shmray bench``) and the full suite
(``pytest bench/``, which times the same bodies with pytest-benchmark).

W1  small tasks, async: n no-op tasks submitted, then every result fetched;
W2  sync round trip: one no-op task submitted and its result fetched, n times;
W7  start-up: a fresh interpreter, from its launch to its first result.

W1 and W2 differ only in when results are fetched, so each engine is described once by how
it submits a task and fetches a result (``small_tasks``), and both workloads are written over
that. Only public APIs are used: ``remote``/``get`` of a Ray-like module (shmray, Ray), a
multiprocessing Pool's ``apply_async``, an executor's ``submit``. It imports only the standard
library (the engine is handed in), so importing it starts nothing and pulls in neither Ray nor
pytest.
"""
from __future__ import annotations

import functools
import multiprocessing
import operator
import os
import statistics
import subprocess
import sys
import tempfile
import time

WARM_UP = 200         # calls that ship the function to every worker before the clock starts
LAUNCH_TIMEOUT = 120  # seconds one start-up script may take


def no_op(*_):
    """The task of W1 and W2: all they measure is the framework. Module-level, so that
    multiprocessing pickles it by name; it ignores any item, so that Pool.map can run it."""


class SmallTasks:
    """W1 and W2 on one running engine, given how it submits its task and fetches a result."""

    def __init__(self, submit, fetch, fetch_all=None):
        self.submit = submit      # () -> a pending result
        self.fetch = fetch        # a pending result -> its value, waiting for it
        # A list of pending results -> their values; an engine with a batched get says so.
        self.fetch_all = fetch_all or (lambda pending: [fetch(p) for p in pending])

    def async_batch(self, n):
        """W1: submit n tasks, then fetch every result (in order)."""
        submit = self.submit
        return self.fetch_all([submit() for _ in range(n)])

    def round_trips(self, n):
        """W2: n times, submit one task and wait for its result."""
        submit, fetch = self.submit, self.fetch
        for _ in range(n):
            fetch(submit())


def small_tasks(engine, fn=no_op):
    """SmallTasks of ``fn`` on ``engine``, written as that engine's users write it: a Ray-like
    module (``f.remote()`` and ``get``, a list of refs in one get), a multiprocessing Pool
    (``apply_async``; its ``apply`` is ``apply_async(...).get()``), or a concurrent.futures-style
    executor (``submit`` and ``result``: ProcessPoolExecutor, loky)."""
    if hasattr(engine, "remote"):
        task = engine.remote(fn)  # made once, as a user's @remote does at import
        return SmallTasks(task.remote, engine.get, engine.get)
    if hasattr(engine, "apply_async"):
        return SmallTasks(functools.partial(engine.apply_async, fn), operator.methodcaller("get"))
    return SmallTasks(functools.partial(engine.submit, fn), operator.methodcaller("result"))


def median_seconds(batch, n, rounds, warm_up=WARM_UP):
    """Median seconds of batch(n) over ``rounds``, after one batch(warm_up) untimed."""
    batch(warm_up)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        batch(n)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(engine_tasks, n_tasks, calls, rounds=1):
    """(W1 tasks/s over n_tasks, W2 seconds per call over ``calls``) of a SmallTasks."""
    rate = n_tasks / median_seconds(engine_tasks.async_batch, n_tasks, rounds)
    return rate, median_seconds(engine_tasks.round_trips, calls, rounds) / calls


def measure_pool(processes, n_tasks, calls, rounds=1):
    """``measure`` of multiprocessing.Pool(processes) on no_op: the baseline of the CLI. Call it
    before any shmray session starts in this process, so that the pool forks its workers from
    a process without shmray's threads and the two never compete for the same cores."""
    pool = multiprocessing.Pool(processes)
    try:
        return measure(small_tasks(pool), n_tasks, calls, rounds)
    finally:
        pool.close()
        pool.join()


# W7: each script gets its launch time (time.time(), comparable across processes) as argv[1]
# and prints how many ms after it its first result arrived. Shutdown at exit is not counted.
# The pools' scripts guard their work with __main__ because a spawn or forkserver start
# method re-imports the script in every worker.
_RAY_LIKE_STARTUP = """\
import sys, time
import {module} as ray
ray.init(num_cpus={workers})
@ray.remote
def one():
    return 1
assert ray.get(one.remote()) == 1
print((time.time() - float(sys.argv[1])) * 1e3)
"""
STARTUP_SCRIPTS = {
    "shmray": _RAY_LIKE_STARTUP,
    "ray": _RAY_LIKE_STARTUP,
    "pool": """\
import sys, time, multiprocessing
def one():
    return 1
if __name__ == "__main__":
    with multiprocessing.Pool({workers}) as pool:
        assert pool.apply(one) == 1
        print((time.time() - float(sys.argv[1])) * 1e3)
""",
    "ppe": """\
import sys, time
from concurrent.futures import ProcessPoolExecutor
def one():
    return 1
if __name__ == "__main__":
    with ProcessPoolExecutor({workers}) as executor:
        assert executor.submit(one).result() == 1
        print((time.time() - float(sys.argv[1])) * 1e3)
""",
    "loky": """\
import sys, time
from loky import get_reusable_executor
def one():
    return 1
if __name__ == "__main__":
    executor = get_reusable_executor(max_workers={workers})
    assert executor.submit(one).result() == 1
    print((time.time() - float(sys.argv[1])) * 1e3)
    executor.shutdown(wait=True, kill_workers=True)
""",
}


def startup_script(engine, workers):
    """The text of ``engine``'s W7 script, starting ``workers`` workers."""
    return STARTUP_SCRIPTS[engine].format(module=engine, workers=workers)


def write_startup_script(engine, workers, folder):
    """Write ``engine``'s W7 script into ``folder``; return its path. A file rather than
    ``-c``: a spawned worker must be able to re-import the script."""
    path = os.path.join(folder, f"start_{engine}.py")
    with open(path, "w") as f:
        f.write(startup_script(engine, workers))
    return path


def first_result_ms(script):
    """W7 once: launch a fresh interpreter on ``script``; the ms to its first result. It runs
    in the script's folder, so that a launch leaves nothing in the caller's cwd."""
    launched = time.time()
    out = subprocess.run([sys.executable, script, repr(launched)], cwd=os.path.dirname(script),
                         capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    if out.returncode != 0:
        raise RuntimeError(f"start-up script {script} failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.split()[-1])


def startup_ms(engine, workers, launches):
    """Median of ``launches`` first_result_ms, after one more not counted: the first launch
    reads the engine's files from disk."""
    with tempfile.TemporaryDirectory(prefix="startup_") as folder:
        script = write_startup_script(engine, workers, folder)
        times = [first_result_ms(script) for _ in range(launches + 1)]
    return statistics.median(times[1:])
