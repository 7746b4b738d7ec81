"""joblib's "ray" backend on shmray (shmray.util.joblib.register_ray), with a real
joblib.Parallel and real worker processes."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import joblib
from joblib import Parallel, delayed, parallel_backend

import shmray
from shmray.util.joblib import register_ray

pytestmark = pytest.mark.timeout(60)


# -- what the workers run ---------------------------------------------------------------

def square(x):
    return x * x


def where(x):
    return x, os.getpid()


def mapped_segment(array):
    """The file whose mapping holds the array's first byte in this process (from
    /proc/self/maps), or '' for anonymous memory: a copy unpickled here lives in
    anonymous memory, an array of shmray's store in its shared-memory segment."""
    address = array.__array_interface__["data"][0]
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if low <= address < high:
                return fields[5] if len(fields) > 5 else ""
    return "?"


def read_big(X, i):
    return mapped_segment(X), float(X[i]), X.flags.writeable, os.getpid()


def fail_on_three(x):
    if x == 3:
        raise ValueError("three is bad")
    return x


def inner_parallel(n):
    return sum(Parallel(n_jobs=2)(delayed(square)(i) for i in range(n)))


def wait_for(path):
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)
    return path


@pytest.fixture(scope="module", autouse=True)
def backend(ray):
    register_ray()
    yield


# -- tests -----------------------------------------------------------------------------

def test_parallel_runs_on_shmray_workers_in_order():
    with parallel_backend("ray"):
        out = Parallel(n_jobs=2)(delayed(where)(i) for i in range(200))
    assert [x for x, _ in out] == list(range(200))
    assert os.getpid() not in {pid for _, pid in out}


def test_parallel_config_and_n_jobs():
    with joblib.parallel_config(backend="ray", n_jobs=-1):  # the session's 2 CPUs
        assert Parallel()(delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]
    with parallel_backend("ray"):
        # One job runs here, as with every joblib backend.
        assert {pid for _, pid in Parallel(n_jobs=1)(delayed(where)(i) for i in range(3))} \
            == {os.getpid()}
        with pytest.raises(ValueError, match="n_jobs == 0"):
            Parallel(n_jobs=0)(delayed(square)(1) for _ in range(2))


def test_a_50_mb_array_is_mapped_from_shared_memory_put_once():
    X = np.arange(50 * (1 << 20) // 8, dtype=np.float64)  # 50 MB
    with parallel_backend("ray"):
        out = Parallel(n_jobs=2, batch_size=1)(delayed(read_big)(X, i) for i in range(40))
    segments = {segment for segment, _, _, _ in out}
    # Every call saw the array in the same shared-memory segment of the session: it was
    # put once and mapped, not pickled into each call (a copy is anonymous memory).
    assert len(segments) == 1
    (segment,) = segments
    assert segment.startswith("/dev/shm/shmray_"), segment
    assert [value for _, value, _, _ in out] == [float(i) for i in range(40)]
    assert all(writeable for _, _, writeable, _ in out)  # (copy-on-write, as shmray's get)
    assert len({pid for _, _, _, pid in out}) == 2


def test_max_nbytes_none_pickles_arrays_with_each_batch():
    X = np.arange(1 << 17, dtype=np.float64)
    with parallel_backend("ray"):
        out = Parallel(n_jobs=2, max_nbytes=None, batch_size=1)(
            delayed(read_big)(X, i) for i in range(4))
    assert [value for _, value, _, _ in out] == [0.0, 1.0, 2.0, 3.0]


def test_errors_are_raised_as_the_users_type():
    with parallel_backend("ray"):
        with pytest.raises(ValueError, match="three is bad"):
            Parallel(n_jobs=2)(delayed(fail_on_three)(i) for i in range(10))
        # The pool was aborted; the next call gets a new one.
        assert Parallel(n_jobs=2)(delayed(square)(i) for i in range(4)) == [0, 1, 4, 9]


def test_generators_and_a_managed_parallel():
    with parallel_backend("ray"):
        gen = Parallel(n_jobs=2, return_as="generator")(delayed(square)(i) for i in range(20))
        assert list(gen) == [i * i for i in range(20)]
        gen = Parallel(n_jobs=2, return_as="generator_unordered")(
            delayed(square)(i) for i in range(20))
        assert sorted(gen) == [i * i for i in range(20)]
        with Parallel(n_jobs=2) as parallel:  # one pool for both calls
            assert parallel(delayed(square)(i) for i in range(3)) == [0, 1, 4]
            assert parallel(delayed(square)(i) for i in range(3, 5)) == [9, 16]


def test_many_small_calls_are_batched():
    with parallel_backend("ray"):
        out = Parallel(n_jobs=2)(delayed(square)(i) for i in range(5000))
    assert out == [i * i for i in range(5000)]


def test_nested_parallel_in_a_worker():
    with parallel_backend("ray"):
        assert Parallel(n_jobs=2)(delayed(inner_parallel)(n) for n in (3, 4)) == [5, 14]


def test_timeout(tmp_path):
    gate = str(tmp_path / "gate")
    with parallel_backend("ray"):
        with pytest.raises(multiprocessing.TimeoutError):  # (joblib raises this one)
            Parallel(n_jobs=2, timeout=0.2)(delayed(wait_for)(gate) for _ in range(2))
    open(gate, "w").close()


def test_backend_arguments():
    with parallel_backend("ray", ray_remote_args={"num_cpus": 1}):
        assert Parallel(n_jobs=2)(delayed(square)(i) for i in range(3)) == [0, 1, 4]
    with parallel_backend("ray", ray_remote_args={"num_cpuz": 1}):
        with pytest.raises(ValueError, match="num_cpuz"):
            Parallel(n_jobs=2)(delayed(square)(i) for i in range(3))
    with parallel_backend("ray", frobnicate=True):
        with pytest.raises(TypeError, match="frobnicate"):
            Parallel(n_jobs=2)(delayed(square)(i) for i in range(3))


def test_register_ray_without_joblib_names_the_extra():
    code = ("import sys; sys.modules['joblib'] = None\n"
            "from shmray.util.joblib import register_ray\n"
            "try:\n    register_ray()\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert "pip install 'shmray[joblib]'" in out.stdout, out.stderr
    assert shmray.is_initialized()
