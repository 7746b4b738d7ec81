"""W18: scale (issue 20). W1 at 50 times its size: 1,000,000 no-op tasks submitted before any
get, then all fetched; whether the rate stays W1's, what the driver's memory grows by per task
meanwhile (and per task queued behind busy workers), and how much of it comes back when
200,000 fetched results are dropped at once.

Each figure is measured in a fresh process (bench/_scale.py: a process keeps and reuses the
memory of an earlier batch, which would hide the next one's), while no engine runs here.
Peers: multiprocessing.Pool's apply_async (the same count; its map sends chunks, W1map) and
Ray, at 50,000 tasks instead of 1,000,000 (1,000-2,000 tasks/s here: 1,000,000 would take
8 to 16 minutes) and 20,000 for the queued and dropped ones.

The 1,000,000-task runs take about a minute each: `-m "not slow"` leaves them out.
"""
import pytest

import _results
import _scale

ENGINES = ["shmray", "pool", "ray"]
SIZES = {"small": 20_000, "big": 1_000_000}
RAY_SIZES = {"small": 20_000, "big": 50_000}
SMALL_ROUNDS = {"ray": 1}   # the 20,000-task rate: the median of 5 batches (Ray: 10-20 s each)
DEFAULT_SMALL_ROUNDS = 5
HELD = {"ray": 20_000}      # queued and dropped; the others: 200,000
DEFAULT_HELD = 200_000
ROW = {"small": "W18small", "big": "W18big"}


def measure(benchmark, engine_name, mode, n, rounds=1):
    """One child run of bench/_scale.py, timed once by pytest-benchmark (its own figures
    come from inside the child), its record kept in latest.json."""
    record = {}
    benchmark.pedantic(lambda: record.update(_scale.run(engine_name, mode, n, rounds)),
                       rounds=1, iterations=1)
    _results.details[f"W18 {engine_name} {mode} {n}"] = record
    return record


@pytest.mark.timeout(_scale.CHILD_TIMEOUT + 60)
@pytest.mark.benchmark(group="W18 scale")
@pytest.mark.parametrize("size", ["small", pytest.param("big", marks=pytest.mark.slow)])
@pytest.mark.parametrize("engine_name", ENGINES)
def test_rate_and_memory_at_size(benchmark, engine_name, size, no_engine):
    n = (RAY_SIZES if engine_name == "ray" else SIZES)[size]
    rounds = SMALL_ROUNDS.get(engine_name, DEFAULT_SMALL_ROUNDS) if size == "small" else 1
    record = measure(benchmark, engine_name, "rate", n, rounds)
    assert record["rate"] > 0 and record["rss_per_task"] > 0
    _results.record(ROW[size], engine_name, record["rate"])
    if size == "big":
        _results.record("W18bytes", engine_name, record["rss_per_task"])
    rates = _results.figures
    if engine_name in rates.get("W18small", {}) and engine_name in rates.get("W18big", {}):
        _results.record("W18flat", engine_name,
                        rates["W18big"][engine_name] / rates["W18small"][engine_name])


@pytest.mark.timeout(_scale.CHILD_TIMEOUT + 60)
@pytest.mark.benchmark(group="W18 scale")
@pytest.mark.parametrize("engine_name", ENGINES)
def test_memory_per_queued_task(benchmark, engine_name, no_engine):
    n = HELD.get(engine_name, DEFAULT_HELD)
    record = measure(benchmark, engine_name, "queued", n)
    if record["unfinished"] is not None:  # shmray: every one of them was still queued
        assert record["unfinished"] >= n
    _results.record("W18queued", engine_name, record["rss_per_task"])


@pytest.mark.timeout(_scale.CHILD_TIMEOUT + 60)
@pytest.mark.benchmark(group="W18 scale")
@pytest.mark.parametrize("engine_name", ENGINES)
def test_dropped_results_free_their_memory(benchmark, engine_name, no_engine):
    n = HELD.get(engine_name, DEFAULT_HELD)
    record = measure(benchmark, engine_name, "drop", n)
    if "stored_left" in record:  # shmray: its store let go of every one
        assert record["stored_left"] == 0
    _results.record("W18drop", engine_name, record["came_back"])
