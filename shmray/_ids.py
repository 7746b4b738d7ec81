"""Ray's id classes (``NodeID``, ``JobID``, ``TaskID``, ``ActorID``, ``WorkerID``): an
id's bytes, shown as hex. ``get_runtime_context()`` gives ids as hex strings; its
older properties (``node_id``, ``job_id``, ...) give these, as in Ray.

Each has Ray's size but TaskID: shmray numbers tasks, as it numbers objects, with
128-bit ids (16 bytes; Ray's task ids have 24).
"""
from __future__ import annotations

import os


class BaseID:
    """An id of a fixed number of bytes; the nil id is all 0xff bytes, as in Ray."""

    __slots__ = ("_binary",)
    SIZE = 0

    def __init__(self, binary: bytes):
        if not isinstance(binary, bytes):
            raise TypeError(f"{type(self).__name__} needs bytes, got {type(binary).__name__}")
        if len(binary) != self.SIZE:
            raise ValueError(f"ID string needs to have length {self.SIZE}, got {len(binary)}")
        self._binary = binary

    @classmethod
    def size(cls) -> int:
        return cls.SIZE

    @classmethod
    def from_binary(cls, binary: bytes):
        return cls(binary)

    @classmethod
    def from_hex(cls, hex_id: str):
        if not isinstance(hex_id, str) or len(hex_id) != 2 * cls.SIZE:
            raise ValueError(f"{cls.__name__}.from_hex needs {2 * cls.SIZE} hex digits, got "
                             f"{hex_id!r}")
        return cls(bytes.fromhex(hex_id))

    @classmethod
    def from_random(cls):
        return cls(os.urandom(cls.SIZE))

    @classmethod
    def nil(cls):
        return cls(b"\xff" * cls.SIZE)

    def is_nil(self) -> bool:
        return self._binary == b"\xff" * self.SIZE

    def binary(self) -> bytes:
        return self._binary

    def hex(self) -> str:
        return self._binary.hex()

    def __eq__(self, other):
        return type(other) is type(self) and other._binary == self._binary

    def __hash__(self):
        return hash((type(self), self._binary))

    def __repr__(self):
        return f"{type(self).__name__}({self.hex()})"

    __str__ = __repr__

    def __reduce__(self):
        return type(self), (self._binary,)


class NodeID(BaseID):
    __slots__ = ()
    SIZE = 28


class JobID(BaseID):
    __slots__ = ()
    SIZE = 4

    @classmethod
    def from_int(cls, value: int):
        return cls(int(value).to_bytes(cls.SIZE, "little"))  # (Ray's order)

    def int(self) -> int:
        return int.from_bytes(self._binary, "little")


class WorkerID(BaseID):
    __slots__ = ()
    SIZE = 28


class ActorID(BaseID):
    __slots__ = ()
    SIZE = 16


class TaskID(BaseID):
    __slots__ = ()
    SIZE = 16


__all__ = ["NodeID", "JobID", "WorkerID", "ActorID", "TaskID"]
