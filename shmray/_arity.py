"""What calls a function accepts, from its signature, computed once per function:
``.remote()`` checks its arguments with it, as Ray does, instead of letting the
task fail in the worker (see RemoteFunction.remote)."""
from __future__ import annotations

import inspect
import sys

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
