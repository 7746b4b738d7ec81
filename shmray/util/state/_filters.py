"""Ray's state filters: ``[(key, predicate, value), ...]``, all of them must hold.

A key is one of the record's filterable columns (any case); the predicate "=" or
"!="; a string value compares case-insensitively, and a string given for a number
or a boolean column ("--filter worker_pid=123", "is_alive=true") is converted first.
``parse`` reads the CLI's spelling, "key=value" or "key!=value".
"""
from __future__ import annotations

from typing import NamedTuple

from .exception import RayStateApiException

PREDICATES = ("=", "!=")
_TRUE, _FALSE = ("true", "1"), ("false", "0")


class Filter(NamedTuple):
    key: str
    predicate: str
    value: object


def parse(text: str) -> Filter:
    """A CLI filter, "key=value" or "key!=value" (ValueError naming the problem)."""
    at = text.find("=")
    if at <= 0 or (at == 1 and text[0] == "!"):
        raise ValueError(f"invalid filter {text!r}: give key=value or key!=value")
    if text[at - 1] == "!":
        return Filter(text[:at - 1].strip(), "!=", text[at + 1:].strip())
    return Filter(text[:at].strip(), "=", text[at + 1:].strip())


def check(filters, schema, what: str) -> list:
    """`filters` as Filter records, their keys and values checked against `schema`
    (a common.StateSchema class) at the API's edge."""
    if filters is None:
        return []
    if isinstance(filters, (str, bytes)) or not hasattr(filters, "__iter__"):
        raise TypeError(f"filters must be a list of (key, predicate, value) tuples, got "
                        f"{type(filters).__name__}")
    checked = []
    for item in filters:
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(f"The given filter has incorrect input type, {item!r}. "
                             f"Provide (key, predicate, value) tuples.")
        key, predicate, value = item
        if predicate not in PREDICATES:
            raise ValueError(f"Unsupported filter predicate {predicate!r} is given. "
                             f"Available predicates: =, !=.")
        if not isinstance(key, str):
            raise TypeError(f"a filter's key must be a string, got {key!r}")
        key = key.lower()
        allowed = schema.filterable_columns()
        if key not in allowed:
            raise RayStateApiException(
                f"The given filter column {key!r} is not supported for {what}. Supported "
                f"filter columns: {', '.join(sorted(allowed))}")
        checked.append(Filter(key, predicate, _converted(key, value, schema.column_kind(key))))
    return checked


def _converted(key: str, value, kind: type):
    if not isinstance(value, str) or kind is str:
        return value
    text = value.strip().lower()
    if kind is bool:
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"Invalid filter {key}={value!r} for a boolean column: give "
                         f"true/1 or false/0")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"Invalid filter {key}={value!r} for an integer column: give "
                             f"an integer") from None
    return value


def _equal(have, want) -> bool:
    if isinstance(have, str) and isinstance(want, str):
        return have.lower() == want.lower()
    return have == want


def matches(record: dict, filters: list) -> bool:
    for f in filters:
        same = _equal(record.get(f.key), f.value)
        if same != (f.predicate == "="):
            return False
    return True
