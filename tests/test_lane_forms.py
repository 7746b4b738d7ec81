"""What the lane's C reads and writes without a session of the module's: the compact
Done and Tasks messages (they must read back as the records), ids, get's reads
(not_stored, inline_values), Lane.remote after shutdown. The lane in a session:
test_lane.py."""
from __future__ import annotations

import os
import pickle

import pytest

import shmray
from shmray import _crecords, _protocol, _ring, _serialization as ser
from shmray._object_ref import _COUNTER_SHIFT, _ID_SHIFT, new_base_id

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------ the compact Done
def test_the_c_constants_are_the_protocols():
    data = _crecords.pack_done(new_base_id(), (ser.NONE,), 1, 2, None, None, False, 1 << 20)
    assert data[0] == _protocol.DONE_MARK != pickle.dumps(None, protocol=5)[0]
    msg = _ring.decode(data)
    assert msg[0] == _protocol.DONE and msg[2][0][0] == _protocol.INLINE
    item = _ring.decode(_crecords.pack_item(new_base_id(), 3, ser.NONE, None, None, 1 << 20))
    assert item[0] == _protocol.GEN_ITEM and item[2] == 3


def test_a_compact_done_reads_back_as_the_record():
    oid = new_base_id()
    for value in (None, 0, -1, 2**70, "é" * 100, b"\x80\x05", (1, [2, {3: None}])):
        stored = ser.to_stored(value, None)
        data = _crecords.pack_done(oid, (stored,), -5, 2**62, None, None, False, 1 << 20)
        msg = _ring.decode(data)
        assert msg == (_protocol.DONE, oid, (stored,), -5, 2**62, None, None, False)
        assert ser.from_stored(msg[2][0]) == value
    none_done = _ring.decode(_crecords.pack_done(oid, (ser.NONE,), 0, 0, None, None, False, 99))
    assert none_done[2][0] is ser.NONE  # one stored form for every None
    assert _crecords.unpack_done(pickle.dumps((1, 2))) is None


def test_what_has_no_compact_form():
    oid, small = new_base_id(), ser.to_stored(7, None)
    error = ser.error_stored(ValueError("no"))
    cases = [
        (oid, error, 0, 0, None, None, False, 1 << 20),             # an error
        (oid, (small, small), 0, 0, None, None, False, 1 << 20),     # two results
        (oid, (small,), 0, 0, ((5,),), None, False, 1 << 20),        # refs inside it
        (oid, (small,), 0, 0, None, (0,), False, 1 << 20),           # GPU arrays kept
        (oid, (small,), 0, 0, None, None, True, 1 << 20),            # retryable
        (oid, (small,), 0, 0, None, None, False, 20),                # over the limit
        (-1, (small,), 0, 0, None, None, False, 1 << 20),            # not an id
        (1 << 200, (small,), 0, 0, None, None, False, 1 << 20),      # nor this
        (oid, ((_protocol.INLINE, b"x", (b"buf",)),), 0, 0, None, None, False, 1 << 20),
        (oid, ((_protocol.SHM, "name", 10),), 0, 0, None, None, False, 1 << 20),
        (oid, [small], 0, 0, None, None, False, 1 << 20),            # not a tuple
    ]
    for args in cases:
        assert _crecords.pack_done(*args) is None, args
    with pytest.raises(TypeError):
        _crecords.pack_done(oid, (small,))
    with pytest.raises(OverflowError):
        _crecords.pack_done(oid, (small,), 2**70, 0, None, None, False, 1 << 20)


# ------------------------------------------------------------------ the compact item
def test_a_compact_item_reads_back_as_the_gen_item_record():
    task = new_base_id()
    for index, value in ((0, None), (1, 7), (2**40 - 1, "é" * 50), (5, (1, [2, {3: None}]))):
        stored = ser.to_stored(value, None)
        data = _crecords.pack_item(task, index, stored, None, None, 1 << 20)
        assert data[0] == _protocol.ITEM_MARK != pickle.dumps(None, protocol=5)[0]
        msg = _ring.decode(data)
        assert msg == (_protocol.GEN_ITEM, task, index, stored, None, None)
        assert ser.from_stored(msg[3]) == value
    assert _ring.decode(_crecords.pack_item(task, 0, ser.NONE, (), False, 99))[3] is ser.NONE
    assert _crecords.unpack_item(pickle.dumps((1, 2))) is None
    assert _crecords.unpack_item(_crecords.pack_done(task, (ser.NONE,), 0, 0, None, None,
                                                     False, 99)) is None


def test_what_item_has_no_compact_form():
    task, small = new_base_id(), ser.to_stored(7, None)
    cases = [
        (task, 0, small, [5], None, 1 << 20),                      # refs inside it
        (task, 0, small, None, True, 1 << 20),                     # GPU arrays kept
        (task, 0, small, None, None, 20),                          # over the limit
        (-1, 0, small, None, None, 1 << 20),                       # not an id
        (task, -1, small, None, None, 1 << 20),                    # not an index
        (task, 1 << 64, small, None, None, 1 << 20),               # nor this
        (task, 0, (_protocol.INLINE, b"x", (b"buf",)), None, None, 1 << 20),
        (task, 0, (_protocol.SHM, "name", 10), None, None, 1 << 20),
        (task, 0, ser.error_stored(ValueError("no")), None, None, 1 << 20),
        (task, 0, [0, b"", ()], None, None, 1 << 20),              # not a tuple
    ]
    for args in cases:
        assert _crecords.pack_item(*args) is None, args
    with pytest.raises(TypeError, match="pack_item"):
        _crecords.pack_item(task, 0, small)


def test_ids_from_c():
    ids = [new_base_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(i & 0xFFFF == 0 for i in ids)
    counters = [i >> _COUNTER_SHIFT for i in ids]
    assert counters == list(range(counters[0], counters[0] + 1000))
    prefixes = {(i >> _ID_SHIFT) & ((1 << (_COUNTER_SHIFT - _ID_SHIFT)) - 1) for i in ids}
    assert len(prefixes) == 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a forked child gets a prefix of its own
        os.write(write, new_base_id().to_bytes(16, "little"))
        os._exit(0)
    os.waitpid(pid, 0)
    child = int.from_bytes(os.read(read, 16), "little")
    os.close(read), os.close(write)
    assert (child >> _ID_SHIFT) & ((1 << 45) - 1) not in prefixes
    with pytest.raises(TypeError):
        _crecords.reset_ids("x")


# ------------------------------------------------------------------ get's values in C
class Eraser:
    """Unpickled, it empties the dict that a get reads (nothing in shmray does that;
    user code in an unpickle can)."""

    table = None

    def __reduce__(self):
        return (Eraser._erase, ())

    @staticmethod
    def _erase():
        Eraser.table.clear()
        return "erased"


def test_stream_item_ids_from_c_are_the_formulas():
    import random

    from shmray._crecords import new_base_id
    from shmray._object_ref import stream_item_id, stream_item_id_reference

    rng = random.Random(7)
    cases = [(0, 0), (1, 1), ((1 << 101) - 1, (1 << 40) - 1), (new_base_id(), 0)]
    cases += [(rng.getrandbits(rng.choice([16, 61, 101, 127])), rng.getrandbits(40))
              for _ in range(2000)]
    for task_id, index in cases:
        assert stream_item_id(task_id, index) == stream_item_id_reference(task_id, index)
    with pytest.raises(TypeError, match="stream_item_id"):
        stream_item_id("1", 2)
    with pytest.raises(OverflowError):
        stream_item_id(-1, 0)
    with pytest.raises(OverflowError):
        stream_item_id(1, -1)


def test_inline_values():
    ObjectRef = shmray.ObjectRef
    ids = [new_base_id() for _ in range(4)]
    table = {ids[0]: ser.NONE, ids[1]: ser.to_stored(5, None), ids[2]: ser.to_stored("x", None)}
    refs = [ObjectRef(i, True) for i in ids[:3]]
    assert _crecords.inline_values(refs, table, ObjectRef, pickle.loads) == [None, 5, "x"]
    assert ser.values_of(refs, table) == [None, 5, "x"]
    assert _crecords.inline_values([], table, ObjectRef, pickle.loads) == []
    # anything else: None, and values_of's Python does it all
    table[ids[3]] = ser.error_stored(ValueError("no"))
    for other in ([refs[0], 7], [refs[0], ObjectRef(ids[3], True)],
                  [ObjectRef(new_base_id(), True)]):
        assert _crecords.inline_values(other, table, ObjectRef, pickle.loads) is None
    assert ser.values_of([refs[1], 7], table) == [5, 7]
    with pytest.raises(ValueError, match="no"):
        ser.values_of([ObjectRef(ids[3], True)], table)
    for bad in ((refs, table, ObjectRef), (tuple(refs), table, ObjectRef, pickle.loads),
                (refs, table, int, pickle.loads)):
        with pytest.raises(TypeError):
            _crecords.inline_values(*bad)
    Eraser.table = table
    table[ids[0]] = (_protocol.INLINE, pickle.dumps(Eraser()), ())
    with pytest.raises(RuntimeError, match="changed"):
        _crecords.inline_values(refs, table, ObjectRef, pickle.loads)


def test_not_stored():
    ObjectRef = shmray.ObjectRef
    ids = [new_base_id() for _ in range(4)]
    values, pending = {ids[0]: ser.NONE}, {ids[1], ids[2]}
    refs = [ObjectRef(i, True) for i in ids[:3]]
    assert _crecords.not_stored(refs, ObjectRef, pending, values) == ids[1:3]
    assert _crecords.not_stored([refs[0], 5, "x"], ObjectRef, pending, values) == []
    lost = refs + [ObjectRef(ids[3], True)]
    assert _crecords.not_stored(lost, ObjectRef, pending, values) is None
    for bad in ((tuple(refs), ObjectRef, pending, values), (refs, int, pending, values),
                (refs, ObjectRef, [], values), (refs, ObjectRef, pending)):
        with pytest.raises(TypeError):
            _crecords.not_stored(*bad)


# ------------------------------------------------------------------ the compact Tasks
def _record(task_id, args=ser.NO_ARGS, request=(("CPU", 1.0),), **changes):
    fields = dict(task_id=task_id, fn_id=(1 << 64) - 5, num_returns=1, args_stored=args,
                  dep_values=None, lent=None, request=request, helping=False, attempt=0,
                  retry_exceptions=None, backpressure=-1)
    fields.update(changes)
    return _protocol.task_record(**fields)


def test_first_other():
    from shmray._object_ref import ObjectRef

    class Sub(ObjectRef):
        pass

    refs = [ObjectRef(new_base_id()) for _ in range(3)]
    assert _crecords.first_other([], ObjectRef) == -1
    assert _crecords.first_other(refs, ObjectRef) == -1
    assert _crecords.first_other(refs + [5], ObjectRef) == 3
    assert _crecords.first_other([refs[0], Sub(new_base_id())], ObjectRef) == 1  # exactly
    with pytest.raises(TypeError, match="first_other"):
        _crecords.first_other(tuple(refs), ObjectRef)
    with pytest.raises(TypeError, match="first_other"):
        _crecords.first_other(refs, "ObjectRef")


def test_a_compact_tasks_message_reads_back_as_the_record():
    cpu, other = (("CPU", 1.0),), (("CPU", 0.5), ("ü-custom", 2.0))
    batch = [_record(new_base_id()),
             _record(new_base_id(), ser.to_stored((("x" * 5000,), {"k": 1}), None), other),
             _record(new_base_id(), num_returns=-1, helping=True, attempt=3,
                     backpressure=2**40, fn_id=0),
             _record(new_base_id(), request=cpu)]
    data = _crecords.pack_tasks(batch, 1 << 20)
    assert data[0] == _protocol.TASKS_MARK and len(data) > 4096  # (past the stack buffer)
    kind, records = _ring.decode(data)
    assert kind == _protocol.TASKS and records == batch
    assert records[0][6] is not records[1][6] and records[0][6] is records[3][6] or \
        records[0][6] == records[3][6]
    assert _crecords.unpack_tasks(pickle.dumps((1,))) is None
    with pytest.raises(ValueError, match="truncated"):
        _crecords.unpack_tasks(data[:-3])


def test_what_has_no_compact_tasks_form():
    oid = new_base_id()
    for record in (_record(oid, dep_values=((0, b"", ()),)), _record(oid, lent={1: 2}),
                   _record(oid, retry_exceptions=b"x"),
                   _record(oid, args=(_protocol.SHM, "name", 10, 0, ())),
                   _record(oid, args=(_protocol.INLINE, b"x", (b"buf",))),
                   _record(oid, request=(("CPU", 1),)),  # (an int amount: not the driver's)
                   _record(-1), _record(oid, fn_id=1 << 64), _record(oid, num_returns=1 << 40),
                   (1, 2, 3)):
        assert _crecords.pack_tasks([record], 1 << 20) is None, record
    assert _crecords.pack_tasks([], 1 << 20) is None
    assert _crecords.pack_tasks([_record(oid)] * 10, 100) is None  # over the limit
    with pytest.raises(TypeError):
        _crecords.pack_tasks((_record(oid),), 100)


def test_remote_in_c_leaves_a_closed_session_to_the_python(fresh):
    @shmray.remote
    def nothing():
        return None

    fresh.init(num_cpus=1)
    rt = shmray._context.get_runtime()
    shmray.get(nothing.remote())
    lane, fn_id, options = rt.lane, nothing._fn_id, nothing._options
    fresh.shutdown()
    assert lane.remote(fn_id, "nothing", options) is None  # (Session._submit raises)
    with pytest.raises(TypeError):
        lane.remote(fn_id)


def test_an_error_inside_remote_in_c_lets_go_of_the_lock(fresh):
    """An error inside (options without what a TaskSpec needs) reaches the caller as
    itself, and the session's lock and the Ctrl-C section are let go."""
    from shmray._driver.interrupts import sections

    @shmray.remote
    def nothing():
        return None

    class Odd:  # taken for plain options, but without their request
        num_returns = 1

    fresh.init(num_cpus=2)
    rt = shmray._context.get_runtime()
    shmray.get(nothing.remote())
    odd = Odd()
    rt.tasks.verdicts.common[id(odd)] = odd
    try:
        with pytest.raises(AttributeError, match="request"):
            rt.lane.remote(nothing._fn_id, "nothing", odd)
    finally:
        del rt.tasks.verdicts.common[id(odd)]
    assert not rt.lock.raw.locked() and sections.depth == 0
    assert shmray.get(nothing.remote()) is None
