"""RemoteFunction: what ``@remote`` makes of a function.

The function is pickled once (cloudpickle, by value) the first time it is called
and identified by a random id from then on; workers cache it by that id. Its code
keeps its file name, and source lines that only the driver's linecache holds (a
notebook cell's) travel with it (`_function_pickle`).

``.remote()`` is RemoteBase's (csrc/remote_call.c): a call without arguments of a
function that takes none goes from there to the session's lane in C, with no Python
frame on the way; every other call is ``_remote``'s, here. It checks the arguments
against the function's signature, as Ray does, with a checker computed once per
function (`_arity.Arity`): the per-call cost is a length comparison when no keyword
is passed.
"""
from __future__ import annotations

import os
import types

from . import _context, _options
from ._arity import MAX_SHAPES, Arity
from ._crecords import RemoteBase
from ._function_pickle import pickle_function


class RemoteFunction(RemoteBase):
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

    def _remote(self, *args, **kwargs):
        # (RemoteBase.remote's, for every call it does not take to the lane)
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
        rt = _context.runtime or _context.get_runtime()  # (get_runtime: the first call's)
        return rt.submit(self, args, kwargs, self._options)

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
    if options.get("num_returns") is None and _yields(function):
        options = dict(options, num_returns="streaming")  # (Ray 2.x's default for them)
    return RemoteFunction(function, _options.merge(_options.DEFAULT, options))


_CO_GENERATOR, _CO_ASYNC_GENERATOR = 0x20, 0x200  # (inspect's CO_ flags)


def _yields(function) -> bool:
    """Whether calling `function` makes a generator, sync or async (a plain function's
    code says so: inspect, whose import start-up does not need, for the others)."""
    if type(function) is types.FunctionType:
        return bool(function.__code__.co_flags & (_CO_GENERATOR | _CO_ASYNC_GENERATOR))
    import inspect

    return inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)
