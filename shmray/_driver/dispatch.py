"""Dispatch: a ready task goes onto a worker's ring.

    ready task ─► place (Scheduler) ─► worker ─► task record ─► batch ─► TASKS message
                └─ no worker: queued, placed when results free one (dispatch_queued)

Waking a sleeping worker costs a system call and often a context switch on the
driver's core (~25 µs, more than the rest of a submit). Inside a burst of .remote()
calls (less than BURST_GAP apart) tasks for one worker are pickled and pushed
together (up to TASK_BATCH per message) and pushed without waking it; it is woken
once per WAKE_BATCH tasks, as soon as the driver waits for anything (get, wait), or
by the background watcher within a millisecond. Whether a call is inside a burst is
the caller's argument (`burst`), never state shared between threads.

Every method runs under the session's lock.
"""
from __future__ import annotations

from .. import _custom_serializers, _ring
from .._crecords import pack_tasks
from .._protocol import TASKS, Func, FUNC, task_record

BURST_GAP = 200e-6
WAKE_BATCH = 64
TASK_BATCH = 16


class Dispatcher:
    def __init__(self, scheduler, ledger, store, functions, readable, prefix):
        self.scheduler = scheduler
        self.ledger = ledger
        self.store = store
        self.functions = functions  # fn_id -> (pickled function, name)
        self.readable = readable    # oid -> its stored form, brought back if spilled
        self.prefix = prefix        # for messages too large for a ring
        self.unwoken = {}           # worker -> tasks pushed to it without a wake
        self.batched = set()        # workers with task records in w.batch, not pushed yet
        self.tried_at = -1          # ledger.releases when the queued tasks were last tried

    def place_or_queue(self, spec, burst):
        """`spec` is ready to run: onto a worker now if nothing is queued ahead of it
        and one is free, else into the scheduler's queue."""
        sched = self.scheduler
        if spec.queue not in sched.ready:
            w = sched.place(spec)
            if w is not None:
                self.send_task(w, spec, burst)
                return
        sched.push(spec)
        # The queued tasks were tried when workers or resources last came free (the
        # handled messages' settle, housekeeping): again only if some came free since.
        if self.ledger.releases != self.tried_at:
            self.dispatch_queued(burst)

    def dispatch_queued(self, burst=False):
        """Place queued tasks while workers are free (results just freed some)."""
        sched = self.scheduler
        self.tried_at = self.ledger.releases
        for request in list(sched.ready):
            q = sched.ready[request]
            while q:
                spec = q[0]
                if not spec.queued:  # taken out of turn (Scheduler.take): drop it
                    q.popleft()
                    sched.stale -= 1
                    continue
                w = sched.place(spec)
                if w is None:
                    break
                q.popleft()
                spec.queued = False
                self.send_task(w, spec, True)  # batched: one message per worker, below
            if not q:
                del sched.ready[request]
        if not burst and self.batched:
            self.push_batches()

    def send_help(self, w, spec):
        """`w` waits in get for `spec`'s result: it runs `spec` itself (see _scheduler)."""
        spec.helping = True
        self.ledger.charge(w, spec.request)
        self.send_task(w, spec, False)

    def send_task(self, w, spec, burst):
        serializers = _custom_serializers.shipment  # (the user's: register_serializer)
        if serializers is not None and serializers.key not in w.fns:
            w.send(_ring.encode(Func(FUNC, serializers.key, serializers.data, "serializers"),
                                w.ring, self.prefix))
            w.fns.add(serializers.key)
        fn_id = spec.fn_id
        if fn_id not in w.fns:
            fn_bytes, name = self.functions[fn_id]
            w.send(_ring.encode(Func(FUNC, fn_id, fn_bytes, name), w.ring, self.prefix))
            w.fns.add(fn_id)
        if spec.deps:
            dep_values = tuple(self.readable(o) for o in spec.deps)
            if spec.pinned is None:  # the worker maps them soon: not spilled meanwhile
                spec.pinned = spec.deps
                self.store.pin(spec.deps)
        else:
            dep_values = None
        w.batch.append(task_record(spec.task_id, fn_id, spec.num_returns, spec.args_stored,
                                   dep_values, spec.lent, spec.request, spec.helping,
                                   spec.attempt, spec.retry_exceptions,
                                   spec.options._generator_backpressure_num_objects))
        w.inflight.append(spec)
        spec.worker = w
        max_calls = spec.options.max_calls
        if max_calls:  # its last call here: the worker gets nothing more, exits when idle
            calls = w.calls[fn_id] = w.calls.get(fn_id, 0) + 1
            if calls >= max_calls:
                w.retiring = True
                burst = False
        if not burst:
            self.send_batch(w, wake=True)
        else:  # batched: one message, one pickling for several tasks
            self.batched.add(w)
            if len(w.batch) >= TASK_BATCH:
                self.send_batch(w)

    def send_batch(self, w, wake=False):
        """Push `w`'s batched tasks as one TASKS message."""
        batch, w.batch = w.batch, []
        self.batched.discard(w)
        if not batch:
            return
        # plain tasks in the compact form (csrc/task_form.c), else a Tasks record's tuple
        data = pack_tasks(batch, w.ring.max_message) or _ring.encode((TASKS, batch), w.ring,
                                                                     self.prefix)
        n = self.unwoken.get(w, 0) + len(batch)
        if wake or n >= WAKE_BATCH:
            self.unwoken.pop(w, None)
            w.send(data)
        else:
            self.unwoken[w] = n
            w.send(data, wake=False)

    def push_batches(self, burst=False):
        """Push the batched task records, each worker's as one message. In a burst, only
        to a worker with fewer than TASK_BATCH tasks pushed and not done: the others
        have work, and more tasks make the next message larger."""
        for w in list(self.batched):
            if not burst or len(w.inflight) - len(w.batch) < TASK_BATCH:
                self.send_batch(w, wake=not burst)

    def flush(self, push_batches=None):
        """Push every batch and wake every worker left asleep (the driver waits now).
        push_batches: the lane's (csrc/lane_send.c), to send the compact batches in C
        first (each worker woken)."""
        if push_batches is not None:
            push_batches(False)
        for w in list(self.batched):
            self.send_batch(w)
        for w in self.unwoken:
            w.ring.wake()
        self.unwoken.clear()

    def unbatch(self, w, spec) -> bool:
        """Take `spec` back from `w`'s batch if it was not pushed yet (a cancel)."""
        # Every task pushed or batched is in w.inflight, in order: the batch is its tail.
        first = len(w.inflight) - len(w.batch)
        for i in range(len(w.batch)):
            if w.inflight[first + i] is spec:
                del w.batch[i]
                return True
        return False

    def forget(self, w):
        """`w` is gone: nothing more is pushed to it."""
        self.unwoken.pop(w, None)
        self.batched.discard(w)
        w.batch.clear()
