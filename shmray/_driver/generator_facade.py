"""The generator half of the facade (Session inherits it): the driver consuming a
streaming generator's items (see shmray._generator and _driver.generators)."""
from __future__ import annotations

from .._object_ref import ObjectRef, stream_item_id
from ..exceptions import GetTimeoutError
from .generators import END
from .rpcs import lost_error


class GeneratorFacade:
    def generator_next(self, task_id, index, timeout):
        """The ref of item `index` of generator task `task_id` once it is stored, or
        None if the stream ended before it; GetTimeoutError after `timeout` seconds.
        Without the lock (the per-item path): the new ref is counted by its hook, and the
        stream lets go of the item when the loop takes the `taken` record, after it."""
        oid = stream_item_id(task_id, index)
        store = self.store
        stored = store.values.get(oid)
        if stored is None:
            if not store.coming_or_there(oid):
                self.check_open()
                raise lost_error(oid)
            stream = self.generators.streams.get(task_id)
            fast = stream is not None and stream.fast
            values = store.values
            if not self.loop.wait_until(lambda: oid in values, timeout, fast):
                raise GetTimeoutError("Timed out waiting for the generator's next item.")
            stored = values.get(oid)
            if stored is None:  # (the session ended meanwhile)
                self.check_open()
                raise lost_error(oid)
        ref = None if stored is END else ObjectRef(oid)
        store.generator_taken.append((task_id, index))
        return ref
