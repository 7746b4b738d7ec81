"""``shmray.util.multiprocessing.Pool``: the ``multiprocessing.Pool`` API (Ray's
``ray.util.multiprocessing.Pool``) over shmray tasks or actors.

    Pool.map(f, items) ──► MapResult ──► chunks, one task each ──► the session's workers
    Pool(initializer=..., maxtasksperchild=...) ──► one actor per process slot (Ray's way)

Arguments are checked here, at the API edge, with the stdlib's and Ray's messages; the
work goes to the pool's dispatcher thread (_dispatcher). Large numpy arguments are put
in the object store once and mapped by the workers (_shared_args). On the Ray-cluster
path (``init(address=...)``), ``Pool(...)`` is Ray's own pool.
"""
from __future__ import annotations

import numbers
import warnings
from typing import Any, Callable, Dict, Iterable, Optional

import shmray

from ..._serialization import INLINE_MAX
from .._on_cluster import ray_counterpart
from ._chunk import MAP, STARMAP
from ._dispatcher import CLOSE, FORGET_ARRAYS, KEEP_ARRAYS, Dispatcher
from ._results import AsyncResult, IMapIterator, IMapUnorderedIterator, MapResult
from ._shared_args import SharedArgs
from ._slots import ACTOR_ONLY_OPTIONS, ActorSlots, TaskSlots

RUN, CLOSED, TERMINATED = "RUN", "CLOSE", "TERMINATE"  # the stdlib's states
CHUNKS_PER_PROCESS = 4  # map's default chunk size: the stdlib's (4 chunks per process)


class Pool:
    """A pool of `processes` workers running functions over iterables, as
    ``multiprocessing.Pool`` does.

    Args:
        processes: how many calls run at once; default: the session's CPUs.
        initializer: run once in each worker process, with `initargs`, before its
            first call (the pool then has an actor per process, as Ray's has).
        initargs: the initializer's arguments.
        maxtasksperchild: a worker process is replaced after this many chunks.
        context: accepted for ``multiprocessing.Pool``'s sake, ignored (with a warning).
        ray_address: the cluster to run on when shmray is not initialized yet
            (``shmray.init(address=...)``; "local" or None: this machine). Also
            RAY_ADDRESS.
        ray_remote_args: options of the workers' tasks or actors (``num_cpus``,
            ``num_gpus``, ``resources``, ``runtime_env``, ... as ``.options()``).
    """

    def __new__(cls, processes=None, initializer=None, initargs=None, maxtasksperchild=None,
                context=None, ray_address=None, ray_remote_args=None):
        if ray_address not in (None, "local") and not shmray.is_initialized():
            shmray.init(address=ray_address)  # the cluster path: Ray's own pool runs there
        ray_pool = ray_counterpart("ray.util.multiprocessing", "Pool")
        if ray_pool is not None:
            return ray_pool(processes, initializer, initargs, maxtasksperchild, context,
                            ray_address, ray_remote_args)
        return super().__new__(cls)

    def __init__(self, processes: Optional[int] = None, initializer: Optional[Callable] = None,
                 initargs: Optional[Iterable] = None, maxtasksperchild: Optional[int] = None,
                 context: Any = None, ray_address: Optional[str] = None,
                 ray_remote_args: Optional[Dict[str, Any]] = None):
        self._state = None  # (a pool that failed to start is not "running" for __del__)
        if processes is not None and (isinstance(processes, bool)
                                      or not isinstance(processes, numbers.Integral)):
            raise TypeError(f"processes must be an int or None, got {processes!r}")
        if processes is not None and processes <= 0:
            raise ValueError("Processes in the pool must be >0.")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        initargs = _as_tuple("initargs", initargs)
        if maxtasksperchild is not None and (
                isinstance(maxtasksperchild, bool)
                or not isinstance(maxtasksperchild, numbers.Integral) or maxtasksperchild <= 0):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if ray_remote_args is not None and not isinstance(ray_remote_args, dict):
            raise TypeError(f"ray_remote_args must be a dict, got {ray_remote_args!r}")
        remote_args = dict(ray_remote_args or {})
        if context is not None:
            warnings.warn("The 'context' argument is not supported by shmray's Pool and is "
                          "ignored: its workers are shmray's.", stacklevel=2)
        if not shmray.is_initialized():  # as Ray's pool: a session of `processes` CPUs
            shmray.init(num_cpus=processes, ignore_reinit_error=True)
        cpus = shmray.cluster_resources().get("CPU", 0)
        if processes is None:
            processes = max(int(cpus), 1)
        elif cpus < processes:
            raise ValueError(f"Tried to start a pool with {processes} processes on an existing "
                             f"ray cluster, but there are only {int(cpus)} CPUs in the ray "
                             f"cluster.")
        self._processes = int(processes)
        if initializer is not None or maxtasksperchild is not None \
                or ACTOR_ONLY_OPTIONS & remote_args.keys():
            slots = ActorSlots(self._processes, remote_args, initializer, initargs,
                               maxtasksperchild)
        else:
            slots = TaskSlots(self._processes, remote_args, cpus)
        self._dispatcher = Dispatcher(slots, SharedArgs(INLINE_MAX))
        self._state = RUN

    # ------------------------------------------------------------------ apply
    def apply(self, func: Callable, args: Iterable = (), kwargs: Optional[dict] = None, *,
              kwds: Optional[dict] = None):
        """func(*args, **kwargs) in a worker; its result (or its exception, raised)."""
        return self.apply_async(func, args, kwargs, kwds=kwds).get()

    def apply_async(self, func: Callable, args: Iterable = (), kwargs: Optional[dict] = None,
                    callback: Optional[Callable] = None,
                    error_callback: Optional[Callable] = None, *,
                    kwds: Optional[dict] = None) -> AsyncResult:
        """func(*args, **kwargs) in a worker: an AsyncResult. `callback` gets the result,
        `error_callback` the exception, in the pool's result-handling thread."""
        _check_callables(func, callback, error_callback)
        args = _as_tuple("args", args)
        if kwds is not None:
            if kwargs is not None:
                raise TypeError("apply_async() got both kwargs and kwds (the stdlib's name "
                                "of the same argument)")
            kwargs = kwds
        if kwargs is not None and not hasattr(kwargs, "keys"):
            raise TypeError(f"kwargs must be a mapping, got {kwargs!r}")
        result = AsyncResult(func, args, dict(kwargs or {}), callback, error_callback)
        return self._post(result)

    # -------------------------------------------------------------------- map
    def map(self, func: Callable, iterable: Iterable, chunksize: Optional[int] = None) -> list:
        """[func(x) for x in iterable], run in chunks by the workers."""
        return self.map_async(func, iterable, chunksize).get()

    def map_async(self, func: Callable, iterable: Iterable, chunksize: Optional[int] = None,
                  callback: Optional[Callable] = None,
                  error_callback: Optional[Callable] = None) -> MapResult:
        return self._map_async(func, iterable, MAP, chunksize, callback, error_callback)

    def starmap(self, func: Callable, iterable: Iterable,
                chunksize: Optional[int] = None) -> list:
        """[func(*args) for args in iterable], run in chunks by the workers."""
        return self.starmap_async(func, iterable, chunksize).get()

    def starmap_async(self, func: Callable, iterable: Iterable, chunksize: Optional[int] = None,
                      callback: Optional[Callable] = None,
                      error_callback: Optional[Callable] = None) -> MapResult:
        return self._map_async(func, iterable, STARMAP, chunksize, callback, error_callback)

    def _map_async(self, func, iterable, mode, chunksize, callback, error_callback):
        self._check_running()
        _check_callables(func, callback, error_callback)
        _check_chunksize(chunksize)
        error = None
        if type(iterable) in (list, tuple, range):
            items = iterable  # sliced chunk by chunk as the workers take them
        elif not hasattr(iterable, "__len__"):
            items = list(iterable)  # (what it raises, map raises here: the stdlib's way)
        else:
            try:
                items = list(iterable)
            except Exception as e:  # the stdlib reads these in its thread: the result raises
                items, error = [], e
        if chunksize is None:
            chunksize, extra = divmod(len(items), self._processes * CHUNKS_PER_PROCESS)
            chunksize = max(chunksize + bool(extra), 1)
        result = MapResult(func, mode, items, chunksize, callback, error_callback, error)
        return self._post(result)

    # ------------------------------------------------------------------- imap
    def imap(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> IMapIterator:
        """func(x) for x in iterable, as an iterator in the iterable's order; the iterable
        is read a chunk at a time, as the workers free up."""
        return self._imap(IMapIterator, func, iterable, chunksize)

    def imap_unordered(self, func: Callable, iterable: Iterable,
                       chunksize: int = 1) -> IMapUnorderedIterator:
        """As imap, the results in the order they end."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize)

    def _imap(self, kind, func, iterable, chunksize):
        self._check_running()
        _check_callables(func)
        if chunksize is None:  # (Ray's and the stdlib's default is 1)
            chunksize = 1
        _check_chunksize(chunksize)
        return self._post(kind(func, MAP, iterable, chunksize))

    # -------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """No more work is taken; what was given finishes, then the workers end."""
        if self._state == RUN:
            self._state = CLOSED
            self._dispatcher.post(CLOSE)

    def terminate(self) -> None:
        """Stop the workers now: the work not finished fails (RayActorError)."""
        if self._state is None:
            return
        self._state = TERMINATED
        self._dispatcher.terminate()

    def join(self) -> None:
        """Wait, after close() or terminate(), for the work and the workers to end."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        if self._state is not None:
            self._dispatcher.join()

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.terminate()

    def __del__(self):
        if getattr(self, "_state", None) == RUN:
            self._state = TERMINATED
            self._dispatcher.abandon()  # (first: the warning may be made an error)
            warnings.warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning,
                          source=self)

    def __reduce__(self):
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __repr__(self):
        kind = getattr(getattr(self, "_dispatcher", None), "slots", None)
        return (f"<{type(self).__module__}.{type(self).__qualname__} state={self._state} "
                f"pool_size={getattr(self, '_processes', None)}"
                f"{' on ' + kind.kind if kind is not None else ''}>")

    # ---------------------------------------------------------------- helpers
    def _keep_shared_arrays(self, keep: bool) -> None:
        """Between True and False, a large array passed again is never put again, even
        when the pool has nothing to do for a while (shmray.util.joblib: one Parallel
        call, during which its arrays do not change). Otherwise they are forgotten
        whenever the pool is idle, as the caller may change them before its next call."""
        if self._state == RUN:
            self._dispatcher.post(KEEP_ARRAYS if keep else FORGET_ARRAYS)

    def _check_running(self):
        if self._state != RUN:
            raise ValueError("Pool not running")

    def _post(self, job):
        self._check_running()
        if not self._dispatcher.post(job):  # its thread ended (the session shut down)
            self._state = TERMINATED
            raise ValueError("Pool not running") from self._dispatcher.error
        return job


def _as_tuple(name: str, value) -> tuple:
    if value is None:
        return ()
    try:
        return tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a tuple (or another iterable), got {value!r}") from None


def _check_callables(func, callback=None, error_callback=None):
    if not callable(func):
        raise TypeError(f"func must be callable, got {func!r}")
    for name, value in (("callback", callback), ("error_callback", error_callback)):
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be callable or None, got {value!r}")


def _check_chunksize(chunksize):
    if chunksize is None:
        return
    if isinstance(chunksize, bool) or not isinstance(chunksize, numbers.Integral):
        raise TypeError(f"chunksize must be an int, got {chunksize!r}")
    if chunksize < 1:
        raise ValueError("Chunksize must be 1+, not {0:n}".format(chunksize))
