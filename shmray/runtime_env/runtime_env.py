"""``RuntimeEnv`` and ``RuntimeEnvConfig`` (Ray's ``ray.runtime_env``): a runtime_env
as a typed dict. Each is a dict, so it goes wherever a runtime_env dict goes (``init``,
``@remote``, ``.options``), where shmray checks what it can set up (see
shmray._runtime_env: env_vars, working_dir, py_modules, pip, excludes, config).

Building one checks the shape of each field as Ray does (a TypeError naming it);
fields shmray cannot set up on one node (conda, container, uv, ...) are kept, as
Ray keeps them, and refused where the environment is used. On the Ray-cluster path
(init(address=...)) building one gives Ray's own object.
"""
from __future__ import annotations

import json
import os
import warnings
from types import ModuleType

from .. import _runtime_env
from ..util._on_cluster import ray_counterpart

DEFAULT_SETUP_TIMEOUT_SECONDS = 600


def _ray_own(name: str, args, kwargs):
    ray_class = ray_counterpart("ray.runtime_env", name)
    return None if ray_class is None else ray_class(*args, **kwargs)


def _copied(value):
    """A copy of the dicts and lists in `value` (what else is in a field, a module in
    py_modules, stays as it is)."""
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copied(v) for v in value]
    return value


def _rebuilt(cls, items: dict):
    """Unpickling: the dict as it was, without checking it again."""
    obj = dict.__new__(cls)
    dict.update(obj, items)
    return obj


class RuntimeEnvConfig(dict):
    """How an environment is set up: `setup_timeout_seconds` (600; -1 for no limit),
    `eager_install` (True: at init for the job's), `log_files` (for Ray's dashboard,
    which shmray has not: kept, unused)."""

    known_fields = {"setup_timeout_seconds", "eager_install", "log_files"}

    def __new__(cls, *args, **kwargs):
        ray_own = _ray_own("RuntimeEnvConfig", args, kwargs)
        return super().__new__(cls) if ray_own is None else ray_own

    def __init__(self, setup_timeout_seconds: int = DEFAULT_SETUP_TIMEOUT_SECONDS,
                 eager_install: bool = True, log_files=None):
        super().__init__()
        if isinstance(setup_timeout_seconds, bool) or not isinstance(setup_timeout_seconds, int):
            raise TypeError(f"setup_timeout_seconds must be an int, got "
                            f"{type(setup_timeout_seconds).__name__} {setup_timeout_seconds!r}")
        if setup_timeout_seconds <= 0 and setup_timeout_seconds != -1:
            raise ValueError(f"setup_timeout_seconds must be greater than zero or -1 (no "
                             f"limit), got {setup_timeout_seconds}")
        if not isinstance(eager_install, bool):
            raise TypeError(f"eager_install must be a bool, got {type(eager_install).__name__}")
        if log_files is None:
            log_files = []
        if not isinstance(log_files, list) or not all(isinstance(f, str) for f in log_files):
            raise TypeError(f"log_files must be a list of str or None, got {log_files!r}")
        self["setup_timeout_seconds"] = setup_timeout_seconds
        self["eager_install"] = eager_install
        self["log_files"] = log_files

    def __reduce__(self):
        return _rebuilt, (type(self), dict(self))

    @classmethod
    def default_config(cls) -> "RuntimeEnvConfig":
        return cls()

    @staticmethod
    def parse_and_validate_runtime_env_config(config) -> "RuntimeEnvConfig":
        """A RuntimeEnvConfig from a dict (unknown keys are dropped with a warning, as
        in Ray) or a RuntimeEnvConfig."""
        if isinstance(config, RuntimeEnvConfig):
            return config
        if not isinstance(config, dict):
            raise TypeError(f"runtime_env['config'] must be a dict or a RuntimeEnvConfig, "
                            f"got {type(config).__name__}")
        unknown = sorted(set(config) - RuntimeEnvConfig.known_fields)
        if unknown:
            warnings.warn(f"runtime_env['config']: unknown entries ignored: {unknown}",
                          stacklevel=3)
        return RuntimeEnvConfig(**{k: v for k, v in config.items()
                                   if k in RuntimeEnvConfig.known_fields})

    def to_dict(self) -> dict:
        return _copied(dict(self))


# ------------------------------------------------------------ fields' shapes
def _path(key, value):
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"runtime_env['{key}'] must be a path (str), got "
                        f"{type(value).__name__} {value!r}")
    return value


def _paths_or_modules(key, value):
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"runtime_env['{key}'] must be a list, got {type(value).__name__}")
    for entry in value:
        if not isinstance(entry, (str, os.PathLike, ModuleType)):
            raise TypeError(f"runtime_env['{key}'] entries must be paths or modules, got "
                            f"{entry!r}")
    return list(value)


def _strings(key, value):
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"runtime_env['{key}'] must be a list of str, got {value!r}")
    return list(value)


def _env_vars(key, value):
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        raise TypeError(f"runtime_env['{key}'] must be a dict of str to str, got {value!r}")
    return dict(value)


def _packages(key, value):  # pip, uv: a list, a requirements file, or a dict
    if not isinstance(value, (list, tuple, str, dict)):
        raise TypeError(f"runtime_env['{key}'] must be a list of requirements, the path of "
                        f"a requirements file or a dict, got {type(value).__name__}")
    return list(value) if isinstance(value, tuple) else value


def _conda(key, value):
    if not isinstance(value, (str, dict)):
        raise TypeError(f"runtime_env['{key}'] must be an environment name, a YAML file "
                        f"or a dict, got {type(value).__name__}")
    return value


def _setup_hook(key, value):
    if not (callable(value) or isinstance(value, str)):
        raise TypeError(f"runtime_env['{key}'] must be a callable or its import path, got "
                        f"{value!r}")
    return value


def _config(key, value):
    return RuntimeEnvConfig.parse_and_validate_runtime_env_config(value)


_SHAPES = {
    "working_dir": _path, "py_executable": _path, "py_modules": _paths_or_modules,
    "excludes": _strings, "java_jars": _strings, "env_vars": _env_vars, "pip": _packages,
    "uv": _packages, "conda": _conda, "worker_process_setup_hook": _setup_hook,
    "config": _config,
}


class RuntimeEnv(dict):
    """A runtime environment for a job, task or actor (Ray's ``RuntimeEnv``): the
    fields as keyword arguments, each checked for its shape; None leaves a field out.
    ``RuntimeEnv(env_vars={"A": "1"}) == {"env_vars": {"A": "1"}}``."""

    known_fields = {"py_modules", "py_executable", "java_jars", "working_dir", "conda", "pip",
                    "uv", "container", "excludes", "env_vars", "config",
                    "worker_process_setup_hook", "_nsight", "_rocprof_sys", "image_uri"}

    def __new__(cls, *args, **kwargs):
        ray_own = _ray_own("RuntimeEnv", args, kwargs)
        return super().__new__(cls) if ray_own is None else ray_own

    def __init__(self, *, py_modules=None, py_executable=None, working_dir=None, pip=None,
                 conda=None, container=None, env_vars=None, worker_process_setup_hook=None,
                 nsight=None, rocprof_sys=None, config=None, _validate: bool = True,
                 image_uri=None, uv=None, **kwargs):
        super().__init__()
        given = dict(kwargs)
        for name, value in (("py_modules", py_modules), ("py_executable", py_executable),
                            ("working_dir", working_dir), ("pip", pip), ("uv", uv),
                            ("conda", conda), ("_nsight", nsight), ("_rocprof_sys", rocprof_sys),
                            ("container", container), ("env_vars", env_vars),
                            ("config", config),
                            ("worker_process_setup_hook", worker_process_setup_hook),
                            ("image_uri", image_uri)):
            if value is not None:
                given[name] = value
        if not _validate:  # (deserialize: trusted as it is)
            dict.update(self, given)
            return
        installers = [k for k in ("pip", "conda", "uv") if given.get(k) is not None]
        if len(installers) > 1:
            raise ValueError(f"The runtime_env fields {' and '.join(installers)} cannot be "
                             f"given together (pip packages for a conda environment go in "
                             f"its YAML)")
        for exclusive in ("container", "image_uri"):
            others = sorted(set(given) - {exclusive, "config", "env_vars"})
            if given.get(exclusive) and others:
                raise ValueError(f"The runtime_env field {exclusive!r} cannot be used with "
                                 f"{others}")
        for name, value in given.items():
            self[name] = value

    def __setitem__(self, key: str, value):
        if not isinstance(key, str):
            raise TypeError(f"runtime_env keys are str, got {key!r}")
        shape = _SHAPES.get(key)
        if value is not None and shape is not None:
            value = shape(key, value)
        if value is None:  # (a field set to None is left out, as in Ray)
            self.pop(key, None)
            return
        super().__setitem__(key, value)

    def __reduce__(self):
        return _rebuilt, (type(self), dict(self))

    def set(self, name: str, value):
        self[name] = value

    def get(self, name, default=None, data_class=None):
        """The field, or `default`; with `data_class`, the field's dict as that class."""
        if name not in self:
            return default
        value = self[name]
        return value if data_class is None else data_class(**value)

    def serialize(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def deserialize(cls, serialized_runtime_env: str) -> "RuntimeEnv":
        return cls(_validate=False, **json.loads(serialized_runtime_env))

    def to_dict(self) -> dict:
        """A plain dict (a copy; the config a plain dict too)."""
        return _copied(dict(self))

    # Ray's accessors, for the fields shmray sets up
    def has_working_dir(self) -> bool:
        return self.get("working_dir") is not None

    def working_dir(self) -> str:
        return self.get("working_dir", "")

    def py_modules(self) -> list:
        return list(self.get("py_modules", []))

    def env_vars(self) -> dict:
        return dict(self.get("env_vars", {}))

    def has_pip(self) -> bool:
        return self.get("pip") is not None

    def pip_config(self) -> dict:
        """The pip field in its dict form ({"packages": [...], ...}); {} without pip."""
        pip = self.get("pip")
        if pip is None:
            return {}
        if isinstance(pip, dict):
            return dict(pip)
        return {"packages": _runtime_env.normalize({"pip": pip})["pip"]}  # (a file: read)

    def has_conda(self) -> bool:
        return self.get("conda") is not None

    def has_uv(self) -> bool:
        return self.get("uv") is not None

    def py_executable(self):
        return self.get("py_executable")


__all__ = ["RuntimeEnvConfig", "RuntimeEnv"]
