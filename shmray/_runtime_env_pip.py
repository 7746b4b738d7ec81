"""A runtime_env's pip part (see _runtime_env): a virtual environment in the cache,
built once per requirement set (across sessions too, under a file lock), whose workers
see the base environment's packages after their own; the commands it runs, stoppable
at shutdown and bounded by the setup timeout."""
from __future__ import annotations

import fcntl
import os
import sys
import threading
import time

from .exceptions import RuntimeEnvSetupError

READY_MARK = ".shmray-ready"    # written last: a venv without it is half-built


def cache_dir() -> str:
    """Where pip environments live, across sessions: $SHMRAY_CACHE_DIR, else
    $XDG_CACHE_HOME/shmray, else ~/.cache/shmray."""
    explicit = os.environ.get("SHMRAY_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "shmray")


def base_paths() -> list:
    """The import paths of this interpreter that a pip environment's workers (and pip)
    see after the venv's own: the base's packages, shmray included."""
    return [p for p in sys.path if p and os.path.isdir(p)]


# A pip environment's python runs this first: the base's paths after its own (site
# dirs, so their .pth files, editable installs among them, work too).
LINK_BASE = ("import site, sys\n"
             "for p in {paths!r}:\n"
             "    site.addsitedir(p)\n")

_building = {}                  # venv dir -> lock: one build per set in this process
_building_lock = threading.Lock()


def pip_environment(packages: list, log, timeout, stop) -> str:
    """The python of a venv with `packages` installed (built now if not cached)."""
    import hashlib
    import json

    tag = f"{sys.implementation.cache_tag}-{sys.prefix}-{json.dumps(packages)}"
    venv = os.path.join(cache_dir(), "pip", hashlib.sha256(tag.encode()).hexdigest()[:16])
    python = os.path.join(venv, "bin", "python")
    with _building_lock:
        local = _building.setdefault(venv, threading.Lock())
    with local:  # this process
        if os.path.exists(os.path.join(venv, READY_MARK)):
            return python
        os.makedirs(os.path.dirname(venv), exist_ok=True)
        with open(venv + ".lock", "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)  # other sessions on this machine
            if os.path.exists(os.path.join(venv, READY_MARK)):
                log(f"runtime_env: another session built the pip environment {packages}")
                return python
            _build(venv, packages, log, timeout, stop)
    return python


def _build(venv: str, packages: list, log, timeout, stop):
    import json
    import shutil

    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    log(f"runtime_env: creating a pip environment for {packages} in {venv} (first use: this "
        f"takes a while; later sessions reuse it)")
    shutil.rmtree(venv, ignore_errors=True)  # a half-built one from an interrupted run
    _run([sys.executable, "-m", "venv", venv], "python -m venv", log, deadline, stop)
    python = os.path.join(venv, "bin", "python")
    requirements = os.path.join(venv, "requirements.txt")  # lines as given: options too
    with open(requirements, "w") as f:
        f.write("\n".join(packages) + "\n")
    install = [python, "-c", LINK_BASE.format(paths=base_paths())
               + "import runpy; sys.argv[0] = 'pip'; runpy.run_module('pip', run_name='__main__')",
               "install", "--disable-pip-version-check", "--progress-bar", "off",
               "-r", requirements]
    _run(install, "pip install", log, deadline, stop)
    broken = _import_check(python, packages, deadline, stop)
    if broken and "numpy" in broken.lower() and not any(p.startswith("numpy") for p in packages):
        log("runtime_env: a package was built for NumPy 1 and the base has NumPy 2: "
            "installing numpy<2 into its environment")
        _run(install + ["numpy<2"], "pip install", log, deadline, stop)
        broken = _import_check(python, packages, deadline, stop)
    if broken:
        raise RuntimeEnvSetupError(f"Failed to set up runtime environment: the packages "
                                   f"{packages} installed but do not import:\n{broken}")
    with open(os.path.join(venv, READY_MARK), "w") as f:
        f.write(json.dumps(packages))
    log(f"runtime_env: pip environment ready ({time.monotonic() - started:.1f} s)")


# pip's lines worth showing while it works (everything is kept for an error message)
_PROGRESS = ("Collecting", "Downloading", "Installing", "Successfully", "ERROR", "error:")


class SetupStop(threading.Event):
    """A session's shutdown, as its setups see it: set, running setup processes are
    killed (pip) and the rest stop at their next step (copies, at the next directory)."""

    def __init__(self):
        super().__init__()
        self.running = set()    # setup processes running now

    def set(self):
        super().set()
        for proc in list(self.running):
            proc.kill()

    def check(self):
        if self.is_set():
            raise RuntimeEnvSetupError("Failed to set up runtime environment: the session "
                                       "shut down meanwhile")


def _run(cmd, what, log, deadline, stop, progress=True):
    """Run a setup step, its output streamed to `log` (pip's progress lines only, or
    every line with progress=False); RuntimeEnvSetupError with the output's tail if it
    fails or runs past the deadline."""
    import subprocess

    lines = []
    stop.check()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    stop.running.add(proc)
    if stop.is_set():  # shutdown came between the check and the start
        proc.kill()
    timer = None
    if deadline is not None:
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), proc.kill)
        timer.start()
    try:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                lines.append(line)
                if not progress or line.lstrip().startswith(_PROGRESS):
                    log(f"  {what}: {line.strip()}")
        code = proc.wait()
    finally:
        stop.running.discard(proc)
        if timer is not None:
            timer.cancel()
    if code != 0:
        why = ("ran past runtime_env['config']['setup_timeout_seconds']"
               if deadline is not None and time.monotonic() >= deadline else f"exit code {code}")
        tail = "\n".join(lines[-30:])
        raise RuntimeEnvSetupError(f"Failed to set up runtime environment: {what} failed "
                                   f"({why}):\n{tail}")


_IMPORT_CHECK = """
import importlib, importlib.metadata as md, importlib.util, re, sys
failed = []
for req in sys.argv[1:]:
    if req.startswith("-") or "/" in req or ":" in req:
        continue  # an option, a path or a URL: no name to check
    name = re.split(r"[<>=!~;\\[ @]", req, maxsplit=1)[0]
    try:
        dist = md.distribution(name)
    except Exception:
        continue
    tops = set((dist.read_text("top_level.txt") or "").split())
    if not tops:  # most wheels built without setuptools: the files' first parts
        for f in dist.files or ():
            first = f.parts[0] if f.parts else ""
            if first.endswith((".dist-info", ".egg-info", ".data")) or first in ("..", "__pycache__"):
                continue
            tops.add(first[:-3] if len(f.parts) == 1 and first.endswith(".py")
                     else first.split(".")[0] if len(f.parts) == 1 else first)
    for module in tops:
        if not module.isidentifier() or module.startswith("_"):
            continue
        if importlib.util.find_spec(module) is None:
            continue
        try:
            importlib.import_module(module)
        except Exception as e:
            failed.append(f"import {module}: {type(e).__name__}: {e}")
print("\\n".join(failed))
"""


def _import_check(python, packages, deadline, stop) -> str:
    """Import what was asked for, in the environment (a module that is there but does
    not import: a broken install). Returns the failures' text."""
    lines = []
    try:
        _run([python, "-c", LINK_BASE.format(paths=base_paths()) + _IMPORT_CHECK, *packages],
             "import check", lines.append, deadline, stop, progress=False)
    except RuntimeEnvSetupError as e:
        return str(e)
    return "\n".join(line.split(": ", 1)[1] if ": " in line else line for line in lines
                     if line.strip())


