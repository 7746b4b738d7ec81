"""``inspect_serializability`` (Ray's ``ray.util`` name): which part of a value keeps it
from being pickled (a lock, a socket, a generator, an open file...).

    the value ─pickle (shmray.cloudpickle)─► fine: (True, set())
              └─ fails ─► its parts, depth levels down, each tried alone:
                 a function's globals, closure variables and defaults; an object's
                 attributes; a container's items; a method's instance; a partial's
                 function and arguments
                 a failing part with no failing part of its own is a culprit:
                 a FailureTuple (the object, the names leading to it, its parent)

The tree explored is printed (to `print_file`, else stdout), as Ray does.
"""
from __future__ import annotations

import functools
import inspect
import types
from dataclasses import dataclass, field
from typing import Any, Optional, Set, Tuple

from .. import cloudpickle
from ._on_cluster import ray_counterpart

_RULE_WIDTH = 80
_MAX_PARTS = 200  # parts tried per object (a huge container's first ones)


@dataclass(eq=False)  # (compared and hashed by identity, in the returned set)
class FailureTuple:
    """A culprit: `obj` fails to pickle, and none of its own parts explains it.
    `path` names the way from the inspected value to it; `parent` holds it."""
    obj: Any
    path: Tuple[str, ...] = field(default=())
    parent: Any = None

    def __repr__(self):
        names = [str(p) for p in self.path] or ["<inspected value>"]
        return (f"FailTuple({names[-1]} [path={' -> '.join(names)}, obj={_short(self.obj)}, "
                f"parent={_short(self.parent)}])")


def inspect_serializability(base_obj: Any, name: Optional[str] = None, depth: int = 3,
                            print_file: Optional[Any] = None) -> Tuple[bool, Set[FailureTuple]]:
    """Try to pickle `base_obj` and, if that fails, its parts down to `depth` levels,
    printing what was tried. Returns (whether it pickles, the culprits found)."""
    ray_own = ray_counterpart("ray.util", "inspect_serializability")
    if ray_own is not None:
        return ray_own(base_obj, name=name, depth=depth, print_file=print_file)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be a non-negative int, got {depth!r}")
    printer = _Printer(print_file)
    title = f"Checking whether {_short(base_obj)} can be serialized"
    rule = "=" * min(len(title), _RULE_WIDTH)
    printer.line(rule)
    printer.line(title)
    printer.line(rule)
    failures: Set[FailureTuple] = set()
    explorer = _Explorer(printer, failures)
    ok = explorer.explore(base_obj, name, depth, None, () if name is None else (name,))
    printer.level = 0
    printer.line(rule)
    if ok:
        printer.line("It serializes.")
    else:
        printer.line("These could not be serialized:")
        for failure in failures:
            printer.line(f"    {failure!r}")
        printer.line("Remove them from what is sent (create them inside the task or actor "
                     "instead), or register a serializer for their type "
                     "(shmray.util.register_serializer).")
    printer.line(rule)
    return ok, failures


class _Printer:
    def __init__(self, file):
        self.file = file
        self.level = 0

    def line(self, text: str):
        print("    " * self.level + text, file=self.file)


class _Explorer:
    def __init__(self, printer: _Printer, failures: set):
        self.printer = printer
        self.failures = failures
        self.trying = set()  # ids of the objects being explored (a cycle stops there)

    def explore(self, obj, name, depth, parent, path) -> bool:
        """True if `obj` pickles; else its culprits are added to the failures."""
        label = f"{name} = " if name is not None else ""
        try:
            cloudpickle.dumps(obj)
            if parent is not None:
                self.printer.line(f"{label}{_short(obj)}: serializes")
            return True
        except Exception as e:  # whatever pickling raises (a __reduce__ may raise anything)
            self.printer.line(f"!!! FAIL {label}{_short(obj)}: {type(e).__name__}: {e}")
        if depth <= 0:
            self.failures.add(FailureTuple(obj, path, parent))
            return False
        parts = _parts(obj)
        explained = False
        if parts:
            self.trying.add(id(obj))
            self.printer.level += 1
            try:
                for part_name, part in parts[:_MAX_PARTS]:
                    if id(part) in self.trying:
                        continue  # a cycle back to an object being explored
                    if not self.explore(part, part_name, depth - 1, obj, path + (part_name,)):
                        explained = True
            finally:
                self.printer.level -= 1
                self.trying.discard(id(obj))
        if not explained:  # nothing inside fails alone: the object itself is the culprit
            if parts:
                self.printer.line(f"(each part of {_short(obj)} serializes alone: the "
                                  f"object itself is the culprit)")
            self.failures.add(FailureTuple(obj, path, parent))
        return False


def _parts(obj) -> list:
    """(name, value) of what pickling `obj` pickles along with it, as far as can be
    told without running its code (no properties are read)."""
    if isinstance(obj, types.FunctionType):
        closure = inspect.getclosurevars(obj)
        parts = [*closure.nonlocals.items(), *closure.globals.items()]
        parts += [(f"<default {i}>", v) for i, v in enumerate(obj.__defaults__ or ())]
        parts += [(f"<default {k}>", v) for k, v in (obj.__kwdefaults__ or {}).items()]
        return [(k, v) for k, v in parts if not isinstance(v, types.ModuleType)]
    if isinstance(obj, types.MethodType):
        return [("__self__", obj.__self__), ("__func__", obj.__func__)]
    if isinstance(obj, functools.partial):
        return [("func", obj.func), *((f"<arg {i}>", a) for i, a in enumerate(obj.args)),
                *obj.keywords.items()]
    if isinstance(obj, dict):
        return [(f"[{k!r}]", v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [(f"[{i}]", v) for i, v in enumerate(obj)]
    if isinstance(obj, type):
        return [(k, v) for k, v in vars(obj).items()
                if not (k.startswith("__") and k.endswith("__"))]
    parts = list(getattr(obj, "__dict__", {}).items())
    for slot in _slots(type(obj)):
        try:
            parts.append((slot, object.__getattribute__(obj, slot)))
        except AttributeError:
            pass  # an empty slot
    return parts


def _slots(cls) -> list:
    names = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names += [slots] if isinstance(slots, str) else [s for s in slots
                                                         if s not in ("__dict__", "__weakref__")]
    return names


def _short(obj, limit: int = 100) -> str:
    try:
        text = repr(obj)
    except Exception as e:  # a broken __repr__ does not end the inspection
        text = f"<{type(obj).__name__} object (repr failed: {type(e).__name__})>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


__all__ = ["inspect_serializability", "FailureTuple"]
