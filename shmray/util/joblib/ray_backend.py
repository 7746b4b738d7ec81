"""The "ray" joblib backend: joblib's batches run on a shmray.util.multiprocessing.Pool.

    joblib.Parallel ──configure(n_jobs)──► Pool(n_jobs)          (one per Parallel call)
       ──submit(BatchedCalls)──► large arrays lifted out of the batch ──►
       pool.apply_async(batch, kwargs=arrays) ──► the pool puts each array once (it is
       found by identity), the worker maps it ──► the batch runs with the arrays in place
       ──► joblib's callback, in the pool's result thread

joblib's own process backends copy large arrays into memory-mapped files (max_nbytes,
default 1M); here they go to shmray's object store instead, once per Parallel call
for an array passed to every call, and max_nbytes keeps its meaning (None: no
sharing; the arrays are pickled with each batch, still through shared memory).
"""
from __future__ import annotations

import os
import sys

import shmray
from joblib._parallel_backends import (AutoBatchingMixin, FallbackToBackend,
                                       ParallelBackendBase, PoolManagerMixin, SequentialBackend)
from joblib.disk import memstr_to_bytes
from joblib.parallel import BatchedCalls

from .._on_cluster import ray_counterpart
from ..multiprocessing.pool import Pool

try:
    from joblib._utils import _TracebackCapturingWrapper
except ImportError as e:  # (a joblib older than the submit() API of backends)
    raise ImportError("shmray's joblib backend needs a newer joblib: "
                      "pip install -U 'shmray[joblib]'") from e

# What joblib.Parallel passes to every backend's configure(): the memmapping options
# (max_nbytes used as the sharing threshold; the others are about files, which shmray
# does not use), the multiprocessing context and verbosity (its workers are shmray's).
_PARALLEL_ARGS = {"max_nbytes", "temp_folder", "mmap_mode", "verbose", "context"}


class RayBackend(PoolManagerMixin, AutoBatchingMixin, ParallelBackendBase):
    """joblib's parallel backend "ray" (see register_ray): a shmray Pool of n_jobs
    workers per Parallel call. ``ray_remote_args`` (here or in Parallel's backend
    arguments) configures the pool's tasks or actors, as in Ray."""

    supports_retrieve_callback = True
    supports_return_generator = True
    uses_threads = False
    supports_sharedmem = False

    def __new__(cls, *args, **kwargs):
        ray_backend = ray_counterpart("ray.util.joblib.ray_backend", "RayBackend")
        if ray_backend is not None:  # on a Ray cluster: Ray's own backend
            return ray_backend(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, nesting_level=None, inner_max_num_threads=None, ray_remote_args=None,
                 **kwargs):
        self.ray_remote_args = ray_remote_args
        self._max_nbytes = None
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads, **kwargs)

    def effective_n_jobs(self, n_jobs):
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:  # -1: every CPU of the session (the one init() would start)
            return max(_session_cpus() + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs=1, parallel=None, prefer=None, require=None,
                  ray_remote_args=None, **parallel_args):
        parallel_args = {**self.backend_kwargs, **parallel_args}  # (as joblib's backends)
        unknown = sorted(set(parallel_args) - _PARALLEL_ARGS)
        if unknown:
            raise TypeError(f"The 'ray' joblib backend got unexpected arguments: "
                            f"{', '.join(unknown)}")
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:  # (joblib's rule: one job runs in this process)
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        max_nbytes = parallel_args.get("max_nbytes", "1M")
        self._max_nbytes = _bytes(max_nbytes)
        remote_args = self.ray_remote_args if ray_remote_args is None else ray_remote_args
        self._pool = Pool(n_jobs, ray_remote_args=remote_args)
        self.parallel = parallel
        return n_jobs

    def submit(self, func, callback=None):
        arrays = {}
        if isinstance(func, BatchedCalls) and self._max_nbytes is not None:
            func = _lift_arrays(func, self._max_nbytes, arrays)
        return self._get_pool().apply_async(_TracebackCapturingWrapper(func), (), arrays,
                                            callback=callback, error_callback=callback)

    def start_call(self):
        # A Parallel call's arrays do not change while it runs: each is put once for
        # the whole call, however its batches come and go.
        if self._pool is not None:
            self._pool._keep_shared_arrays(True)

    def stop_call(self):
        if self._pool is not None:
            self._pool._keep_shared_arrays(False)

    def terminate(self):
        super().terminate()
        self.reset_batch_stats()


def _session_cpus() -> int:
    if shmray.is_initialized():
        return int(shmray.cluster_resources().get("CPU", 1))
    return len(os.sched_getaffinity(0))


def _bytes(max_nbytes):
    """joblib's max_nbytes (bytes, '1M'-style text, or None) as bytes or None."""
    if isinstance(max_nbytes, str):
        return memstr_to_bytes(max_nbytes)
    return max_nbytes


class _Lifted:
    """Stands, in a batch's calls, for the array passed beside it as keyword `name`."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __reduce__(self):
        return (_Lifted, (self.name,))


class _LiftedBatch:
    """A joblib batch whose large array arguments travel beside it (the pool puts them
    in the object store once); called with them, it puts them back and runs."""

    def __init__(self, batch: BatchedCalls):
        self.batch = batch

    def __call__(self, **arrays):
        def value(x):
            return arrays[x.name] if type(x) is _Lifted else x

        self.batch.items = [(f, tuple(value(a) for a in args),
                             {k: value(v) for k, v in kwargs.items()})
                            for f, args, kwargs in self.batch.items]
        return self.batch()


def _lift_arrays(batch: BatchedCalls, min_bytes: int, arrays: dict):
    """The batch with the numpy arrays of at least `min_bytes` among its calls' arguments
    replaced by _Lifted placeholders (one per array, by identity), those arrays added
    to `arrays`; the batch itself when it has none."""
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return batch
    ndarray, names = numpy.ndarray, {}

    def lifted(x):
        if not isinstance(x, ndarray) or x.nbytes < min_bytes:
            return x
        name = names.get(id(x))
        if name is None:
            name = names[id(x)] = f"a{len(names)}"
            arrays[name] = x
        return _Lifted(name)

    items = [(f, tuple(lifted(a) for a in args), {k: lifted(v) for k, v in kwargs.items()})
             for f, args, kwargs in batch.items]
    if not arrays:
        return batch
    return _LiftedBatch(BatchedCalls(items, (batch._backend, batch._n_jobs), None,
                                     batch._pickle_cache))
