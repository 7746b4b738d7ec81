"""A remote function's bytes: cloudpickle, keeping what a task's traceback needs.

Code pickled by value keeps its file name, and source lines that only the driver's
linecache holds (a notebook cell's) travel with the function, so a traceback from a
worker names the user's file and shows the line. A worker loads the bytes with
plain pickle.loads; it imports this module only for functions with shipped lines.
"""
from __future__ import annotations

import dis
import io
import linecache
import marshal
import os
import pickle
import types

import cloudpickle

from ._custom_serializers import CLOUD_TABLE


class _FunctionPickler(cloudpickle.Pickler):
    """cloudpickle, except that code pickled by value keeps its file name (cloudpickle
    3.1 writes "<dynamic-code>" there, and a task's traceback would name no file).
    `code` collects the code objects pickled, to find the source lines to ship.
    Values the function captures pickle with the user's serializers, as task
    arguments do (register_serializer)."""

    dispatch_table = CLOUD_TABLE

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
    for filename, numbered in lines.items():
        entry = linecache.cache.get(filename)
        have = list(entry[2]) if entry is not None and len(entry) == 4 else []
        have.extend("\n" for _ in range(max(numbered) - len(have)))
        for n, text in numbered.items():
            have[n - 1] = text
        # mtime None: linecache.checkcache leaves the entry alone (there is no file).
        linecache.cache[filename] = (sum(map(len, have)), None, have, filename)
    return pickle.loads(data)
