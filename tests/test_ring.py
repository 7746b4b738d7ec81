"""The C shared-memory ring (csrc/ring.h, csrc/ring.c, csrc/cringmodule.c).

Layout checks read the header straight out of the buffer at the offsets that
ring.h documents; the cross-process tests put rings in a real POSIX shm segment
and drive them from forked processes. Every segment is named
``shmray_test_<pid>_*`` and unlinked afterwards; every child is joined.

Set SHMRAY_TEST_SEED to replay a stress run (the seed is printed on failure).
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import mmap
import multiprocessing
import os
import random
import re
import select
import signal
import statistics
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

import pytest

from shmray import _shm
from shmray._cring import (DOORBELL_SIZE, HEADER_SIZE, VERSION, Doorbell, Ring, pop_any,
                           wait_stalled)

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]
RING_H = (REPO / "csrc" / "ring.h").read_text()


def _h_const(name: str) -> int:
    """The value of `#define name ...` in ring.h (C suffixes u/U/L stripped)."""
    m = re.search(rf"^#define\s+{name}\s+(\S+)", RING_H, re.M)
    assert m, f"{name} not defined in ring.h"
    return int(m.group(1).rstrip("uUlL"), 0)


RING_MAGIC = _h_const("SHMRAY_RING_MAGIC")
DOORBELL_MAGIC = _h_const("SHMRAY_DOORBELL_MAGIC")
RING_VERSION = _h_const("SHMRAY_RING_VERSION")
RING_HEADER_SIZE = _h_const("SHMRAY_RING_HEADER_SIZE")
RING_DOORBELL_SIZE = _h_const("SHMRAY_DOORBELL_SIZE")
RING_WRAP = _h_const("SHMRAY_RING_WRAP")

# Byte offsets of the ring header fields (ring.h).
OFF_MAGIC, OFF_VERSION, OFF_HEADER_SIZE, OFF_CAPACITY = 0, 8, 12, 16
OFF_TAIL, OFF_SPACE_SEQ, OFF_PRODUCER_WAITING = 64, 72, 76
OFF_HEAD, OFF_DATA_SEQ, OFF_CONSUMER_WAITING = 128, 136, 140
# Doorbell fields.
DB_MAGIC, DB_VERSION, DB_SEQ, DB_WAITING = 0, 8, 16, 20

SHM_PREFIX = f"shmray_test_{os.getpid()}_"
_names = itertools.count()
_CTX = multiprocessing.get_context("fork")


def u32(buf, off):
    return struct.unpack_from("<I", buf, off)[0]


def u64(buf, off):
    return struct.unpack_from("<Q", buf, off)[0]


def tail_of(buf, base=0):
    return u64(buf, base + OFF_TAIL)


def head_of(buf, base=0):
    return u64(buf, base + OFF_HEAD)


def small_ring(cap=4096, doorbell=None):
    buf = bytearray(HEADER_SIZE + cap)
    return buf, Ring(buf, create=True, doorbell=doorbell)


def fill(ring, msg=b"x" * 40):
    n = 0
    while ring.push(msg):
        n += 1
    return n


# ----------------------------------------------------------------- fixtures


def _child_pids() -> list[int]:
    pids = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except FileNotFoundError:
            pass
    return pids


@pytest.fixture(autouse=True)
def no_leftover_children():
    before = set(_child_pids())  # only this test's children count

    def new_children():
        return sorted(set(_child_pids()) - before)

    yield
    for p in _CTX.active_children():  # a failed test may leave one behind
        p.kill()
        p.join()
    deadline = time.monotonic() + 2
    while new_children() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert new_children() == [], "test left child processes behind"


@pytest.fixture
def shm():
    """make(size) -> (name, mmap): a fresh segment, unlinked at teardown."""
    made = []

    def make(size):
        name = f"{SHM_PREFIX}{next(_names)}"
        mm = _shm.create(name, size)
        made.append(name)
        return name, mm

    try:
        yield make
    finally:
        for name in made:
            _shm.unlink(name)
        assert _shm.list_names(SHM_PREFIX) == [], "segments left in /dev/shm"


def _child_main(parent, target, *args):
    # If the test process dies hard (a crash in the ring code), take this child
    # with it rather than leave it blocked in a push forever.
    try:
        import ctypes
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)
    target(*args)


@contextlib.contextmanager
def running(target, *args):
    """Run target(*args) in a forked child; on a clean exit of the block join it
    and require exit code 0, on an exception kill it."""
    p = _CTX.Process(target=_child_main, args=(os.getpid(), target) + args, daemon=True)
    p.start()
    ok = False
    try:
        yield p
        ok = True
    finally:
        if ok:
            p.join(30)
        if p.is_alive():
            p.kill()
        p.join()
    assert p.exitcode == 0, f"child {target.__name__} exited with {p.exitcode}"


# A test segment: doorbell at 0, then rings, each at a 4 KiB boundary.
RING_BASE = 4096


def _span(cap):
    return (HEADER_SIZE + cap + 4095) // 4096 * 4096


def seg_size(nrings, cap):
    return RING_BASE + nrings * _span(cap)


def open_rings(mm, nrings, cap, create, doorbell=True):
    view = memoryview(mm)
    bell = Doorbell(view[:DOORBELL_SIZE], create=create)
    rings = []
    for i in range(nrings):
        off = RING_BASE + i * _span(cap)
        rings.append(Ring(view[off:off + HEADER_SIZE + cap], create=create,
                          doorbell=bell if doorbell else None))
    return bell, rings


def ring_base(i, cap):
    return RING_BASE + i * _span(cap)


# ------------------------------------------------------------------- layout


def _buffers():
    def bytearray_buf(n):
        return bytearray(n)

    def mmap_buf(n):
        return mmap.mmap(-1, n)

    def offset_view(n):  # a ring that does not start at offset 0 of its mapping
        return memoryview(mmap.mmap(-1, n + 4096))[4096:]

    return [bytearray_buf, mmap_buf, offset_view]


@pytest.mark.parametrize("make_buf", _buffers(), ids=lambda f: f.__name__)
def test_header_layout_matches_ring_h(make_buf):
    assert HEADER_SIZE == RING_HEADER_SIZE == 256
    assert DOORBELL_SIZE == RING_DOORBELL_SIZE == 64
    assert VERSION == RING_VERSION
    size = HEADER_SIZE + 5000  # capacity rounds down to a power of two
    buf = make_buf(size)
    buf[:] = b"\xaa" * size  # format must zero the header itself
    ring = Ring(buf, create=True)
    assert u64(buf, OFF_MAGIC) == RING_MAGIC
    assert bytes(buf[0:8]) == struct.pack("<Q", RING_MAGIC)
    assert u32(buf, OFF_VERSION) == RING_VERSION
    assert u32(buf, OFF_HEADER_SIZE) == 256
    cap = u64(buf, OFF_CAPACITY)
    assert cap == 4096 and cap & (cap - 1) == 0
    assert ring.capacity == cap
    assert ring.max_message == cap // 2 - 8
    # every other header byte is zero: reserved areas, tail/head, seqs, flags
    assert bytes(buf[24:HEADER_SIZE]) == bytes(HEADER_SIZE - 24)
    assert ring.used == 0

    assert ring.push(b"abc")  # 4 + 3 bytes -> one 8-byte record
    assert tail_of(buf) == 8 and head_of(buf) == 0
    assert u32(buf, HEADER_SIZE) == 3 and bytes(buf[HEADER_SIZE + 4:HEADER_SIZE + 7]) == b"abc"
    assert ring.push(b"0123456789")  # 4 + 10 -> 16
    assert tail_of(buf) == 24 and ring.used == 24
    assert u32(buf, HEADER_SIZE + 8) == 10
    assert ring.push(b"")  # 4 + 0 -> 8
    assert tail_of(buf) == 32

    assert ring.pop() == b"abc"
    assert head_of(buf) == 8 and ring.used == 24
    assert ring.pop() == b"0123456789"
    assert head_of(buf) == 24
    assert ring.pop() == b""
    assert head_of(buf) == tail_of(buf) == 32 and ring.used == 0
    assert ring.pop() is None
    # nobody slept, so no futex word or waiting flag moved
    for off in (OFF_SPACE_SEQ, OFF_PRODUCER_WAITING, OFF_DATA_SEQ, OFF_CONSUMER_WAITING):
        assert u32(buf, off) == 0, off
    del ring


def test_capacity_is_largest_power_of_two_that_fits():
    for data_bytes, cap in [(64, 64), (127, 64), (128, 128), (4095, 2048), (4096, 4096),
                            (65536 + 100, 65536)]:
        buf = bytearray(HEADER_SIZE + data_bytes)
        assert Ring(buf, create=True).capacity == cap
        assert u64(buf, OFF_CAPACITY) == cap


def test_wrap_marker_layout():
    buf, ring = small_ring(cap=256)
    assert ring.max_message == 120
    assert ring.push(b"a" * 100)  # record 104 at 0
    assert ring.push(b"b" * 100)  # record 104 at 104 -> tail 208
    assert ring.pop() == b"a" * 100 and ring.pop() == b"b" * 100
    assert head_of(buf) == tail_of(buf) == 208
    # 60 bytes -> 64-byte record; 208 + 64 > 256: wrap marker at 208, record at 0
    assert ring.push(b"c" * 60)
    assert u32(buf, HEADER_SIZE + 208) == RING_WRAP == 0xFFFFFFFF
    assert u32(buf, HEADER_SIZE + 0) == 60
    assert bytes(buf[HEADER_SIZE + 4:HEADER_SIZE + 64]) == b"c" * 60
    assert tail_of(buf) == 208 + 48 + 64  # the skipped end counts as used
    assert ring.used == 112
    assert ring.pop() == b"c" * 60
    assert head_of(buf) == 320 and ring.used == 0
    # a record that ends exactly at the end of the data area does not wrap
    assert ring.push(b"d" * 100)  # 64..168
    assert ring.push(b"e" * 84)   # 88-byte record, 168..256
    assert tail_of(buf) == 512 and ring.push(b"f")  # next record at offset 0
    assert u32(buf, HEADER_SIZE + 0) == 1
    assert [ring.pop() for _ in range(3)] == [b"d" * 100, b"e" * 84, b"f"]


def test_doorbell_layout():
    buf = bytearray(b"\xaa" * 64)
    Doorbell(buf, create=True)
    assert u64(buf, DB_MAGIC) == DOORBELL_MAGIC
    assert u32(buf, DB_VERSION) == RING_VERSION
    assert bytes(buf[12:64]) == bytes(52)
    Doorbell(buf)  # attaches


def test_second_view_attaches_to_same_ring():
    buf, producer = small_ring()
    consumer = Ring(buf)  # create=False attaches without reformatting
    assert producer.push(b"hello")
    assert consumer.used == producer.used == 16  # 4 + 5 bytes, padded to 8
    assert consumer.pop() == b"hello"
    assert producer.used == 0
    assert Ring(buf, create=True).used == 0  # create reformats


# ------------------------------------------------------------ attach checks


def test_attach_zeroed_buffer_bad_magic():
    with pytest.raises(ValueError, match="magic"):
        Ring(bytearray(HEADER_SIZE + 4096))


def test_attach_version_mismatch():
    buf, _ = small_ring()
    buf[OFF_VERSION] = RING_VERSION + 1
    with pytest.raises(ValueError, match="version mismatch"):
        Ring(buf)
    buf[OFF_VERSION] = RING_VERSION
    Ring(buf)
    struct.pack_into("<I", buf, OFF_HEADER_SIZE, 128)  # a wrong header_size: same error
    with pytest.raises(ValueError, match="version"):
        Ring(buf)


def test_attach_capacity_checks():
    buf, _ = small_ring(cap=4096)
    with pytest.raises(ValueError, match="capacity"):
        Ring(memoryview(buf)[:HEADER_SIZE + 2048])  # mapping shorter than the ring
    struct.pack_into("<Q", buf, OFF_CAPACITY, 3000)  # not a power of two
    with pytest.raises(ValueError, match="capacity"):
        Ring(buf)


def test_create_too_small():
    with pytest.raises(ValueError, match="too small"):
        Ring(bytearray(HEADER_SIZE + 63), create=True)
    with pytest.raises(ValueError):
        Ring(bytearray(10))


def test_doorbell_attach_checks():
    with pytest.raises(ValueError):
        Doorbell(bytearray(64))
    buf = bytearray(64)
    Doorbell(buf, create=True)
    buf[DB_VERSION] = RING_VERSION + 1
    with pytest.raises(ValueError):
        Doorbell(buf)
    with pytest.raises(ValueError):
        Doorbell(bytearray(63), create=True)


def test_readonly_buffer_rejected():
    with pytest.raises((BufferError, TypeError)):
        Ring(bytes(HEADER_SIZE + 4096), create=True)


def test_doorbell_argument_type_checked():
    buf = bytearray(HEADER_SIZE + 4096)
    with pytest.raises(TypeError):
        Ring(buf, create=True, doorbell=bytearray(64))


def test_ring_pins_its_mapping():
    mm = mmap.mmap(-1, HEADER_SIZE + 4096)
    ring = Ring(mm, create=True)
    with pytest.raises(BufferError):
        mm.close()
    del ring
    mm.close()


# ------------------------------------------------ single-process semantics


def test_fifo_and_empty_pop():
    _, ring = small_ring()
    assert ring.pop() is None
    msgs = [bytes([i]) * i for i in range(50)]
    for m in msgs:
        assert ring.push(m) is True
    assert [ring.pop() for _ in msgs] == msgs
    assert ring.pop() is None
    assert ring.used == 0


def test_push_accepts_any_buffer():
    _, ring = small_ring()
    assert ring.push(bytearray(b"ba"))
    assert ring.push(memoryview(b"xmvx")[1:3])
    assert ring.pop() == b"ba" and ring.pop() == b"mv"
    with pytest.raises(TypeError):
        ring.push("str")


def test_push_false_when_full():
    _, ring = small_ring(cap=1024)
    n = fill(ring, b"x" * 40)  # 48-byte records
    assert n == 1024 // 48
    assert ring.push(b"x" * 40) is False
    assert ring.push(b"x" * 40, timeout=0) is False
    # 16 bytes are left at the end: too few for a 48-byte record, which must wrap
    # and so needs those 16 bytes plus 48 at the start
    assert ring.push(b"") is True  # an 8-byte record still fits at the end
    assert ring.push(b"") is True
    assert ring.used == 1024 and ring.push(b"") is False
    assert ring.pop() == b"x" * 40
    assert ring.push(b"y" * 40) is True  # 48 free at the start: no wrap padding
    assert ring.used == 1024
    got = [ring.pop() for _ in range(n + 2)]
    assert got == [b"x" * 40] * (n - 1) + [b"", b"", b"y" * 40]
    assert ring.pop() is None
    assert ring.used == 0


def test_message_too_large():
    _, ring = small_ring(cap=1024)
    with pytest.raises(ValueError, match="exceeds"):
        ring.push(b"z" * (ring.max_message + 1))
    with pytest.raises(ValueError):
        ring.push(b"z" * (ring.max_message + 1), timeout=1)
    assert ring.used == 0
    assert ring.push(b"z" * ring.max_message)
    assert ring.pop() == b"z" * ring.max_message


def test_max_message_fits_empty_ring_at_every_offset():
    """max_message is half the ring so that it fits once drained, wrap or not."""
    buf, ring = small_ring(cap=256)
    big = bytes(range(ring.max_message))
    for off in range(0, 2 * ring.capacity, 8):
        assert tail_of(buf) % ring.capacity == off % ring.capacity
        assert ring.used == 0
        assert ring.push(big), f"max message refused at offset {off}"
        assert ring.pop() == big
        # move on by one 8-byte record
        assert ring.push(b"") and ring.pop() == b""
        # the big record moved tail by itself (+ padding); realign to off + 8
        while tail_of(buf) % ring.capacity != (off + 8) % ring.capacity:
            assert ring.push(b"") and ring.pop() == b""


def test_zero_length_round_trip():
    _, ring = small_ring()
    assert ring.push(b"")
    assert ring.used == 8
    got = ring.pop()
    assert got == b"" and got is not None
    assert ring.pop() is None


def test_wrap_around_many_times_random_sizes():
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    buf, ring = small_ring(cap=1024)
    pending = collections.deque()
    pushed = popped = 0
    for i in range(20000):
        if rng.random() < 0.52:
            n = rng.choice([0, 1, 3, 4, 5, 7, 8, 9]) if rng.random() < 0.3 else \
                rng.randint(0, ring.max_message)
            msg = i.to_bytes(4, "little") + rng.randbytes(max(0, n - 4)) if n >= 4 else \
                rng.randbytes(n)
            if ring.push(msg):
                pending.append(msg)
                pushed += 1
            else:
                assert pending, "push refused on an empty ring"
        else:
            got = ring.pop()
            if pending:
                assert got == pending.popleft(), f"message {popped} corrupted (seed={seed})"
                popped += 1
            else:
                assert got is None
        assert ring.used == tail_of(buf) - head_of(buf)
        assert 0 <= ring.used <= ring.capacity
    while pending:
        assert ring.pop() == pending.popleft()
        popped += 1
    assert ring.pop() is None
    assert pushed == popped > 5000
    assert tail_of(buf) == head_of(buf) > 100 * ring.capacity  # wrapped many times


def test_pop_any_single_process():
    bell = Doorbell(bytearray(64), create=True)
    _, r0 = small_ring(doorbell=bell)
    _, r1 = small_ring(doorbell=bell)
    assert pop_any((r0, r1), bell) is None
    assert r1.push(b"one")
    assert pop_any((r0, r1), bell) == (1, b"one")
    assert r0.push(b"a0") and r1.push(b"b1")
    assert pop_any((r0, r1), bell, start=1) == (1, b"b1")
    assert pop_any((r0, r1), bell, start=1) == (0, b"a0")
    assert r0.push(b"c0") and r1.push(b"d1")
    assert pop_any((r0, r1), bell, start=0) == (0, b"c0")
    assert pop_any((r0, r1), bell, start=7) == (1, b"d1")  # start wraps modulo n
    assert pop_any((r0, r1), bell) is None
    with pytest.raises(TypeError):
        pop_any([r0, r1], bell)
    with pytest.raises(TypeError):
        pop_any((r0, b"x"), bell)
    assert pop_any((), bell) is None


def test_pop_any_and_wait_stalled_check_their_arguments():
    # (their arguments are taken as a vector, by hand: every mistake still names itself)
    from shmray._cring import wait_stalled
    bell = Doorbell(bytearray(64), create=True)
    _, r0 = small_ring(doorbell=bell)
    assert r0.push(b"x")
    assert pop_any(rings=(r0,), doorbell=bell, timeout=0.0, spin=0.0, start=0) == (0, b"x")
    for call, message in [
        (lambda: pop_any((r0,)), "missing required argument 'doorbell'"),
        (lambda: pop_any((r0,), bell, stat=1), "unexpected keyword argument 'stat'"),
        (lambda: pop_any((r0,), bell, 0.0, rings=(r0,)), "multiple values for argument 'rings'"),
        (lambda: pop_any((r0,), bell, 0, 0, 0, 0), "at most 5 arguments"),
        (lambda: pop_any((r0,), b"bell"), "doorbell must be"),
        (lambda: pop_any((r0,), bell, start="0"), "integer"),
        (lambda: pop_any((r0,), bell, spin="0"), "must be real number"),
        (lambda: wait_stalled((r0,)), "missing required argument 'poll'"),
        (lambda: wait_stalled((r0,), 0.01, nudge=[r0]), "rings must be a tuple"),
    ]:
        with pytest.raises(TypeError, match=message):
            call()
    with pytest.raises(ValueError, match="timeout must be"):
        pop_any((r0,), bell, float("nan"))
    with pytest.raises(ValueError, match="poll must be"):
        wait_stalled((r0,), 0.0)


def test_pop_any_and_wait_stalled_take_more_than_256_rings():
    # A session may run more than 256 workers (init(num_cpus=300)); each has a ring.
    from shmray._cring import wait_stalled
    bell = Doorbell(bytearray(64), create=True)
    rings = tuple(small_ring(doorbell=bell)[1] for _ in range(300))
    assert pop_any(rings, bell) is None
    assert rings[299].push(b"last")
    assert pop_any(rings, bell, start=10) == (299, b"last")
    assert rings[280].push(b"stalled")
    assert wait_stalled(rings, 0.001, 1.0, rings) is True  # nobody pops ring 280


# ----------------------------------------------------------------- timeouts


def _timed(fn, *args, **kw):
    t0 = time.monotonic()
    result = fn(*args, **kw)
    return result, time.monotonic() - t0


def test_pop_timeout_on_empty_ring():
    _, ring = small_ring()
    result, elapsed = _timed(ring.pop, timeout=0.2)
    assert result is None
    assert 0.15 <= elapsed < 2, elapsed
    result, elapsed = _timed(ring.pop, timeout=0.2, spin=0.05)
    assert result is None
    assert 0.15 <= elapsed < 2, elapsed


def test_push_timeout_on_full_ring():
    _, ring = small_ring(cap=1024)
    fill(ring)
    result, elapsed = _timed(ring.push, b"x" * 40, timeout=0.2)
    assert result is False
    assert 0.15 <= elapsed < 2, elapsed


def test_pop_any_timeout():
    bell = Doorbell(bytearray(64), create=True)
    rings = tuple(small_ring(doorbell=bell)[1] for _ in range(3))
    result, elapsed = _timed(pop_any, rings, bell, timeout=0.2)
    assert result is None
    assert 0.15 <= elapsed < 2, elapsed


def test_negative_timeout_means_no_wait():
    _, ring = small_ring()
    result, elapsed = _timed(ring.pop, timeout=-5)
    assert result is None and elapsed < 1.0  # returned at once, not after 5 s


def test_pop_wakes_on_push_from_thread():
    """The wait releases the GIL, so a thread of the same process can push."""
    _, ring = small_ring()
    t = threading.Timer(0.2, ring.push, args=(b"late",))
    t.start()
    try:
        result, elapsed = _timed(ring.pop, timeout=5)
    finally:
        t.join()
    assert result == b"late"
    assert elapsed < 2


# ------------------------------------------------------ wait_stalled (local)


def test_wait_stalled_false_when_empty():
    _, r0 = small_ring()
    _, r1 = small_ring()
    result, elapsed = _timed(wait_stalled, (r0, r1), 0.05, timeout=0.3)
    assert result is False
    assert 0.25 <= elapsed < 2, elapsed


def test_wait_stalled_true_when_data_sits():
    _, r0 = small_ring()
    _, r1 = small_ring()
    assert r1.push(b"nobody pops this")
    result, elapsed = _timed(wait_stalled, (r0, r1), 0.05, timeout=5)
    assert result is True
    assert elapsed < 1.5, elapsed
    assert r1.used > 0  # the watcher does not consume


def test_wait_stalled_argument_checks():
    _, r0 = small_ring()
    with pytest.raises(TypeError):
        wait_stalled([r0], 0.05, timeout=0.1)
    assert wait_stalled((), 0.01, timeout=0.05) is False


# ------------------------------------------------------ cross-process stress

STRESS_CAP = 1 << 16  # 64 KiB: fills and wraps constantly
STRESS_COUNT = 20000
MSG_HDR = struct.Struct("<QII")  # sequence number, payload length, crc32(payload)
STATS_OFF = 64  # u64 per ring in the doorbell page: how often the producer found it full


def _seed():
    return int(os.environ.get("SHMRAY_TEST_SEED", random.randrange(2**32)))


def _messages(seed, count, max_message):
    """The deterministic message stream both sides generate from one seed."""
    rng = random.Random(seed)
    limit = 3 * max_message // 4 - MSG_HDR.size
    for seq in range(count):
        r = rng.random()
        if r < 0.80:
            n = rng.randint(0, 64)
        elif r < 0.97:
            n = rng.randint(65, 2048)
        else:
            n = rng.randint(2049, limit)
        payload = rng.randbytes(n)
        yield MSG_HDR.pack(seq, n, zlib.crc32(payload)) + payload


def _check_message(got, seq, expected, who=""):
    if got is None:
        pytest.fail(f"{who}message {seq}: timed out waiting for it")
    if len(got) < MSG_HDR.size:
        pytest.fail(f"{who}message {seq}: only {len(got)} bytes")
    s, n, crc = MSG_HDR.unpack_from(got)
    if s != seq:
        pytest.fail(f"{who}expected message {seq}, got sequence number {s}"
                    f" ({'duplicate/reordered' if s < seq else 'lost messages'})")
    if len(got) != MSG_HDR.size + n:
        pytest.fail(f"{who}message {seq}: length {len(got)}, header says {MSG_HDR.size + n}")
    if zlib.crc32(got[MSG_HDR.size:]) != crc:
        pytest.fail(f"{who}message {seq}: payload checksum mismatch")
    if got != expected:
        pytest.fail(f"{who}message {seq}: differs from what was sent")


def _producer(name, index, nrings, cap, seed, count):
    mm = _shm.attach(name)
    _, rings = open_rings(mm, nrings, cap, create=False)
    ring = rings[index]
    full = 0
    for seq, msg in enumerate(_messages(seed, count, ring.max_message)):
        if not ring.push(msg):
            full += 1
            if not ring.push(msg, timeout=None):
                raise SystemExit(f"push(timeout=None) returned False at {seq}")
        if seq % 1500 == 1499:
            time.sleep(0.003)  # let the consumer drain and go to sleep
    struct.pack_into("<Q", mm, STATS_OFF + 8 * index, full)


def test_cross_process_stress_one_producer(shm):
    seed = _seed()
    print(f"seed={seed}")
    name, mm = shm(seg_size(1, STRESS_CAP))
    _, (ring,) = open_rings(mm, 1, STRESS_CAP, create=True)
    assert ring.capacity == STRESS_CAP
    expected = _messages(seed, STRESS_COUNT, ring.max_message)
    with running(_producer, name, 0, 1, STRESS_CAP, seed, STRESS_COUNT):
        for seq, want in enumerate(expected):
            _check_message(ring.pop(timeout=20), seq, want, f"seed={seed}: ")
            if seq % 1000 == 999:
                time.sleep(0.01)  # let the ring fill so the producer must wait
    assert ring.pop() is None
    assert ring.used == 0
    base = ring_base(0, STRESS_CAP)
    assert tail_of(mm, base) == head_of(mm, base) > 20 * STRESS_CAP
    assert u64(mm, STATS_OFF) > 0, "the producer never found the ring full"


def test_cross_process_stress_two_producers_pop_any(shm):
    seed = _seed()
    print(f"seed={seed}")
    nrings = 2
    name, mm = shm(seg_size(nrings, STRESS_CAP))
    bell, rings = open_rings(mm, nrings, STRESS_CAP, create=True)
    rings = tuple(rings)
    streams = [_messages(seed + i, STRESS_COUNT, rings[i].max_message) for i in range(nrings)]
    next_seq = [0] * nrings
    total = 0
    with contextlib.ExitStack() as stack:
        for i in range(nrings):
            stack.enter_context(running(_producer, name, i, nrings, STRESS_CAP, seed + i,
                                        STRESS_COUNT))
        start = 0
        while total < nrings * STRESS_COUNT:
            got = pop_any(rings, bell, timeout=20, start=start)
            if got is None:
                pytest.fail(f"seed={seed}: pop_any timed out; received {next_seq}")
            i, msg = got
            assert 0 <= i < nrings
            if next_seq[i] >= STRESS_COUNT:
                pytest.fail(f"seed={seed}: producer {i} sent more than {STRESS_COUNT}")
            _check_message(msg, next_seq[i], next(streams[i]), f"seed={seed} producer {i}: ")
            next_seq[i] += 1
            total += 1
            start = i + 1
            if total % 1000 == 999:
                time.sleep(0.01)
    assert next_seq == [STRESS_COUNT] * nrings
    assert pop_any(rings, bell) is None
    for i in range(nrings):
        assert rings[i].used == 0
        assert tail_of(mm, ring_base(i, STRESS_CAP)) > 20 * STRESS_CAP
    assert sum(u64(mm, STATS_OFF + 8 * i) for i in range(nrings)) > 0


# ------------------------------------------------- cross-process wake-ups


def _delayed_push(name, nrings, cap, index, delay, payload):
    mm = _shm.attach(name)
    _, rings = open_rings(mm, nrings, cap, create=False)
    time.sleep(delay)
    if not rings[index].push(payload, timeout=5):
        raise SystemExit("push failed")


def _delayed_pop(name, cap, delay, count):
    mm = _shm.attach(name)
    _, (ring,) = open_rings(mm, 1, cap, create=False)
    time.sleep(delay)
    for _ in range(count):
        if ring.pop(timeout=5) is None:
            raise SystemExit("pop timed out")


def test_blocking_pop_woken_by_other_process(shm):
    cap = 4096
    name, mm = shm(seg_size(1, cap))
    _, (ring,) = open_rings(mm, 1, cap, create=True)
    with running(_delayed_push, name, 1, cap, 0, 0.2, b"wake up"):
        result, elapsed = _timed(ring.pop, timeout=5)
    assert result == b"wake up"
    assert 0.1 <= elapsed < 2.0, elapsed


def test_blocking_pop_any_woken_by_other_process(shm):
    cap = 4096
    name, mm = shm(seg_size(3, cap))
    bell, rings = open_rings(mm, 3, cap, create=True)
    with running(_delayed_push, name, 3, cap, 2, 0.2, b"ring two"):
        result, elapsed = _timed(pop_any, tuple(rings), bell, timeout=5)
    assert result == (2, b"ring two")
    assert 0.1 <= elapsed < 2.0, elapsed


def test_blocking_push_woken_by_other_process(shm):
    cap = 1024
    name, mm = shm(seg_size(1, cap))
    _, (ring,) = open_rings(mm, 1, cap, create=True)
    n = fill(ring, b"x" * 40)
    with running(_delayed_pop, name, cap, 0.2, 1):
        result, elapsed = _timed(ring.push, b"y" * 40, timeout=5)
    assert result is True
    assert 0.1 <= elapsed < 2.0, elapsed
    # 16 bytes at the end were skipped (wrap padding) and one 48-byte record freed
    assert n == 21 and ring.used == 20 * 48 + 16 + 48 == cap


def _echo(name, cap):
    mm = _shm.attach(name)
    bell, (requests, replies) = open_rings(mm, 2, cap, create=False)
    while True:
        msg = requests.pop(timeout=10)
        if msg is None:
            raise SystemExit("echo: no request for 10 s")
        if msg == b"stop":
            return
        if not replies.push(msg, timeout=10):
            raise SystemExit("echo: reply ring stuck")


@pytest.mark.parametrize("use_bell", [False, True], ids=["pop", "pop_any"])
def test_ping_pong_wakeups_are_prompt(shm, use_bell):
    """Every wait sleeps in slices of 50 ms, which would hide a lost futex wake-up
    as a 50 ms delay. Both sides sleep on every round here, so a round trip well
    under 50 ms means each wake-up came from the other side's FUTEX_WAKE."""
    cap = 4096
    name, mm = shm(seg_size(2, cap))
    bell, (requests, replies) = open_rings(mm, 2, cap, create=True)
    rtts = []
    with running(_echo, name, cap):
        for i in range(150):
            time.sleep(0.001)  # the echo process goes to sleep in its pop
            payload = i.to_bytes(4, "little") * (i % 7)
            t0 = time.perf_counter()
            assert requests.push(payload)
            got = pop_any((replies,), bell, timeout=5) if use_bell else replies.pop(timeout=5)
            rtts.append(time.perf_counter() - t0)
            assert got == ((0, payload) if use_bell else payload)
        assert requests.push(b"stop")
    med = statistics.median(rtts)
    print(f"median round trip {med * 1e6:.0f} us, max {max(rtts) * 1e3:.1f} ms")
    assert med < 0.02, f"median round trip {med * 1e3:.1f} ms: wake-ups are being lost"


# --------------------------------------------- wait_stalled across processes


def _drain_until_stop(name, cap):
    mm = _shm.attach(name)
    _, (ring,) = open_rings(mm, 1, cap, create=False)
    while True:
        msg = ring.pop(timeout=10)
        if msg is None:
            raise SystemExit("drain: nothing for 10 s")
        if msg == b"stop":
            return


def test_wait_stalled_with_live_and_gone_consumer(shm):
    """A consumer in another process that keeps popping is never reported as
    stalled (it only needs to pop once per poll interval: 0.25 s, generous for a
    loaded machine); once it is gone, data left in the ring is."""
    cap = 4096
    name, mm = shm(seg_size(1, cap))
    _, (ring,) = open_rings(mm, 1, cap, create=True)
    result = []
    with running(_drain_until_stop, name, cap):
        watcher = threading.Thread(
            target=lambda: result.append(wait_stalled((ring,), 0.25, timeout=0.6)))
        watcher.start()
        i = 0
        while watcher.is_alive():
            assert ring.push(b"m%d" % i, timeout=5)
            i += 1
            time.sleep(0.01)
        watcher.join()
        assert ring.push(b"stop", timeout=5)
    assert result == [False]
    assert ring.used == 0
    # the consumer is gone: data now sits in the ring
    assert ring.push(b"orphan")
    got, elapsed = _timed(wait_stalled, (ring,), 0.05, timeout=5)
    assert got is True and elapsed < 1.5


# ------------------------------------------------------------------- Ctrl-C

_CTRL_C_SCRIPT = textwrap.dedent("""
    import signal, sys
    from shmray._cring import Doorbell, Ring, pop_any, wait_stalled
    signal.signal(signal.SIGINT, signal.default_int_handler)
    bell = Doorbell(bytearray(64), create=True)
    ring = Ring(bytearray(256 + 1024), create=True, doorbell=bell)
    what = sys.argv[1]
    if what == "push":
        while ring.push(b"x" * 40):
            pass
    print("ready", flush=True)
    try:
        if what == "pop":
            ring.pop(timeout=None)
        elif what == "push":
            ring.push(b"x" * 40, timeout=None)
        elif what == "pop_any":
            pop_any((ring,), bell, timeout=None)
        elif what == "wait_stalled":
            wait_stalled((ring,), 0.05, timeout=None)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(0)
    print("returned", flush=True)
    sys.exit(3)
""")


@pytest.mark.parametrize("what", ["pop", "push", "pop_any", "wait_stalled"])
def test_ctrl_c_interrupts_blocking_wait(what):
    proc = subprocess.Popen([sys.executable, "-c", _CTRL_C_SCRIPT, what], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "child never became ready"
        line = proc.stdout.readline()
        assert line == "ready\n", line + proc.stderr.read()
        time.sleep(0.3)
        assert proc.poll() is None, "child stopped blocking on its own"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=5)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == 0, (proc.returncode, out, err)
    assert "interrupted" in out
    assert elapsed < 2, elapsed


# ------------------------------------------- deferred wakes and bad input


def _pop_after_sleeping(name, cap):
    mm = _shm.attach(name)
    _, (ring,) = open_rings(mm, 1, cap, create=False)
    if ring.pop(timeout=5) is None:
        raise SystemExit("pop timed out")


def test_push_without_wake_then_nudge_delivers(shm):
    cap = 4096
    name, mm = shm(seg_size(1, cap))
    _, (ring,) = open_rings(mm, 1, cap, create=True)
    with running(_pop_after_sleeping, name, cap):
        deadline = time.monotonic() + 5
        while not ring.sleeping and time.monotonic() < deadline:
            time.sleep(0.005)
        assert ring.sleeping
        assert ring.push(b"batched", wake=False)
        assert ring.used > 0  # no wake: it would only notice at its next 50 ms re-check...
        # ...or when a watcher's poll nudges it, which is what the driver relies on
        assert wait_stalled((), 0.001, timeout=0.05, nudge=(ring,)) is False
        deadline = time.monotonic() + 5
        while ring.used and time.monotonic() < deadline:
            time.sleep(0.005)
        assert ring.used == 0


def test_wake_reports_whether_anyone_slept():
    _, ring = small_ring()
    assert ring.wake() is False
    assert ring.sleeping is False


def test_nan_timeout_is_rejected_and_inf_means_forever():
    _, ring = small_ring()
    with pytest.raises(ValueError, match="NaN"):
        ring.pop(timeout=float("nan"))
    ring.push(b"x")
    assert ring.pop(timeout=float("inf")) == b"x"


def test_wait_stalled_honours_a_timeout_shorter_than_its_poll():
    _, ring = small_ring()
    result, elapsed = _timed(wait_stalled, (ring,), 1.0, timeout=0.1)
    assert result is False and elapsed < 0.6


def test_corrupt_record_length_raises_instead_of_reading_past_the_mapping():
    buf, ring = small_ring()
    ring.push(b"hello")
    struct.pack_into("<I", buf, HEADER_SIZE, 0x7FFFFFF0)  # an impossible length
    with pytest.raises(RuntimeError, match="corrupted"):
        ring.pop()
