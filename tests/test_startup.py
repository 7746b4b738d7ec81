"""Start-up (issue 20): what `import shmray` and init() load, how a remote function
travels without cloudpickle, and what init leaves for later (the orphaned-worker
scan). Timings are W7's, in bench/; here only the behaviour."""
from __future__ import annotations

import importlib
import inspect
import json
import os
import pickle
import subprocess
import sys
import textwrap
import time

import pytest

import shmray
from shmray import _arity, _function_pickle, _options, _records, _shm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Modules a program with plain tasks does not need, in the driver or in a worker
# (each costs ms at every start: cloudpickle alone was a third of `import shmray`).
NOT_AT_START = ("cloudpickle", "typing", "inspect", "dataclasses", "asyncio", "logging",
                "concurrent.futures", "hashlib", "ctypes", "subprocess", "socket", "numpy",
                "shmray.util.actor_pool", "shmray.runtime_env", "shmray._snapshot",
                "shmray._store_info")


def _run(script: str, tmp_path, timeout=120) -> str:
    """Run `script` as a program's main file (its functions are __main__'s); its stdout."""
    path = tmp_path / "main.py"
    path.write_text(textwrap.dedent(script))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                         timeout=timeout, cwd=str(tmp_path), env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_plain_program_loads_none_of_the_heavy_modules(tmp_path):
    out = _run("""
        import json, sys
        import shmray as ray
        after_import = sorted(sys.modules)
        ray.init(num_cpus=2)

        @ray.remote
        def worker_modules():
            return sorted(sys.modules)

        print(json.dumps([after_import, ray.get(worker_modules.remote()), sorted(sys.modules)]))
        ray.shutdown()
    """, tmp_path)
    after_import, in_worker, in_driver = json.loads(out.splitlines()[-1])
    for where, modules in (("import shmray", after_import), ("a worker", in_worker),
                           ("the driver", in_driver)):
        loaded = [m for m in NOT_AT_START if m in modules]
        assert loaded == [], f"{where} imported {loaded}"
    assert "shmray.util" in after_import  # (the package itself: scheduling_strategies)


def test_what_is_imported_on_first_use_is_there_when_used():
    assert shmray.util.ActorPool.__name__ == "ActorPool"
    from shmray.util import as_completed, inspect_serializability, register_serializer
    assert callable(as_completed) and callable(register_serializer)
    assert inspect_serializability(1, name="one")[0]
    assert callable(shmray.util.placement_group)  # the function, never the submodule
    importlib.import_module("shmray.util.placement_group")
    assert callable(shmray.util.placement_group)
    assert shmray.cloudpickle.loads(shmray.cloudpickle.dumps(lambda: 3))() == 3
    assert shmray.runtime_env.RuntimeEnv(env_vars={"A": "1"})["env_vars"] == {"A": "1"}
    assert {"util", "cloudpickle", "runtime_env", "experimental"} <= set(dir(shmray))
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        shmray.nonexistent  # noqa: B018


# ------------------------------------------------------- a function's bytes
MAIN_FUNCTIONS = """
    import json, math as m, os
    import shmray as ray
    from shmray._function_pickle import pickle_function

    SCALE = 3
    NAMES = ("a", "b")

    def helper(x):
        return x + 1

    def plain(x, y=2, *, z=m.pi):
        return [SCALE * x + y, round(z, 2), NAMES, m.floor(2.5), os.sep]

    def reads_another_main_function(x):
        return helper(x)

    def fails():
        raise ValueError("from plain")

    def make_closure(k):
        def closure(x):
            return x * k
        return closure

    def how(fn):
        return "cloudpickle" if b"cloudpickle" in pickle_function(fn) else "plain"

    ray.init(num_cpus=2)
    result = {
        "ways": [how(plain), how(reads_another_main_function), how(make_closure(2)),
                 how(json.dumps)],
        "plain": ray.get(ray.remote(plain).remote(1, z=1.0)),
        "another": ray.get(ray.remote(reads_another_main_function).remote(1)),
        "closure": ray.get(ray.remote(make_closure(5)).remote(2)),
        "by_reference": ray.get(ray.remote(json.dumps).remote([1])),
    }
    try:
        ray.get(ray.remote(fails).remote())
    except ValueError as e:
        result["traceback"] = str(e)
    print(json.dumps(result))
    ray.shutdown()
"""


def test_functions_of_the_main_script_travel_with_their_globals(tmp_path):
    result = json.loads(_run(MAIN_FUNCTIONS, tmp_path).splitlines()[-1])
    # plain pickle for a plain function, by value, and for an importable one, by
    # reference; cloudpickle for one reading another function of __main__, a closure
    assert result["ways"] == ["plain", "cloudpickle", "cloudpickle", "plain"]
    assert result["plain"] == [5, 1.0, ["a", "b"], 2, os.sep]
    assert result["another"] == 2 and result["closure"] == 10
    assert result["by_reference"] == "[1]"
    # the worker's traceback names the script's file and shows the line
    assert "main.py" in result["traceback"]
    assert 'raise ValueError("from plain")' in result["traceback"]


def test_a_plain_function_is_rebuilt_with_its_defaults_names_and_attributes():
    def plain(x, y=(1, 2), *, z=pickle.HIGHEST_PROTOCOL) -> "list":
        """its doc"""
        return [x, y, z, os.sep, json.dumps(x)]
    plain.tag = "kept"

    data = _function_pickle.pickle_function(plain)
    assert b"cloudpickle" not in data  # (no closure, globals that pickle by themselves)
    rebuilt = pickle.loads(data)
    assert rebuilt is not plain and rebuilt(1) == plain(1)
    for name in ("__name__", "__qualname__", "__doc__", "__defaults__", "__kwdefaults__",
                 "__annotations__", "__module__", "tag"):
        assert getattr(rebuilt, name) == getattr(plain, name), name
    # its namespace is its own, holding what it reads (as cloudpickle's rebuilt one)
    assert rebuilt.__globals__ is not plain.__globals__
    assert rebuilt.__globals__["os"] is os and rebuilt.__globals__["json"] is json
    assert "test_a_plain_function_is_rebuilt_with_its_defaults_names_and_attributes" not in \
        rebuilt.__globals__


def test_a_module_function_that_remote_replaced_travels_by_value(tmp_path):
    (tmp_path / "tasks_mod.py").write_text(textwrap.dedent("""
        import shmray as ray
        OFFSET = 10

        @ray.remote
        def add(x):
            return x + OFFSET
    """))
    out = _run("""
        import sys
        import shmray as ray
        import tasks_mod
        ray.init(num_cpus=2)
        print(ray.get(tasks_mod.add.remote(1)), "cloudpickle" in sys.modules)
        ray.shutdown()
    """, tmp_path)
    assert out.split()[-2:] == ["11", "False"]


def test_a_module_registered_by_value_goes_through_cloudpickle(tmp_path, monkeypatch):
    import cloudpickle

    (tmp_path / "byvalue_mod.py").write_text("def f(x):\n    return x * 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import byvalue_mod

    cloudpickle.register_pickle_by_value(byvalue_mod)
    try:
        data = _function_pickle.pickle_function(byvalue_mod.f)
    finally:
        cloudpickle.unregister_pickle_by_value(byvalue_mod)
        del sys.modules["byvalue_mod"]
    sys.path.remove(str(tmp_path))
    assert pickle.loads(data)(3) == 21  # (the module is gone: its code came by value)


def test_the_users_serializers_reach_a_functions_globals(tmp_path):
    out = _run("""
        import shmray as ray

        class Point:
            def __init__(self, x):
                self.x = x

        ORIGIN = Point(4)
        ray.util.register_serializer(Point, serializer=lambda p: p.x * 10,
                                     deserializer=lambda v: ("rebuilt", v))

        def read():
            return type(ORIGIN).__name__  # (its deserializer made it a tuple)

        ray.init(num_cpus=2)
        print(ray.get(ray.remote(read).remote()))
        ray.shutdown()
    """, tmp_path)
    assert out.splitlines()[-1] == "tuple"


# ------------------------------------------------------- signatures, records, options
def _functions():
    def a(x, y=1, *args, z, w=2, **kw): pass
    def b(x, /, y, *, z=3): pass
    def c(): pass
    def d(*args): pass
    async def e(x, y=0): pass
    return [a, b, c, d, e, lambda q, r=1: q]


@pytest.mark.parametrize("fn", _functions())
def test_arity_read_from_code_is_inspects(fn):
    from_code = _arity.Arity.of(fn)
    from_inspect = _arity.Arity(inspect.signature(fn))
    for name in ("positional", "positional_only", "required", "keywords",
                 "required_keywords", "any_keyword", "max_args", "min_args", "known"):
        assert getattr(from_code, name) == getattr(from_inspect, name), name
    assert str(from_code.signature) == str(inspect.signature(fn))


def test_a_remote_functions_bad_call_is_pythons_message(ray):
    @ray.remote
    def two(a, b):
        return a + b

    with pytest.raises(TypeError, match="missing a required argument: 'b'"):
        two.remote(1)
    assert ray.get(two.remote(1, b=2)) == 3


class _Point(_records.NamedTuple):
    """a point"""
    x: int
    y: int = 0

    def norm(self):
        return abs(self.x) + abs(self.y)


def test_a_record_is_a_namedtuple_with_its_defaults_docstring_and_methods():
    p = _Point(3)
    assert p == (3, 0) and p._fields == ("x", "y") and _Point._field_defaults == {"y": 0}
    assert _Point.__doc__ == "a point" and p.norm() == 3 and p._replace(y=-1).norm() == 4
    assert pickle.loads(pickle.dumps(p)) == p and type(pickle.loads(pickle.dumps(p))) is _Point
    assert _Point.__qualname__ == "_Point" and _Point.__module__ == __name__
    with pytest.raises(TypeError, match="without a default follows"):
        class Bad(_records.NamedTuple):
            a: int = 1
            b: int


def test_options_are_frozen_compared_and_pickled_by_value():
    opts = _options.TaskOptions(num_cpus=2, resources={"a": 1})
    assert opts.request == (("CPU", 2.0), ("a", 1.0))
    with pytest.raises(AttributeError, match="frozen"):
        opts.num_cpus = 3
    copy = pickle.loads(pickle.dumps(opts))
    assert copy == opts and copy.request == opts.request and copy is not opts
    assert opts.replace(num_cpus=1).request == (("CPU", 1.0), ("a", 1.0))
    assert _options.TaskOptions().resources is not _options.TaskOptions().resources
    assert "num_cpus=2" in repr(opts)
    with pytest.raises(TypeError, match="unexpected keyword argument.*nope"):
        _options.TaskOptions(nope=1)


# ------------------------------------------------------- init
def test_the_first_task_goes_to_the_first_worker_started(fresh):
    fresh.init(num_cpus=2)

    @fresh.remote
    def pid():
        return os.getpid()

    first = shmray._context.runtime.pool.workers[0].pid
    assert fresh.get(pid.remote()) == first


def test_init_ends_a_dead_sessions_stuck_worker_soon_after(fresh, tmp_path):
    # A dead driver's pid: a child that has exited and been reaped.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    stuck = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        with open("/proc/self/comm", "w") as f:
            f.write("{_shm.WORKER_COMM}{child.pid}")
        time.sleep(120)
    """)])
    try:
        deadline = time.monotonic() + 10
        while (stuck.pid, child.pid) not in _shm.worker_processes():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        fresh.init(num_cpus=1)
        assert stuck.wait(timeout=10) == -9  # (SIGKILL, by init's reclaim thread)
    finally:
        stuck.kill()
        stuck.wait()
