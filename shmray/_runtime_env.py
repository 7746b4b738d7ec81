"""Runtime environments (Ray's ``runtime_env``): env_vars, working_dir, py_modules, pip.

    @remote(runtime_env=...) / init(runtime_env=...) ──normalize()──► plain dict
    job env + task env ──merge()──► the task's env, named by key()
    first task of an env ──prepare() on a thread──► Prepared: the python to run, env vars,
        working directory and import paths
          working_dir, py_modules: copied into the session directory (excludes honoured)
          pip: a virtual environment in the cache (_runtime_env_pip), built once per
               requirement set, across sessions too (a file lock), and reused
    its workers start from Prepared; tasks of an env run only on them

A pip environment is a plain venv whose workers also see the base environment's
packages (shmray, numpy, cloudpickle...) after their own: what the requirements
install wins. pip resolves against both, so it installs only what is missing or
pinned differently. One exception, by design: a binary package built for NumPy 1
that fails to import under the base's NumPy 2 gets `numpy<2` in its environment.
"""
from __future__ import annotations

import os
import sys

from ._records import NamedTuple
from ._runtime_env_pip import LINK_BASE, SetupStop, base_paths, pip_environment

# (hashlib, json, shutil, subprocess, fnmatch: imported by the functions that set an
# environment up; a session without one never needs them)

SUPPORTED = ("env_vars", "working_dir", "py_modules", "pip", "excludes", "config")
EFFECTIVE = ("env_vars", "working_dir", "py_modules", "pip")  # what needs workers of its own
# (log_files: files for Ray's dashboard to show; a RuntimeEnvConfig always has it)
CONFIG_KEYS = ("setup_timeout_seconds", "eager_install", "log_files")
DEFAULT_SETUP_TIMEOUT = 600     # seconds, as Ray's RuntimeEnvConfig


# ------------------------------------------------------------------ validation
def normalize(env) -> dict | None:
    """The runtime_env as a plain dict with absolute paths and pip as a sorted list,
    or None when empty. Raises ValueError/TypeError naming what is wrong."""
    if env is None:
        return None
    if not isinstance(env, dict):
        raise TypeError(f"runtime_env must be a dict, got {type(env).__name__} {env!r}")
    unknown = [k for k in env if k not in SUPPORTED]
    if unknown:
        raise ValueError(f"runtime_env key(s) {', '.join(map(repr, unknown))} not supported by "
                         f"shmray (supported: {', '.join(SUPPORTED)})")
    out = {}
    if env.get("env_vars"):
        ev = env["env_vars"]
        if not isinstance(ev, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in ev.items()):
            raise TypeError(f"runtime_env['env_vars'] must be a dict of str to str, got {ev!r}")
        out["env_vars"] = dict(ev)
    if env.get("working_dir") is not None:
        out["working_dir"] = _local_dir(env["working_dir"], "working_dir")
    if env.get("py_modules"):
        mods = env["py_modules"]
        if not isinstance(mods, (list, tuple)):
            raise TypeError(f"runtime_env['py_modules'] must be a list of paths, got {mods!r}")
        out["py_modules"] = [_local_module(m) for m in mods]
    if env.get("excludes"):
        ex = env["excludes"]
        if not isinstance(ex, (list, tuple)) or not all(isinstance(p, str) for p in ex):
            raise TypeError(f"runtime_env['excludes'] must be a list of str, got {ex!r}")
        out["excludes"] = list(ex)
    if env.get("pip"):
        out["pip"] = _pip_packages(env["pip"])
    if env.get("config"):
        cfg = env["config"]
        if not isinstance(cfg, dict) or any(k not in CONFIG_KEYS for k in cfg):
            raise ValueError(f"runtime_env['config'] may hold {', '.join(CONFIG_KEYS)}; got "
                             f"{cfg!r}")
        timeout = cfg.get("setup_timeout_seconds", DEFAULT_SETUP_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or \
                not (timeout > 0 or timeout == -1):
            raise ValueError("runtime_env['config']['setup_timeout_seconds'] must be a positive "
                             f"int or -1 (no limit), got {timeout!r}")
        out["config"] = dict(cfg)
    return out or None


def _local_dir(path, key) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"runtime_env['{key}'] must be a path, got {path!r}")
    full = os.path.abspath(os.fspath(path))
    if "://" in os.fspath(path):
        raise ValueError(f"runtime_env['{key}'] must be a local directory on this machine "
                         f"(shmray runs on one node), got the URI {path!r}")
    if not os.path.isdir(full):
        raise ValueError(f"runtime_env['{key}'] {path!r} is not an existing directory")
    return full


def _local_module(module) -> str:
    if isinstance(module, type(os)):  # a module object: its file or package directory
        file = getattr(module, "__file__", None)
        if not file:
            raise ValueError(f"runtime_env['py_modules']: module {module.__name__} has no file")
        return os.path.dirname(file) if os.path.basename(file) == "__init__.py" else file
    if not isinstance(module, (str, os.PathLike)):
        raise TypeError(f"runtime_env['py_modules'] entries must be paths or modules, got "
                        f"{module!r}")
    full = os.path.abspath(os.fspath(module))
    if not os.path.exists(full):
        raise ValueError(f"runtime_env['py_modules'] entry {module!r} does not exist")
    if os.path.isfile(full) and not full.endswith(".py"):
        raise ValueError(f"runtime_env['py_modules'] entry {module!r} is neither a directory "
                         f"nor a .py file (wheels are not supported)")
    return full


def _pip_packages(pip) -> list:
    """Ray accepts a list of requirements, a dict with 'packages', or the path of a
    requirements.txt."""
    if isinstance(pip, dict):
        extra = [k for k in pip if k not in ("packages", "pip_check", "pip_version")]
        if extra or "packages" not in pip:
            raise ValueError(f"runtime_env['pip'] as a dict needs 'packages' (and may have "
                             f"'pip_check', 'pip_version'); got {pip!r}")
        pip = pip["packages"]
    if isinstance(pip, str):
        if not os.path.isfile(pip):
            raise ValueError(f"runtime_env['pip'] {pip!r}: no such requirements file")
        with open(pip) as f:
            pip = f.read().splitlines()
    if not isinstance(pip, (list, tuple)) or not all(isinstance(p, str) for p in pip):
        raise TypeError(f"runtime_env['pip'] must be a list of requirement strings, got {pip!r}")
    lines = [_uncommented(p) for p in pip]
    return list(dict.fromkeys(p for p in lines if p))  # pip's order kept, duplicates dropped


def _uncommented(line: str) -> str:
    """A requirements line without its comment (`#` at the start or after a space)."""
    line = line.strip()
    if line.startswith("#"):
        return ""
    cut = line.find(" #")
    return (line[:cut] if cut >= 0 else line).strip()


def merge(job: dict | None, task: dict | None) -> dict | None:
    """Ray's rule: the task's fields override the job's, env_vars merge (the task's win)."""
    if not job:
        return task
    if not task:
        return job
    out = {**job, **task}
    if "env_vars" in job and "env_vars" in task:
        out["env_vars"] = {**job["env_vars"], **task["env_vars"]}
    return out


def key(env: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ preparing
class Prepared(NamedTuple):
    """How to start a worker for an environment."""

    key: str
    env: dict                   # the runtime_env itself (get_runtime_context().runtime_env)
    python: str                 # interpreter: the venv's for pip, else this one
    env_vars: dict
    cwd: str | None             # the working_dir's copy, or None (the driver's)
    paths_first: tuple          # working_dir and py_modules copies, first on sys.path
    venv: bool                  # a pip venv: keep its own sys.path, then the base's


def prepare(env: dict, session_dir: str, log, stop: "SetupStop") -> Prepared:
    """Everything `env` needs, ready to start workers; RuntimeEnvSetupError if not.
    `log(text)` reports progress (a first pip environment takes a while); `stop`, set
    by the session's shutdown, ends it at its next step."""
    import shutil

    k = key(env)
    root = os.path.join(session_dir, "runtime_env", k)
    paths, cwd = [], None
    if "working_dir" in env:
        cwd = os.path.join(root, "working_dir")
        _copy_tree(env["working_dir"], cwd, env.get("excludes", ()), stop)
        paths.append(cwd)
    if "py_modules" in env:
        modules = os.path.join(root, "py_modules")
        os.makedirs(modules, exist_ok=True)
        for src in env["py_modules"]:
            dst = os.path.join(modules, os.path.basename(src.rstrip(os.sep)))
            if os.path.isdir(src):
                _copy_tree(src, dst, env.get("excludes", ()), stop)
            else:
                shutil.copy2(src, dst)
        paths.append(modules)
    python = sys.executable
    if "pip" in env:
        timeout = env.get("config", {}).get("setup_timeout_seconds", DEFAULT_SETUP_TIMEOUT)
        python = pip_environment(env["pip"], log, None if timeout == -1 else timeout, stop)
    return Prepared(k, env, python, dict(env.get("env_vars", {})), cwd, tuple(paths),
                    "pip" in env)


def _excluded(rel: str, is_dir: bool, patterns) -> bool:
    """gitignore-style matching, as Ray's `excludes`: "*.log" anywhere, "/x" at the top,
    "a/b*" anchored, "dir/" directories only."""
    import fnmatch

    name = rel.rsplit("/", 1)[-1]
    for p in patterns:
        if p.endswith("/"):
            if not is_dir:
                continue
            p = p.rstrip("/")
        if p.startswith("/"):
            if fnmatch.fnmatch(rel, p[1:]):
                return True
        elif "/" in p:
            if fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel, p.lstrip("*/")):
                return True
        elif fnmatch.fnmatch(name, p):
            return True
    return False


def _copy_tree(src: str, dst: str, excludes, stop):
    """A snapshot of `src` without the excluded files (the task cannot see them)."""
    import shutil

    def ignore(directory, names):
        stop.check()
        rel_dir = os.path.relpath(directory, src)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        return {n for n in names
                if _excluded(rel_dir + n, os.path.isdir(os.path.join(directory, n)), excludes)}

    shutil.copytree(src, dst, ignore=ignore, symlinks=True, dirs_exist_ok=True)


def worker_bootstrap(prepared: Prepared) -> str:
    """The -c code a worker of `prepared` starts with (a venv: link the base first)."""
    link = LINK_BASE.format(paths=base_paths()) if prepared.venv else "import sys\n"
    return link + "import shmray._worker as w; w.main(sys.argv)"
