"""A remote function's bytes (or an actor class's), keeping what a task's traceback needs.

Three ways, the first that can carry the function:

- by reference (module and name), as pickle does, for a function or class a worker
  can import: plain pickle;
- any other plain function (no closure, reading only modules and values that pickle
  by themselves: the main script's, or one that `@remote` replaced in its module), by
  value: its code (marshal, which keeps the file name) and the globals it reads,
  modules by name, the rest plainly pickled; rebuilt by `_make_function`;
- anything else (a closure, a lambda reading another function of ``__main__``, a class
  of ``__main__``, the user's serializers in force...): cloudpickle, by value
  (`_function_cloudpickle`, imported then).

The first two give what cloudpickle gives, without importing it: most programs'
functions are of the first two kinds, and cloudpickle's import took about a third of
``import shmray`` (bench/README.md, W7). Source lines that only the driver's linecache
holds (a notebook cell's) travel with the function, so a traceback from a worker names
the user's file and shows the line. A worker loads the bytes with plain pickle.loads.
"""
from __future__ import annotations

import builtins
import importlib
import marshal
import os
import pickle
import sys
import types

from . import _custom_serializers

# What cloudpickle keeps of the function's module's namespace besides the names the
# code reads.
_MODULE_NAMES = ("__name__", "__package__", "__path__", "__file__")
_MAIN_MARK = b"__main__"   # in plain pickle's bytes: a name of the main script, by reference


def pickle_function(function) -> bytes:
    """The function's bytes as workers load them (plain pickle.loads)."""
    if _custom_serializers.table() or _registered_by_value():
        data = code = None  # (only cloudpickle's pickler consults either)
    else:
        data, code = _by_reference(function), ()
        if data is None:
            data, code = _plain_function_by_value(function)
    if data is None:
        from ._function_cloudpickle import cloudpickled

        data, code = cloudpickled(function)
    lines = _lines_only_in_linecache(code)
    if lines:
        return pickle.dumps(_WithSourceLines(lines, data), protocol=5)
    return data


def _registered_by_value() -> bool:
    """Whether modules were registered with cloudpickle to be pickled by value (then
    only cloudpickle knows how a function's globals must travel)."""
    cloudpickle = sys.modules.get("cloudpickle")
    return cloudpickle is not None and bool(cloudpickle.list_registry_pickle_by_value())


def _by_reference(function) -> bytes | None:
    """Plain pickle's bytes of a function or class that a worker imports by its module
    and qualified name; None for any other."""
    if not isinstance(function, (types.FunctionType, type)):
        return None
    module = sys.modules.get(getattr(function, "__module__", None))
    if module is None or module.__name__ == "__main__" or module.__spec__ is None:
        return None  # the main script's, or a module made at run time
    try:
        return pickle.dumps(function, protocol=5)  # (PicklingError if not found by name)
    except (pickle.PicklingError, AttributeError, TypeError):
        return None


def _plain_function_by_value(function) -> tuple[bytes | None, tuple]:
    """(bytes, its code) of a plain function that `_make_function` rebuilds; (None, ())
    for any other."""
    if type(function) is not types.FunctionType or function.__closure__ is not None:
        return None, ()
    code = function.__code__
    namespace = function.__globals__
    modules, values = {}, {}
    # co_names holds the global names the code reads, and attribute names too: a global
    # that shares an attribute's name travels for nothing (as with cloudpickle).
    for name in {n for c in _code_tree(code) for n in c.co_names}:
        if name not in namespace or name in _MODULE_NAMES:
            continue  # a builtin, a name it never finds, or one of the namespace's own
        value = namespace[name]
        if type(value) is types.ModuleType:
            if (sys.modules.get(value.__name__) is not value or value.__spec__ is None
                    or value.__name__ == "__main__"):
                return None, ()  # (made at run time: cloudpickle takes it by value)
            modules[name] = value.__name__
        else:
            values[name] = value
    try:
        state = pickle.dumps((values, function.__defaults__, function.__kwdefaults__,
                              function.__annotations__, function.__dict__), protocol=5)
        code_bytes = marshal.dumps(code)  # (keeps the file name)
    except (pickle.PicklingError, AttributeError, TypeError, ValueError):
        return None, ()
    if _MAIN_MARK in state:  # it names something of the main script, which a worker
        return None, ()      # lacks: cloudpickle takes that by value
    module_names = {k: namespace[k] for k in _MODULE_NAMES if k in namespace}
    return pickle.dumps(_PlainFunction(code_bytes, modules, state, function.__name__,
                                       function.__qualname__, function.__doc__, module_names),
                        protocol=5), (code,)


class _PlainFunction:
    """A plain function, as `_make_function` rebuilds it."""

    def __init__(self, *fields):
        self.fields = fields

    def __reduce__(self):
        return (_make_function, self.fields)


def _make_function(code_bytes, modules, state, name, qualname, doc, module_names):
    """In a worker: the function, in a namespace of its own that holds what it reads
    (as cloudpickle rebuilds one)."""
    namespace = {"__builtins__": builtins.__dict__, **module_names}
    for global_name, module in modules.items():
        namespace[global_name] = importlib.import_module(module)
    values, defaults, kwdefaults, annotations, attributes = pickle.loads(state)
    namespace.update(values)
    function = types.FunctionType(marshal.loads(code_bytes), namespace, name, defaults)
    function.__kwdefaults__ = kwdefaults
    function.__annotations__ = annotations
    function.__qualname__ = qualname
    function.__doc__ = doc
    function.__dict__.update(attributes)
    return function


def _lines_only_in_linecache(code_objects) -> dict:
    """{file name: {line number: text}}: the lines of the pickled code whose file no
    worker can read, because only the driver's linecache holds it (IPython and Jupyter
    put a cell's source there, under a made-up file name)."""
    linecache = sys.modules.get("linecache")
    if linecache is None:  # never imported here: it holds nothing (and stays unimported)
        return {}
    out = {}
    for code in code_objects:
        filename = code.co_filename
        entry = linecache.cache.get(filename)
        if entry is None or len(entry) != 4 or os.path.isfile(filename):
            continue  # a file (workers read it), a lazy loader's entry, or unknown
        lines = entry[2]
        import dis  # (here: a notebook's functions only)

        line_numbers = [n for c in _code_tree(code) for _, n in dis.findlinestarts(c) if n]
        first = min([code.co_firstlineno, *line_numbers])  # the def line, or a decorator's
        last = max([code.co_firstlineno, *line_numbers])
        shipped = out.setdefault(filename, {})
        for n in range(first, min(last, len(lines)) + 1):
            shipped[n] = lines[n - 1]
    return {k: v for k, v in out.items() if v}


def _code_tree(code):
    yield code
    for const in code.co_consts:
        if type(const) is types.CodeType:
            yield from _code_tree(const)


class _WithSourceLines:
    """A pickled function with source lines to register first: unpickling it adds
    the lines to this process's linecache and returns the function itself."""

    def __init__(self, lines: dict, data: bytes):
        self.lines, self.data = lines, data

    def __reduce__(self):
        return (_register_lines_and_load, (self.lines, self.data))


def _register_lines_and_load(lines: dict, data: bytes):
    import linecache

    for filename, numbered in lines.items():
        entry = linecache.cache.get(filename)
        have = list(entry[2]) if entry is not None and len(entry) == 4 else []
        have.extend("\n" for _ in range(max(numbered) - len(have)))
        for n, text in numbered.items():
            have[n - 1] = text
        # mtime None: linecache.checkcache leaves the entry alone (there is no file).
        linecache.cache[filename] = (sum(map(len, have)), None, have, filename)
    return pickle.loads(data)
