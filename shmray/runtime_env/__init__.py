"""``shmray.runtime_env``: Ray's ``RuntimeEnv`` and ``RuntimeEnvConfig``, usable
wherever a runtime_env dict is (they are dicts)."""
from .runtime_env import RuntimeEnv, RuntimeEnvConfig

__all__ = ["RuntimeEnvConfig", "RuntimeEnv"]
