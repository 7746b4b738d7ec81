"""The generator half of the facade (Session inherits it): the driver consuming a
streaming generator's items (see shmray._generator and _driver.generators)."""
from __future__ import annotations

from .._object_ref import ObjectRef, stream_item_id
from ..exceptions import GetTimeoutError
from .rpcs import lost_error


class GeneratorFacade:
    def generator_next(self, task_id, index, timeout):
        """The ref of item `index` of generator task `task_id` once it is stored, or
        None if the stream ended before it; GetTimeoutError after `timeout` seconds."""
        oid = stream_item_id(task_id, index)
        store = self.store
        values = store.values
        if oid not in values:
            if not store.coming_or_there(oid):
                self.check_open()
                raise lost_error(oid)
            if not self.loop.wait_until(lambda: oid in values, timeout):
                raise GetTimeoutError("Timed out waiting for the generator's next item.")
        with self.lock:
            if oid not in values:  # (the session ended meanwhile)
                self.check_open()
                raise lost_error(oid)
            is_item = self.generators.hand_out(task_id, index, None)
        return ObjectRef(oid, True) if is_item else None
