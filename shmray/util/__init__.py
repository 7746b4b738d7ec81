"""Helpers under ``shmray.util``, as under ``ray.util``."""
from . import scheduling_strategies

__all__ = ["scheduling_strategies"]
