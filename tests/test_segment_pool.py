"""Warm segments for large puts: a freed put's segment written again in place, idle
ones reclaimed, the free ones bounded (see also test_warm_segments.py)."""
from __future__ import annotations

import gc
import os
import pickle
import time

import numpy as np
import pytest

from shmray import _context, _segment_pool, _segment_writer, _serialization as ser, _shm
from shmray import _warm_reserve
from shmray._segment_pool import SegmentPool

MB = 1024 * 1024


def _segments():
    return _context.runtime.segments


def _segment_of(ref):
    stored = _context.runtime.store.values[ref._id]
    assert stored[0] == ser.SHM
    return stored[1]


def _own_segments():
    return {n for n in os.listdir("/dev/shm") if n.startswith(_context.runtime.prefix)}


def test_a_freed_put_is_written_again_in_place(ray):
    before = _segments().statistics()
    a = np.arange(4 * MB // 8, dtype=np.float64)
    for i in range(5):
        ref = ray.put(a + i)
        assert ray.get(ref)[7] == 7 + i
        del ref
        gc.collect()
    after = _segments().statistics()
    assert after.reused - before.reused >= 3
    assert after.created - before.created <= 2


def test_an_array_the_driver_still_holds_keeps_its_segment(ray):
    ref = ray.put(np.full(2 * MB // 8, 1.0))
    held = ray.get(ref)  # maps the segment privately
    del ref
    gc.collect()
    for i in range(3):  # same size: would reuse the segment if it were free
        other = ray.put(np.full(2 * MB // 8, 100.0 + i))
        assert ray.get(other)[0] == 100.0 + i
        del other
    assert held.min() == 1.0 and held.max() == 1.0


def test_idle_free_segments_are_reclaimed(ray):
    ref = ray.put(np.zeros(2 * MB // 8))
    name = _segment_of(ref)
    del ref
    small = ray.put(np.zeros(MB // 32))  # processes the drop; too small to reuse it
    assert _segment_of(small) != name
    free = [n for n in _own_segments() if n.startswith(name + _shm.FREE_MARK)]
    assert free and name not in _own_segments()  # renamed to its free name, kept
    later = time.monotonic() + _warm_reserve.DEMAND_WINDOW + _segment_pool.IDLE_SECONDS + 1
    _segments().trim(later)  # idle, and no demand left for the reserve to keep it
    assert not set(free) & _own_segments()


def test_the_pool_keeps_at_most_its_budget():
    names = iter(f"shmray_{os.getpid()}_pooltest_{i}" for i in range(100))
    pool = SegmentPool(lambda: next(names), max_free_bytes=3 * MB)
    try:
        stored = [pool.write(b"m", [pickle.PickleBuffer(bytearray(MB + 100 * i))])
                  for i in range(5)]
        for s in stored:
            pool.release(s)
        stats = pool.statistics()
        assert stats.free_bytes <= 3 * MB and stats.free_segments == 2
        # a request far smaller than every pooled segment gets a new one
        small = pool.write(b"m", [pickle.PickleBuffer(bytearray(1000))])
        assert small[1] not in {s[1] for s in stored}
        pool.release(small)
    finally:
        pool.clear()
    assert not [n for n in os.listdir("/dev/shm") if "_pooltest_" in n]


def test_clear_at_shutdown_unlinks_the_pool(fresh):
    fresh.init(num_cpus=1)
    ref = fresh.put(np.zeros(2 * MB // 8))
    del ref
    fresh.put(np.zeros(2 * MB // 8))  # reuses, and leaves one live
    prefix = _context.runtime.prefix
    fresh.shutdown()
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]
    assert _shm.list_names(prefix) == []


@pytest.mark.parametrize("extra", [0, 13, 4095, 4097])
def test_buffers_copied_in_parallel_slices_arrive_whole(ray, extra):
    n = _segment_writer.PARALLEL_COPY_MIN + 3 * 4096 + extra
    data = np.random.default_rng(extra).integers(0, 255, n, dtype=np.uint8)
    assert np.array_equal(ray.get(ray.put(data)), data)
    grid = np.random.default_rng(extra + 1).random((n // 8 // 16, 16))
    assert np.array_equal(ray.get(ray.put(grid)), grid)
