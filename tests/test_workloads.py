"""shmray._workloads, the one implementation of W1, W2 and W7 that the demo, ``shmray bench``
and bench/ time: every kind of engine runs the bodies, the start-up scripts are valid, and
importing the module pulls in no engine or test tool (bench/ imports it next to its peers)."""
from __future__ import annotations

import concurrent.futures
import multiprocessing.pool
import subprocess
import sys

import pytest

from shmray import _workloads


def counting(*_):
    return 1


@pytest.mark.parametrize("make", [lambda: multiprocessing.pool.ThreadPool(2),
                                  lambda: concurrent.futures.ThreadPoolExecutor(2)],
                         ids=["pool", "executor"])
def test_the_bodies_run_on_pools_and_executors(make):
    with make() as engine:
        tasks = _workloads.small_tasks(engine, counting)
        assert tasks.async_batch(50) == [1] * 50
        tasks.round_trips(20)
        rate, per_call = _workloads.measure(tasks, 100, 10)
        assert rate > 0 and per_call > 0


def test_the_bodies_run_on_shmray(ray):
    tasks = _workloads.small_tasks(ray, counting)
    assert tasks.async_batch(100) == [1] * 100
    tasks.round_trips(20)


def test_every_startup_script_compiles():
    for engine in _workloads.STARTUP_SCRIPTS:
        compile(_workloads.startup_script(engine, 2), engine, "exec")


def test_the_pool_startup_script_reports_its_first_result(tmp_path):
    script = _workloads.write_startup_script("pool", 1, tmp_path)
    assert 0 < _workloads.first_result_ms(script) < _workloads.LAUNCH_TIMEOUT * 1e3


def test_a_failing_startup_script_says_why(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("raise SystemExit('no engine here')\n")
    with pytest.raises(RuntimeError, match="no engine here"):
        _workloads.first_result_ms(str(script))


def test_importing_it_imports_no_engine_or_test_tool():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, shmray._workloads; "
         "print(sorted({'ray', 'loky', 'pytest', 'pytest_benchmark'} & set(sys.modules)))"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
