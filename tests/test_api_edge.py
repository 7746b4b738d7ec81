"""Bad input at the API's edge: a clear error at the call, naming the option or the
argument, before anything runs (issue 15, items 14, 16 to 19)."""
from __future__ import annotations

import inspect
import itertools
import linecache
import os
import subprocess
import sys
import textwrap
import time

import pytest

import shmray
from shmray import _resources
from shmray._arity import Arity

NAN, INF = float("nan"), float("inf")
NOT_FINITE = (NAN, INF, -INF, 10 ** 400)  # the last: an int no float can hold


def _our_segments():
    return {n for n in os.listdir("/dev/shm") if n.startswith(f"shmray_{os.getpid()}_")}


# ------------------------------------------------------------ item 14

def test_init_rejects_an_object_store_larger_than_the_machine(fresh):
    before = _our_segments()
    with pytest.raises(ValueError, match=r"object_store_memory=18,446,744,073,709,551,616 "
                                         r"is more than this machine's memory: .* of RAM"):
        fresh.init(num_cpus=1, object_store_memory=2 ** 64)
    beyond = _resources.system_memory() + _resources.swap_memory() + 1
    with pytest.raises(ValueError, match="object_store_memory=.* is more than"):
        fresh.init(num_cpus=1, object_store_memory=beyond)
    assert not fresh.is_initialized() and _our_segments() == before  # nothing created
    fresh.init(num_cpus=1, object_store_memory=64 << 20)  # what fits is still accepted
    assert fresh.get(fresh.put(b"x" * (1 << 20))) == b"x" * (1 << 20)


# ------------------------------------------------------------ item 16

@pytest.mark.parametrize("value", NOT_FINITE, ids=repr)
@pytest.mark.parametrize("option", ["num_cpus", "num_gpus", "memory"])
def test_task_options_reject_nan_and_infinity(option, value):
    def f():
        return 1

    with pytest.raises(ValueError, match=f"'{option}' must be a finite number"):
        shmray.remote(**{option: value})(f)
    with pytest.raises(ValueError, match=f"'{option}' must be a finite number"):
        shmray.remote(f).options(**{option: value})
    with pytest.raises(ValueError, match=r"'resources\['x'\]' must be a finite number"):
        shmray.remote(f).options(resources={"x": value})


@pytest.mark.parametrize("value", NOT_FINITE, ids=repr)
def test_init_rejects_nan_and_infinity(fresh, value):
    for option in ("num_cpus", "num_gpus"):
        with pytest.raises(ValueError, match=f"{option} must be a finite, non-negative number"):
            fresh.init(**{option: value})
    with pytest.raises(ValueError, match="resources must map names to finite, non-negative "
                                         "numbers, got 'x'"):
        fresh.init(num_cpus=1, resources={"x": value})
    assert not fresh.is_initialized()


def test_timeouts_reject_nan_and_infinity(ray, tmp_path):
    go = tmp_path / "go"

    @ray.remote
    def until_told(path):
        while not os.path.exists(path):
            time.sleep(0.005)
        return "done"

    ready, pending = ray.put(1), until_told.remote(str(go))
    try:
        for value in (NAN, INF, -INF):
            for refs in (ready, pending):  # ready or not: the same answer
                with pytest.raises(ValueError, match="'timeout' must be a finite number"):
                    ray.get(refs, timeout=value)
                with pytest.raises(ValueError, match="'timeout' must be a finite number"):
                    ray.wait([refs], timeout=value)
    finally:
        go.touch()
    assert ray.get(pending) == "done"


# ------------------------------------------------------------ item 17

_MODULE = '''
def checked(text):
    return int(text)  # the line a module's task fails on
'''

_SCRIPT = '''
import shmray as ray
import helpers_for_tasks

def parse(text):
    return int(text)  # the line a script's task fails on

@ray.remote
def main_task(text):
    return parse(text)

ray.init(num_cpus=1)
for task in (main_task, ray.remote(helpers_for_tasks.checked)):
    try:
        ray.get(task.remote("nope"))
    except ValueError as e:
        print(str(e))
        print("=====")
ray.shutdown()
'''


def test_a_tasks_traceback_names_the_users_files_and_lines(tmp_path):
    (tmp_path / "helpers_for_tasks.py").write_text(_MODULE)
    script = tmp_path / "the_script.py"
    script.write_text(_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    in_main, in_module = out.stdout.split("=====")[:2]
    assert f'File "{script}", line 6, in parse' in in_main
    assert "return int(text)  # the line a script's task fails on" in in_main
    assert f'File "{script}", line 10, in main_task' in in_main
    assert f'File "{tmp_path / "helpers_for_tasks.py"}", line 3, in checked' in in_module
    assert "return int(text)  # the line a module's task fails on" in in_module


def test_a_tasks_traceback_shows_lines_only_the_drivers_linecache_has(ray):
    # What IPython and Jupyter do with a cell: its source is compiled under a made-up
    # file name and kept in linecache only. Workers started before it cannot know it.
    source = textwrap.dedent('''
        import math

        def cell_task(x):
            y = math.sqrt(x)
            raise ValueError(f"the cell's own error {y}")
    ''')
    filename = f"<ipython-input-3-{os.getpid():x}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    try:
        namespace = {"__name__": "__main__"}
        exec(compile(source, filename, "exec"), namespace)
        cell_task = ray.remote(namespace["cell_task"])
        with pytest.raises(ValueError) as info:
            ray.get(cell_task.remote(4))
    finally:
        del linecache.cache[filename]
    text = str(info.value)
    assert f'File "{filename}", line 6, in cell_task' in text
    assert "raise ValueError(f\"the cell's own error {y}\")" in text


# ------------------------------------------------------------ item 18

def test_remote_checks_the_arguments_against_the_signature(ray):
    @ray.remote
    def add(a, b=10, *, scale=1):
        return (a + b) * scale

    with pytest.raises(TypeError, match=r"add.remote\(\): too many positional arguments"):
        add.remote(1, 2, 3)
    with pytest.raises(TypeError, match=r"add.remote\(\): missing a required argument: 'a'"):
        add.remote()
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'c'"):
        add.remote(1, c=2)
    with pytest.raises(TypeError, match="multiple values for argument 'a'"):
        add.remote(1, a=2)
    with pytest.raises(TypeError, match="too many positional arguments"):
        add.options(num_cpus=0.5).remote(1, 2, 3)  # a variant checks as the function does

    @ray.remote
    def nothing():
        return "ran"

    with pytest.raises(TypeError, match=r"nothing.remote\(\): too many positional"):
        nothing.remote(None)
    assert ray.get([add.remote(1), add.remote(1, 2), add.remote(a=1, scale=2),
                    add.options(name="x").remote(1, b=1, scale=3), nothing.remote()]) \
        == [11, 3, 22, 6, "ran"]


_SIGNATURES = """
def f0(): pass
def f1(a): pass
def f2(a, b=1): pass
def f3(a, /, b, c=1): pass
def f4(a, /, b=2, *args, d, e=2, **kw): pass
def f5(*args): pass
def f6(**kw): pass
def f7(*args, **kw): pass
def f8(a, *, b): pass
def f9(a=1, /, **kw): pass
def f10(a, b, /, *, c=3): pass
def f11(a, b=2, /, c=3, *, d=4): pass
"""


def test_the_cached_argument_check_agrees_with_python():
    namespace = {}
    exec(_SIGNATURES, namespace)
    names = ["a", "b", "c", "d", "e", "args", "kw", "z"]
    for function in (v for k, v in namespace.items() if k.startswith("f")):
        arity = Arity(inspect.signature(function))
        for n, k in itertools.product(range(5), range(4)):
            for keywords in itertools.combinations(names, k):
                args, kwargs = tuple(range(n)), dict.fromkeys(keywords, 0)
                try:
                    function(*args, **kwargs)
                    python_says = True
                except TypeError:
                    python_says = False
                assert arity.accepts(args, kwargs) == python_says, (function, args, kwargs)
                if not kwargs:  # the per-call check of .remote()
                    assert (arity.min_args <= n <= arity.max_args) == python_says
    anything = Arity.of(max)  # no signature to read: every call goes to the task
    assert anything.accepts((), {}) and anything.accepts((1, 2), {"key": abs})


# ------------------------------------------------------------ item 19

def test_get_and_wait_in_the_driver_raise_on_values(ray):
    ref = ray.put(1)
    for not_refs in (5, (ref,), {"a": ref}, (r for r in [ref]), "text"):
        with pytest.raises(ValueError, match="must either be an ObjectRef or a list of "
                                             "ObjectRefs"):
            ray.get(not_refs)
    with pytest.raises(TypeError, match="Attempting to call `get` on the value 2, which is "
                                        "not an ray.ObjectRef"):
        ray.get([ref, 2])
    with pytest.raises(TypeError, match="got list containing <class 'int'>"):
        ray.wait([ref, 2])
    with pytest.raises(TypeError, match="expected a list of ray.ObjectRef, got <class 'tuple'>"):
        ray.wait((ref,))
    assert ray.get([ref]) == [1] and ray.wait([ref]) == ([ref], [])


def test_resolved_values_still_pass_get_and_wait_inside_a_task(ray):
    @ray.remote
    def total(items, one):
        ready, not_ready = ray.wait(items, num_returns=len(items))
        return sum(ray.get(items)) + ray.get(one), len(ready), len(not_ready)

    @ray.remote
    def three():
        return 3

    # items: refs resolved into values for the task; one: a plain value
    assert ray.get(total.remote([ray.put(1), ray.put(2)], 4)) == (7, 2, 0)

    @ray.remote
    def mixed(items, boxed):
        late = boxed[0][0]  # two levels down: still a ref inside the task
        ready, _ = ray.wait(items + [late], num_returns=len(items) + 1)
        return len(ready), ray.get(late), ray.get(items)

    assert ray.get(mixed.remote([ray.put(1), 2], [[three.remote()]])) == (3, 3, [1, 2])
