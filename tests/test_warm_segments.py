"""Warm segments (issue 20): a freed object's segment is written again, by the driver
or a worker, once no process maps it; never while one does; the pre-faulted reserve
is bounded, visible, and given back under memory pressure; nothing is left behind
by a shutdown or a killed worker."""
from __future__ import annotations

import json
import mmap
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from shmray import _context, _mappings, _segment_writer, _shm, _warm_reserve
from shmray._protocol import SHM
from shmray._warm_reserve import RESERVE_MARK

pytestmark = pytest.mark.timeout(120)

MB = 1 << 20
N = 2 * MB // 8  # float64 elements: 2 MB arrays


def _rt():
    return _context.runtime


def _segment_of(ref):
    stored = _rt().store.values[ref._id]
    assert stored[0] == SHM
    return stored[1]


def _ino(name):
    return os.stat(_shm.path_of(name)).st_ino


def _free_inodes():
    """The inodes of the free segments (a worker may take one meanwhile)."""
    found = set()
    for f in _rt().segments.free_segments():
        try:
            found.add(_ino(f.name))
        except FileNotFoundError:
            pass
    return found


def _own_segments():
    return set(_shm.list_names(_rt().prefix))


def _eventually(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def no_reserve(monkeypatch):
    """No reserve segment is made meanwhile (and none is free): what a write takes is
    a segment freed by the test."""
    monkeypatch.setattr(_warm_reserve, "RESERVE_SEGMENTS", 0)
    assert _eventually(lambda: not any(n.endswith(RESERVE_MARK) for n in _own_segments()))
    _rt().segments.drop_free()


@pytest.fixture
def one_worker(fresh):
    fresh.init(num_cpus=1)
    return fresh


# ------------------------------------------------------------ reuse happens

def test_a_put_read_by_tasks_is_written_again_once_they_are_done(ray, no_reserve):
    @ray.remote
    def element(x, i):
        return float(x[i])

    ref = ray.put(np.full(N, 1.0))
    first = _ino(_segment_of(ref))
    assert ray.get([element.remote(ref, i) for i in range(8)]) == [1.0] * 8
    del ref  # the tasks mapped it and are done: nobody maps it
    ref = ray.put(np.full(N, 2.0))
    assert _ino(_segment_of(ref)) == first  # the same memory, written again
    assert ray.get([element.remote(ref, i) for i in range(8)]) == [2.0] * 8


def test_task_results_go_into_freed_segments(ray, no_reserve):
    @ray.remote
    def make(value):
        return np.full(N, value)

    inodes = []
    for i in range(6):
        ref = make.remote(float(i))
        assert ray.get(ref).min() == i
        inodes.append(_ino(_segment_of(ref)))
        del ref
        assert _eventually(lambda: _rt().segments.free_segments())  # freed, renamed free
    assert len(set(inodes)) <= 2, inodes  # (each of the two workers may write one first)


def test_a_generators_items_go_into_freed_segments(ray, no_reserve):
    @ray.remote(_generator_backpressure_num_objects=2)
    def items(n):
        for i in range(n):
            yield np.full(N, float(i))

    inodes = set()
    for i, ref in enumerate(items.remote(20)):
        array = ray.get(ref)
        assert array[0] == array[-1] == i
        inodes.add(_ino(_segment_of(ref)))
        del array, ref
    assert len(inodes) <= 6, len(inodes)  # 20 items, a few segments


def test_puts_inside_a_task_go_into_freed_segments(ray, no_reserve):
    @ray.remote
    def put_many(n, prefix):
        writer = _segment_writer.installed  # this worker's
        created, reused = writer.created, writer.reused
        for i in range(n):
            ref = ray.put(np.full(N, float(i)))
            assert ray.get(ref)[0] == i
            del ref
            ray.put(0)  # a message: it carries the release of the ref just dropped
            deadline = time.monotonic() + 10
            while not _shm.free_segments(prefix) and time.monotonic() < deadline:
                time.sleep(0.005)  # until the driver renamed it free
        return writer.created - created, writer.reused - reused

    created, reused = ray.get(put_many.remote(10, _rt().object_prefix))
    assert created <= 1 and reused >= 9, (created, reused)


# ------------------------------------------------- never while a reader maps it

def test_an_array_the_driver_holds_keeps_its_contents_until_dropped(ray, no_reserve):
    @ray.remote
    def make(value):
        return np.full(N, value)

    ref = ray.put(np.full(N, 1.0))
    first = _ino(_segment_of(ref))
    held = ray.get(ref)  # maps the segment privately
    del ref
    for i in range(4):  # same size, by the driver and by workers
        others = [ray.put(np.full(N, 100.0 + i)), make.remote(200.0 + i)]
        assert [ray.get(r)[5] for r in others] == [100.0 + i, 200.0 + i]
        assert first not in {_ino(_segment_of(r)) for r in others}
        del others
    assert held.min() == held.max() == 1.0
    assert _rt().segments.statistics().draining >= 1
    del held  # the last mapping: the segment is free now, and written again
    assert _eventually(lambda: _rt().segments.statistics().draining == 0)
    assert _eventually(lambda: _rt().segments.free_segments())
    assert first in _free_inodes()
    ref = ray.put(np.full(N, 3.0))
    assert _ino(_segment_of(ref)) == first


def _keeper(ray):
    @ray.remote
    class Keeper:
        def keep(self, x):
            self.x = x  # its mapping outlives the call
            return float(x[0])

        def get_and_keep(self, box):
            self.x = ray.get(box[0][0])  # a get inside the worker (an rpc's reply)
            return float(self.x[0])

        def contents(self):
            return float(self.x.min()), float(self.x.max())

        def drop(self):
            self.x = None

        def pid(self):
            return os.getpid()

    return Keeper


@pytest.mark.parametrize("how", ["argument", "get inside"])
def test_an_array_a_worker_holds_keeps_its_contents_until_dropped(ray, no_reserve, how):
    @ray.remote
    def make(value):
        return np.full(N, value)

    keeper = _keeper(ray).remote()
    ref = ray.put(np.full(N, 1.0))
    first = _ino(_segment_of(ref))
    if how == "argument":
        assert ray.get(keeper.keep.remote(ref)) == 1.0
    else:
        assert ray.get(keeper.get_and_keep.remote([[ref]])) == 1.0
    del ref
    for i in range(4):
        others = [ray.put(np.full(N, 100.0 + i)), make.remote(200.0 + i)]
        assert [ray.get(r)[5] for r in others] == [100.0 + i, 200.0 + i]
        assert first not in {_ino(_segment_of(r)) for r in others}
        del others
    assert ray.get(keeper.contents.remote()) == (1.0, 1.0)
    ray.get(keeper.drop.remote())  # its Maps record (unmapped) comes with the reply
    assert _eventually(lambda: first in _free_inodes())
    ray.kill(keeper)


def test_a_killed_reader_maps_nothing_any_more(ray, no_reserve):
    keeper = _keeper(ray).remote()
    ref = ray.put(np.full(N, 1.0))
    first = _ino(_segment_of(ref))
    assert ray.get(keeper.keep.remote(ref)) == 1.0
    del ref
    assert _eventually(lambda: _rt().segments.statistics().draining >= 1)
    ray.kill(keeper)  # its process is killed: its mapping goes with it
    assert _eventually(lambda: first in _free_inodes())


# ------------------------------------------------------------------ the reserve

def test_the_reserve_is_pre_faulted_bounded_and_visible(fresh):
    fresh.init(num_cpus=1, object_store_memory=256 * MB)
    rt = _rt()
    big = np.ones(100 * MB // 8)
    first = fresh.put(big)  # kept: nothing freed to reuse; the reserve makes a spare
    assert _eventually(lambda: rt.segments.statistics().reserve_segments == 1)
    stats = rt.segments.statistics()
    assert 100 * MB <= stats.reserve_bytes < 101 * MB and stats.prefaulted == 1
    assert rt.store.shm_bytes + stats.free_bytes <= rt.store.capacity
    second = fresh.put(big)  # takes the spare, pre-faulted
    stats = rt.segments.statistics()
    assert stats.reserve_segments == 0 and stats.reused >= 1 and stats.created == 1
    time.sleep(2 * _warm_reserve.TICK)  # 200 MB held: no room in 256 MB for another
    stats = rt.segments.statistics()
    assert stats.prefaulted == 1 and rt.store.shm_bytes + stats.free_bytes <= 256 * MB

    out = subprocess.run([sys.executable, "-m", "shmray", "memory", "--session",
                          str(os.getpid()), "--json"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    warm = json.loads(out.stdout)["store"]["warm"]
    assert warm["prefaulted"] == 1 and warm["reused"] >= 1 and warm["budget"] > 0
    text = subprocess.run([sys.executable, "-m", "shmray", "memory", "--session",
                           str(os.getpid())], capture_output=True, text=True, timeout=60)
    assert "warm segments:" in text.stdout and "pre-faulted" in text.stdout
    del first, second


def test_memory_pressure_returns_every_free_segment(fresh, monkeypatch):
    fresh.init(num_cpus=1)
    rt = _rt()
    ref = fresh.put(np.ones(4 * MB // 8))
    del ref
    fresh.put(0)  # freed: kept warm
    assert _eventually(lambda: rt.segments.free_bytes() > 0)
    # Under pressure whenever MemAvailable < MemTotal: always, on any machine.
    monkeypatch.setattr(_warm_reserve, "PRESSURE_FRACTION", 1.01)
    monkeypatch.setattr(_warm_reserve, "REFILL_FRACTION", 1.01)
    ref = fresh.put(np.ones(3 * MB // 16))  # (too small to take it) the thread looks now
    assert _eventually(lambda: rt.segments.statistics().pressure)
    assert _eventually(lambda: rt.segments.free_bytes() == 0)
    assert rt.segments.statistics().returned >= 1
    del ref
    fresh.put(0)
    time.sleep(2 * _warm_reserve.TICK)
    stats = rt.segments.statistics()
    assert stats.free_segments == 0 and stats.reserve_segments == 0  # none kept, none made
    monkeypatch.undo()  # MemAvailable above 1/5 of MemTotal again: pressure ends
    fresh.put(np.ones(4 * MB // 8))
    assert _eventually(lambda: not rt.segments.statistics().pressure)


def test_the_reserve_waits_while_a_task_runs(fresh, tmp_path):
    fresh.init(num_cpus=1)
    rt = _rt()
    started, stop = tmp_path / "started", tmp_path / "stop"

    @fresh.remote
    def busy():
        started.touch()
        while not stop.exists():
            time.sleep(0.01)

    running = busy.remote()
    assert _eventually(started.exists)
    kept = fresh.put(np.ones(4 * MB // 8))  # demand, and nothing freed to reuse
    time.sleep(4 * _warm_reserve.TICK)
    assert rt.segments.statistics().prefaulted == 0  # the session's work comes first
    stop.touch()
    fresh.get(running)
    assert _eventually(lambda: rt.segments.statistics().prefaulted == 1)
    del kept


def test_memory_available_reads_proc_meminfo():
    available, total = _warm_reserve.memory_available()
    assert 0 < available <= total


# ------------------------------------------------------------------ nothing left

def test_shutdown_leaves_no_segment(fresh):
    fresh.init(num_cpus=2)
    rt = _rt()
    prefix = rt.prefix

    @fresh.remote
    def make(value):
        return np.full(N, value)

    held = fresh.get(fresh.put(np.full(N, 7.0)))  # freed, still mapped: draining
    for i in range(4):
        fresh.get(make.remote(float(i)))  # workers' segments, kept and freed
    keep = fresh.put(np.full(8 * MB // 8, 1.0))  # live; demand for the reserve
    assert _eventually(lambda: rt.segments.statistics().reserve_segments
                       + rt.segments.statistics().free_segments >= 1)
    fresh.shutdown()
    assert _shm.list_names(prefix) == []
    assert held.min() == held.max() == 7.0  # a reader's pages stay its own
    del keep


def test_a_killed_workers_segments_go(one_worker):
    ray = one_worker
    prefix = _rt().prefix

    @ray.remote
    def make(value):
        return np.full(N, value), os.getpid()

    refs = [make.remote(float(i)) for i in range(3)]
    kept = ray.get(refs[0])  # a result it wrote, held (the object lives on)
    pid = ray.get(refs[-1])[1]
    del refs
    ray.put(0)
    mine = f"{_rt().object_prefix}w{pid}_"
    assert _eventually(lambda: any(n.startswith(mine) and _shm.FREE_MARK in n
                                   for n in _own_segments()))  # freed, free
    os.kill(pid, signal.SIGKILL)
    left = lambda: {n for n in _own_segments() if n.startswith(mine)}
    live = {s[1] for s in _rt().store.values.values() if s[0] == SHM}
    assert _eventually(lambda: left() <= live)  # only what objects still hold
    assert kept[0].min() == 0.0
    ray.shutdown()
    assert _shm.list_names(prefix) == []


def test_a_workers_mapping_of_a_reclaimed_segment_is_closed(one_worker):
    ray = one_worker

    @ray.remote
    def make(value):
        return np.full(N, value)

    @ray.remote
    def kept():
        return len(_segment_writer.installed._kept)

    ref = make.remote(1.0)
    ray.get(ref)
    del ref
    ray.put(0)
    assert _eventually(lambda: _rt().segments.free_segments())
    assert ray.get(kept.remote()) == 1
    _rt().segments.drop_free()  # unlinked and truncated: its memory is back already
    assert _eventually(lambda: ray.get(kept.remote()) == 0,
                       3 * _segment_writer.WORKER_CHECK_EVERY)


# ------------------------------------------------------------------ the parts

def test_mappings_report_changes_and_a_forked_child_forgets_its_parents():
    _mappings.drain()
    mm = mmap.mmap(-1, 4096)
    _mappings.track("test_segment", mm)
    other = mmap.mmap(-1, 4096)
    _mappings.track("test_brief", other)
    del other  # mapped and gone between two drains: nothing to say
    assert _mappings.drain() == (["test_segment"], [])
    assert _mappings.maps("test_segment")
    pid = os.fork()
    if pid == 0:  # the parent's mapping dies here: not this process's to report
        ok = False
        try:
            del mm
            ok = _mappings.drain() == ([], []) and not _mappings.maps("test_segment")
        finally:
            os._exit(0 if ok else 1)
    assert os.waitpid(pid, 0)[1] == 0
    del mm
    assert _mappings.drain() == ([], ["test_segment"])


def test_a_free_segment_is_claimed_once_and_reclaimed_at_once():
    base = f"{_shm.PREFIX}{os.getpid()}_claimtest_"
    mm = _shm.create(base + "a", MB)
    try:
        mm[:] = b"x" * MB
        free = _shm.free_name(base + "a", MB)
        assert _shm.claim(base + "a", free)  # (what the driver does when it frees it)
        assert (free, MB) in _shm.free_segments(base)
        assert _shm.claim(free, base + "b")  # one writer gets it ...
        assert not _shm.claim(free, base + "c")  # ... and no other
        assert not _shm.reclaim(free)  # it is b's now: not the driver's to take back
        assert _shm.claim(base + "b", free)
        fd = os.open(_shm.path_of(free), os.O_RDONLY)
        try:
            assert _shm.reclaim(free)  # unlinked, and its pages given back at once,
            assert os.fstat(fd).st_size == 0  # though a writer still maps it
            assert not _shm.claim(free, base + "d")
        finally:
            os.close(fd)
    finally:
        mm.close()
        _shm.unlink_prefix(base)
