"""W16/W17: the pools and joblib backends of each engine, and what their workers run.

The functions are module level and import no engine: every engine's workers import
this module to find them (W8's rule, see _tasks.no_op). The engines' pools and
backends are imported when asked for, in the driver, once that engine runs.
"""
from __future__ import annotations

import contextlib
import importlib

from _peers import WORKERS


def array_head(array):
    """W16 big: read one element of an array that arrived as an item."""
    return float(array[0])


def column_mean(matrix, j):
    """W17 array: a column's mean, of a matrix every call is given (a cross-validation
    fold or a feature's statistic, as scikit-learn's n_jobs loops are)."""
    return float(matrix[:, j].mean())


@contextlib.contextmanager
def pool_of(engine):
    """A pool of WORKERS processes of `engine` (a running _peers adapter), warmed up
    and ended after: shmray's and Ray's util.multiprocessing.Pool, the stdlib's Pool
    that the 'pool' engine runs."""
    if engine.name == "pool":
        yield engine.pool
        return
    module = {"shmray": "shmray.util.multiprocessing", "ray": "ray.util.multiprocessing"}
    pool = importlib.import_module(module[engine.name]).Pool(WORKERS)
    try:
        pool.map(array_head, [[0.0]] * (WORKERS * 4))  # its workers up and the code shipped
        yield pool
    finally:
        pool.terminate()
        pool.join()


def joblib_backend(engine_name):
    """What joblib.parallel_backend takes for `engine_name`: shmray's and Ray's "ray"
    backends are both named "ray" in joblib's registry, so each is given as an instance
    of its own class; loky is joblib's default backend, by name."""
    if engine_name == "loky":
        return "loky"
    module = {"shmray": "shmray.util.joblib.ray_backend",
              "ray": "ray.util.joblib.ray_backend"}[engine_name]
    return importlib.import_module(module).RayBackend()
