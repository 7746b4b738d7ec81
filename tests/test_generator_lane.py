"""A streaming generator's small items through the lane (csrc/item_form.c): sent compact
by the worker, stored by the driver in C (Lane.drain) as MessageLoop.on_gen_item,
GeneratorTable.on_item and ObjectStore.put do it, and every other item (refs inside,
a large array, a stream that is gone or ended) the Python's, in order. (The compact
form alone, without a session: test_lane_forms.py.)
"""
from __future__ import annotations

import time

import numpy as np
import pytest

import shmray
from shmray._object_ref import stream_item_id

from conftest import settled

pytestmark = pytest.mark.timeout(120)


@shmray.remote
def count_to(n):
    yield from range(n)


@shmray.remote
def mixed(n):
    for i in range(n):
        if i % 3 == 0:
            yield [shmray.put(i), i]  # a ref inside: the long way
        elif i % 3 == 1:
            yield np.full(100_000, i, dtype=np.uint8)  # a segment: the long way
        else:
            yield i  # small: C


@shmray.remote(_generator_backpressure_num_objects=3)
def paced(n):
    for i in range(n):
        yield i


def items_in_python(session, monkeypatch):
    """The (task id, index) of each item GeneratorTable.on_item saw (the Python way)."""
    seen = []
    on_item = session.generators.on_item
    monkeypatch.setattr(session.generators, "on_item", lambda task_id, index, *a: (
        seen.append(index), on_item(task_id, index, *a))[1])
    return seen


def test_small_items_are_stored_in_c_and_end_with_their_refs(ray, session, monkeypatch):
    list(count_to.remote(10))  # (the function shipped)
    python = items_in_python(session, monkeypatch)
    gen = count_to.remote(3000)
    task_id = gen._ref._id
    assert [shmray.get(ref) for ref in gen] == list(range(3000))
    assert python == []  # every item came the short way
    stream = session.generators.streams[task_id]
    assert (stream.produced, stream.ended) == (3000, True)
    # (the stream lets go of the items handed out at the loop's next settle)
    assert settled(session, lambda: (session.generators.take_handed_out(),
                                     stream.consumed >= 3000)[1])
    del gen, stream
    ids = [stream_item_id(task_id, i) for i in range(3001)]
    assert settled(session, lambda: not any(o in session.store.values for o in ids)
                   and not any(o in session.store._needed for o in ids)
                   and task_id not in session.generators.streams)


def test_other_items_go_the_python_way_in_order(ray, session, monkeypatch):
    python = items_in_python(session, monkeypatch)
    got = [shmray.get(ref) for ref in mixed.remote(30)]
    assert len(got) == 30
    for i, value in enumerate(got):
        if i % 3 == 0:
            assert shmray.get(value[0]) == i == value[1]
        elif i % 3 == 1:
            assert value.nbytes == 100_000 and value[0] == i
        else:
            assert value == i
    assert python == [i for i in range(30) if i % 3 != 2]


def test_backpressure_and_a_dropped_stream(ray, session):
    gen = paced.remote(60)
    out = []
    for ref in gen:
        out.append(shmray.get(ref))
        time.sleep(0.001)
    assert out == list(range(60))
    gen = count_to.remote(100_000)  # dropped after one item: the rest are the Python's
    first = next(gen)               # (no stream), and the task is cancelled
    assert shmray.get(first) == 0
    task_id = gen._ref._id
    del gen, first
    assert settled(session, lambda: task_id not in session.generators.streams
                   and task_id not in session.tasks.tasks, timeout=30)
    values = session.store.values
    assert not any(stream_item_id(task_id, i) in values for i in range(100_001))
