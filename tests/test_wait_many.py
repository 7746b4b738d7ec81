"""wait() over many refs: its count of ready refs is kept as results arrive (a ready
front, then a scan that stops early), not recomputed over every ref at each pump; these
check that the early stops still give Ray's answer whatever the order of arrival."""
from __future__ import annotations

import os
import time

import pytest

pytestmark = pytest.mark.timeout(60)

MANY = 3_000


@pytest.fixture
def gate(ray, tmp_path):
    """(a remote function whose tasks wait until the gate opens, the gate's opener)."""
    path = str(tmp_path / "open")

    @ray.remote
    def held(x):
        while not os.path.exists(path):
            time.sleep(0.001)
        return x

    def open_gate():
        with open(path, "w"):
            pass

    yield held, open_gate
    open_gate()


@pytest.fixture
def echo(ray):
    @ray.remote
    def echo(x):
        return x

    return echo


def test_wait_counts_refs_ready_behind_one_that_is_not(ray, gate, echo):
    held, open_gate = gate
    first = held.options(num_cpus=0.5).remote(-1)  # (a short task never queues behind it)
    rest = [echo.remote(i) for i in range(MANY)]
    ray.get(rest)
    refs = [first] + rest

    ready, not_ready = ray.wait(refs, num_returns=MANY, timeout=10)  # at once: all but one
    assert ready == rest and not_ready == [first]
    ready, not_ready = ray.wait(refs, num_returns=1, timeout=10)
    assert ready == [rest[0]] and not_ready == [first] + rest[1:]

    start = time.monotonic()
    ready, not_ready = ray.wait(refs, num_returns=MANY + 1, timeout=0.3)  # one short: timeout
    assert time.monotonic() - start >= 0.3
    assert ready == rest and not_ready == [first]

    open_gate()
    ready, not_ready = ray.wait(refs, num_returns=MANY + 1, timeout=10)
    assert ready == refs and not_ready == []


def test_wait_for_all_of_many_tasks_queued_behind_busy_workers(ray, gate, echo):
    held, open_gate = gate
    busy = [held.remote(-1) for _ in range(2)]  # both workers: the rest queue
    refs = [echo.remote(i) for i in range(MANY)]
    ready, not_ready = ray.wait(refs, num_returns=MANY, timeout=0.2)
    assert ready == [] and not_ready == refs

    open_gate()
    ready, not_ready = ray.wait(refs, num_returns=MANY, timeout=30)
    assert ready == refs and not_ready == []
    assert ray.get(refs) == list(range(MANY))
    ray.get(busy)


def test_wait_for_some_returns_the_first_ready_in_the_refs_order(ray, gate, echo):
    held, open_gate = gate
    late = [held.options(num_cpus=0.5).remote(i) for i in range(2)]
    done = [echo.remote(i) for i in range(MANY)]
    ray.get(done)
    refs = late[:1] + done[:MANY // 2] + late[1:] + done[MANY // 2:]  # not ready ones inside

    ready, not_ready = ray.wait(refs, num_returns=MANY // 2 + 10, timeout=10)
    assert ready == done[:MANY // 2 + 10]
    assert not_ready == late[:1] + late[1:] + done[MANY // 2 + 10:]
    open_gate()
    ray.get(late)
