"""runtime_env (issue 8): env_vars, working_dir (with excludes), py_modules, pip
environments (real installs from the package index, in a cache made for this test
run), job-level environments merged with the task's, and clear errors."""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

import shmray
from shmray import _runtime_env
from shmray.exceptions import RuntimeEnvSetupError

pytestmark = pytest.mark.timeout(300)

# A package the base environment has (pytest needs it), pinned to another version.
BASE_VERSION = importlib.metadata.version("iniconfig")
PINNED_VERSION = "1.1.1" if BASE_VERSION != "1.1.1" else "2.0.0"
PINNED = f"iniconfig=={PINNED_VERSION}"


@pytest.fixture(scope="module")
def pip_cache(tmp_path_factory):
    """A fresh pip-environment cache for this module (SHMRAY_CACHE_DIR)."""
    path = tmp_path_factory.mktemp("shmray-cache")
    old = os.environ.get("SHMRAY_CACHE_DIR")
    os.environ["SHMRAY_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        del os.environ["SHMRAY_CACHE_DIR"]
    else:
        os.environ["SHMRAY_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def index_reachable(tmp_path_factory):
    out = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                          "-d", str(tmp_path_factory.mktemp("probe")), PINNED],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        pytest.skip(f"the package index cannot be reached: {out.stderr.strip()[-300:]}")


@pytest.fixture
def tree(tmp_path):
    """A working_dir with files to exclude, and py_modules: a package and a module."""
    wd = tmp_path / "project"
    (wd / "data").mkdir(parents=True)
    (wd / "logs").mkdir()
    (wd / "keep.txt").write_text("kept")
    (wd / "debug.log").write_text("excluded")
    (wd / "data" / "big.bin").write_text("excluded")
    (wd / "logs" / "keep.txt").write_text("kept too")
    (wd / "local_helper.py").write_text("VALUE = 41\n")
    mods = tmp_path / "mods"
    (mods / "mypkg").mkdir(parents=True)
    (mods / "mypkg" / "__init__.py").write_text("def who():\n    return 'mypkg'\n")
    (mods / "single.py").write_text("X = 7\n")
    return {"wd": str(wd), "pkg": str(mods / "mypkg"), "single": str(mods / "single.py")}


def _listing():
    found = []
    for root, _, files in os.walk("."):
        found += [os.path.join(root, f)[2:] for f in files]
    return sorted(found)


def test_env_vars_working_dir_and_py_modules_apply_to_their_tasks_only(fresh, tree):
    fresh.init(num_cpus=2)

    @fresh.remote(runtime_env={"env_vars": {"SHMRAY_T": "1"}, "working_dir": tree["wd"],
                               "excludes": ["*.log", "data/"],
                               "py_modules": [tree["pkg"], tree["single"]]})
    def inside():
        import local_helper
        import mypkg
        import single
        return (os.environ.get("SHMRAY_T"), _listing(), local_helper.VALUE, mypkg.who(),
                single.X, os.getcwd() != os.environ.get("PWD_OF_DRIVER"))

    @fresh.remote
    def outside():
        try:
            import local_helper  # noqa: F401
            importable = True
        except ImportError:
            importable = False
        return os.environ.get("SHMRAY_T"), os.getcwd(), importable

    env_var, files, value, who, x, moved = fresh.get(inside.remote(), timeout=120)
    assert env_var == "1" and value == 41 and who == "mypkg" and x == 7 and moved
    assert files == ["keep.txt", "local_helper.py", "logs/keep.txt"]  # excludes honoured
    # nothing leaks into tasks without the environment
    assert fresh.get(outside.remote(), timeout=60) == (None, os.getcwd(), False)


def test_the_jobs_environment_merges_with_the_tasks(fresh, tree):
    fresh.init(num_cpus=1, runtime_env={"env_vars": {"JOB": "j", "BOTH": "job"},
                                        "working_dir": tree["wd"]})

    @fresh.remote
    def plain():
        return os.environ.get("JOB"), os.environ.get("BOTH"), os.path.exists("keep.txt")

    @fresh.remote(runtime_env={"env_vars": {"BOTH": "task", "TASK": "t"}})
    def own():
        return (os.environ.get("JOB"), os.environ.get("BOTH"), os.environ.get("TASK"),
                os.path.exists("keep.txt"))

    assert fresh.get(plain.remote(), timeout=60) == ("j", "job", True)
    # env_vars merge (the task's win); the job's working_dir stays
    assert fresh.get(own.remote(), timeout=60) == ("j", "task", "t", True)


def test_workers_are_kept_per_environment_and_reused(fresh):
    fresh.init(num_cpus=2)

    @fresh.remote(runtime_env={"env_vars": {"E": "a"}})
    def in_a():
        return os.getpid(), os.environ["E"]

    @fresh.remote(runtime_env={"env_vars": {"E": "b"}})
    def in_b():
        return os.getpid(), os.environ["E"]

    @fresh.remote
    def plain():
        return os.getpid()

    a = [fresh.get(in_a.remote(), timeout=60) for _ in range(3)]
    b = fresh.get(in_b.remote(), timeout=60)
    assert {e for _, e in a} == {"a"} and b[1] == "b"
    assert len({pid for pid, _ in a}) == 1  # one worker for E=a, reused
    assert b[0] != a[0][0]
    base = {w.pid for w in shmray._context.runtime.pool.workers if w.env is None}
    assert fresh.get(plain.remote(), timeout=60) in base


@pytest.mark.parametrize("env, message", [
    ({"conda": "env.yml"}, "runtime_env key(s) 'conda' not supported"),
    ({"env_vars": {"A": 1}}, "must be a dict of str to str"),
    ({"working_dir": "/no/such/dir"}, "is not an existing directory"),
    ({"working_dir": "s3://bucket/x.zip"}, "must be a local directory"),
    ({"py_modules": ["/no/such/module.py"]}, "does not exist"),
    ({"pip": "no-such-requirements.txt"}, "no such requirements file"),
    ({"pip": {"pkgs": ["x"]}}, "needs 'packages'"),
    ({"config": {"setup_timeout_seconds": 0}}, "setup_timeout_seconds"),
])
def test_bad_runtime_envs_are_refused_at_the_api_edge(env, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        shmray.remote(runtime_env=env)(lambda: None)
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        shmray.init(runtime_env=env)
    assert not shmray.is_initialized()


def test_pip_forms_are_normalized():
    assert _runtime_env.normalize({"pip": ["b", "a", "a"]}) == {"pip": ["b", "a"]}  # pip's order
    assert _runtime_env.normalize({"pip": ["x==1  # pinned", "# a comment", " ", "--pre"]}) == \
        {"pip": ["x==1", "--pre"]}
    assert _runtime_env.normalize({"pip": {"packages": ["x"], "pip_check": False}}) == \
        {"pip": ["x"]}
    assert _runtime_env.normalize({}) is None
    assert _runtime_env.merge({"env_vars": {"A": "1"}, "pip": ["x"]},
                              {"env_vars": {"B": "2"}, "pip": ["y"]}) == \
        {"env_vars": {"A": "1", "B": "2"}, "pip": ["y"]}


def test_a_pip_environment_gives_the_task_its_pinned_version(fresh, pip_cache,
                                                             index_reachable):
    fresh.init(num_cpus=2)

    @fresh.remote(runtime_env={"pip": [PINNED]})
    def version():
        import importlib.metadata

        import iniconfig  # noqa: F401 (it imports)
        import numpy  # the base's packages stay importable
        return importlib.metadata.version("iniconfig"), numpy.__name__

    @fresh.remote
    def base_version():
        import importlib.metadata

        return importlib.metadata.version("iniconfig")

    # two tasks at once: the environment is built once
    refs = [version.remote() for _ in range(2)]
    assert fresh.get(refs, timeout=240) == [(PINNED_VERSION, "numpy")] * 2
    assert fresh.get(base_version.remote(), timeout=60) == BASE_VERSION
    venvs = [d for d in os.listdir(pip_cache / "pip") if not d.endswith(".lock")]
    assert len(venvs) == 1


SESSION = textwrap.dedent("""
    import shmray as ray
    ray.init(num_cpus=1)

    @ray.remote(runtime_env={"pip": [%r]})
    def version():
        import importlib.metadata
        return importlib.metadata.version("iniconfig")

    print(ray.get(version.remote()))
    ray.shutdown()
""" % PINNED)


def test_a_second_session_reuses_the_cached_environment(pip_cache, index_reachable, tmp_path):
    script = tmp_path / "session.py"
    script.write_text(SESSION)
    env = dict(os.environ, SHMRAY_CACHE_DIR=str(pip_cache))
    runs = []
    for _ in range(2):
        start = time.monotonic()
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                             timeout=240, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout == PINNED_VERSION + "\n"
        runs.append((out.stderr, time.monotonic() - start))
    # the second session installs nothing (the first built it, unless an earlier test did)
    assert "creating a pip environment" not in runs[1][0]
    assert "pip install" not in runs[1][0]


def test_a_bad_requirement_fails_with_pips_error_and_the_session_goes_on(fresh, pip_cache,
                                                                        index_reachable):
    fresh.init(num_cpus=1)

    @fresh.remote(runtime_env={"pip": ["shmray-no-such-package-anywhere==9.9.9"]})
    def needs_it():
        return "never"

    @fresh.remote
    def fine():
        return "fine"

    with pytest.raises(RuntimeEnvSetupError) as info:
        fresh.get(needs_it.remote(), timeout=240)
    assert "No matching distribution" in str(info.value)
    assert "shmray-no-such-package-anywhere" in str(info.value)
    assert fresh.get(fine.remote(), timeout=60) == "fine"
    with pytest.raises(RuntimeEnvSetupError):  # known bad: fails at once now
        fresh.get(needs_it.remote(), timeout=60)


# ------------------------------------------------------- found in review, each failed before
def test_tasks_submitted_inside_a_task_inherit_its_environment(fresh):
    fresh.init(num_cpus=2)

    @fresh.remote
    def child():
        return os.environ.get("FROM_PARENT"), os.environ.get("OWN")

    @fresh.remote(runtime_env={"env_vars": {"OWN": "child"}})
    def child_with_its_own():
        return os.environ.get("FROM_PARENT"), os.environ.get("OWN")

    @fresh.remote(runtime_env={"env_vars": {"FROM_PARENT": "yes"}})
    def parent():
        return fresh.get([child.remote(), child_with_its_own.remote()])

    assert fresh.get(parent.remote(), timeout=60) == [("yes", None), ("yes", "child")]


def test_pythonpath_in_env_vars_is_honoured(fresh, tmp_path):
    (tmp_path / "on_the_path.py").write_text("WHERE = 'user path'\n")
    fresh.init(num_cpus=1)

    @fresh.remote(runtime_env={"env_vars": {"PYTHONPATH": str(tmp_path)}})
    def where():
        import on_the_path
        return on_the_path.WHERE, os.environ["PYTHONPATH"].split(os.pathsep)[0]

    assert fresh.get(where.remote(), timeout=60) == ("user path", str(tmp_path))


def test_a_replaced_base_worker_keeps_the_jobs_environment(fresh):
    fresh.init(num_cpus=1, runtime_env={"env_vars": {"JOB": "1"}})

    @fresh.remote(max_calls=1)
    def once():
        return os.getpid()

    @fresh.remote
    def job_var():
        return os.environ.get("JOB"), os.getpid()

    first = fresh.get(once.remote(), timeout=60)  # its worker retires, a base one replaces it
    value, pid = fresh.get(job_var.remote(), timeout=60)
    assert value == "1" and pid != first
    rt = shmray._context.runtime
    assert [w.extra for w in rt.pool.workers] == [False]  # the replacement did the work
    assert rt.pool.workers[0].env is not None


def test_a_job_environment_that_cannot_be_set_up_fails_init_and_leaves_nothing(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    os.mkfifo(wd / "a_fifo")  # copying it fails
    before = set(os.listdir("/dev/shm"))
    with pytest.raises(RuntimeEnvSetupError, match="Failed to set up runtime environment"):
        shmray.init(num_cpus=1, runtime_env={"working_dir": str(wd)})
    assert not shmray.is_initialized()
    assert not [n for n in set(os.listdir("/dev/shm")) - before
                if n.startswith(f"shmray_{os.getpid()}_")]
    root = shmray._shm.sessions_root()
    assert not [d for d in (os.listdir(root) if os.path.isdir(root) else ())
                if d.startswith(f"session_{os.getpid()}_")]


def test_shutdown_during_a_working_dir_copy_leaves_no_session_directory(fresh, tmp_path):
    wd = tmp_path / "many"
    for d in range(200):
        (wd / f"d{d}").mkdir(parents=True)
        for f in range(40):
            (wd / f"d{d}" / f"f{f}.txt").write_text("x")
    fresh.init(num_cpus=1)
    root = shmray._context.runtime.session_root

    @fresh.remote(runtime_env={"working_dir": str(wd)})
    def never_needed():
        return 1

    never_needed.remote()  # the copy starts on its thread
    time.sleep(0.05)
    fresh.shutdown()
    assert not os.path.exists(root)


def test_many_environments_share_a_full_pool(fresh, monkeypatch):
    """A pool at its cap with idle workers of other environments makes room for a
    new one at once (without, the task would wait for an idle worker to retire)."""
    from shmray._driver import workers
    monkeypatch.setattr(workers, "IDLE_ENV_RETIRE", 3600.0)
    fresh.init(num_cpus=1)
    shmray._context.runtime.scheduler.max_workers = 3

    @fresh.remote
    def value_of_e():
        return os.environ["E"]

    got = [fresh.get(value_of_e.options(runtime_env={"env_vars": {"E": str(i)}}).remote(),
                     timeout=60) for i in range(6)]
    assert got == [str(i) for i in range(6)]
    assert len(shmray._context.runtime.pool.workers) <= 3


def test_a_package_whose_import_name_differs_installs(fresh, pip_cache, index_reachable):
    fresh.init(num_cpus=1)

    @fresh.remote(runtime_env={"pip": ["beautifulsoup4==4.12.3  # imports as bs4"]})
    def version():
        import bs4
        return bs4.__version__

    assert fresh.get(version.remote(), timeout=240) == "4.12.3"
