"""One adapter per engine, and a manager that keeps at most one engine running.

Each adapter writes the same work the way a user of that engine would: shmray and Ray call
`.remote()` and `get`, multiprocessing.Pool uses apply_async/apply/map, the executors
submit()/result(). Every engine gets 2 worker processes, as many as this machine has cores.
"""
from __future__ import annotations

import concurrent.futures
import importlib
import importlib.util
import multiprocessing
import os

import _procs
from _tasks import no_op

WORKERS = 2
ENGINES = ("shmray", "pool", "ppe", "loky", "ray")
LABELS = {"shmray": "shmray", "pool": "Pool", "ppe": "ProcPool", "loky": "loky", "ray": "Ray"}
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


class EngineUnavailable(Exception):
    """The engine's package is not importable here; the reason says how to get it."""


def missing_reason(name):
    """Why `name` cannot run here, or None. Checked without importing (importing Ray is slow)."""
    package = {"loky": "loky", "ray": "ray"}.get(name)
    if package is None:
        return None
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # ValueError: a module in sys.modules without a spec
        found = False
    return None if found else f"{package} is not importable here (pip install {package})"


class Engine:
    name = ""
    has_object_store = False  # put/get of shmray and Ray; the pool peers share via shm instead

    def start(self): ...

    def stop(self): ...

    def run_all(self, fn, args_list):
        """Submit fn(*args) for every args, then fetch every result (in order)."""
        raise NotImplementedError

    def call(self, fn, *args):
        """One synchronous round trip."""
        raise NotImplementedError

    def worker_pids(self, started: set) -> set:
        """Which of the processes started with the engine are its task workers."""
        raise NotImplementedError

    def helper_pids(self) -> set:
        """Processes the engine owns that may predate this start (loky's resource tracker)."""
        return set()


class RayLike(Engine):
    """shmray and Ray: the same API, so the same code."""
    has_object_store = True
    module_name = ""

    def __init__(self):
        self.mod = None
        self._remote = {}

    def _r(self, fn):
        # One RemoteFunction (or actor class) per function (class), made once: what a user's
        # @remote does at import.
        if fn not in self._remote:
            self._remote[fn] = self.mod.remote(fn)
        return self._remote[fn]

    def run_all(self, fn, args_list):
        rf = self._r(fn)
        return self.mod.get([rf.remote(*args) for args in args_list])

    def call(self, fn, *args):
        return self.mod.get(self._r(fn).remote(*args))

    def put(self, value):
        return self.mod.put(value)

    def get(self, ref):
        return self.mod.get(ref)

    def actor(self, cls, *args):
        """A new actor of `cls` (W10-W13): the class made remote once, as for functions."""
        return self._r(cls).remote(*args)

    def kill(self, handle):
        self.mod.kill(handle)

    def stop(self):
        self.mod.shutdown()
        self._remote.clear()


class Shmray(RayLike):
    name = module_name = "shmray"

    def start(self):
        import shmray
        self.mod = shmray
        shmray.init(num_cpus=WORKERS)

    def worker_pids(self, started):
        # Forked workers share the driver's command line; their name tells them apart.
        return {p for p in started if _procs.comm(p) == f"shmray:{os.getpid()}"}


class Ray(RayLike):
    name = module_name = "ray"

    def start(self):
        # Ray's workers are started by its raylet, not forked from us: give them this directory
        # so that they import _tasks by name, as the other engines' workers do.
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (BENCH_DIR, os.environ.get("PYTHONPATH")) if p)
        import ray
        self.mod = ray
        ray.init(num_cpus=WORKERS, log_to_driver=False)

    def worker_pids(self, started):
        # Workers rename themselves 'ray::IDLE' or 'ray::<task>'; the raylet's agents are
        # 'ray::DashboardAgent' and 'ray::RuntimeEnvAgent'.
        return {p for p in started if _procs.cmdline(p).startswith("ray::")
                and not _procs.cmdline(p).endswith("Agent")}


class Pool(Engine):
    name = "pool"

    def start(self):
        self.pool = multiprocessing.Pool(WORKERS)

    def stop(self):
        self.pool.close()
        self.pool.join()

    def run_all(self, fn, args_list):
        pending = [self.pool.apply_async(fn, args) for args in args_list]
        return [r.get() for r in pending]

    def call(self, fn, *args):
        return self.pool.apply(fn, args)

    def map(self, fn, items):
        return self.pool.map(fn, items)  # chunks the items: the Pool's fastest path

    def worker_pids(self, started):
        return {p.pid for p in self.pool._pool}


class Executor(Engine):
    """concurrent.futures-style executors: submit() and result()."""

    def run_all(self, fn, args_list):
        futures = [self.executor.submit(fn, *args) for args in args_list]
        return [f.result() for f in futures]

    def call(self, fn, *args):
        return self.executor.submit(fn, *args).result()

    def worker_pids(self, started):
        return set(self.executor._processes)


class ProcessPool(Executor):
    name = "ppe"

    def start(self):
        self.executor = concurrent.futures.ProcessPoolExecutor(WORKERS)

    def stop(self):
        self.executor.shutdown(wait=True)


class Loky(Executor):
    name = "loky"

    def start(self):
        import loky
        self.executor = loky.get_reusable_executor(max_workers=WORKERS)

    def stop(self):
        self.executor.shutdown(wait=True, kill_workers=True)

    def helper_pids(self):
        # loky starts a resource tracker with its first executor and keeps it for the process.
        from loky.backend import resource_tracker
        pid = getattr(resource_tracker._resource_tracker, "_pid", None)
        return {pid} if pid else set()


FACTORIES = {"shmray": Shmray, "pool": Pool, "ppe": ProcessPool, "loky": Loky, "ray": Ray}


class EngineManager:
    """At most one engine runs at a time, so that an engine not being measured never takes CPU
    from the one that is. use(name) stops the running engine when it is another one."""

    def __init__(self):
        self.current = None
        self.before = set()  # our child processes just before the current engine started

    def use(self, name):
        if self.current is not None and self.current.name == name:
            return self.current
        self.stop()
        if name is None:
            return None
        reason = missing_reason(name)
        if reason:
            raise EngineUnavailable(reason)
        self.before = _procs.descendants(os.getpid())
        engine = FACTORIES[name]()
        engine.start()
        self.current = engine
        # Every engine has its workers up and has run a task before anything is timed
        # (ProcessPoolExecutor and loky start their processes on the first submit).
        engine.call(no_op)
        return engine

    def stop(self):
        if self.current is not None:
            engine, self.current = self.current, None
            engine.stop()

    def processes(self):
        """(worker pids, other pids) of the running engine: what it started, split."""
        engine = self.current
        started = _procs.descendants(os.getpid()) - self.before
        workers = engine.worker_pids(started)
        return workers, (started | engine.helper_pids()) - workers
