"""The user's serializers for types pickle cannot handle (or should not handle its own
way): ``shmray.util.register_serializer``. The table that _serialization's picklers
consult, and how it reaches the workers.

    register(cls, serializer, deserializer) in the driver
      ─► table[cls] = CustomSerializer: an instance pickles as
         (deserializer, (serializer(obj),)), so a reader needs only the deserializer,
         which travels inside the value
      ─► _serialization.use_picklers(...): pickling consults the table from now on
      ─► a new Shipment: the table's bytes, under a key no function id has (negative)
    Dispatcher.send_task: a worker that lacks the shipment's key gets it first, as a Func
      ─► unpickled there, it calls install(): the worker pickles values its tasks return
         or pass on with the driver's table too

A worker's own registrations (made inside a task) are its own, as in Ray; they hide
the driver's for that type in that process. A forked process's inherited
registrations count as shipped (its parent's), so the next shipment replaces them.
"""
from __future__ import annotations

import copyreg
import io
import itertools
import os
import pickle
from collections import ChainMap
from collections.abc import Callable

from . import _context, _serialization
from ._records import NamedTuple


class CustomSerializer(NamedTuple):
    """How instances of one registered type pickle: the pickle module's reducer
    protocol (called with the instance, returns (callable, args))."""
    serializer: Callable
    deserializer: Callable

    def __call__(self, obj):
        return self.deserializer, (self.serializer(obj),)


class Shipment(NamedTuple):
    """The driver's table as its workers receive it."""
    key: int                    # a Func's fn_id: negative, never a function's
    data: bytes                 # unpickled, it installs the table


_shipped = {}   # the driver's table, as last installed here (in a worker)
_own = {}       # registered in this process: cls -> CustomSerializer, or None (deregistered
                # here, while the driver's table has it)
_versions = itertools.count(1)  # (next() is atomic: registrations from several threads)
shipment = None  # the driver's latest Shipment (None: nothing ever registered)

# The picklers' dispatch tables: the table first, then what they consult anyway:
# copyreg's, and cloudpickle's, added by cloud_table() when cloudpickle is first
# needed (see _serialization.cloudpickle_dumps). (The C pickler reads dispatch_table
# once, when constructed: the ChainMaps stay, their first map is swapped whenever the
# table changes.)
_PLAIN_TABLE = ChainMap({}, copyreg.dispatch_table)
_CLOUD_TABLE = ChainMap(_PLAIN_TABLE.maps[0])


def cloud_table() -> ChainMap:
    """The dispatch table of shmray's cloudpickle picklers (shmray.cloudpickle's, and the
    one that pickles remote functions): the registered serializers, then cloudpickle's
    own (cloudpickle is imported here, the first time)."""
    if len(_CLOUD_TABLE.maps) == 1:
        import cloudpickle

        _CLOUD_TABLE.maps[1:] = [cloudpickle.Pickler.dispatch_table]
    return _CLOUD_TABLE


class Pickler(pickle.Pickler):
    dispatch_table = _PLAIN_TABLE


def plain_dumps(obj, protocol=None, buffer_callback=None) -> bytes:
    """pickle.dumps, with the registered serializers."""
    with io.BytesIO() as file:
        Pickler(file, protocol, buffer_callback=buffer_callback).dump(obj)
        return file.getvalue()


def cloud_dumps(obj, protocol=None, buffer_callback=None) -> bytes:
    """cloudpickle.dumps, with the registered serializers: shmray.cloudpickle's (imported
    here, the first time a value needs it)."""
    from . import cloudpickle as shm_cloudpickle

    return shm_cloudpickle.dumps(obj, protocol, buffer_callback)


def table() -> dict:
    """The serializers in force in this process: type -> CustomSerializer."""
    return _PLAIN_TABLE.maps[0]


def register(cls: type, serializer: Callable, deserializer: Callable):
    """Pickle instances of `cls` with the user's functions, here and (from the driver)
    in every worker. TypeError, with nothing changed, if the pair cannot travel to a
    worker."""
    _update(cls, CustomSerializer(serializer, deserializer))


def deregister(cls: type):
    """Instances of `cls` pickle as before registering, in this process (and, from the
    driver, in the workers). Nothing happens if none was registered."""
    if cls in _shipped:
        _update(cls, None)  # (the driver's, hidden here)
    elif cls in _own:
        _update(cls, _GONE)


def install(shipped: dict):
    """In a worker: the driver's table (a Shipment unpickled), under its own
    registrations."""
    global _shipped
    _shipped = shipped
    _apply(_merge(_shipped, _own))


_GONE = object()


def _update(cls, entry):
    """One type's entry changed here: in force now and, from the driver, shipped to the
    workers (pickled first, so that a pair that cannot be pickled changes nothing)."""
    global _own, shipment
    own = dict(_own)
    if entry is _GONE:
        del own[cls]
    else:
        own[cls] = entry
    merged = _merge(_shipped, own)
    rt = _context.runtime
    ships = rt is None or rt.is_driver  # a worker's registrations stay in its process
    if ships:
        try:
            data = _serialization.cloudpickle_dumps(_Install(merged), protocol=5)
        except Exception as e:
            raise TypeError(f"The serializer and deserializer must be picklable (they run "
                            f"in the worker processes too): {type(e).__name__}: {e}") from None
    _own = own
    _apply(merged)
    if ships:
        shipment = Shipment(-next(_versions), data)


def _merge(shipped: dict, own: dict) -> dict:
    return {cls: s for cls, s in {**shipped, **own}.items() if s is not None}


def _apply(merged: dict):
    _PLAIN_TABLE.maps[0] = merged
    _CLOUD_TABLE.maps[0] = merged
    if merged:
        _serialization.use_picklers(plain_dumps, cloud_dumps)
    else:
        _serialization.use_picklers(pickle.dumps, _serialization.cloudpickle_dumps)


class _Install:
    """A table that, unpickled, installs itself (the bytes of a Shipment)."""

    def __init__(self, merged: dict):
        self.merged = merged

    def __reduce__(self):
        return install, (self.merged,)


def _after_fork_in_child():
    """A forked process's registrations are its parent's: shipped, not its own."""
    global _shipped, _own
    _shipped = {**_shipped, **_own}
    _own = {}


os.register_at_fork(after_in_child=_after_fork_in_child)
