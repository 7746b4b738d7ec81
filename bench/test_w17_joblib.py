"""W17: joblib.Parallel(n_jobs=2), each round one whole Parallel call as a user (or
scikit-learn's n_jobs) makes it, its backend configured and ended inside the round:
shmray's "ray" backend (shmray.util.joblib), joblib's default loky backend (its workers
are reused from call to call) and Ray's "ray" backend (ray.util.joblib).

small: 10,000 no-op calls, joblib batching them (calls/s). array: 40 calls, each given
the same 100 MB matrix, returning a column's mean (ms): shmray puts the matrix once
and the workers map it; loky hashes it and memory-maps it from a file; Ray puts it
once in its object store."""
import joblib
import numpy as np
import pytest

import _results
from _pool_peers import column_mean, joblib_backend
from _tasks import no_op

CALLS = 10_000
ARRAY_CALLS = 40
SHAPE = (12_500, 1_000)   # 12.5 M float64 = 100 MB
ROUNDS = {"ray": 2}
DEFAULT_ROUNDS = 5
ENGINES = ["shmray", "loky", "ray"]


def parallel(engine_name, calls):
    """One joblib.Parallel call of `calls` (delayed calls) on the engine's backend."""
    with joblib.parallel_backend(joblib_backend(engine_name)):
        return joblib.Parallel(n_jobs=2)(calls)


@pytest.mark.benchmark(group="W17 joblib, 10,000 calls")
@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_joblib_small_calls(benchmark, engine):
    name = engine.name

    def run():
        return parallel(name, (joblib.delayed(no_op)(i) for i in range(CALLS)))

    run()  # untimed: workers started (loky's are kept), the code shipped
    results = benchmark.pedantic(run, iterations=1,
                                 rounds=ROUNDS.get(name, DEFAULT_ROUNDS))
    assert len(results) == CALLS
    _results.record("W17small", name, CALLS / _results.median(benchmark))


@pytest.mark.benchmark(group="W17 joblib, 100 MB to 40 calls")
@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_joblib_shared_array(benchmark, engine):
    name = engine.name
    matrix = np.arange(np.prod(SHAPE), dtype=np.float64).reshape(SHAPE)
    expected = [float(matrix[:, j].mean()) for j in range(ARRAY_CALLS)]

    def run():
        return parallel(name, (joblib.delayed(column_mean)(matrix, j)
                               for j in range(ARRAY_CALLS)))

    assert run() == expected
    benchmark.pedantic(run, iterations=1, rounds=ROUNDS.get(name, DEFAULT_ROUNDS))
    _results.record("W17array", name, _results.median(benchmark) * 1e3)
