"""shmray._crecords: TaskSpec's fields and ObjectRef's counting, the two C types the
driver makes once per task (csrc/recordsmodule.c). Edge cases of both, in-process;
the last test runs this whole file again on a build under AddressSanitizer."""
from __future__ import annotations

import copy
import gc
import os
import pathlib
import pickle
import re
import shutil
import subprocess
import sys
import sysconfig
import weakref

import pytest

# Set in the AddressSanitizer run (test_the_c_types_under_address_sanitizer), whose
# build of the module is loaded in place of the installed one before anything else.
_ASAN_BUILD = os.environ.get("SHMRAY_CRECORDS_BUILD")
if _ASAN_BUILD:
    assert sys.modules["shmray._crecords"].__file__ == _ASAN_BUILD, "not the sanitized build"

from shmray._crecords import RefBase, TaskSpecBase
from shmray._driver.actors import ActorCallSpec
from shmray._driver.spec import TaskSpec
from shmray._object_ref import ObjectRef, _hooks

pytestmark = pytest.mark.timeout(60)


class Options:
    request = (("CPU", 1.0),)
    num_returns = 1


def make_spec(task_id=1 << 16):
    return TaskSpec(task_id, 7, "f", Options(), (0, b"x", ()), None, True)


def test_a_spec_has_its_arguments_and_the_documented_defaults():
    options = Options()
    spec = TaskSpec(1 << 16, 7, "f", options, (0, b"x", ()), [5], False)
    assert (spec.task_id, spec.fn_id, spec.name, spec.options) == (1 << 16, 7, "f", options)
    assert spec.request is options.request and spec.queue is options.request
    assert spec.num_returns == 1 and spec.deps == [5] and spec.owned is False
    assert (spec.unresolved, spec.attempt) == (0, 0)
    assert spec.helping is spec.queued is spec.cancelled is spec.simple is False
    assert spec.pipelinable is True
    for name in ("worker", "lent", "held", "parent", "pinned", "env", "retry_exceptions"):
        assert getattr(spec, name) is None, name
    assert spec.actor is None and spec.creates is False  # (TaskSpec's class attributes)
    assert spec.return_ids() == [1 << 16] and isinstance(spec, TaskSpecBase)


def test_spec_fields_read_and_write_as_slots_did():
    spec = make_spec()
    spec.attempt += 1
    spec.worker = "w"
    spec.queue = ("req", "env")
    assert (spec.attempt, spec.worker, spec.queue) == (1, "w", ("req", "env"))
    with pytest.raises(AttributeError):
        spec.no_such_field = 1  # no __dict__: a typo fails as with __slots__
    del spec.worker
    with pytest.raises(AttributeError):
        spec.worker  # (a deleted field is unset, as a slot is)


def test_spec_refuses_the_wrong_arguments():
    with pytest.raises(TypeError):
        TaskSpec(1, 2, "f", Options(), (0, b"", ()), None)  # six
    with pytest.raises(TypeError):
        TaskSpec(1, 2, "f", Options(), (0, b"", ()), None, True, 8)  # eight
    with pytest.raises(TypeError, match="positional"):
        TaskSpec(1, 2, "f", Options(), (0, b"", ()), None, owned=True)
    with pytest.raises(AttributeError):
        TaskSpec(1, 2, "f", object(), (0, b"", ()), None, True)  # options without a request


def test_an_actor_call_spec_adds_its_slots_to_the_c_fields():
    call = ActorCallSpec(1 << 16, 3, "m", Options(), (0, b"", ()), None, True, "actor",
                         caller=2, creates=True)
    assert (call.actor, call.caller, call.creates, call.sent) == ("actor", 2, True, False)
    assert call.request == Options.request and call.attempt == 0


def test_a_spec_in_a_cycle_with_its_worker_is_collected():
    class Worker:
        pass

    spec, w = make_spec(), Worker()
    spec.worker, w.inflight = w, [spec]
    gone = weakref.ref(w)
    del spec, w
    gc.collect()
    assert gone() is None


def test_many_specs_leave_no_memory_behind():
    gc.collect()
    before = len(gc.get_objects())
    for i in range(20_000):
        spec = make_spec(i << 16)
        spec.deps = [i]
    del spec
    gc.collect()
    assert len(gc.get_objects()) - before < 100


@pytest.fixture
def counted():
    """The refs' hooks pointed at two lists for the test."""
    created, dropped = [], []
    saved = _hooks.created, _hooks.dropped
    _hooks.created, _hooks.dropped = created.append, dropped.append
    try:
        yield created, dropped
    finally:
        _hooks.created, _hooks.dropped = saved


def test_a_ref_is_counted_once_when_made_and_once_when_dropped(counted):
    created, dropped = counted
    ref = ObjectRef(5)
    same = copy.copy(ref)
    assert created == [5, 5] and dropped == []
    del ref
    assert dropped == [5]
    del same
    assert dropped == [5, 5]


def test_a_counted_ref_skips_the_created_hook_only(counted):
    created, dropped = counted
    ObjectRef(9, True)
    ObjectRef(10, _counted=True)
    ObjectRef(oid=11)
    assert created == [11] and dropped == [9, 10, 11]


def test_a_ref_made_by_new_alone_is_never_counted(counted):
    created, dropped = counted
    half = ObjectRef.__new__(ObjectRef)
    with pytest.raises(AttributeError):
        half._id
    del half
    assert created == dropped == []


def test_a_ref_cannot_be_initialised_twice_nor_have_its_id_changed(counted):
    ref = ObjectRef(3)
    with pytest.raises(TypeError, match="already"):
        ref.__init__(4)
    with pytest.raises(AttributeError):
        ref._id = 4
    with pytest.raises(TypeError):
        ObjectRef()
    with pytest.raises(TypeError):
        ObjectRef(1, True, 3)
    assert ref._id == 3


def test_refs_work_as_before_weakrefs_pickling_equality(counted):
    ref = ObjectRef(1 << 20)
    alive = weakref.ref(ref)
    back = pickle.loads(pickle.dumps(ref))
    assert back == ref and hash(back) == hash(ref) and back is not ref
    assert alive() is ref and isinstance(ref, RefBase)
    assert not gc.is_tracked(ref)  # (it holds an int: the collector never visits it)
    del ref, back
    assert alive() is None


def test_no_hooks_installed_counts_nothing():
    saved = _hooks.created, _hooks.dropped
    _hooks.created = _hooks.dropped = None
    try:
        ObjectRef(1)
    finally:
        _hooks.created, _hooks.dropped = saved


def test_a_failing_drop_hook_is_reported_and_keeps_the_exception_in_flight(counted):
    reported = []
    saved_hook, saved_dropped = sys.unraisablehook, _hooks.dropped

    def fail(oid):
        raise RuntimeError(f"hook failed for {oid}")

    sys.unraisablehook = reported.append
    _hooks.dropped = fail
    try:
        try:
            ref = ObjectRef(8)
            raise ValueError("in flight")
        except ValueError as e:
            del ref  # dropped while an exception is being handled
            assert str(e) == "in flight" and sys.exc_info()[0] is ValueError
    finally:
        sys.unraisablehook, _hooks.dropped = saved_hook, saved_dropped
    assert [str(r.exc_value) for r in reported] == ["hook failed for 8"]


def test_a_failing_created_hook_fails_the_construction(counted):
    saved = _hooks.created

    def fail(oid):
        raise RuntimeError("no")

    _hooks.created = fail
    try:
        with pytest.raises(RuntimeError):
            ObjectRef(4)
    finally:
        _hooks.created = saved


def test_the_lock_behaves_as_threading_lock():
    import threading
    import time

    from shmray._crecords import Lock

    lock = Lock()
    assert not lock.locked() and lock.acquire() is True and lock.locked()
    assert lock.acquire(False) is False and lock.acquire(blocking=False) is False
    start = time.monotonic()
    assert lock.acquire(timeout=0.05) is False and time.monotonic() - start >= 0.04
    got = []
    waiter = threading.Thread(target=lambda: got.append(lock.acquire(timeout=5)))
    waiter.start()
    time.sleep(0.05)
    lock.release()  # the waiter takes it
    waiter.join(5)
    assert got == [True] and lock.locked()
    threading.Thread(target=lock.release).start()  # any thread may release it
    deadline = time.monotonic() + 5
    while lock.locked() and time.monotonic() < deadline:
        time.sleep(0.001)
    with lock:
        assert lock.locked()
    assert not lock.locked()
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        lock.release()
    for args, kwargs, error in [((False, 1.0), {}, ValueError), ((), {"timeout": -2}, ValueError),
                                ((1, 2, 3), {}, TypeError), ((), {"block": True}, TypeError),
                                ((True,), {"blocking": True}, TypeError)]:
        with pytest.raises(error):
            lock.acquire(*args, **kwargs)
    with pytest.raises(TypeError):
        Lock(1)
    held = Lock()
    held.acquire()
    del held  # freed while held: nothing is left behind


def test_a_signal_handler_runs_while_the_lock_waits_and_may_raise():
    import signal
    import threading

    from shmray._crecords import Lock

    lock = Lock()
    lock.acquire()
    ran = []

    def handler(signum, frame):
        ran.append(signum)
        if len(ran) == 2:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1))
        timer.start()
        assert lock.acquire(timeout=0.3) is False  # a handler that returns: it waits on
        timer.join()
        assert ran == [signal.SIGUSR1]
        timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            lock.acquire()  # one that raises: the wait ends with it
        timer.join()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert lock.locked()
    lock.release()


def test_sections_base_holds_the_fields():
    from shmray._crecords import SectionsBase
    from shmray._driver.interrupts import Sections

    s = Sections()
    assert isinstance(s, SectionsBase) and s.depth == 0 and s.pending is False
    s.depth += 2
    s.pending = True
    assert s.depth == 2 and s.pending is True
    with pytest.raises(TypeError):
        s.depth = "1"


def test_status_words_write_the_layout_the_readers_read():
    from shmray import _ring, _status_area as sa

    mm = bytearray(_ring.CHANNEL_BYTES)
    status = sa.WorkerStatus(mm, 4242, 1)
    task = (7 << 100) | (5 << 64) | 3
    status.begin(task, 11, 1_000)
    w = sa.read_worker(mm)
    assert (w["pid"], w["core"], w["state"], w["task_id"], w["fn_id"], w["since_ns"]) == \
        (4242, 1, "running", f"{task:032x}", 11, 1_000)
    status.end(task, 11, 1_000, 2_000, 3, None)
    status.begin(task + 1, 12, 3_000)
    status.end(task + 1, 12, 3_000, 4_000, 0, "KeyError")
    status.end(task + 2, 13, 5_000, 6_000, 65535, "É" * 20)  # cut at 21 bytes, as Python's
    assert sa.read_worker(mm)["state"] == "idle" and status.done == 3
    assert sa.read_history(mm, 4242) == [
        (task, 11, 3, (4242, 1_000, 2_000), None),
        (task + 1, 12, 0, (4242, 3_000, 4_000), "KeyError"),
        (task + 2, 13, 65535, (4242, 5_000, 6_000), ("É" * 20).encode()[:21].decode(
            errors="replace"))]
    for i in range(_ring.HISTORY_SLOTS):  # the ring wraps: the latest records are kept
        status.end(i, 1, i, i + 1, 0, None)
    rows = sa.read_history(mm, 4242)
    assert len(rows) == _ring.HISTORY_SLOTS and rows[-1][0] == _ring.HISTORY_SLOTS - 1
    assert sa.read_worker(mm)["tasks_done"] == _ring.HISTORY_SLOTS + 3


def test_status_words_refuse_what_does_not_fit():
    from shmray._crecords import StatusWordsBase

    with pytest.raises(ValueError, match="do not fit"):
        StatusWordsBase(bytearray(100), 0, 64, 4)
    with pytest.raises(BufferError, match="not writable"):
        StatusWordsBase(b"read-only" * 100, 0, 64, 4)
    s = StatusWordsBase(bytearray(64 + 4 * 64), 0, 64, 4)
    with pytest.raises(TypeError, match="initialised already"):
        s.__init__(bytearray(1000), 0, 64, 4)
    with pytest.raises(TypeError, match=r"begin\(task_id, fn_id, now_ns\)"):
        s.begin(1, 2)
    with pytest.raises(TypeError, match="ints"):
        s.begin("1", 2, 3)
    with pytest.raises(OverflowError):
        s.end(-1, 2, 3, 4, 0, None)
    with pytest.raises(TypeError, match="str or None"):
        s.end(1, 2, 3, 4, 0, b"KeyError")
    with pytest.raises(ValueError, match="not initialised"):
        StatusWordsBase.__new__(StatusWordsBase).begin(1, 2, 3)
    assert s.done == 0  # nothing written by the refused calls


ROOT = pathlib.Path(__file__).resolve().parent.parent
# setup.py's sources of _crecords (csrc/recordsmodule.c and the rest of its list)
CRECORDS_SOURCES = re.findall(r'"csrc/([a-z_]+\.c)"', re.search(
    r'"shmray\._crecords",\s*sources=\[([^\]]*)\]', (ROOT / "setup.py").read_text()).group(1))
# the lane's, run in the same build
LANE_TESTS = [str(ROOT / "tests" / name)
              for name in ("test_lane.py", "test_lane_forms.py", "test_actor_lane.py",
                           "test_generator_lane.py")]


def _libasan():
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    path = subprocess.run([gcc, "-print-file-name=libasan.so"], capture_output=True,
                          text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


@pytest.mark.timeout(180)
def test_the_c_types_under_address_sanitizer(tmp_path):
    """This file's tests and test_lane's (a session: its workers too), on _crecords built
    with -fsanitize=address: any out-of-bounds access, use after free or double free in
    the types, the ids or the lane aborts the run."""
    if _ASAN_BUILD:
        pytest.skip("(this is the run under AddressSanitizer)")
    libasan = _libasan()
    if libasan is None:
        pytest.skip("gcc with libasan is not available")
    so = tmp_path / ("_crecords" + sysconfig.get_config_var("EXT_SUFFIX"))
    include = sysconfig.get_paths()["include"]
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-g", "-fsanitize=address",
                    "-fno-omit-frame-pointer", "-std=gnu11", f"-I{include}",
                    *(str(ROOT / "csrc" / c) for c in CRECORDS_SOURCES), "-o", str(so)],
                   check=True)
    env = dict(os.environ, SHMRAY_CRECORDS_BUILD=str(so), LD_PRELOAD=libasan,
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1")  # (Python's own leaks)
    preload_then_test = (
        "import importlib.util, sys, pytest\n"
        f"spec = importlib.util.spec_from_file_location('shmray._crecords', {str(so)!r})\n"
        "module = sys.modules['shmray._crecords'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', {__file__!r}, *{LANE_TESTS!r}]))\n")
    run = subprocess.run([sys.executable, "-c", preload_then_test], env=env,
                         capture_output=True, text=True, cwd=ROOT, timeout=170)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "AddressSanitizer" not in run.stderr
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed and int(passed.group(1)) > 20 and "1 skipped" in run.stdout  # (both files)
