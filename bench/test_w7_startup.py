"""W7: start-up. A fresh Python process imports the engine, starts it and gets one result;
timed from just before the launch to the result in hand (ms), so it includes the interpreter's
own start. Shutdown at exit is not counted. No engine runs in the benchmark process meanwhile.

Every engine is timed with its bytecode compiled, as `pip install` leaves it: the standard
library and installed peers have it already; shmray is compiled here, since an editable
install (or PYTHONDONTWRITEBYTECODE=1) leaves none and every launch would recompile it."""
import compileall
import os
import statistics
import subprocess
import sys
import time

import pytest

import _results
import shmray
from _peers import ENGINES

# Each script gets the launch time (time.time(), comparable across processes) as argv[1] and
# prints how many ms after it the first result arrived.
RAY_LIKE = """\
import sys, time
import {module} as ray
ray.init(num_cpus=2)
@ray.remote
def one():
    return 1
assert ray.get(one.remote()) == 1
print((time.time() - float(sys.argv[1])) * 1e3)
"""
SCRIPTS = {
    "shmray": RAY_LIKE.format(module="shmray"),
    "ray": RAY_LIKE.format(module="ray"),
    "pool": """\
import sys, time, multiprocessing
def one():
    return 1
if __name__ == "__main__":
    with multiprocessing.Pool(2) as pool:
        assert pool.apply(one) == 1
        print((time.time() - float(sys.argv[1])) * 1e3)
""",
    "ppe": """\
import sys, time
from concurrent.futures import ProcessPoolExecutor
def one():
    return 1
if __name__ == "__main__":
    with ProcessPoolExecutor(2) as executor:
        assert executor.submit(one).result() == 1
        print((time.time() - float(sys.argv[1])) * 1e3)
""",
    "loky": """\
import sys, time
from loky import get_reusable_executor
def one():
    return 1
if __name__ == "__main__":
    executor = get_reusable_executor(max_workers=2)
    assert executor.submit(one).result() == 1
    print((time.time() - float(sys.argv[1])) * 1e3)
    executor.shutdown(wait=True, kill_workers=True)
""",
}
ROUNDS = {"ray": 2}      # ~4 s to start and ~2 s to stop a Ray process
DEFAULT_ROUNDS = 5
WARM_UP = 1              # the first launch reads the engine's files from disk


@pytest.mark.benchmark(group="W7 start-up")
@pytest.mark.parametrize("engine_name", ENGINES)
def test_startup(benchmark, engine_name, no_engine, tmp_path):
    if engine_name == "shmray":
        assert compileall.compile_dir(os.path.dirname(shmray.__file__), quiet=1)
    script = tmp_path / f"start_{engine_name}.py"
    script.write_text(SCRIPTS[engine_name])
    first_result_ms = []

    def start_once():
        launched = time.time()
        out = subprocess.run([sys.executable, str(script), repr(launched)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        first_result_ms.append(float(out.stdout.split()[-1]))

    benchmark.pedantic(start_once, rounds=ROUNDS.get(engine_name, DEFAULT_ROUNDS),
                       iterations=1, warmup_rounds=WARM_UP)
    _results.record("W7", engine_name, statistics.median(first_result_ms[WARM_UP:]))
