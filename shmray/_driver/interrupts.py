"""Ctrl-C never lands in the middle of a change to the driver's state.

Python runs a SIGINT handler in the main thread between any two bytecodes, so a
plain KeyboardInterrupt can split a step in two: a task recorded as pushed to a
worker that never got it, a result popped from a ring and never handled, a lock
taken and never released. Every place where the driver's state changes in steps
is a *section*; a Ctrl-C that arrives inside one is held and raised when the
outermost section ends, at a point where the state is whole again.

    Ctrl-C ─► on_sigint: in a section? ─ no ─► the previous handler (KeyboardInterrupt)
                                       └ yes ─► pending; raised when the section ends

Only the main thread gets signals, so only its sections count (other threads'
sections cost one comparison). A second Ctrl-C while one has been held for
STUCK_SECTION seconds goes through: a step that never ends must not make the
program impossible to stop. Dropping an ObjectRef runs no bytecode (its counting
is C: shmray._crecords.RefBase), so no Ctrl-C can land inside a drop and leave it
uncounted.

`SafeLock` is a lock whose holding is a section: the session's state lock, so
every `with session.lock:` is safe as written.
"""
from __future__ import annotations

import signal
import threading
import time
from threading import get_ident

from .._crecords import Lock, SectionsBase

MAIN = threading.main_thread().ident
STUCK_SECTION = 2.0  # seconds: a Ctrl-C pressed again after this is not held any more


class Sections(SectionsBase):
    """The main thread's section depth and the Ctrl-C held until it is back to 0 (the
    two fields are C's, SectionsBase: the lane counts its sections without Python)."""

    def __init__(self):
        self.depth = 0
        self.pending = False
        self._pending_since = 0.0
        self._previous = None     # the SIGINT handler ours forwards to

    def install(self):
        """Hold Ctrl-C in sections from now on (a no-op outside the main thread, or
        where SIGINT is ignored or left to the OS: nothing raises there)."""
        if get_ident() != MAIN:
            return
        current = signal.getsignal(signal.SIGINT)
        if current == self.on_sigint or not callable(current):
            return
        self._previous = current
        signal.signal(signal.SIGINT, self.on_sigint)

    def on_sigint(self, signum, frame):
        if self.depth:
            now = time.monotonic()
            if not self.pending:
                self.pending, self._pending_since = True, now
                return
            if now - self._pending_since < STUCK_SECTION:
                return  # (a double press: still one Ctrl-C)
            # A second Ctrl-C while a section has held one for this long: a step that
            # does not end (a worker that will not exit at shutdown). It goes through.
        self.pending = False
        self._previous(signum, frame)

    def raise_pending(self):
        """The outermost section ended with a Ctrl-C held: deliver it now."""
        self.pending = False
        if self._previous is not None:
            self._previous(signal.SIGINT, None)

    def __enter__(self):
        if get_ident() == MAIN:
            self.depth += 1

    def __exit__(self, kind, value, tb):
        if get_ident() == MAIN:
            self.depth -= 1
            if self.pending and not self.depth:
                self.raise_pending()


# One per process: the handler is installed once, and sections nest across sessions.
sections = Sections()


class SafeLock:
    """threading.Lock whose holding is a section (see the module's docstring)."""

    __slots__ = ("raw", "_acquire", "_release")

    def __init__(self):
        # The plain lock, for code that is inside a section already (or never in the
        # main thread): it saves the section's bookkeeping on the per-task path. A
        # threading.Lock in C that the lane takes without a call (csrc/section_lock.c).
        self.raw = Lock()
        self._acquire = self.raw.acquire
        self._release = self.raw.release

    def __enter__(self):
        main = get_ident() == MAIN
        if main:  # counted first: a Ctrl-C after the acquire is held
            sections.depth += 1
        try:
            self._acquire()
        except BaseException:  # another signal's handler raised while it waited
            if main:
                sections.depth -= 1
            raise

    def __exit__(self, kind, value, tb):
        self._release()
        if get_ident() == MAIN:
            sections.depth -= 1
            if sections.pending and not sections.depth:
                sections.raise_pending()

    def locked(self) -> bool:
        return self.raw.locked()
