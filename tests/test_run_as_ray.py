"""Unchanged Ray programs and Ray test suites on shmray: `shmray run prog.py` and
`pytest --shmray` make `import ray` shmray's, in the driver and in every worker (a
spawned one too), and a Ray module shmray lacks fails to import, naming it."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(120)

PROGRAM = textwrap.dedent("""
    import sys
    import ray
    from ray.exceptions import RayTaskError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    import helper

    ray.init(num_cpus=2)

    @ray.remote
    def square(x):
        return x * x

    @ray.remote
    def fails():
        raise ValueError("bad input")

    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n

    print("squares", ray.get([square.remote(i) for i in range(5)]))
    try:
        ray.get(fails.remote())
    except RayTaskError as e:
        print("caught", isinstance(e, ValueError))
    c = Counter.remote()
    print("counter", ray.get([c.incr.remote() for _ in range(3)]))
    print("in a task, ray is", ray.get(ray.remote(helper.ray_name).remote()))
    print("driver", ray.__name__, sys.argv[1:])
    ray.shutdown()
""")

HELPER = textwrap.dedent("""
    import ray   # imported again in the worker that unpickles ray_name

    def ray_name():
        return ray.__name__
""")


def _run(args, tmp_path, **env):
    return subprocess.run([sys.executable, "-m", "shmray", "run", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=100,
                          env={**os.environ, **env})


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_shmray_run_makes_import_ray_shmray_in_the_driver_and_the_workers(tmp_path, start):
    (tmp_path / "prog.py").write_text(PROGRAM)
    (tmp_path / "helper.py").write_text(HELPER)
    out = _run(["prog.py", "one", "--two"], tmp_path, SHMRAY_START_METHOD=start)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "squares [0, 1, 4, 9, 16]", "caught True", "counter [1, 2, 3]",
        "in a task, ray is shmray", "driver shmray ['one', '--two']"]


def test_shmray_run_a_module_and_its_exit_code(tmp_path):
    (tmp_path / "helper.py").write_text(HELPER)
    (tmp_path / "exits.py").write_text("import ray, sys\nprint(ray.__name__)\nsys.exit(3)\n")
    out = _run(["-m", "exits"], tmp_path)
    assert (out.returncode, out.stdout) == (3, "shmray\n"), out.stderr


def test_a_ray_module_shmray_lacks_is_an_import_error_naming_it(tmp_path):
    (tmp_path / "serve.py").write_text("import ray\nfrom ray import serve\n")
    (tmp_path / "tune.py").write_text("import ray.tune\n")
    out = _run(["tune.py"], tmp_path)
    assert out.returncode == 1
    assert "No module named 'ray.tune'" in out.stderr and "shmray" in out.stderr
    out = _run(["serve.py"], tmp_path)
    assert out.returncode == 1 and "cannot import name 'serve'" in out.stderr


UTIL_PROGRAM = textwrap.dedent("""
    import sys
    import ray
    from ray.util import ActorPool, as_completed
    from ray.util.queue import Queue
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    ray.init(num_cpus=2)

    @ray.remote
    class Doubler:
        def double(self, x):
            return 2 * x

    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    print("pool", list(pool.map(lambda a, v: a.double.remote(v), range(4))))
    q = Queue()
    q.put_nowait_batch([1, 2])
    print("queue", q.get(), q.get(), type(q).__module__)
    pg = placement_group([{"CPU": 1}])
    ray.get(pg.ready())
    one = ray.remote(lambda: 1).options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg))
    print("group", sorted(as_completed([one.remote(), one.remote()])))
    print("lazy", "ray.util.joblib" in sys.modules, "asyncio" in sys.modules or "ok")
    ray.shutdown()
""")


def test_the_util_modules_import_under_their_ray_names(tmp_path):
    (tmp_path / "prog.py").write_text(UTIL_PROGRAM)
    out = _run(["prog.py"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "pool [0, 2, 4, 6]", "queue 1 2 shmray.util.queue", "group [1, 1]", "lazy False True"]


RAY_TESTS = textwrap.dedent("""
    import pytest
    import ray


    @pytest.fixture(scope="module")
    def ray_start():
        ray.init(num_cpus=2)
        yield
        ray.shutdown()


    @ray.remote
    def add(a, b):
        return a + b


    def test_tasks(ray_start):
        assert ray.get([add.remote(i, 1) for i in range(3)]) == [1, 2, 3]
        assert ray.__name__ == "shmray"


    def test_errors(ray_start):
        @ray.remote
        def fails():
            raise KeyError("x")

        with pytest.raises(ray.exceptions.RayTaskError):
            ray.get(fails.remote())
""")

RAY_TEST_OWN_SESSION = textwrap.dedent("""
    import ray


    def test_each_test_its_own_session():
        ray.init(num_cpus=1)
        try:
            assert ray.cluster_resources()["CPU"] == 1
        finally:
            ray.shutdown()
""")

FIXTURE_TESTS = textwrap.dedent("""
    def test_module_session(shmray_session):
        assert shmray_session.get(shmray_session.put(5)) == 5


    def test_own_session(shmray_test_session):
        assert shmray_test_session.is_initialized()
""")


def test_pytest_plugin_runs_a_ray_test_file_unchanged(tmp_path):
    (tmp_path / "conftest.py").write_text("import ray  # (before the tests: the alias is on)\n")
    (tmp_path / "test_ray_suite.py").write_text(RAY_TESTS)
    (tmp_path / "test_fixtures.py").write_text(FIXTURE_TESTS)
    (tmp_path / "test_ray_own.py").write_text(RAY_TEST_OWN_SESSION)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--shmray", "--rootdir", str(tmp_path), str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "5 passed" in out.stdout
