"""NamedTuple: ``typing.NamedTuple``'s class syntax, made by ``collections.namedtuple``.

    class Done(NamedTuple):     # (a docstring and methods are kept too)
        kind: int
        task_id: int
        retryable: bool = False     # (a default: every field after it has one too)

The class is the same tuple subclass (``_fields``, ``_replace``, pickled by its module
and name); the annotations stay as written (text, under ``from __future__ import
annotations``). typing.NamedTuple checks every annotation, which compiles each one
(a ForwardRef), and needs the typing module: for the records imported at start-up
(the protocol's 28 above all) it cost about three times as much, a few ms of every
``import shmray`` and of no use at run time (see bench/README.md's W7).
"""
from __future__ import annotations

import collections

# Kept from the class body as the record's own: its fields are namedtuple's.
_NOT_COPIED = frozenset(("__module__", "__qualname__", "__annotations__"))


class _RecordMeta(type):
    def __new__(mcs, name, bases, namespace):
        if not bases:  # (the base below)
            return super().__new__(mcs, name, bases, namespace)
        annotations = namespace.get("__annotations__", {})
        fields = tuple(annotations)
        defaults = [namespace[f] for f in fields if f in namespace]
        if any(f not in namespace for f in fields[len(fields) - len(defaults):]):
            raise TypeError(f"{name}: a field without a default follows one with a default")
        record = collections.namedtuple(name, fields, defaults=defaults,
                                        module=namespace["__module__"])
        record.__qualname__ = namespace["__qualname__"]
        record.__annotations__ = annotations
        for key, value in namespace.items():  # its docstring, its methods
            if key not in _NOT_COPIED and key not in annotations:
                setattr(record, key, value)
        return record


_Base = type.__new__(_RecordMeta, "NamedTuple", (), {})


class _NamedTuple:
    """What a class statement finds as its base: the class becomes a namedtuple."""

    def __mro_entries__(self, bases):
        return (_Base,)

    def __repr__(self):
        return "shmray._records.NamedTuple"


NamedTuple = _NamedTuple()
