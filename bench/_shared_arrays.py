"""What a careful pool user does instead of put: copy an array into a fresh
multiprocessing.shared_memory segment; the segments are freed between rounds."""
from __future__ import annotations

from multiprocessing import shared_memory

import numpy as np


class SharedArrays:
    def __init__(self):
        self._held = []

    def copy_in(self, array: np.ndarray) -> shared_memory.SharedMemory:
        shm = shared_memory.SharedMemory(create=True, size=array.nbytes)
        self._held.append(shm)
        np.ndarray(array.shape, array.dtype, buffer=shm.buf)[:] = array  # view dropped: close() works
        return shm

    def free(self):
        for shm in self._held:
            shm.close()
            shm.unlink()
        self._held.clear()
