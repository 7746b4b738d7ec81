"""Helpers under ``shmray.util``, as under ``ray.util``."""
from .. import _context
from . import scheduling_strategies


def list_named_actors(all_namespaces: bool = False) -> list:
    """The names of the live named actors of this namespace; with all_namespaces, a
    dict per actor: {"name": ..., "namespace": ...} (Ray's ``list_named_actors``)."""
    found = _context.get_runtime().named_actors(bool(all_namespaces))
    if all_namespaces:
        return [{"name": name, "namespace": ns} for name, ns in found]
    return found


__all__ = ["scheduling_strategies", "list_named_actors"]
