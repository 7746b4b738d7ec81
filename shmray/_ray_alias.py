"""`import ray` answered by shmray, for `shmray run` and the pytest plugin: a program or
a test suite written for Ray runs on shmray unchanged.

    install() ─► sys.modules["ray"] = shmray, "ray.exceptions" = shmray.exceptions, ...
              ─► a finder first on sys.meta_path: any other `ray.*` module is an
                 ImportError naming it (never a fall back to the real package)
              ─► SHMRAY_AS_RAY=1 in the environment: workers started fresh (spawn, a
                 runtime_env) install it too, before they unpickle anything

Code pickled in the program names `ray` by the module's real name, shmray, so workers
unpickle shmray's functions whether or not they install the alias.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys

ENV = "SHMRAY_AS_RAY"
# Ray's modules that shmray has: ray name -> shmray module
MODULES = {
    "ray": "shmray",
    "ray.exceptions": "shmray.exceptions",
    "ray.actor": "shmray.actor",
    "ray.util": "shmray.util",
    "ray.util.scheduling_strategies": "shmray.util.scheduling_strategies",
    "ray._raylet": "shmray._raylet",
    "ray.cloudpickle": "shmray.cloudpickle",
    "ray.runtime_env": "shmray.runtime_env",
    "ray.runtime_env.runtime_env": "shmray.runtime_env.runtime_env",
    "ray.util.serialization": "shmray.util.serialization",
    "ray.util.check_serialize": "shmray.util.check_serialize",
    "ray.util.debug": "shmray.util.debug",
    "ray.util.placement_group": "shmray.util.placement_group",
    "ray.experimental": "shmray.experimental",
}
# ... imported when the program imports them (each loads something heavy or optional:
# asyncio, tqdm, joblib, multiprocessing's machinery)
ON_IMPORT = {
    "ray.util.actor_pool": "shmray.util.actor_pool",
    "ray.util.queue": "shmray.util.queue",
    "ray.util.helpers": "shmray.util.completion",
    "ray.util.multiprocessing": "shmray.util.multiprocessing",
    "ray.util.joblib": "shmray.util.joblib",
    "ray.util.joblib.ray_backend": "shmray.util.joblib.ray_backend",
    "ray.util.multiprocessing.pool": "shmray.util.multiprocessing.pool",
    "ray.util.state": "shmray.util.state",
    "ray.util.state.api": "shmray.util.state.api",
    "ray.util.state.common": "shmray.util.state.common",
    "ray.util.state.exception": "shmray.util.state.exception",
    "ray.experimental.tqdm_ray": "shmray.experimental.tqdm_ray",
}


class _Alias(importlib.abc.Loader):
    """Loads a `ray.*` name of ON_IMPORT as its shmray module (the module keeps its
    own name and spec: import only files it under the ray name too)."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module):
        pass


class _NoSuchRayModule(importlib.abc.MetaPathFinder):
    """Any `ray.*` module of ON_IMPORT: shmray's; any other one shmray does not have: an
    ImportError that says so."""

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".", 1)[0] != "ray" or fullname in sys.modules:
            return None
        if fullname in ON_IMPORT:
            return importlib.util.spec_from_loader(fullname, _Alias(ON_IMPORT[fullname]))
        raise ModuleNotFoundError(
            f"No module named {fullname!r}: this program runs on shmray (`import ray` is "
            f"shmray), which has no {fullname}. It has: "
            f"{', '.join(sorted({**MODULES, **ON_IMPORT}))}.", name=fullname)


def install():
    """Make `import ray` (and the modules above) shmray's, in this process and in the
    workers it starts. ImportError if the real ray is imported already."""
    real = [name for name, module in list(sys.modules.items())
            if (name == "ray" or name.startswith("ray."))
            and not getattr(module, "__name__", "").startswith("shmray")]
    if real:
        raise ImportError(f"The real ray is imported already ({real[0]}): shmray can stand "
                          f"in for it only before the program imports it.")
    for ray_name, ours in MODULES.items():
        sys.modules[ray_name] = importlib.import_module(ours)
    if not any(isinstance(f, _NoSuchRayModule) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoSuchRayModule())
    os.environ[ENV] = "1"


def install_if_asked():
    """In a worker started fresh: install() if its driver runs as ray (SHMRAY_AS_RAY)."""
    if os.environ.get(ENV) == "1":
        install()
