"""``shmray.cloudpickle``: the cloudpickle API, as ``ray.cloudpickle`` is (Ray ships a
copy; this is the installed cloudpickle). Its picklers, like Ray's, use the
serializers registered with ``shmray.util.register_serializer``.
"""
from __future__ import annotations

import io
from pickle import HIGHEST_PROTOCOL, PickleError, PicklingError, UnpicklingError

import cloudpickle
from cloudpickle import (DEFAULT_PROTOCOL, __version__, list_registry_pickle_by_value, load,
                         loads, register_pickle_by_value, unregister_pickle_by_value)

from ._custom_serializers import cloud_table


class CloudPickler(cloudpickle.Pickler):
    """cloudpickle's Pickler, with the registered serializers."""
    dispatch_table = cloud_table()


Pickler = CloudPickler


def dumps(obj, protocol=None, buffer_callback=None) -> bytes:
    """cloudpickle.dumps, with the registered serializers."""
    with io.BytesIO() as file:
        CloudPickler(file, protocol, buffer_callback=buffer_callback).dump(obj)
        return file.getvalue()


def dump(obj, file, protocol=None, buffer_callback=None):
    """dumps(obj) written to the binary file `file`."""
    CloudPickler(file, protocol=protocol, buffer_callback=buffer_callback).dump(obj)


__all__ = ["__version__", "Pickler", "CloudPickler", "dumps", "loads", "dump", "load",
           "register_pickle_by_value", "unregister_pickle_by_value",
           "list_registry_pickle_by_value", "DEFAULT_PROTOCOL", "HIGHEST_PROTOCOL",
           "PickleError", "PicklingError", "UnpicklingError"]
