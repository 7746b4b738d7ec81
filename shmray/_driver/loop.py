"""The message loop: the one place where what workers say reaches the components.

      user thread                          background thread
  submit ─► TaskTable ─► Dispatcher ─► task ring ─► worker
  get/wait ─┐                                          │
            ├─ pump: pop result rings ◄── doorbell ◄───┘
  bg (only when nobody else pumps) ─┘   HANDLERS[kind](worker, record)

Whoever needs progress pumps: `get` pops results itself (no thread hand-off on the
latency path), `remote` drains what is there without waiting, and the background
thread drains rings that nobody has popped for a millisecond (the user is busy
elsewhere) and keeps house: dead workers, rpc deadlines, outboxes, idle extra
workers, runtime_env events, status words.

Two locks: `pump_lock` makes one thread the rings' consumer; the session's `lock`
guards the state. Always take them in that order. No user code runs under either:
what would run some (a future's callbacks, unpickling a GPU object's value) is
queued on `deferred` and run by `run_deferred`, which the pumping thread calls once
it has let go of both.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from threading import get_ident

from .. import _ring
from .._cring import pop_any
from .._protocol import (ABANDON, ACTOR_ASK, ACTOR_CALL, ACTOR_CREATE, ACTOR_EXITING,
                         ACTOR_KILL, BOUNCE, CANCEL, DONE, GEN_ITEM, GEN_NEXT, GEN_PAUSE, GET,
                         GPU_FREE, GPU_HOST, LOG, MAPS, PG_ASK, PUT, REFS, SUBMIT, WAIT,
                         GpuFree)
from .._object_ref import stream_item_id, task_id_of
from .actors import DEAD
from .interrupts import MAIN, sections
from .output import on_log
from .spec import TaskSpec
from .background import HOUSEKEEP_EVERY, Background
from .workers import RETIRED

# How long a waiting pop spins before it sleeps on the futex (seconds). Spinning
# catches a reply from a worker on the other core in well under a microsecond;
# sleeping costs ~20 µs to wake. But a spinning driver takes a core from the
# workers, so it spins only while tasks are short (recent mean below SPIN_IF_TASKS_UNDER).
DRIVER_SPIN = 50e-6
SPIN_IF_TASKS_UNDER = 200e-6
DRAIN_BATCH = 512


class MessageLoop(Background):
    def __init__(self, session):
        s = session
        self.session = s
        self.lock = s.lock
        self.pump_lock = threading.Lock()
        self.pool, self.store, self.control = s.pool, s.store, s.control
        self.tasks, self.dispatch, self.rpcs = s.tasks, s.dispatch, s.rpcs
        self.workers, self.gpu, self.envs = s.workers, s.gpu, s.envs
        self.scheduler, self.ledger = s.scheduler, s.ledger
        self.actors, self.life = s.actors, s.life
        self.generators = s.generators
        self.deferred = deque()      # callables with user code, run outside the locks
        self.next_housekeep = 0.0
        self.lane = session.lane     # (the common task's Done in C; lane.rr: the result
                                     # ring to look at first, round robin)
        self.pumpers = 0             # user threads inside wait_until (they pump)
        self.user_pumped = 0.0       # when one of them last began a pump
        self._pumpers_lock = threading.Lock()
        self._nobody_pumps = threading.Event()
        self._bg_parked = False      # the background thread waits for _nobody_pumps
        self.handlers = {
            DONE: self.on_done, REFS: self.workers.on_refs, SUBMIT: self.on_submit,
            PUT: self.on_put, GET: self.rpcs.on_get, WAIT: self.rpcs.on_wait,
            GPU_HOST: self.on_gpu_host, LOG: on_log, BOUNCE: self.on_bounce,
            CANCEL: self.on_cancel, ABANDON: self.rpcs.on_abandon,
            ACTOR_CALL: self.life.on_actor_call, ACTOR_CREATE: self.life.on_actor_create,
            ACTOR_ASK: self.life.on_actor_ask, ACTOR_KILL: self.on_actor_kill,
            ACTOR_EXITING: self.life.on_actor_exiting,
            GEN_ITEM: self.on_gen_item, GEN_NEXT: self.rpcs.on_gen_next,
            GEN_PAUSE: self.generators.on_pause, PG_ASK: s.on_pg_ask,
            MAPS: self.workers.on_maps,
        }
        self.thread = threading.Thread(target=self._background, name="shmray-pump", daemon=True)

    # ------------------------------------------------------------ handlers
    def handle(self, w, msg):
        if w.gone:  # retired or dead: what it sends after is void (its refs are dropped)
            return
        self.handlers[msg[0]](w, *msg)  # (the kind, then the record's fields)

    def on_done(self, w, kind, task_id, outcome, start, end, inner, gpu, retryable):
        inflight = w.inflight
        spec = inflight[0]
        # (A simple task's Done, first in line on a plain worker, with a small inline
        # result, never comes here: the lane (csrc/lane_done.c) handled it in C.)
        if spec.task_id == task_id:
            spec = inflight.popleft()
        else:  # a help task, run on top of a waiting one
            spec = next(s for s in inflight if s.task_id == task_id)
            inflight.remove(spec)
        spec.helping = False
        w.tasks_done += 1
        self.rpcs.resume(w)
        if not inflight:
            w.idle_since = time.monotonic()
        self.scheduler.record_duration(spec.fn_id, (end - start) * 1e-9)
        if spec.cancelled:
            self.gpu.discard_results(w, task_id, gpu)
        elif gpu:  # (an error has none)
            for i in gpu:  # results whose cupy arrays the worker keeps
                self.gpu.produced(task_id + i, w)
        self.tasks.on_done(spec, outcome, inner, retryable)
        if w.retiring:
            self.workers.retire_if_done(w)
        elif w.actor is not None and (w.actor.ending or w.actor.state == DEAD):
            self.life.end_if_done(w.actor)  # (its __init__ failed, or no handle is left)

    def on_submit(self, w, kind, task_id, fn_id, fn_bytes, name, options, args_stored, deps,
                  held, parent):
        """A Submit record: a task submitted inside a task."""
        functions = self.session.functions
        if fn_bytes is not None and fn_id not in functions:
            functions[fn_id] = (fn_bytes, name)
        spec = TaskSpec(task_id, fn_id, name, self.session.child_options(w, parent, options),
                        args_stored, deps, False)
        spec.parent = parent
        if held:
            spec.held = held
            spec.lent = self.tasks.lend(held)
        self.tasks.add(spec, submitter=w)

    def on_put(self, w, kind, oid, stored, inner, gpu):
        """A Put record: an object put inside a task."""
        w.grant(oid, self.store)
        if gpu:
            self.gpu.produced(oid, w)
        self.store.put(oid, stored, f"put in a task (pid={w.pid})", inner)

    def on_gen_item(self, w, kind, task_id, index, stored, inner, gpu):
        """A GenItem record: a streaming generator yielded an item."""
        oid = self.generators.on_item(task_id, index, stored, inner)
        if gpu:  # its cupy arrays stay in `w` while the item lives
            if oid is None:
                oid = stream_item_id(task_id, index)
                w.send(_ring.encode(GpuFree(GPU_FREE, (oid,)), w.ring, self.session.prefix))
            else:
                self.gpu.produced(oid, w)

    def on_actor_kill(self, w, kind, actor_id, no_restart):
        """An ActorKill record (kill() inside a task or an actor)."""
        killed = self.life.kill(actor_id, no_restart)
        if killed is not None:
            self.on_death(killed)

    def on_bounce(self, w, kind, task_id):
        self.tasks.bounced(w, task_id)

    def on_cancel(self, w, kind, oid, force, recursive):
        self.tasks.cancel(task_id_of(oid), force, recursive)

    def on_gpu_host(self, w, kind, req_id, oid):
        """Host copies of a GPU object: made outside the lock (the value is unpickled)."""
        done, stored = self.gpu.host_copy_source(oid)
        if done:
            self.gpu.host_copy_reply(w, req_id, oid, stored)
            return

        def make_and_reply():
            copy = self.gpu.host_copy_made(stored)
            with self.lock:
                self.gpu.host_copy_reply(w, req_id, oid, copy)
        self.deferred.append(make_and_reply)

    def future_of(self, ref):
        """A concurrent.futures.Future of `ref`'s value (ObjectRef.future). Its
        callbacks are user code: the value is read and the future resolved by a
        deferred callable, outside every internal lock and section."""
        import concurrent.futures  # (here: it imports logging, which a session never needs)

        fut = concurrent.futures.Future()
        session = self.session

        def resolve(ref=ref):
            if fut.done():  # resolved already (run again after a Ctrl-C), or cancelled
                return
            try:
                value, error = session.values([ref])[0], None
            except Exception as e:
                value, error = None, e
            try:
                if error is None:
                    fut.set_result(value)
                else:
                    fut.set_exception(error)
            except concurrent.futures.InvalidStateError:  # its user cancelled it meanwhile
                pass

        with self.lock:
            self.store.on_ready(ref._id, lambda oid: self.deferred.append(resolve))
        self.run_deferred()  # (ready already: resolved now, in this thread)
        return fut

    # ------------------------------------------------------------ pumping
    def drain(self, limit, burst=False):
        """Handle up to `limit` messages already waiting (the caller holds pump_lock,
        inside a Ctrl-C-safe section or in the background thread: the plain lock)."""
        with self.lock.raw:
            return self._drain(limit, burst)

    def _drain(self, limit, burst, handled=0):
        """drain() under the lock; `handled`: messages the caller handled just before
        (settled with these)."""
        workers, rings = self.pool.snapshot
        drain_in_c = self.lane.drain  # (pop_any's loop; a simple task's Done handled in C)
        n = 0
        while n < limit:
            got = drain_in_c(rings, self.control.doorbell, workers, limit - n)
            if type(got) is int:  # the rings are empty, or the limit is reached
                n += got
                break
            done_in_c, i, data = got  # then a message for Python
            self.handle(workers[i], _ring.decode(data))
            n += done_in_c + 1
        self.settle(n + handled, burst)
        return n

    def settle(self, handled, burst=False):
        """After messages: place what results freed room for, push batches, count
        refs, tell GPU producers, keep house when due (under the lock)."""
        store = self.store
        if handled:
            if self.session.groups.pending:  # (before tasks: asked for before them)
                self.session.groups.place_pending()
            if not self.lane.dispatch_queued(burst):  # once per batch: results free
                self.dispatch.dispatch_queued(burst)  # workers (plain tasks placed in C)
            if self.actors.unplaced:
                self.actors.place_unplaced()
        if self.dispatch.batched:
            self.lane.push_batches(burst)  # (Dispatcher.push_batches, in C)
        # The streams let go of the items handed out before the drops are counted: an
        # item fetched and dropped since then ends with its drop, in C (the other way
        # round, its end was the store's Python, in the stream's unneed).
        if store.generator_taken:  # (the refs' creations counted first, by it)
            self.generators.take_handed_out()
        if store.drop_queue or store.created_queue:
            self.lane.process_refs()  # (ObjectStore.process_refs, its common case in C)
        if store.tokens_freed:
            self.life.end_unreferenced()
        if store.generators_freed:
            self.tasks.generators_dropped()
        if store.gpu_freed:
            for w in self.gpu.tell_freed(self.workers.stopping):
                self.workers.remove_worker(w, RETIRED)
        if time.monotonic() >= self.next_housekeep:
            self.housekeep()

    def wake_deferred(self):
        if self.dispatch.unwoken or self.dispatch.batched:
            with self.lock:
                self.dispatch.flush(self.lane.push_batches)

    def pump(self, timeout, done=None, spin=True, fast=False):
        """Wait up to `timeout` seconds for messages and handle them; return early
        if done() already holds (another thread may have handled what we wait for).
        A Ctrl-C-safe section: a message popped is a message handled, and the pump
        lock is let go (a Ctrl-C waits for this pump's end, HOUSEKEEP_EVERY at most)."""
        in_main = get_ident() == MAIN  # (`with sections:`, inlined: once per get)
        if in_main:
            sections.depth += 1
        try:
            self._pump(timeout, done, spin, fast)
        finally:
            if in_main:
                sections.depth -= 1
                if sections.pending and not sections.depth:
                    sections.raise_pending()
        if self.deferred:
            self.run_deferred()

    def _pump(self, timeout, done, spin, fast):
        self.wake_deferred()
        if not self.pump_lock.acquire(timeout=min(timeout, 0.05) if timeout >= 0 else 0.05):
            return
        try:
            workers, rings = self.pool.snapshot
            if not rings:
                self.drain(DRAIN_BATCH)
                time.sleep(min(max(timeout, 0), 0.01))
                return
            store = self.store
            if store.drop_queue or store.created_queue:  # refs dropped: their memory goes
                self.drain(DRAIN_BATCH)                  # now, not after the wait
            if done is not None and done():  # (another thread handled it)
                return
            # pop_any returns at once if a message waits; else spins, then sleeps on
            # the doorbell. (`fast`: what is awaited comes quickly, whatever the tasks'
            # durations: a streaming generator's next item)
            spin = spin and (fast or self.scheduler.recent_mean < SPIN_IF_TASKS_UNDER)
            got = pop_any(rings, self.control.doorbell, min(max(timeout, 0.0), HOUSEKEEP_EVERY),
                          DRIVER_SPIN if spin else 0.0, self.lane.rr)
            with self.lock.raw:  # (in pump's section)
                handled = 0
                if got is not None:  # then those waiting behind it, settled together
                    i, data = got
                    self.lane.rr = i + 1
                    if not self.lane.done(workers[i], data):
                        self.handle(workers[i], _ring.decode(data))
                    handled = 1
                self._drain(DRAIN_BATCH, False, handled)
        finally:
            self.pump_lock.release()

    def run_deferred(self):
        """Run the queued user code (callbacks), outside every internal lock and
        outside any Ctrl-C-safe section (a callback may block). A Ctrl-C that takes
        one from the queue before it has run puts it back: each may run twice
        (a future already resolved stays as it is), never be lost."""
        deferred = self.deferred
        while deferred:
            fn = None
            try:
                with sections:
                    try:
                        fn = deferred.popleft()
                    except IndexError:  # another thread took the last one
                        return
                fn()
                fn = None
            except BaseException:
                if fn is not None:
                    deferred.appendleft(fn)
                raise

    def wait_until(self, done, timeout, fast=False) -> bool:
        """Pump until done() is true; False if `timeout` seconds pass first. `fast`:
        it is expected within microseconds (spin before sleeping, see _pump)."""
        if done():
            return True
        self.lane.waited = True  # a get/wait ends a burst: the next .remote() goes at once
        # Most waits end within one pump's spin (a short task's result): one pump first,
        # without the pumpers' count (the background thread is not parked for it).
        if timeout is None or timeout > DRIVER_SPIN:
            self.pump(DRIVER_SPIN, done, fast=fast)
            if done():
                return True
        deadline = None if timeout is None else time.monotonic() + timeout
        counted = False
        try:
            with sections:  # counted, and known to be, together (the finally undoes it)
                with self._pumpers_lock:
                    self.pumpers += 1
                counted = True
            while True:
                remaining = -1.0 if deadline is None else deadline - time.monotonic()
                if deadline is not None and remaining <= 0:
                    return done()
                self.user_pumped = time.monotonic()
                self.pump(HOUSEKEEP_EVERY if remaining < 0 else min(remaining, HOUSEKEEP_EVERY),
                          done, fast=fast)
                self.session.check_open()
                if done():
                    return True
        finally:
            if counted:
                with sections, self._pumpers_lock:
                    self.pumpers -= 1
                    if not self.pumpers and self._bg_parked:  # only a parked thread needs a wake
                        self._nobody_pumps.set()
