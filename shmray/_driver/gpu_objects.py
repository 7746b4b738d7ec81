"""GPU objects, as the driver sees them.

A GPU object's cupy arrays stay in the process that made them (see _gpu): the
driver records which worker keeps them, keeps that worker until the object is
freed, tells it when it is (GpuFree), and makes host copies for readers that
cannot open the IPC handles (GpuHost). Every method runs under the session's lock,
except `host_copy_reply`'s unpickling (user values), done outside it.
"""
from __future__ import annotations

from .. import _gpu, _ring, _serialization as ser, _shm
from .._protocol import ERROR, GPU_FREE, REPLY, SHM, GpuFree, Reply
from ..exceptions import ObjectLostError


class GpuObjects:
    def __init__(self, store, readable, new_segment_name, prefix):
        self.store = store
        self.readable = readable
        self.new_segment_name = new_segment_name
        self.prefix = prefix
        self.host_copies = {}       # GPU object id -> stored form of its arrays' host copies

    def produced(self, oid, w):
        """`w` keeps the cupy arrays of object `oid`."""
        self.store.gpu_producers[oid] = w
        w.exports.add(oid)

    def tell_freed(self, stopping) -> list:
        """Tell the producers of the GPU objects the store freed that their arrays may
        go. Returns the producers now free to retire."""
        retire = []
        freed = self.store.gpu_freed
        while freed:
            oid, producer = freed.popleft()
            self._drop_host_copy(oid)
            if producer is None:  # the driver's own
                _gpu.release((oid,))
                continue
            producer.exports.discard(oid)
            if producer.gone or stopping:
                continue
            producer.send(_ring.encode(GpuFree(GPU_FREE, (oid,)), producer.ring, self.prefix))
            if producer.retiring and producer.idle and not producer.exports:
                retire.append(producer)
        return retire

    def _drop_host_copy(self, oid):
        copy = self.host_copies.pop(oid, None)
        if copy is not None and copy[0] == SHM:
            _shm.unlink(copy[1])

    def discard_results(self, w, task_id, gpu):
        """Results of a cancelled task: the worker may drop their cupy arrays."""
        if gpu:
            oids = tuple(task_id + i for i in gpu)
            w.send(_ring.encode(GpuFree(GPU_FREE, oids), w.ring, self.prefix))

    def lost_with(self, w, why):
        """`w` died: the GPU objects whose arrays it kept are lost."""
        for oid in list(w.exports):
            self.store.gpu_producers.pop(oid, None)
            self._drop_host_copy(oid)
            self.store.replace(oid, ser.error_stored(ObjectLostError(
                f"{oid:032x}", f"Its GPU arrays were in worker pid={w.pid}, which died "
                               f"({why}).")))
        w.exports.clear()

    # A host copy needs the object's value unpickled (user code): the loop calls
    # host_copy_source under the lock, host_copy_made outside it, then sends the reply
    # under the lock again.
    def host_copy_source(self, oid):
        """The stored form to copy, or the finished reply's stored form if there is one."""
        stored = self.host_copies.get(oid)
        return (True, stored) if stored is not None else (False, self.readable(oid))

    def host_copy_made(self, source):
        """(Outside the lock.) The stored form of {index: numpy array} for `source`, or
        of the error to raise."""
        try:
            arrays = _gpu.host_arrays(lambda: ser.from_stored(source))
            return ser.to_stored(arrays, self.new_segment_name)
        except Exception as e:
            return ser.error_stored(e)

    def host_copy_reply(self, w, req_id, oid, stored):
        if stored[0] != ERROR:
            old = self.host_copies.get(oid)
            if old is None:
                self.host_copies[oid] = stored  # kept while the object lives
            elif old is not stored and stored[0] == SHM:  # another thread made one first
                _shm.unlink(stored[1])
                stored = old
        if not w.gone:
            w.send(_ring.encode(Reply(REPLY, req_id, stored), w.ring, self.prefix))


def driver_cannot_copy(oid):
    """The driver, for a descriptor it could not open: no copy can help (a host copy
    is made by opening that very device)."""
    raise RuntimeError(f"The driver cannot read GPU object {oid:032x}: it needs cupy and "
                       f"the device that holds it ({_gpu.INSTALL_HINT}).")
