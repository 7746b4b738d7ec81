"""``register_serializer`` / ``deregister_serializer`` (Ray's ``ray.util`` names): the
user's own pickling for a type, in task arguments and results, ``put`` and ``get``,
actor calls, and the values a remote function captures.

Unlike Ray, where each process registers for itself, a registration made in the
driver reaches every worker before its next task (see shmray._custom_serializers): a
task that creates an instance and returns it pickles it with the driver's serializer
too. One made inside a task stays in that worker's process, as in Ray.
"""
from __future__ import annotations

from .. import _custom_serializers
from ._on_cluster import ray_counterpart


def register_serializer(cls: type, *, serializer, deserializer):
    """Pickle instances of `cls` as ``serializer(obj)`` and rebuild them with
    ``deserializer(that)``. Both must be picklable (they travel to the workers);
    subclasses of `cls` are not affected (pickling looks up the exact type)."""
    ray_own = ray_counterpart("ray.util", "register_serializer")
    if ray_own is not None:
        return ray_own(cls, serializer=serializer, deserializer=deserializer)
    if not isinstance(cls, type):
        raise TypeError(f"register_serializer() needs a class as `cls`, got {cls!r}")
    for name, fn in (("serializer", serializer), ("deserializer", deserializer)):
        if not callable(fn):
            raise TypeError(f"register_serializer(): `{name}` must be callable, got {fn!r}")
    _custom_serializers.register(cls, serializer, deserializer)


def deregister_serializer(cls: type):
    """Instances of `cls` pickle the default way again (no effect if `cls` has no
    serializer registered)."""
    ray_own = ray_counterpart("ray.util", "deregister_serializer")
    if ray_own is not None:
        return ray_own(cls)
    if not isinstance(cls, type):
        raise TypeError(f"deregister_serializer() needs a class as `cls`, got {cls!r}")
    _custom_serializers.deregister(cls)


__all__ = ["register_serializer", "deregister_serializer"]
