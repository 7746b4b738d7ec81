"""Ray's cancel in the task table (TaskTable inherits it): a task not started never
runs; a running one gets KeyboardInterrupt, or loses its worker with force; an
actor's call is never killed; recursive: the tasks it submitted too (its children,
indexed by the table as they are added). Under the session's lock."""
from __future__ import annotations

import os
import signal
import time

from .. import _serialization as ser
from ..exceptions import TaskCancelledError
from .actors import ALIVE, interrupt


class Cancelling:
    def cancel(self, task_id, force, recursive):
        """Ray's cancel: a task not started never runs; a running one gets
        KeyboardInterrupt (SIGINT; its worker checks that the cancel is for the task
        it runs), or loses its worker with force. Never retried; get raises
        TaskCancelledError. recursive: the tasks it submitted too."""
        spec = self.tasks.get(task_id)
        if spec is None or spec.cancelled:
            return  # finished already, or a put
        spec.cancelled = True
        if recursive:
            for child in list(self.children.get(task_id, ())):
                self.cancel(child, force, recursive)
        w = spec.worker
        if w is None:  # queued, or waiting for its inputs
            if spec.queued:
                self.scheduler.take(spec)
            self.finish(spec, cancelled_stored(spec))
            return
        if self.dispatch.unbatch(w, spec):  # not pushed to the worker yet
            w.inflight.remove(spec)
            if w.idle:  # it was the worker's only task: its resources are free again
                self.ledger.uncharge(w)
                w.idle_since = time.monotonic()
            self.finish(spec, cancelled_stored(spec))
            return
        # The worker skips it if it has not started it. Help tasks (started, stacked
        # on waiting ones) come first: if the list is cut, the oldest of them go.
        cancelled = [s for s in w.inflight if s.cancelled]
        w.channel.post_cancels([s.task_id for s in cancelled if s.helping]
                               + [s.task_id for s in cancelled if not s.helping])
        if spec.actor is not None:  # an actor's process is never killed by a cancel; a
            # running call of a sync or threaded actor is not interrupted (as in Ray), an
            # async one's asyncio task is cancelled. Not before the actor is alive: its
            # calls start after that, and its process may not handle SIGINT yet (the
            # creation's end interrupts it then: ActorTable.call_finished).
            if spec.actor.handle.is_async and spec.actor.state == ALIVE:
                interrupt(w)
            return
        if force:
            if w.inflight[0] is spec or spec.helping:  # running: the worker, and what
                w.proc.kill()                          # its task started, go
        else:  # (always: it may have started since the driver last heard; the worker
            try:  # acts on it only if the task it runs now is a cancelled one)
                os.kill(w.pid, signal.SIGINT)
            except ProcessLookupError:
                pass



def cancelled_stored(spec):
    return ser.error_stored(TaskCancelledError(f"{spec.task_id:032x}"))
