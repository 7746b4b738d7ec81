"""Records without typing or dataclasses, whose imports start-up cannot afford:
NamedTuple, ``typing.NamedTuple``'s class syntax made by ``collections.namedtuple``, and
Frozen, a frozen record made by keyword (what ``@dataclass(frozen=True)`` makes).

    class Done(NamedTuple):     # (a docstring and methods are kept too)
        kind: int
        task_id: int
        retryable: bool = False     # (a default: every field after it has one too)

A NamedTuple class is the same tuple subclass (``_fields``, ``_replace``, pickled by its
module and name); the annotations stay as written (text, under ``from __future__ import
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


class Frozen:
    """A record made by keyword and frozen once made (the options: see _options), what
    ``@dataclass(frozen=True)`` makes, without the dataclasses module (its import, and
    inspect's with it, took about a tenth of ``import shmray``). The class body's
    annotated names are the fields, each with its default (FIELDS: name -> default; a
    dict default is copied for each instance); __post_init__ runs after __init__, as a
    dataclass's does; replace() is dataclasses.replace."""

    FIELDS: dict = {}

    def __init_subclass__(cls):
        cls.FIELDS = {name: cls.__dict__[name] for name in cls.__dict__["__annotations__"]}

    def __init__(self, **fields):
        unknown = fields.keys() - self.FIELDS.keys()
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword argument(s): "
                            f"{', '.join(sorted(unknown))}")
        values = self.__dict__  # (written directly: __setattr__ refuses)
        for name, default in self.FIELDS.items():
            values[name] = fields[name] if name in fields else (
                dict(default) if type(default) is dict else default)
        self.__post_init__()

    def __post_init__(self):
        pass

    def __setattr__(self, name, value):
        raise AttributeError(f"cannot assign to field {name!r}: {type(self).__name__} is "
                             f"frozen (use replace())")

    def __delattr__(self, name):
        raise AttributeError(f"cannot delete field {name!r}: {type(self).__name__} is frozen")

    def _values(self) -> tuple:
        return tuple(self.__dict__[name] for name in self.FIELDS)

    def __eq__(self, other):
        return type(other) is type(self) and other._values() == self._values()

    def __hash__(self):
        return hash(self._values())

    def __repr__(self):
        fields = zip(self.FIELDS, self._values())
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in fields)})"

    def replace(self, **changes):
        """A copy with `changes` applied (dataclasses.replace's)."""
        return type(self)(**{**dict(zip(self.FIELDS, self._values())), **changes})
