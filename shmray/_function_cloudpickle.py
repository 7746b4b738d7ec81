"""A remote function or actor class through cloudpickle, by value, keeping its code's
file name: what `_function_pickle` hands over when its plain paths cannot carry the
function. Imported then, and only then: it imports cloudpickle (about a third of what
``import shmray`` used to take, see bench/README.md's W7).
"""
from __future__ import annotations

import io
import marshal
import types

import cloudpickle

from ._custom_serializers import cloud_table


class _FunctionPickler(cloudpickle.Pickler):
    """cloudpickle, except that code pickled by value keeps its file name (cloudpickle
    3.1 writes "<dynamic-code>" there, and a task's traceback would name no file).
    `code` collects the code objects pickled, to find the source lines to ship.
    Values the function captures pickle with the user's serializers, as task
    arguments do (register_serializer)."""

    dispatch_table = cloud_table()

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


def cloudpickled(function) -> tuple[bytes, list]:
    """(the function's bytes, the code objects pickled in them by value)."""
    with io.BytesIO() as file:
        pickler = _FunctionPickler(file)
        pickler.dump(function)
        return file.getvalue(), pickler.code
