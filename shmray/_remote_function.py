"""RemoteFunction: what ``@remote`` makes of a function.

The function is pickled once (cloudpickle, by value) the first time it is called
and identified by a random id from then on; workers cache it by that id.
"""
from __future__ import annotations

import os

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

    def __call__(self, *args, **kwargs):
        raise TypeError("Remote functions cannot be called directly. Instead "
                        f"of running '{self._function_name}()', "
                        f"try '{self._function_name}.remote()'.")

    def remote(self, *args, **kwargs):
        return _context.get_runtime().submit(self, args, kwargs, self._options)

    def options(self, **options):
        """A variant of this function with some options overridden, for one call or many."""
        _options.validate(options, in_options=True)
        return RemoteFunction(self._function, _options.merge(self._options, options),
                              self._fn_id, self._shared)

    def _pickled(self) -> bytes:
        data = self._shared.get("bytes")
        if data is None:
            data = self._shared["bytes"] = cloudpickle.dumps(self._function, protocol=5)
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
