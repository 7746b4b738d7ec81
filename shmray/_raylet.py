"""Ray's ``ray._raylet`` names that programs import directly (its docs do:
``from ray._raylet import ObjectRefGenerator``)."""
from ._generator import DynamicObjectRefGenerator, ObjectRefGenerator
from ._object_ref import ObjectRef

__all__ = ["ObjectRef", "ObjectRefGenerator", "DynamicObjectRefGenerator"]
