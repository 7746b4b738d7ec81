"""The object store (issue 6, first part): every kind of value round-trips through
put, task arguments, task results and refs inside arguments; dropping refs frees
shared memory, so a put/drop loop runs in constant memory."""
from __future__ import annotations

import gc
import os
import time

import numpy as np
import pytest

from shmray import _context, _shm
from shmray._warm_reserve import RESERVE_MARK
from shmray.exceptions import ObjectStoreFullError

BIG = 200_000  # elements: past the inline limit for most dtypes

KINDS = {
    "strided": lambda: np.arange(BIG * 2, dtype=np.float64)[::2],
    "fortran order": lambda: np.asfortranarray(np.arange(BIG, dtype=np.int32).reshape(500, -1)),
    "structured": lambda: np.array([(i, i / 2) for i in range(BIG // 10)],
                                   dtype=[("a", "i4"), ("b", "f8")]),
    "object dtype": lambda: np.array([{"k": i} for i in range(20_000)], dtype=object),
    "bool": lambda: np.ones(BIG, dtype=bool),
    "complex": lambda: np.arange(BIG, dtype=np.complex128),
    "0-d": lambda: np.array(3.5),
    "empty": lambda: np.empty((0, 5)),
    "small array": lambda: np.arange(10),
    "bytes": lambda: b"x" * BIG,
    "bytearray": lambda: bytearray(b"y" * BIG),
    "nested containers": lambda: {"a": [np.arange(BIG), (1, "two")], "b": {3.0: None}},
}


def _same(a, b):
    if isinstance(a, np.ndarray):
        if not isinstance(b, np.ndarray) or a.dtype != b.dtype or a.shape != b.shape:
            return False
        return list(a.ravel()) == list(b.ravel()) if a.dtype == object else bool((a == b).all())
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_of_value_round_trips(ray, kind):
    value = KINDS[kind]()

    @ray.remote
    def echo(x):
        return x

    @ray.remote
    def fetch(box):
        return ray.get(box[0][0])  # a ref two levels deep: the task gets it itself

    ref = ray.put(value)
    for got in (ray.get(ref), ray.get(echo.remote(value)), ray.get(echo.remote(ref)),
                ray.get(fetch.remote([[ref]]))):
        assert _same(value, got), kind


def test_memoryview_comes_back_as_bytes(ray):
    assert ray.get(ray.put(memoryview(b"z" * BIG))) == b"z" * BIG


def test_put_of_a_ref_is_refused_as_in_ray(ray):
    ref = ray.put(1)
    with pytest.raises(TypeError, match="Calling 'put' on an ObjectRef is not allowed"):
        ray.put(ref)
    assert ray.get(ray.get(ray.put([ref]))[0]) == 1  # wrapped in a list it is fine


def _session_shm_bytes():
    """Bytes of the session's segments but the warm ones: free (kept for reuse,
    bounded by the pool's budget) or the reserve's being made."""
    prefix = _context.runtime.prefix
    total = 0
    for name in os.listdir("/dev/shm"):
        if name.startswith(prefix) and not _warm(name):
            try:
                total += os.path.getsize(f"/dev/shm/{name}")
            except FileNotFoundError:  # freed since listdir: it holds nothing now
                pass
    return total


def _warm(name):
    return name.rpartition(_shm.FREE_MARK)[2].isdigit() or name.endswith(RESERVE_MARK)


def test_put_and_drop_in_a_loop_runs_in_constant_memory(ray):
    array = np.ones(100 * 1024 * 1024 // 8)  # 100 MB
    peak = peak_warm = 0
    for i in range(200):
        ref = ray.put(array)
        assert ray.get(ref)[i] == 1.0
        del ref
        gc.collect()
        peak = max(peak, _session_shm_bytes())
        peak_warm = max(peak_warm, _context.runtime.segments.free_bytes())
    # one 100 MB object at any time; kept warm: the one freed, and the reserve's spare
    assert peak < 1.5 * array.nbytes, peak
    assert peak_warm < 2.5 * array.nbytes, peak_warm


def test_a_dropped_task_result_frees_its_memory(ray):
    @ray.remote
    def make():
        return np.ones(50 * 1024 * 1024 // 8)

    before = _session_shm_bytes()
    ref = make.remote()
    assert ray.get(ref).sum() == 50 * 1024 * 1024 // 8
    held = _session_shm_bytes()
    assert held - before >= 50 * 1024 * 1024
    del ref
    gc.collect()
    deadline = time.monotonic() + 5  # the background thread frees it within ~20 ms
    while _session_shm_bytes() > before + 1024 * 1024 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _session_shm_bytes() <= before + 1024 * 1024


MB = 1024 * 1024


def _spill_files():
    return os.listdir(_context.runtime.store.spill_directory) \
        if os.path.isdir(_context.runtime.store.spill_directory) else []


def test_a_full_store_spills_to_disk_and_restores_on_get(fresh):
    fresh.init(num_cpus=2, object_store_memory=50 * MB)
    arrays = [np.full(20 * MB // 8, float(i)) for i in range(6)]
    refs = [fresh.put(a) for a in arrays]  # 120 MB, all still referenced
    stats = _context.runtime.store.statistics()
    assert stats.shm_bytes <= 50 * MB and stats.spilled >= 3
    assert len(_spill_files()) == stats.spilled
    assert _session_shm_bytes() <= 50 * MB + MB
    for i, ref in enumerate(refs):  # each comes back, whatever was spilled meanwhile
        assert fresh.get(ref)[123] == float(i)

    @fresh.remote
    def read(x):
        return float(x[7])

    @fresh.remote
    def fetch(box):
        return float(fresh.get(box[0][0])[8])  # the task asks for it itself

    assert fresh.get([read.remote(r) for r in refs], timeout=60) == [float(i) for i in range(6)]
    assert [fresh.get(fetch.remote([[r]]), timeout=60) for r in refs] == \
        [float(i) for i in range(6)]
    directory = _context.runtime.store.spill_directory
    fresh.shutdown()
    assert not os.path.exists(directory)


def test_task_results_beyond_the_capacity_spill_too(fresh):
    fresh.init(num_cpus=2, object_store_memory=50 * MB)

    @fresh.remote
    def make(i):
        return np.full(20 * MB // 8, float(i))

    refs = [make.remote(i) for i in range(5)]
    fresh.wait(refs, num_returns=5, timeout=60)
    assert _context.runtime.store.statistics().shm_bytes <= 50 * MB
    assert [float(fresh.get(r)[3]) for r in refs] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_an_object_larger_than_the_store_is_refused_with_sizes(fresh):
    fresh.init(num_cpus=2, object_store_memory=10 * MB)
    with pytest.raises(ObjectStoreFullError, match=r"larger than the object store's capacity "
                                                   r"\(object_store_memory\) of 10,485,760"):
        fresh.put(np.zeros(20 * MB // 8))

    @fresh.remote
    def too_big():
        return np.zeros(20 * MB // 8)

    with pytest.raises(ObjectStoreFullError, match="larger than the object store's capacity"):
        fresh.get(too_big.remote(), timeout=60)
    assert fresh.get(fresh.put(np.ones(MB // 8))).sum() == MB // 8  # the store still works


def test_a_dev_shm_too_small_for_the_store_falls_back_to_files(fresh, monkeypatch):
    # As in a default Docker container (64 MB of /dev/shm): the objects go to files of a
    # session directory, mapped the same way by every process, with one warning.
    from shmray import _shm

    monkeypatch.setattr(_shm, "shm_size", lambda: 64 * MB)
    with pytest.warns(UserWarning, match="objects go to files"):
        fresh.init(num_cpus=2, object_store_memory=200 * MB)
    directory = os.path.dirname(_context.runtime.object_prefix)
    assert os.path.isdir(directory)
    array = np.arange(10 * MB // 8, dtype=np.float64)
    ref = fresh.put(array)
    assert os.listdir(directory)  # the put's segment is a file there

    @fresh.remote
    def twice(x):
        return x * 2  # a large result: the worker writes it there too

    doubled = fresh.get(twice.remote(ref), timeout=60)
    assert doubled[12345] == 2 * 12345.0 and fresh.get(ref)[7] == 7.0
    fresh.shutdown()
    assert not os.path.exists(directory)


def test_per_object_statistics(fresh):
    fresh.init(num_cpus=2)

    @fresh.remote
    def make_big():
        return np.zeros(2 * MB // 8)

    big = fresh.put(np.ones(3 * MB // 8))
    made = make_big.remote()
    small = fresh.put("tiny")
    fresh.wait([made], timeout=60)
    infos = {i.object_id: i for i in _context.runtime.store.objects()}
    put_info, made_info, small_info = infos[big.hex()], infos[made.hex()], infos[small.hex()]
    assert put_info.where == "shared memory" and put_info.size >= 3 * MB
    assert put_info.created_by == "put"
    assert put_info.driver_refs == 1 and put_info.reference_count == 1
    assert made_info.created_by.endswith("make_big") and made_info.size >= 2 * MB
    assert small_info.where == "inline" and small_info.size < 1024
    assert list(infos) == sorted(infos, key=lambda k: -infos[k].size)  # largest first
