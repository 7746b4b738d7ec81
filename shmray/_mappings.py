"""Which object segments this process maps to read them: the events its driver
needs before it writes a segment again.

A reader maps a segment copy-on-write (MAP_PRIVATE): the pages it has not written
show the segment's *current* contents. So a freed object's segment may be written
again only once no process maps it. A mapping lives as long as the arrays built on
it (their base is the mmap object): it ends when the last of them dies, which may be
at any point (a drop, a collection) and in any thread.

    from_stored maps segment X ──► track(X, mmap): (X, +1) queued, a weakref kept
    the last array on it dies   ──► the weakref's callback: (X, -1) queued (nothing else:
                                     it may run anywhere, under any lock)
    drain() ──► the segments this process came to map, and those it maps no more
      worker: sent to the driver (a Maps record, before the message that lets go of
              what it read: see _worker_sending)
      driver: read by its SegmentPool before it frees a segment

A process forked from one that tracks forgets the parent's mappings (they are the
parent's to report).
"""
from __future__ import annotations

import os
import weakref
from collections import deque

events = deque()    # (segment name, +1 mapped / -1 unmapped), appended from any thread
_counts = {}        # segment name -> live mappings here, as of the last drain()
_weakrefs = set()   # keeps each mapping's weakref (and so its callback) alive
_generation = 0     # bumped in a forked child: the parent's callbacks do nothing there


def track(name: str, mm) -> None:
    """This process just mapped segment `name` (`mm`) to read it."""
    events.append((name, 1))
    _weakrefs.add(weakref.ref(mm, _unmapped_callback(name, _generation)))


def _unmapped_callback(name, generation):
    def unmapped(ref):
        _weakrefs.discard(ref)
        if generation == _generation:
            events.append((name, -1))
    return unmapped


def drain() -> tuple[list, list]:
    """(segments mapped since the last drain and still mapped, segments mapped before
    and mapped no more). Events are taken up to a length read first: a mapping made
    before a message was queued is in the drain that goes before it. One consumer per
    process (a worker's sender, or the driver's pool)."""
    counts = _counts
    before = {}
    for _ in range(len(events)):
        name, delta = events.popleft()
        n = counts.get(name, 0)
        before.setdefault(name, n)
        n += delta
        if n > 0:
            counts[name] = n
        else:
            counts.pop(name, None)
    mapped = [name for name, n in before.items() if not n and name in counts]
    unmapped = [name for name, n in before.items() if n and name not in counts]
    return mapped, unmapped


def maps(name: str) -> bool:
    """Does this process map segment `name` (as of the last drain)?"""
    return name in _counts


def _forget_parents():
    global _generation
    _generation += 1
    events.clear()
    _counts.clear()


os.register_at_fork(after_in_child=_forget_parents)
