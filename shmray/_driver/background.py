"""The driver's background thread and its housekeeping (MessageLoop inherits them).

While a user thread waits in get/wait, it handles the messages and this thread
parks. While the driver is quiet (no .remote() for QUIET seconds), it sleeps on
the doorbell and handles whatever comes. During a burst of submissions, the
submitting thread collects results itself, and this one only watches for rings
nobody empties (and delivers deferred wakes), every millisecond. Every
HOUSEKEEP_EVERY, whoever pumps keeps house: status words, snapshots, dead workers,
rpc deadlines, runtime_env events, idle workers, pending placement groups.
"""
from __future__ import annotations

import sys
import time

from .. import _ring
from .._cring import pop_any, wait_stalled
from .workers import DIED

HOUSEKEEP_EVERY = 0.02
QUIET = 0.01                 # no .remote() for this long: the background thread pumps


class Background:
    def _background(self):
        """Handle messages nobody else is handling, and keep house.

        While a user thread waits in get/wait, it handles the messages: this thread
        parks. While the driver is quiet (no .remote() for QUIET seconds), it sleeps
        on the doorbell and handles whatever comes. During a burst of submissions,
        the submitting thread collects results itself, and this one only watches
        for rings nobody empties (and delivers deferred wakes), every millisecond."""
        while not self.workers.stopping:
            try:
                self._background_step()
            except KeyboardInterrupt:  # signals are the main thread's business
                continue
            except Exception as e:  # never die: the session depends on this thread
                print(f"shmray: background thread error: {type(e).__name__}: {e}",
                      file=sys.stderr)
                time.sleep(HOUSEKEEP_EVERY)

    def _background_step(self):
        # Parked while a user thread pumps. Also asked: did one pump lately? A Ctrl-C
        # landing in wait_until's `finally` before its section can leave `pumpers`
        # counted up; the session must not then go undrained.
        if self.pumpers and time.monotonic() - self.user_pumped < 4 * HOUSEKEEP_EVERY:
            self._bg_parked = True
            self._nobody_pumps.clear()
            if self.pumpers:  # re-checked after clear(): a set() cannot be lost
                self._nobody_pumps.wait(HOUSEKEEP_EVERY)
            self._bg_parked = False
            return
        if time.monotonic() - self.session.lane.last_submit > QUIET:
            self.pump(HOUSEKEEP_EVERY, spin=False)
            return
        # also delivers deferred wakes: it nudges task rings whose worker sleeps
        wait_stalled(self.pool.snapshot[1], 0.001, HOUSEKEEP_EVERY, self.pool.task_rings)
        if not self.workers.stopping and self.pump_lock.acquire(False):
            try:
                self.drain(1 << 30)
            finally:
                self.pump_lock.release()
                if self.deferred:
                    self.run_deferred()

    # ------------------------------------------------------------ housekeeping
    def housekeep(self):
        now = time.monotonic()
        self.next_housekeep = now + HOUSEKEEP_EVERY
        s = self.session
        s.status.publish(s.counters())
        request = s.status.requested()
        if request is not None:
            s.write_snapshot(request)
        s.segments.trim(now)
        s.store.compact()
        self.dispatch.flush(self.lane.push_batches)
        for w in self.workers.dead():
            self.on_death(w)
        self.rpcs.expire(now)
        for key, prepared, error, waiting in self.envs.take_events():
            if prepared is not None and key == self.envs.job_key:
                self.workers.rebase(prepared)
            self.tasks.env_settled(waiting, error)
        self.workers.retire_idle(now)
        if s.groups.pending:
            s.groups.place_pending()
        self.dispatch.dispatch_queued()
        if self.actors.unplaced:  # (resources freed by an actor's end, not by a message)
            self.actors.place_unplaced()

    def on_death(self, w):
        """`w` died: what it managed to send before still counts (read first: the
        caller holds pump_lock, the rings' one consumer), then it leaves."""
        rings = (w.channel.results,)
        while not w.gone:
            got = pop_any(rings, self.control.doorbell, 0.0, 0.0, 0)
            if got is None:
                break
            self.handle(w, _ring.decode(got[1]))
        self.workers.remove_worker(w, DIED)
