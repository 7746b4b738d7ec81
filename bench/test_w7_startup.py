"""W7: start-up. A fresh Python process imports the engine, starts it and gets one result;
timed from just before the launch to the result in hand (ms), so it includes the interpreter's
own start (the scripts: shmray._workloads.STARTUP_SCRIPTS). Shutdown at exit is not counted.
No engine runs in the benchmark process meanwhile.

Every engine is timed with its bytecode compiled, as `pip install` leaves it: the standard
library and installed peers have it already; shmray is compiled here, since an editable
install (or PYTHONDONTWRITEBYTECODE=1) leaves none and every launch would recompile it."""
import compileall
import os
import statistics

import pytest

import _results
import shmray
from _peers import ENGINES, WORKERS
from shmray import _workloads

ROUNDS = {"ray": 2}      # ~4 s to start and ~2 s to stop a Ray process
DEFAULT_ROUNDS = 5
WARM_UP = 1              # the first launch reads the engine's files from disk


@pytest.mark.benchmark(group="W7 start-up")
@pytest.mark.parametrize("engine_name", ENGINES)
def test_startup(benchmark, engine_name, no_engine, tmp_path):
    if engine_name == "shmray":
        assert compileall.compile_dir(os.path.dirname(shmray.__file__), quiet=1)
    script = _workloads.write_startup_script(engine_name, WORKERS, tmp_path)
    first_result_ms = []
    benchmark.pedantic(lambda: first_result_ms.append(_workloads.first_result_ms(script)),
                       rounds=ROUNDS.get(engine_name, DEFAULT_ROUNDS), iterations=1,
                       warmup_rounds=WARM_UP)
    _results.record("W7", engine_name, statistics.median(first_result_ms[WARM_UP:]))
