"""Shared memory at its limits (issue 15, items 7, 8, 11, 13, 15): a nearly full
/dev/shm, more spilled objects than the store holds, a worker dying while it writes,
a driver left a zombie, a put interrupted halfway.

A nearly full /dev/shm is made in a private mount namespace (unshare -m, then a
small tmpfs over /dev/shm): the script runs there, other processes see nothing.
"""
from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from shmray import _context, _segment_writer, _shm, _status_area
from shmray._protocol import SHM
from shmray._warm_reserve import RESERVE_MARK
from shmray.exceptions import WorkerCrashedError

pytestmark = pytest.mark.timeout(90)
MB = 1 << 20
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _eventually(condition, seconds=10.0):
    """Poll `condition` until it holds (True) or `seconds` pass (False)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# ------------------------------------------------- item 13: a nearly full /dev/shm

def _small_shm_works() -> str | None:
    """Why a private small /dev/shm cannot be made here, or None if it can."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    probe = subprocess.run(["unshare", "-m", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
                           capture_output=True, text=True)
    if probe.returncode:
        return f"cannot mount a private tmpfs on /dev/shm: {probe.stderr.strip()}"
    return None


def _run_with_small_shm(size: str, code: str, timeout=60) -> dict:
    """Run `code` in a process that sees a tmpfs of `size` as /dev/shm; it prints its
    findings as one JSON line last."""
    why = _small_shm_works()
    if why:
        pytest.skip(why)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run(
        ["unshare", "-m", "sh", "-c",
         f'mount -t tmpfs -o size={size} tmpfs /dev/shm && exec "$0" -c "$1"',
         sys.executable, textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, f"rc={out.returncode}\n{out.stdout}\n{out.stderr}"
    return json.loads(out.stdout.strip().splitlines()[-1])


NEARLY_FULL = """
    import json, os, numpy as np, shmray as ray
    from shmray import _context, _shm
    ray.init(num_cpus=1, object_store_memory=4 << 20)

    @ray.remote
    def pid():
        return os.getpid()

    @ray.remote
    def length(x):
        return len(x)

    @ray.remote
    def make(n):
        return np.ones(n // 8)

    worker = ray.get(pid.remote())
    before = set(os.listdir("/dev/shm"))
    with open("/dev/shm/filler", "wb") as f:  # 200 KB left
        st = os.statvfs("/dev/shm")
        f.write(b"x" * (st.f_bavail * st.f_frsize - 200 * 1024))
    size = 500 * 1024  # below 1 MiB, where the free space was not checked
    found = {}
    for what, attempt in [("put", lambda: ray.put(np.ones(size // 8))),
                          ("argument", lambda: ray.get(length.remote(np.ones(size // 8)))),
                          ("result", lambda: ray.get(make.remote(size)))]:
        try:
            attempt()
            found[what] = "stored"
        except ray.exceptions.ObjectStoreFullError as e:
            found[what] = str(e)
    found["same worker"] = ray.get(pid.remote()) == worker
    found["leftovers"] = sorted(set(os.listdir("/dev/shm")) - before - {"filler"})
    try:
        _shm.create("shmray_probe", size)
        found["create"] = "created"
    except ray.exceptions.ObjectStoreFullError as e:
        found["create"] = str(e)
    found["probe left"] = os.path.exists("/dev/shm/shmray_probe")
    os.unlink("/dev/shm/filler")
    found["after"] = float(ray.get(ray.put(np.ones(size // 8))).sum())
    ray.shutdown()
    print(json.dumps(found))
"""


def test_a_nearly_full_dev_shm_refuses_every_segment_clearly():
    found = _run_with_small_shm("16m", NEARLY_FULL)
    for what in ("put", "argument", "result", "create"):
        assert "512,128 bytes" in found[what] or "512,000 bytes" in found[what], (what, found)
        assert "/dev/shm has" in found[what] and "bytes free" in found[what], (what, found)
    assert found["same worker"]  # the result's worker lived on
    assert found["leftovers"] == [] and not found["probe left"]
    assert found["after"] == 500 * 1024 // 8  # room again: it works


ROOM_COMES = """
    import json, os, threading, time, numpy as np, shmray as ray
    ray.init(num_cpus=1, object_store_memory=4 << 20)

    @ray.remote
    def make(n):
        return np.ones(n // 8)

    ray.get(make.remote(8))
    with open("/dev/shm/filler", "wb") as f:  # 200 KB left
        st = os.statvfs("/dev/shm")
        f.write(b"x" * (st.f_bavail * st.f_frsize - 200 * 1024))
    threading.Timer(0.5, os.unlink, ("/dev/shm/filler",)).start()  # room in 0.5 s
    start = time.monotonic()
    value = ray.get(make.remote(2 << 20))
    print(json.dumps({"sum": float(value.sum()), "waited": time.monotonic() - start}))
    ray.shutdown()
"""


def test_a_result_waits_for_room_in_a_full_dev_shm():
    """A worker's result finds /dev/shm full: it waits for room (the driver spills, or
    something is freed) instead of failing at once (_segment_writer.WORKER_ROOM_WAIT)."""
    found = _run_with_small_shm("16m", ROOM_COMES)
    assert found["sum"] == (2 << 20) // 8
    assert 0.4 < found["waited"] < 2.0


# ------------------------------------- item 15: more spilled objects than the store

def test_reading_more_spilled_objects_than_the_store_holds(fresh):
    fresh.init(num_cpus=2, object_store_memory=10 * MB)
    refs = [fresh.put(np.full(4 * MB // 8, float(i))) for i in range(5)]  # 20 MB
    store = _context.runtime.store
    assert store.statistics().spilled >= 3
    assert [float(v[7]) for v in fresh.get(refs, timeout=60)] == [0.0, 1.0, 2.0, 3.0, 4.0]

    @fresh.remote
    def read_all(box):
        return [float(v[9]) for v in fresh.get(box[0], timeout=60)]

    assert fresh.get(read_all.remote([refs]), timeout=60) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert fresh.get([read_all.remote([[r]]) for r in refs], timeout=60) == \
        [[0.0], [1.0], [2.0], [3.0], [4.0]]
    assert store.shm_bytes <= store.capacity
    directory = store.spill_directory
    del refs
    gc.collect()
    # the objects freed, their files go too (kept while they lived, restored or not)
    assert _eventually(lambda: not os.listdir(directory))


# ------------------------------------- item 8: a worker dying while it writes

def test_a_dead_workers_segments_go_unless_something_reads_them(fresh, tmp_path):
    fresh.init(num_cpus=2)
    gate = tmp_path / "gate"
    out = tmp_path / "child"

    @fresh.remote
    def wait_for(path):
        while not os.path.exists(path):
            time.sleep(0.01)
        return 1

    @fresh.remote
    def child(array, held, dep):  # its arguments: in its dead submitter's segments
        with open(out, "w") as f:
            f.write(f"{array.sum()} {fresh.get(held[0][0]).sum()}")

    @fresh.remote(max_retries=0)
    def dies_while_writing(box):
        from shmray import _ring
        rt = _context.runtime
        held = fresh.put(np.ones(MB))  # a put it sent: kept while the child needs it
        child.remote(np.full(MB, 2.0), [[held]], box[0][0])  # waits for the gate
        _shm.create(rt.new_segment_name(), MB)  # a result it was writing
        _ring.encode(("x", b"0" * (4 * MB)), rt.results, rt.spill_prefix)  # unsent
        os._exit(1)

    blocker = wait_for.remote(str(gate))
    with pytest.raises(WorkerCrashedError):
        fresh.get(dies_while_writing.remote([[blocker]]), timeout=60)
    prefix = _context.runtime.prefix
    left = [n for n in _shm.list_names(prefix) if "_m" in n or "w" in n[len(prefix):]]
    assert len(left) == 2, left  # the put and the child's arguments, nothing else
    gate.touch()
    assert _eventually(lambda: out.exists() and out.read_text(), 30)
    assert out.read_text() == f"{2.0 * MB} {float(MB)}"


def test_a_dead_workers_leftovers_are_found_in_files_and_in_its_rings(tmp_path):
    # Objects in files (a /dev/shm too small for the store), and the driver's large
    # messages that the worker never read: in its task ring, or still in its outbox.
    from collections import deque
    from shmray import _ring
    from shmray._segment_pool import dead_worker_names, drop_unread_large_messages

    prefix = f"{_shm.PREFIX}{os.getpid()}_leftover_"
    control = _ring.ControlArea(prefix + "ctl", create=True)
    channel = _ring.Channel(prefix + "c0", create=True, doorbell=control.doorbell)
    try:
        pid = 4_000_001  # no process has it: only the names matter
        objects = str(tmp_path) + "/"
        for name in (f"w{pid}_1", f"w{pid}_2", f"w{pid}1_1", "o1"):
            (tmp_path / name).touch()

        class Dead:
            pass

        w = Dead()
        w.pid, w.channel, w.ring = pid, channel, channel.tasks
        big = ("x", b"0" * (channel.tasks.max_message + 1))
        w.ring.push(_ring.encode(("small",), w.ring, prefix))
        w.ring.push(_ring.encode(big, w.ring, prefix))
        w.outbox = deque([_ring.encode(big, w.ring, prefix)])
        unread = _shm.list_names(f"{prefix}{os.getpid()}_")  # see _ring.encode
        assert len(unread) == 2
        assert sorted(dead_worker_names(w, objects)) == \
            [objects + f"w{pid}_1", objects + f"w{pid}_2"]
        assert sorted(drop_unread_large_messages(w)) == sorted(unread)
        assert not w.outbox and w.ring.pop(0.0) is None
        assert _shm.list_names(prefix) == [prefix + "c0", prefix + "ctl"]
    finally:
        _shm.unlink_prefix(prefix)


# ------------------------------------- item 11: a driver its parent has not reaped

def _state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


DRIVER = """
    import os, shmray
    shmray.init(num_cpus=1)
    print(shmray._context.runtime.prefix, flush=True)
    os._exit(0)  # no shutdown: its parent does not reap it either
"""


def test_a_zombie_driver_is_dead_to_status_and_cleanup():
    driver = subprocess.Popen([sys.executable, "-c", textwrap.dedent(DRIVER)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        prefix = driver.stdout.readline().strip()
        assert prefix.startswith(_shm.PREFIX)
        assert _eventually(lambda: _state(driver.pid) == "Z")
        assert _shm.list_names(prefix)  # what it left
        assert not _shm.pid_alive(driver.pid)
        assert driver.pid not in [s["driver_pid"] for s in _status_area.list_sessions()]
        status = subprocess.run([sys.executable, "-m", "shmray", "status", "--session",
                                 str(driver.pid)],
                                capture_output=True, text=True, timeout=60, cwd=REPO)
        assert status.returncode != 0 and "running" not in status.stdout
        cleanup = subprocess.run([sys.executable, "-m", "shmray", "cleanup"],
                                 capture_output=True, text=True, timeout=60, cwd=REPO)
        assert cleanup.returncode == 0, cleanup.stderr
        assert _shm.list_names(prefix) == []
        assert not os.path.exists(_shm.session_root(prefix))
    finally:
        driver.wait()
        _shm.unlink_prefix(prefix)


# ------------------------------------- item 7: a put interrupted while it writes

def _object_segments(prefix):
    """The driver's segments (but the one its warm reserve may be making)."""
    return {n for n in _shm.list_names(prefix) if n[len(prefix):].startswith("o")
            and not n.endswith(RESERVE_MARK)}


def _owned(runtime):
    store, pool = runtime.store, runtime.segments
    return ({s[1] for s in store.values.values() if s[0] == SHM}
            | {f.name for f in pool.free_segments()})


@pytest.mark.parametrize("way", ["put", "put into a pooled segment", "task argument"])
def test_an_interrupted_write_leaves_no_segment(fresh, monkeypatch, way):
    fresh.init(num_cpus=1)
    rt = _context.runtime
    if way == "put into a pooled segment":
        ref = fresh.put(np.ones(MB))
        del ref
        gc.collect()
        assert _eventually(lambda: rt.segments.statistics().free_segments == 1)

    def interrupted(*args):
        raise KeyboardInterrupt

    @fresh.remote
    def length(x):
        return len(x)

    monkeypatch.setattr(_segment_writer, "fill_segment", interrupted)
    with pytest.raises(KeyboardInterrupt):
        if way == "task argument":
            length.remote(np.ones(MB))
        else:
            fresh.put(np.ones(MB))
    monkeypatch.undo()
    with rt.lock:
        assert _object_segments(rt.prefix) <= _owned(rt)
    assert fresh.get(length.remote(np.ones(MB)), timeout=60) == MB  # it goes on


def test_temp_dir_answers_as_tempfile_does(tmp_path, monkeypatch):
    # (_shm.temp_dir stands for tempfile.gettempdir, whose import init spares)
    import tempfile

    for var in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert _shm.temp_dir() == str(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))
    monkeypatch.setenv("TMP", str(tmp_path))
    assert _shm.temp_dir() == str(tmp_path)  # the next one that is a directory
    monkeypatch.delenv("TMP")
    assert _shm.temp_dir() == "/tmp"
    tempfile.tempdir = None  # (its cache)
    try:
        assert tempfile.gettempdir() == "/tmp"
    finally:
        tempfile.tempdir = None
