"""What calls a function accepts, from its signature, computed once per function:
``.remote()`` checks its arguments with it, as Ray does, instead of letting the
task fail in the worker (see RemoteFunction.remote)."""
from __future__ import annotations

import sys
import types

# inspect.Parameter's kinds (an IntEnum of these values): a plain function's parameters
# are read from its code, without importing inspect (which start-up does not need)
POSITIONAL_ONLY, POSITIONAL_OR_KEYWORD, VAR_POSITIONAL, KEYWORD_ONLY, VAR_KEYWORD = range(5)
_POSITIONAL = (POSITIONAL_ONLY, POSITIONAL_OR_KEYWORD)
_CO_VARARGS, _CO_VARKEYWORDS = 0x04, 0x08  # (inspect.CO_VARARGS, inspect.CO_VARKEYWORDS)
MAX_SHAPES = 64  # call shapes remembered per function (keyword names could be endless)


class Arity:
    """What calls a function accepts, from its signature, computed once: checking a
    call is then a few length and set operations (binding the signature with inspect
    costs several µs a call; a task costs about 6 in all)."""

    def __init__(self, signature, function=None):
        """From an inspect.Signature (None: unknown, any call goes), or, with `function`
        and no signature, from the function's code (see of)."""
        self._signature = signature
        self._function = function
        if signature is not None:
            params = [(p.name, p.kind, p.default is not p.empty)
                      for p in signature.parameters.values()]
        else:
            params = _parameters(function) if function is not None else []
        self.known = signature is not None or function is not None
        positional = [p for p in params if p[1] in _POSITIONAL]
        kinds = {kind for _, kind, _ in params}
        self.positional = tuple(name for name, _, _ in positional)
        self.positional_only = frozenset(name for name, kind, _ in positional
                                         if kind == POSITIONAL_ONLY)
        # Positional parameters without a default come first (Python enforces it).
        self.required = sum(1 for _, _, has_default in positional if not has_default)
        self.keywords = frozenset(name for name, kind, _ in params
                                  if kind in (POSITIONAL_OR_KEYWORD, KEYWORD_ONLY))
        self.required_keywords = frozenset(name for name, kind, has_default in params
                                           if kind == KEYWORD_ONLY and not has_default)
        self.any_keyword = not self.known or VAR_KEYWORD in kinds
        # A call without keywords is accepted iff min_args <= len(args) <= max_args.
        self.max_args = sys.maxsize if not self.known or VAR_POSITIONAL in kinds \
            else len(positional)
        self.min_args = sys.maxsize if self.required_keywords else self.required

    @classmethod
    def of(cls, function) -> Arity:
        if _is_plain(function):
            return cls(None, function)
        import inspect  # (here: a plain function needs none of it)

        try:
            return cls(inspect.signature(function))
        except (TypeError, ValueError):  # no signature to read (some builtins): any call
            return cls(None)

    @property
    def signature(self):
        """The inspect.Signature (to bind a call that fails: Python's words for why)."""
        if self._signature is None and self._function is not None:
            import inspect

            self._signature = inspect.signature(self._function)
        return self._signature

    def accepts(self, args: tuple, kwargs: dict) -> bool:
        n = len(args)
        if n > self.max_args:
            return False
        if not kwargs:
            return self.min_args <= n
        if not self.known:
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


def _is_plain(function) -> bool:
    """A function whose signature is its code's: no __signature__ or __wrapped__ (a
    decorator's) that inspect.signature would follow instead."""
    return (type(function) is types.FunctionType and "__signature__" not in function.__dict__
            and "__wrapped__" not in function.__dict__)


def _parameters(function) -> list:
    """(name, kind, has a default) of each parameter of a plain function, in order."""
    code = function.__code__
    names = code.co_varnames
    n_positional, n_keyword = code.co_argcount, code.co_kwonlyargcount
    n_defaults = len(function.__defaults__ or ())
    keyword_defaults = function.__kwdefaults__ or {}
    params = [(name, POSITIONAL_ONLY if i < code.co_posonlyargcount else POSITIONAL_OR_KEYWORD,
               i >= n_positional - n_defaults) for i, name in enumerate(names[:n_positional])]
    i = n_positional + n_keyword
    if code.co_flags & _CO_VARARGS:
        params.append((names[i], VAR_POSITIONAL, False))
        i += 1
    params += [(name, KEYWORD_ONLY, name in keyword_defaults)
               for name in names[n_positional:n_positional + n_keyword]]
    if code.co_flags & _CO_VARKEYWORDS:
        params.append((names[i], VAR_KEYWORD, False))
    return params
