"""The throughput suite's fixtures, test order and final table (see README.md).

One engine runs at a time (``_peers.EngineManager``). Tests run workload by workload, each
workload engine by engine, except Ray's: its init takes seconds, so all of Ray's tests are moved
to the end of the session and share one Ray session, started once and shut down at the end.
"""
from __future__ import annotations

import os

import pytest

import _results
from _peers import ENGINES, EngineManager, EngineUnavailable, missing_reason

RESULTS_JSON = os.path.join(os.path.dirname(__file__), "results", "latest.json")


def pytest_addoption(parser):
    parser.addoption("--engines", default=None, metavar="LIST",
                     help="comma-separated engines to run (shmray,pool,ppe,loky,ray); "
                          "default: all")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a run of a minute or more (W18's 1,000,000 "
                                       "tasks); -m 'not slow' leaves them out")


def _engine_of(item):
    params = getattr(item, "callspec", None)
    params = params.params if params else {}
    return params.get("engine", params.get("engine_name"))


def pytest_collection_modifyitems(config, items):
    wanted = config.getoption("--engines")
    if wanted:
        wanted = set(wanted.split(","))
        unknown = sorted(wanted - set(ENGINES))
        if unknown:
            raise pytest.UsageError(f"--engines: unknown {', '.join(unknown)}; choose from "
                                    f"{','.join(ENGINES)}")
        wanted.add("ref")  # the reference figures always run
        deselected = [i for i in items if _engine_of(i) not in wanted]
        items[:] = [i for i in items if _engine_of(i) in wanted]
        config.hook.pytest_deselected(items=deselected)
    # Stable sort: Ray last; within Ray, the tests that start their own process (W7) before the
    # in-process session starts, so that no Ray daemons run during them.
    def order(item):
        ray = _engine_of(item) == "ray"
        return ray, ray and "engine" in item.fixturenames

    items.sort(key=order)


@pytest.fixture(scope="session")
def engines():
    manager = EngineManager()
    yield manager
    manager.stop()


@pytest.fixture
def engine(request, engines):
    """The engine named by the test's parameter, running, and alone; None for 'ref' (a plain
    numpy baseline, measured with no engine running)."""
    name = request.param
    if name == "ref":
        engines.stop()
        return None
    try:
        return engines.use(name)
    except EngineUnavailable as e:
        _results.skipped[name] = str(e)
        pytest.skip(str(e))


@pytest.fixture
def no_engine(request, engines):
    """No engine runs in this process (W7 starts one in a fresh process)."""
    engines.stop()
    name = request.node.callspec.params.get("engine_name")
    reason = missing_reason(name) if name else None
    if reason:
        _results.skipped[name] = reason
        pytest.skip(reason)


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables
def pytest_terminal_summary(terminalreporter):
    if not _results.figures:
        return
    tr = terminalreporter
    tr.section("shmray vs peers")
    for line in _results.table_lines():
        tr.write_line(line)
    _results.write_json(RESULTS_JSON)
    tr.write_line(f"\nwritten to {os.path.relpath(RESULTS_JSON)}")
