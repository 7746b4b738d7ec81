"""shmray.util.as_completed and map_unordered with real tasks: results as they finish
(a held-back task comes last), batches of chunk_size, refs instead of values, errors,
backpressure (never more tasks in flight than allowed), and Ray's argument checks."""
from __future__ import annotations

import pytest

import shmray
from shmray.util.completion import as_completed, map_unordered
from shmray.util.queue import Queue

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def tasks(ray):
    @ray.remote
    def square(x):
        return x * x

    @ray.remote
    def held(gate, x):
        gate.get(timeout=30)  # finishes once the driver lets it
        return x

    @ray.remote
    def fail_on(x, bad):
        if x == bad:
            raise ValueError(f"bad item {x}")
        return x

    return square, held, fail_on


def test_as_completed_yields_every_result_a_held_one_last(ray, tasks):
    square, held, _ = tasks
    gate = Queue()
    refs = [held.remote(gate, "slow")] + [square.remote(i) for i in range(6)]
    results = as_completed(refs, chunk_size=1)
    first = [next(results) for _ in range(6)]
    assert sorted(first) == [i * i for i in range(6)]  # none waited for the held task
    gate.put("go")
    assert list(results) == ["slow"]


def test_as_completed_batches_and_refs(ray, tasks):
    square = tasks[0]
    refs = [square.remote(i) for i in range(25)]
    assert sorted(as_completed(refs)) == [i * i for i in range(25)]  # chunk_size 10
    got = list(as_completed(refs, chunk_size=7, yield_obj_refs=True))
    assert sorted(got, key=refs.index) == refs  # the refs themselves, each once
    assert sorted(as_completed(tuple(refs), chunk_size=100)) == [i * i for i in range(25)]
    assert list(as_completed([])) == []


def test_as_completed_passes_wait_options(ray, tasks):
    square, held, _ = tasks
    gate = Queue()
    refs = [held.remote(gate, "late"), square.remote(3)]
    results = as_completed(refs, chunk_size=2, timeout=0.05, fetch_local=True)
    assert next(results) == 9  # a wait that timed out hands out what is ready
    gate.put("go")
    assert list(results) == ["late"]


def test_as_completed_raises_a_tasks_error_at_its_turn(ray, tasks):
    fail_on = tasks[2]
    refs = [fail_on.remote(i, 3) for i in range(5)]
    with pytest.raises(ValueError, match="bad item 3"):
        list(as_completed(refs, chunk_size=1))


def test_as_completed_refuses_bad_arguments(ray, tasks):
    refs = [tasks[0].remote(1)]
    with pytest.raises(ValueError, match="chunk_size"):
        as_completed(refs, chunk_size=0)
    with pytest.raises(ValueError, match="Use the `chunk_size` argument instead of "
                                         "`num_returns`"):
        as_completed(refs, num_returns=2)
    with pytest.raises(TypeError, match="passed to wait"):
        as_completed(refs, tiemout=1)
    with pytest.raises(TypeError, match="expects a list of ObjectRefs"):
        as_completed(refs[0])
    with pytest.raises(TypeError, match="expected a list of ray.ObjectRef"):
        list(as_completed([1, 2]))


def test_map_unordered_maps_every_item(ray, tasks):
    square = tasks[0]
    assert sorted(map_unordered(square, range(30))) == [i * i for i in range(30)]
    assert sorted(map_unordered(square, iter(range(30)), backpressure_size=None,
                                chunk_size=3)) == [i * i for i in range(30)]
    refs = list(map_unordered(square, [2, 3], yield_obj_refs=True))
    assert sorted(shmray.get(refs)) == [4, 9]


def test_map_unordered_keeps_at_most_backpressure_size_in_flight(ray, tasks):
    square = tasks[0]
    taken, yielded, in_flight = [0], [0], []

    def items():
        for i in range(40):
            taken[0] += 1
            # submitted (with this one) minus returned: the tasks in flight once it goes
            in_flight.append(taken[0] - yielded[0])
            yield i

    results = []
    for value in map_unordered(square, items(), backpressure_size=4, chunk_size=2):
        results.append(value)
        yielded[0] += 1
    assert sorted(results) == [i * i for i in range(40)]
    assert max(in_flight) <= 4 and max(in_flight) == 4


def test_map_unordered_refuses_bad_arguments(ray, tasks):
    square = tasks[0]
    with pytest.raises(TypeError, match="remote function"):
        map_unordered(lambda x: x, [1])
    with pytest.raises(ValueError, match="backpressure_size must be positive"):
        map_unordered(square, [1], backpressure_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        map_unordered(square, [1], chunk_size=-1)
    with pytest.raises(ValueError, match="instead of `num_returns`"):
        map_unordered(square, [1], num_returns=1)
    with pytest.raises(TypeError, match="iterable of items"):
        map_unordered(square, 5)
