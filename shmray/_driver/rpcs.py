"""Worker rpcs: a task's own get and wait, answered by the driver.

    worker ── Get/Wait ──► open rpc (its CPU freed meanwhile) ──value ready──► Reply
                                     └─ a queued task it waits for: it runs it (help)

A worker blocked in get holds no resources (its children may need them); it is
charged again when the innermost rpc is answered and it runs on. Every method runs
under the session's lock.
"""
from __future__ import annotations

import itertools
import time

from .. import _ring, _serialization as ser
from .._object_ref import stream_item_id, task_id_of
from .._protocol import REPLY, Reply
from ..exceptions import ObjectLostError


class Rpc:
    """A worker's open get (num_returns None), wait, or a generator's next item
    (`stream`: (task id, index); a wait for that item's id)."""

    __slots__ = ("worker", "req_id", "oids", "num_returns", "deadline", "answered", "stream",
                 "missing", "help_from")

    def __init__(self, worker, req_id, oids, num_returns, timeout, stream=None):
        self.worker = worker
        self.req_id = req_id
        self.oids = oids
        self.num_returns = num_returns
        self.deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        self.answered = False
        self.stream = stream
        # How many of `oids` (each occurrence) have no value yet: counted down as they
        # come, so that a get of n refs costs O(n) in all, not O(n) per arrival.
        self.missing = 0
        self.help_from = 0          # oids before this index have values (help_blocked)


class RpcTable:
    def __init__(self, store, ledger, scheduler, dispatch, readable, tasks, generators,
                 prefix):
        self.store = store
        self.ledger = ledger
        self.scheduler = scheduler      # its `awaited`: oid -> the open get that needs it
        self.dispatch = dispatch
        self.readable = readable
        self.tasks = tasks              # task_id -> TaskSpec (the task table's dict)
        self.generators = generators
        self.prefix = prefix
        self.open = {}                  # (worker index, req_id) -> Rpc

    def on_get(self, w, kind, req_id, oids, timeout):
        """A worker blocks in get (a Get record)."""
        self._open(Rpc(w, req_id, oids, None, timeout))

    def on_wait(self, w, kind, req_id, oids, num_returns, timeout):
        """A worker blocks in wait (a Wait record)."""
        self._open(Rpc(w, req_id, oids, num_returns, timeout))

    def on_gen_next(self, w, kind, req_id, task_id, index, timeout):
        """A worker waits for a generator's next item (a GenNext record)."""
        self._open(Rpc(w, req_id, [stream_item_id(task_id, index)], 1, timeout,
                       (task_id, index)))

    def _open(self, rpc):
        w = rpc.worker
        w.rpcs.append(rpc)
        self.ledger.uncharge(w)  # (an actor's worker holds nothing: its actor does)  # its CPU is free while it waits: children can run
        self.open[(w.index, rpc.req_id)] = rpc
        store = self.store
        for oid in rpc.oids:
            if not store.coming_or_there(oid):
                store.keep_until_shutdown(oid)  # a tiny error, kept for whoever asks again
                store.put(oid, lost_error_stored(oid))
        arrived = lambda oid, rpc=rpc: self._arrived(rpc)
        awaited = self.scheduler.awaited
        for oid in rpc.oids:
            if oid not in store.values:
                rpc.missing += 1
                store.on_ready(oid, arrived)
                if rpc.num_returns is None:
                    awaited[oid] = rpc
        self.answer(rpc, False)
        self.help_blocked(w)

    def _arrived(self, rpc):
        rpc.missing -= 1
        self.answer(rpc, False)

    def answer(self, rpc, timed_out):
        """Reply to a blocked worker if its get/wait is satisfied (or out of time)."""
        w = rpc.worker
        key = (w.index, rpc.req_id)
        if self.open.get(key) is not rpc:
            return  # answered already
        values = self.store.values
        if rpc.num_returns is None:  # Get: every value, or None for a timeout
            if not rpc.missing:
                payload = [self.readable(o) for o in rpc.oids]
            elif timed_out:
                payload = None
            else:
                return
        else:  # Wait: a ready mask with at most num_returns set, in order, as Ray does
            if len(rpc.oids) - rpc.missing < rpc.num_returns and not timed_out:
                return
            payload, ready = [], 0
            for o in rpc.oids:
                ok = o in values and ready < rpc.num_returns
                ready += ok
                payload.append(ok)
            if ready < rpc.num_returns and not timed_out:
                return
            if rpc.stream is not None:  # the item (granted), the end, or None: timed out
                payload = (self.generators.hand_out(*rpc.stream, w) if ready and not w.gone
                           else None)
        self._close(rpc)
        if w.gone:
            return
        w.send(_ring.encode(Reply(REPLY, rpc.req_id, payload), w.ring, self.prefix))
        rpc.answered = True
        if w.actor is not None:  # (a threaded actor's rpcs end in any order; an actor's
            w.rpcs.remove(rpc)   # calls hold no resources of their own)
        elif w.rpcs[-1] is rpc:  # the innermost wait: the worker runs again
            self.resume(w)

    def _close(self, rpc):
        del self.open[(rpc.worker.index, rpc.req_id)]
        awaited = self.scheduler.awaited
        for oid in rpc.oids:
            if awaited.get(oid) is rpc:
                del awaited[oid]

    def reply(self, w, req_id, payload):
        """Answer an rpc at once (an actor's creation or lookup)."""
        if not w.gone:
            w.send(_ring.encode(Reply(REPLY, req_id, payload), w.ring, self.prefix))

    def resume(self, w):
        """`w` finished a task or got a reply: it runs again if something is runnable —
        the task under an answered innermost wait, or its next queued task."""
        if w.rpcs:
            if not w.rpcs[-1].answered:
                self.ledger.uncharge(w)  # back to waiting
                self.help_blocked(w)
                return
            w.rpcs.pop()
        if w.inflight:
            if w.charge is None:
                self.ledger.charge(w, w.inflight[0].request)
        else:
            self.ledger.uncharge(w)

    def help_blocked(self, w):
        """`w` waits in get for tasks still queued: let it run one of them itself."""
        rpc = w.rpcs[-1] if w.rpcs else None
        if rpc is None or not self.scheduler.helpable(rpc):
            return
        values, tasks, oids = self.store.values, self.tasks, rpc.oids
        i = rpc.help_from  # (results come roughly in order: skip those already there)
        while i < len(oids) and oids[i] in values:
            i += 1
        rpc.help_from = i
        for oid in itertools.islice(oids, i, None):
            if oid not in values:
                spec = tasks.get(task_id_of(oid))
                if spec is not None and spec.queued and can_help(self.ledger, w, spec):
                    self.scheduler.take(spec)
                    self.dispatch.send_help(w, spec)
                    return

    def on_abandon(self, w, kind, req_id):
        """A worker left its get/wait early (a cancel interrupted it): forget the rpc,
        and charge the worker again, since its task runs on."""
        rpc = self.open.get((w.index, req_id))
        if rpc is None:
            return
        self._close(rpc)
        if rpc in w.rpcs:
            w.rpcs.remove(rpc)
        if not w.rpcs and w.inflight and w.charge is None:
            self.ledger.charge(w, w.inflight[0].request)

    def expire(self, now):
        for rpc in list(self.open.values()):
            if rpc.deadline is not None and now >= rpc.deadline:
                self.answer(rpc, True)

    def forget(self, w):
        """`w` is gone: its open rpcs with it."""
        w.rpcs.clear()
        for rpc in [r for r in self.open.values() if r.worker is w]:
            self._close(rpc)


def can_help(ledger, w, spec) -> bool:
    """May `w`, blocked in get, run `spec` on top of its wait? Not GPU tasks (its
    devices are fixed), nor another environment's, and only within free resources."""
    return not spec.options.num_gpus and spec.env == w.env and ledger.fits(spec.request)


def lost_error(oid) -> ObjectLostError:
    return ObjectLostError(f"{oid:032x}", "Its value was released or never existed in this "
                                          "session.")


def lost_error_stored(oid):
    return ser.error_stored(lost_error(oid))
