"""RemoteFunction: what ``@remote`` makes of a function.

The function is pickled once (cloudpickle, by value) the first time it is called
and identified by a random id from then on; workers cache it by that id. Its code
keeps its file name, and source lines that only the driver's linecache holds (a
notebook cell's) travel with it, so a task's traceback shows the user's lines.

``.remote()`` checks the arguments against the function's signature, as Ray does,
with a checker computed once per function (`Arity`): the per-call cost is a
length comparison when no keyword is passed.
"""
from __future__ import annotations

import inspect
import io
import linecache
import marshal
import os
import pickle
import sys
import types

import cloudpickle

from . import _context, _options


class RemoteFunction:
    def __init__(self, function, options: _options.TaskOptions, _fn_id=None, _shared=None):
        self._function = function
        self._options = options
        self._fn_id = _fn_id or int.from_bytes(os.urandom(8), "little")
        # The pickled function, shared with every .options() variant of it.
        self._shared = _shared if _shared is not None else {}
        self._name = options.name or getattr(function, "__qualname__", repr(function))
        self._function_name = f"{function.__module__}.{getattr(function, '__qualname__', '?')}"
        self.__doc__ = getattr(function, "__doc__", None)
        self.__name__ = getattr(function, "__name__", self._name)
        self.__qualname__ = getattr(function, "__qualname__", self._name)
        self.__module__ = getattr(function, "__module__", None)
        self.__wrapped__ = function
        # The counts of positional arguments that need no check at .remote(): none
        # (an empty range) until the first call has computed the function's Arity.
        arity = self._shared.get("arity")
        self._min_args, self._max_args = (arity.min_args, arity.max_args) if arity else (1, 0)
        self._takes_no_args = arity is not None and arity.min_args == 0
        # Calls with keywords found acceptable: (positional count, *keyword names).
        self._accepted_shapes = self._shared.setdefault("shapes", set())

    def __call__(self, *args, **kwargs):
        raise TypeError("Remote functions cannot be called directly. Instead "
                        f"of running '{self._function_name}()', "
                        f"try '{self._function_name}.remote()'.")

    def remote(self, *args, **kwargs):
        # The arguments are checked at the call, as Ray does, not left to fail in the
        # task. The cheap cases: no arguments, for a function that takes none (the
        # per-task path of W1); positional arguments only, as many as the function
        # takes; a call of a shape (count, keyword names) already accepted once.
        if args or kwargs or not self._takes_no_args:
            if kwargs:
                if (len(args), *kwargs) not in self._accepted_shapes:
                    self._check_arguments(args, kwargs)
            elif not self._min_args <= len(args) <= self._max_args:
                self._check_arguments(args, kwargs)
        return _context.get_runtime().submit(self, args, kwargs, self._options)

    def _check_arguments(self, args, kwargs):
        """TypeError, with Python's words, if the function cannot take these arguments."""
        arity = self._shared.get("arity")
        if arity is None:
            arity = self._shared["arity"] = Arity.of(self._function)
        self._min_args, self._max_args = arity.min_args, arity.max_args
        self._takes_no_args = arity.min_args == 0
        if arity.accepts(args, kwargs):
            if kwargs and len(self._accepted_shapes) < MAX_SHAPES:
                self._accepted_shapes.add((len(args), *kwargs))
            return
        try:
            arity.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{self.__qualname__}.remote(): {e}") from None

    def options(self, **options):
        """A variant of this function with some options overridden, for one call or many."""
        _options.validate(options, in_options=True)
        return RemoteFunction(self._function, _options.merge(self._options, options),
                              self._fn_id, self._shared)

    def _pickled(self) -> bytes:
        data = self._shared.get("bytes")
        if data is None:
            data = self._shared["bytes"] = pickle_function(self._function)
        return data

    def __reduce__(self):
        # State after construction, so a function that calls itself (recursion through
        # its global name) pickles without looping.
        return (_rebuild, (self._fn_id, self._options), {"function": self._function})

    def __setstate__(self, state):
        self.__init__(state["function"], self._options, self._fn_id)

    def __repr__(self):
        return f"<shmray.RemoteFunction {self._function_name}>"


def _rebuild(fn_id, options):
    rf = RemoteFunction.__new__(RemoteFunction)
    rf._fn_id = fn_id
    rf._options = options
    return rf


def make(function, options: dict):
    if not callable(function):
        raise TypeError(f"The @remote decorator must be applied to a function, got {function!r}")
    if isinstance(function, type):
        raise TypeError(f"shmray supports tasks, not actors: cannot make class "
                        f"{function.__qualname__} remote")
    _options.validate(options)
    return RemoteFunction(function, _options.merge(_options.DEFAULT, options))


# ------------------------------------------------------- arguments at .remote()

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
MAX_SHAPES = 64  # call shapes remembered per function (keyword names could be endless)


class Arity:
    """What calls a function accepts, from its signature, computed once: checking a
    call is then a few length and set operations (binding the signature with inspect
    costs several µs a call; a task costs about 6 in all)."""

    def __init__(self, signature: inspect.Signature | None):
        self.signature = signature
        params = list(signature.parameters.values()) if signature is not None else []
        positional = [p for p in params if p.kind in _POSITIONAL]
        kinds = {p.kind for p in params}
        self.positional = tuple(p.name for p in positional)
        self.positional_only = frozenset(p.name for p in positional
                                         if p.kind is inspect.Parameter.POSITIONAL_ONLY)
        # Positional parameters without a default come first (Python enforces it).
        self.required = sum(1 for p in positional if p.default is p.empty)
        self.keywords = frozenset(p.name for p in params if p.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY))
        self.required_keywords = frozenset(p.name for p in params if p.default is p.empty
                                           and p.kind is inspect.Parameter.KEYWORD_ONLY)
        self.any_keyword = signature is None or inspect.Parameter.VAR_KEYWORD in kinds
        # A call without keywords is accepted iff min_args <= len(args) <= max_args.
        self.max_args = sys.maxsize if signature is None or \
            inspect.Parameter.VAR_POSITIONAL in kinds else len(positional)
        self.min_args = sys.maxsize if self.required_keywords else self.required

    @classmethod
    def of(cls, function) -> Arity:
        try:
            return cls(inspect.signature(function))
        except (TypeError, ValueError):  # no signature to read (some builtins): any call
            return cls(None)

    def accepts(self, args: tuple, kwargs: dict) -> bool:
        n = len(args)
        if n > self.max_args:
            return False
        if not kwargs:
            return self.min_args <= n
        if self.signature is None:
            return True
        names = kwargs.keys()
        if not self.any_keyword and not names <= self.keywords:
            return False
        if n and not names.isdisjoint(self.positional[:n]):
            # A name given twice; unless it is positional-only and **kwargs takes it.
            if not self.any_keyword or not (names & set(self.positional[:n])) <= \
                    self.positional_only:
                return False
        for name in self.positional[n:self.required]:  # required, not given by position
            if name not in names or name in self.positional_only:
                return False
        return self.required_keywords <= names


# -------------------------------------------------------- the function's pickle

class _FunctionPickler(cloudpickle.Pickler):
    """cloudpickle, except that code pickled by value keeps its file name (cloudpickle
    3.1 writes "<dynamic-code>" there, and a task's traceback would name no file).
    `code` collects the code objects pickled, to find the source lines to ship."""

    def __init__(self, file):
        super().__init__(file, protocol=5)
        self.code = []

    def reducer_override(self, obj):
        if type(obj) is types.CodeType:
            self.code.append(obj)
            try:  # marshal keeps every field; driver and workers run the same Python
                return marshal.loads, (marshal.dumps(obj),)
            except ValueError:  # a constant marshal cannot write (code built by hand)
                return NotImplemented  # cloudpickle's own reducer, file name lost
        return super().reducer_override(obj)


def pickle_function(function) -> bytes:
    """The function's bytes as workers load them (plain pickle.loads)."""
    with io.BytesIO() as file:
        pickler = _FunctionPickler(file)
        pickler.dump(function)
        data = file.getvalue()
    lines = _lines_only_in_linecache(pickler.code)
    if lines:
        return pickle.dumps(_WithSourceLines(lines, data), protocol=5)
    return data


def _lines_only_in_linecache(code_objects) -> dict:
    """{file name: {line number: text}}: the lines of the pickled code whose file no
    worker can read, because only the driver's linecache holds it (IPython and Jupyter
    put a cell's source there, under a made-up file name)."""
    out = {}
    for code in code_objects:
        filename = code.co_filename
        entry = linecache.cache.get(filename)
        if entry is None or len(entry) != 4 or os.path.isfile(filename):
            continue  # a file (workers read it), a lazy loader's entry, or unknown
        lines = entry[2]
        line_numbers = [n for c in _code_tree(code) for _, _, n in c.co_lines() if n]
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
    for filename, numbered in lines.items():
        entry = linecache.cache.get(filename)
        have = list(entry[2]) if entry is not None and len(entry) == 4 else []
        have.extend("\n" for _ in range(max(numbered) - len(have)))
        for n, text in numbered.items():
            have[n - 1] = text
        # mtime None: linecache.checkcache leaves the entry alone (there is no file).
        linecache.cache[filename] = (sum(map(len, have)), None, have, filename)
    return pickle.loads(data)
