"""cupy arrays across processes as CUDA IPC handles: GPU objects without a host copy.

    producer (a task's return value, or a put, holding cupy arrays)
        pickling under exporting(oid): each array becomes a descriptor (its
        allocation's IPC handle, offset, shape, dtype, strides, device PCI id); the
        producer keeps the array in `exports[oid]` until the driver frees the
        object (GPU_FREE), so the memory outlives the task that made it; an empty
        array, or memory IPC cannot share, goes as a host copy instead
    consumer (a task's argument, get)
        same device visible: the handle is opened (once per process), and a cupy
        array is built on the mapped memory: no copy. The array holds an ObjectRef
        of the object, so the object, and the producer's allocation, live as long
        as any consumer's array does.
        device not visible (another device, no GPU, no cupy): the driver, which sees
        every device, copies the arrays to host memory once (GPU_HOST); a consumer
        with cupy and a GPU copies them onto its device, one without gets numpy.

Anything else pickles cupy arrays as cupy does (through host memory): arguments of a
task, a user's own pickle.dumps. torch CUDA tensors pickle as torch does (through
host memory, rebuilt on the consumer's device of the same index).
"""
from __future__ import annotations

import copyreg
import os
import sys
import threading

from . import _context
from ._object_ref import ObjectRef

INSTALL_HINT = "pip install shmray[gpu] (cupy for your CUDA version)"

# The exports of this process. Host copies are asked of the process's runtime
# (_context.runtime.gpu_host_copy: a worker's rpc, or the driver's refusal).
exports = {}        # oid -> [cupy arrays] kept alive for the object's readers


class _Exporting(threading.local):
    target = None       # (oid, arrays, devices) while a value is stored as object `oid`


_exporting = _Exporting()
_registered = False


def register_if_loaded():
    """Install the cupy reducer once cupy is imported in this process (a lookup per
    call until then: processes without cupy pay nothing else)."""
    global _registered
    if _registered or "cupy" not in sys.modules:
        return
    import cupy

    copyreg.pickle(cupy.ndarray, _reduce_cupy)
    _registered = True


class exporting:
    """Context: cupy arrays pickled in this thread go out as IPC handles of object `oid`.
    After it, `exported` says whether any did."""

    __slots__ = ("oid", "arrays", "devices", "outer")

    def __init__(self, oid):
        self.oid = oid
        self.arrays = []
        self.devices = set()

    def __enter__(self):
        register_if_loaded()
        self.outer = _exporting.target
        _exporting.target = (self.oid, self.arrays, self.devices)
        return self

    def __exit__(self, *exc):
        _exporting.target = self.outer
        if exc[0] is None and self.devices:
            # Kernels run asynchronously and IPC orders nothing between processes: what
            # the handles show must be written before anyone can open them.
            import cupy

            for device in self.devices:
                with cupy.cuda.Device(device):
                    cupy.cuda.runtime.deviceSynchronize()
        if self.arrays and exc[0] is None:
            exports.setdefault(self.oid, []).extend(self.arrays)
        return False

    @property
    def exported(self) -> bool:
        return bool(self.arrays)


def release(oids):
    """The driver freed these objects: their arrays may go (back to cupy's pool)."""
    for oid in oids:
        exports.pop(oid, None)


_CUDA_ERROR_NOT_INITIALIZED = 3


def _libcuda_mapped() -> bool:
    """Whether libcuda is loaded in this process (its memory map lists it)."""
    try:
        with open("/proc/self/maps") as maps:
            return "libcuda.so" in maps.read()
    except OSError:
        return True  # (cannot tell: ask libcuda)


def cuda_initialised() -> bool:
    """Whether this process has initialised CUDA: a forked child of it cannot use CUDA
    at all (every call fails with an initialization error), so workers are spawned.
    Asked without initialising anything: only if libcuda is already loaded."""
    if not _libcuda_mapped():  # (and ctypes, whose import costs more, is not needed)
        return False
    import ctypes

    try:
        libcuda = ctypes.CDLL("libcuda.so.1", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError:
        return False  # never loaded here
    count = ctypes.c_int()
    return libcuda.cuDeviceGetCount(ctypes.byref(count)) != _CUDA_ERROR_NOT_INITIALIZED


def _forget_after_fork():
    """A forked child has none of its parent's CUDA mappings or exports."""
    exports.clear()
    _opened.clear()
    _mapped.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


# ------------------------------------------------------------------- producing
# A descriptor, what a cupy array pickles to under exporting(oid):
#   (handle, pci, offset, size, shape, dtype, strides, origin, index, producer, keep)
# handle, pci, size: the allocation's IPC handle, its device and size; offset: where
# the array starts in it; origin, index: exports[origin][index] of process `producer`
# keeps the allocation; keep: None when origin is the object being stored, else an
# ObjectRef of origin (an array read from another GPU object and stored again: the
# new object holds the old one, whose producer holds the memory).

def _reduce_cupy(arr):
    target = _exporting.target
    if target is None:  # not shmray storing an object: cupy's own way, via the host
        return arr.__reduce__()
    import cupy

    oid, arrays, devices = target
    if arr.size == 0:  # no memory to share
        return _on_host, (arr.get(),)
    if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
        arr = cupy.ascontiguousarray(arr)  # a strided view: its own allocation (on device)
    meta = (arr.shape, arr.dtype, arr.strides)
    mapped = _mapped.get(id(arr.data.mem))
    if mapped is not None:  # memory mapped from another process's object
        opened, origin, index, producer, exact = mapped
        if (arr.data.ptr - opened.ptr, *meta) == exact:  # that very array: pass it on
            devices.add(arr.device.id)
            return (_rebuild, (opened.handle, opened.pci, arr.data.ptr - opened.ptr,
                               opened.size, *meta, origin, index, producer, ObjectRef(origin)))
        arr = arr.copy()  # a view of it: its own allocation, exported as any other
    device = arr.device.id
    try:
        with cupy.cuda.Device(device):
            cupy.cuda.runtime.free(0)  # (cudaFree(0): this thread's context is current)
            base, size = _address_range(arr.data.ptr)
            handle = bytes(cupy.cuda.runtime.ipcGetMemHandle(base))
            pci = cupy.cuda.runtime.deviceGetPCIBusId(device)
    except (RuntimeError, cupy.cuda.runtime.CUDARuntimeError):
        # memory IPC cannot share (cudaMallocAsync pools, managed memory): a host copy
        return _on_host, (arr.get(),)
    devices.add(device)
    index = len(arrays)
    arrays.append(arr)
    return (_rebuild, (handle, pci, arr.data.ptr - base, size, *meta, oid, index, os.getpid(),
                       None))


_libcuda = None


def _address_range(ptr: int) -> tuple[int, int]:
    """(base, size) of the cudaMalloc allocation holding `ptr`: cupy's memory pool
    hands out pieces of larger allocations, and an IPC handle names a whole one."""
    global _libcuda
    import ctypes

    if _libcuda is None:
        _libcuda = ctypes.CDLL("libcuda.so.1")
        _libcuda.cuMemGetAddressRange_v2.argtypes = [
            ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_size_t), ctypes.c_uint64]
    base, size = ctypes.c_uint64(), ctypes.c_size_t()
    err = _libcuda.cuMemGetAddressRange_v2(ctypes.byref(base), ctypes.byref(size), ptr)
    if err:
        raise RuntimeError(f"cuMemGetAddressRange failed (CUDA error {err}) for pointer "
                           f"{ptr:#x}: not device memory of this process?")
    return base.value, size.value


# ------------------------------------------------------------------- consuming
class _Opened:
    """A handle opened in this process, closed when the last array on it is gone."""

    __slots__ = ("handle", "ptr", "size", "pci", "device", "users")

    def __init__(self, handle, ptr, size, pci, device):
        self.handle, self.ptr, self.size, self.pci = handle, ptr, size, pci
        self.device = device
        self.users = 0


_opened = {}            # handle -> _Opened
_mapped = {}            # id(cupy UnownedMemory) -> (_Opened, origin, index, producer,
                        # (offset, shape, dtype, strides) of the array it was opened as)
_opened_lock = threading.RLock()  # (a _Holder.__del__ may run inside, from a collection)


class _Holder:
    """The owner of a consumer array's memory: keeps the handle open and the origin
    object (by an ObjectRef) alive while any array on that memory lives."""

    __slots__ = ("opened", "ref", "key")

    def __init__(self, opened, ref):
        self.opened, self.ref, self.key = opened, ref, None

    def __del__(self):
        with _opened_lock:  # closed under the lock: an _open meanwhile opens it anew
            _mapped.pop(self.key, None)
            self.opened.users -= 1
            if self.opened.users:
                return
            del _opened[self.opened.handle]
            try:
                import cupy

                with cupy.cuda.Device(self.opened.device):
                    cupy.cuda.runtime.deviceSynchronize()  # no kernel still reads it
                    cupy.cuda.runtime.ipcCloseMemHandle(self.opened.ptr)
            except Exception:
                pass


def _rebuild(handle, pci, offset, size, shape, dtype, strides, origin, index, producer, keep):
    """Unpickling a descriptor: a cupy array on the producer's memory, or a copy."""
    local = exports.get(origin) if producer == os.getpid() else None
    copying = _copying.arrays
    if copying is not None:  # the driver, making host copies (host_arrays)
        import cupy

        device = None if local is not None else _device_with_pci(cupy, pci)
        if local is None and device is None:
            raise RuntimeError(f"the driver sees no GPU with PCI bus id {pci}")
        array = local[index] if local is not None else _open(
            cupy, device, handle, pci, offset, size, shape, dtype, strides, origin, index,
            producer, keep)
        copying[(origin, index)] = cupy.asnumpy(array)
        return None
    if local is not None:
        return local[index]  # read back where it was made
    try:
        import cupy
    except ImportError:
        return _from_host(origin, index, None)
    device = _device_with_pci(cupy, pci)
    if device is None:  # another device, or none: a copy through the host
        return _from_host(origin, index, cupy)
    try:
        return _open(cupy, device, handle, pci, offset, size, shape, dtype, strides, origin,
                     index, producer, keep)
    except cupy.cuda.runtime.CUDARuntimeError:  # (a peer it cannot map, say) the host way
        return _from_host(origin, index, cupy)


def _open(cupy, device, handle, pci, offset, size, shape, dtype, strides, origin, index,
          producer, keep):
    """A cupy array on the memory `handle` names (opened once per process)."""
    with cupy.cuda.Device(device):
        with _opened_lock:
            opened = _opened.get(handle)
            if opened is None:
                ptr = cupy.cuda.runtime.ipcOpenMemHandle(handle)
                opened = _opened[handle] = _Opened(handle, ptr, size, pci, device)
            opened.users += 1
        holder = _Holder(opened, keep if keep is not None else ObjectRef(origin))
        memory = cupy.cuda.UnownedMemory(opened.ptr, size, holder, device)
        with _opened_lock:
            holder.key = id(memory)
            _mapped[holder.key] = (opened, origin, index, producer,
                                   (offset, tuple(shape), cupy.dtype(dtype), tuple(strides)))
        return cupy.ndarray(shape, dtype=dtype, memptr=cupy.cuda.MemoryPointer(memory, offset),
                            strides=strides)


def _device_with_pci(cupy, pci):
    """The id, in this process, of the device with PCI bus id `pci`, or None."""
    try:  # (CUDA unusable here, a fork of a process that used it, say: no device)
        for i in range(cupy.cuda.runtime.getDeviceCount()):
            if cupy.cuda.runtime.deviceGetPCIBusId(i) == pci:
                return i
    except Exception:
        pass
    return None


def _from_host(origin, index, cupy):
    """The array, copied through host memory by the driver: numpy without cupy, else
    onto this process's device."""
    runtime = _context.runtime
    if runtime is None:
        raise RuntimeError("a GPU object can only be read inside a shmray session")
    return _onto_device(runtime.gpu_host_copy(origin)[(origin, index)], cupy)


def _on_host(array):
    """Unpickling a cupy array stored through host memory (an empty one, or memory IPC
    cannot share): cupy where a GPU is visible, numpy elsewhere."""
    try:
        import cupy
    except ImportError:
        return array
    return _onto_device(array, cupy)


def _onto_device(array, cupy):
    """A numpy array onto this process's current device, or as it is without one."""
    if cupy is None:
        return array
    try:
        if cupy.cuda.runtime.getDeviceCount():
            return cupy.asarray(array)
    except Exception:
        pass
    return array


# ------------------------------------------------------------------- the driver
class _Copying(threading.local):
    arrays = None       # while the driver makes host copies: (origin, index) -> numpy array


_copying = _Copying()


def host_arrays(load_value) -> dict:
    """In the driver: {(origin, index): numpy array} for the arrays of a GPU object,
    copied from the memory of the processes that keep them (the driver sees every
    device). `load_value()` unpickles the object: each array lands here."""
    try:
        import cupy  # noqa: F401
    except ImportError:
        raise RuntimeError(f"Reading a GPU object on another device, or without one, needs "
                           f"cupy in the driver: {INSTALL_HINT}") from None
    _copying.arrays = arrays = {}
    try:
        load_value()
    finally:
        _copying.arrays = None
    return arrays
