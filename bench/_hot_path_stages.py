"""bench/hot_path.py's stage by stage: W1's per-task path through the real functions, timed
in this process (what each row times: ROWS, and hot_path.py's docstring)."""
from __future__ import annotations

import collections
import contextlib
import itertools
import os
import statistics
import time
import types

import shmray
from shmray import _protocol, _ring, _serialization as ser, _shm
from shmray._cring import pop_any
from shmray._crecords import not_stored, pack_done
from shmray._object_ref import ObjectRef
from shmray._scheduler import PIPELINE_MAX, PIPELINE_SECONDS
from shmray._worker_pool import WorkerHandle
from shmray._worker_runtime import WorkerRuntime
from shmray._worker_tasks import pack_results, run_task

CPUS = 2                          # W1's shmray.init(num_cpus=CPUS): one stand-in per worker
PIPELINED = CPUS * PIPELINE_MAX   # tasks per cycle that lane.submit batches,
QUEUED = PIPELINED // 2           # and that it queues (the pipelines full)
KINDS = ("remote", "lane")  # how a cycle times the submissions, in turn
CYCLES = 20 * len(KINDS)          # after one warm-up cycle of each kind
CONTROL, CHANNEL = "hotpath_ctl", "hotpath_ch"   # the stand-ins' segment names

# (side, key, label, part, way): a part is one piece of the stage above it, not summed; a
# way ("lane": lane.submit batches the task, "queued": it queues it, lane.dispatch_queued
# places it) is taken by a share of W1's tasks only (None: by every task), and the sums
# weigh the row by that share.
ROWS = (
    ("driver", "remote_lane", "f.remote(): lane.submit batches it", False, "lane"),
    ("driver", "submit_lane", "lane.submit()", True, "lane"),
    ("driver", "remote_queued", "f.remote(): every pipeline full, queued", False, "queued"),
    ("driver", "submit_queued", "lane.submit(): queued in C", True, "queued"),
    ("driver", "dispatch", "lane.dispatch_queued(), per task placed", False, "queued"),
    ("driver", "drain", "lane.drain(): compact Dones, handled in C", False, None),
    ("driver", "pop_any", "pop_any(), per Done", True, None),
    ("driver", "get", "shmray.get(refs), every value stored", False, None),
    ("driver", "not_stored", "_crecords.not_stored()", True, None),
    ("driver", "values", "values_of() -> inline_values()", True, None),
    ("driver", "drop", "refs dropped: each one's hook queues it", False, None),
    ("driver", "process_refs", "lane.process_refs()", False, None),
    ("worker", "pop", "Ring.pop() on the task ring, per task", False, None),
    ("worker", "decode", "_ring.decode(Tasks), per task", False, None),
    ("worker", "run", "_worker_tasks.run_task()", False, None),
    ("worker", "call", "no_op()", True, None),
    ("worker", "result", "pack_results(None)", True, None),
    ("worker", "pack_done", "_crecords.pack_done(): the compact Done", True, None),
    ("worker", "send_done", "send_done(): Ring.push(Done)", True, None),
)
# The Python that the common task's path no longer calls (the lane does it in C): a call
# of one in a cycle fails the run, so that no row leaves out what a task went through.
NOT_CALLED = (("dispatch", "place_or_queue"), ("dispatch", "dispatch_queued"),
              ("dispatch", "send_task"), ("scheduler", "place"), ("scheduler", "push"),
              ("session", "_submit_in_python"), ("dispatch", "send_batch"),
              ("dispatch", "push_batches"))


def queued_share(f, session, tasks) -> float:
    """The share of W1's tasks that lane.submit queues, counted in one more round of `tasks`:
    those that settle places from the queues (lane.dispatch_queued, and the Python's after
    it). W1's queues shrink nowhere else: settle follows the drain that frees resources, so
    lane.submit, queuing, finds none freed since the queues' last try, and tries not again."""
    loop, ready, placed = session.loop, session.scheduler.ready, 0
    settle = loop.settle

    def counted(*args):
        nonlocal placed
        before = sum(map(len, ready.values()))
        try:
            return settle(*args)
        finally:
            placed += before - sum(map(len, ready.values()))
    loop.settle = counted
    try:
        shmray.get([f.remote() for _ in range(tasks)])
    finally:
        del loop.settle
    return placed / tasks


class TaskPath:
    """W1's per-task path through the real functions, in this process: the driver's side on
    the live (idle) Session, with CPUS stand-in workers, each read by a WorkerRuntime here."""

    def __init__(self, session, f, control):
        self.s, self.f, self.doorbell = session, f, control.doorbell
        # The no-op's mean run time, as W1 leaves it (the pipeline depth follows from it),
        # at most what keeps the full depth: a task preempted here must not shrink it.
        self.request, self.fn_mean = f._options.request, min(
            session.scheduler.fn_mean[f._fn_id], PIPELINE_SECONDS / PIPELINE_MAX / 2)
        self.times = collections.defaultdict(list)  # key -> µs per task, one per cycle
        self.ns, self.count = collections.Counter(), collections.Counter()  # this cycle's
        self.handles, self.runtimes = [], []
        self.not_called = collections.Counter()  # NOT_CALLED's calls
        func = _protocol.Func(_protocol.FUNC, f._fn_id, *session.functions[f._fn_id])
        for i in range(CPUS):
            channel = _ring.Channel(f"{session.prefix}{CHANNEL}{i}", create=True,
                                    doorbell=control.doorbell)
            # The driver's handle of the worker (it reads only proc.pid of its process).
            h = WorkerHandle(-1 - i, types.SimpleNamespace(pid=os.getpid()), channel, None,
                             False)
            rt = WorkerRuntime({"driver_pid": os.getpid(), "resolve_nested_refs": True,
                                "node_id": session.node_id, "control": control.name,
                                "channel": channel.name, "session_prefix": session.prefix,
                                "object_prefix": session.object_prefix})
            rt.receive(func, blocked=False)  # what the 1st send_task ships, as received
            h.fns.add(f._fn_id)
            self.handles.append(h)
            self.runtimes.append(rt)
        self.rings = tuple(h.channel.results for h in self.handles)

    def add(self, key, ns, n):
        if key is not None:
            self.ns[key] += ns
            self.count[key] += n

    @contextlib.contextmanager
    def clock(self, key, n):
        """Time the block into this cycle's figure of `key` (n tasks; None: untimed)."""
        start = time.perf_counter_ns()
        yield
        self.add(key, time.perf_counter_ns() - start, n)

    def cycle(self, kind):
        """W1's steady state, once: PIPELINED tasks submitted while every worker is busy,
        QUEUED more; the workers run QUEUED of them, the driver handles their Dones and
        places the queued tasks; the workers run the rest, the driver handles their Dones,
        gets the values and drops the refs. `kind`, what of the submissions is timed:
        "remote" (f.remote()), "lane" (lane.submit()). (The batches are sent in C too,
        lane_send.c: no Python is left under lane.submit to time apart.)"""
        s, sched = self.s, self.s.scheduler
        sched.fn_mean[self.f._fn_id] = self.fn_mean
        with s.lock:
            for h in self.handles:  # every worker busy: the request does not fit what is free
                s.ledger.charge(h, self.request)
        refs = self.submit(kind, "lane", PIPELINED)
        assert not sched.ready and all(len(h.inflight) == PIPELINE_MAX for h in self.handles)
        assert s.dispatch.tried_at == s.ledger.releases  # (lane.submit tries not the queues)
        refs += self.submit(kind, "queued", QUEUED)
        assert sum(map(len, sched.ready.values())) == QUEUED
        self.settle(self.work(QUEUED // CPUS), "dispatch")
        self.settle(self.work())
        ids = [r._id for r in refs]
        self.parts(ids)
        self.get_and_drop(refs)
        assert not s.tasks.tasks and not any(oid in s.store.values for oid in ids)
        for key, ns in self.ns.items():
            self.times[key].append(ns / self.count[key] / 1e3)
        self.ns.clear()
        self.count.clear()

    def submit(self, kind, way, n):
        """n tasks submitted as W1's loop does, inside its burst; their refs."""
        s, f = self.s, self.f
        s.lane.last_submit, s.lane.waited = time.monotonic(), False
        if kind == "remote":  # (_submit's drain, every 16th call, finds the pump lock taken)
            with self.clock(f"remote_{way}", n):
                return [f.remote() for _ in range(n)]
        args = itertools.repeat((f._fn_id, f._name, f._options, ser.NO_ARGS), n)
        with s.lock, self.clock(f"submit_{way}" if kind == "lane" else None, n):
            return list(itertools.starmap(s.lane.submit, args))

    def work(self, n=None):
        """Each worker pops Tasks messages and runs their tasks, whole messages, until it
        has run n or more (None: all there are); returns how many they ran."""
        # (what a burst left batched: pushed, as get's pump does; untimed)
        with self.s.lock:
            self.s.dispatch.flush(self.s.lane.push_batches)
        clock, ran = time.perf_counter_ns, 0
        for rt in self.runtimes:
            mine = 0
            while n is None or mine < n:
                t0 = clock()
                data = rt._tasks.pop()
                t1 = clock()
                if data is None:
                    assert n is None, "a worker has fewer tasks than the cycle gave it"
                    break
                tasks = _ring.decode(data)[1]
                t2 = clock()
                for task in tasks:
                    run_task(rt, *task)
                for key, ns in (("pop", t1 - t0), ("decode", t2 - t1), ("run", clock() - t2)):
                    self.add(key, ns, len(tasks))
                mine += len(tasks)
            ran += mine
        return ran

    def settle(self, n, key=None):
        """The driver handles the n Dones waiting, all in C (MessageLoop._drain), then, as
        settle does inside a burst, places the queued tasks (lane.dispatch_queued, timed
        into `key` per task placed): all of them, as the Dones freed room for them all.
        After the last Dones too, with nothing queued: that try comes after the workers'
        resources are freed, so the next cycle's lane.submit, queuing, tries not again."""
        s, sched = self.s, self.s.scheduler
        with s.lock, self.clock("drain", n):
            got = s.lane.drain(self.rings, self.doorbell, tuple(self.handles), n)
        assert got == n, f"lane.drain: {got!r}, not {n} compact Dones handled"
        sched.fn_mean[self.f._fn_id] = self.fn_mean
        queued = sum(map(len, sched.ready.values()))
        with s.lock, self.clock(key if queued else None, queued):
            in_c = s.lane.dispatch_queued(True)
        assert in_c and not sched.ready, "lane.dispatch_queued left the queues to Python"

    def parts(self, ids):
        """The pieces of run_task, on this cycle's tasks; the Dones send_done pushes again
        are popped by pop_any, as lane.drain does, and not handled."""
        n, rt = len(ids), self.runtimes[0]
        fn = rt.fns[self.f._fn_id][0]
        with self.clock("call", n):
            for _ in ids:
                fn()
        args = [(rt, None, 1, oid) for oid in ids]
        with self.clock("result", n):
            results = list(itertools.starmap(pack_results, args))
        now, limit = time.monotonic_ns(), rt.results.max_message
        args = [(oid, r[0], now, now, None, None, False, limit) for oid, r in zip(ids, results)]
        with self.clock("pack_done", n):
            dones = list(itertools.starmap(pack_done, args))
        for i, rt in enumerate(self.runtimes):
            mine = dones[i::CPUS]
            with self.clock("send_done", len(mine)):
                list(map(rt.send_done, mine))
        args = itertools.repeat((self.rings, self.doorbell, 0.0, 0.0, 0), n)
        with self.clock("pop_any", n):
            popped = list(itertools.starmap(pop_any, args))
        assert None not in popped and pop_any(self.rings, self.doorbell, 0.0, 0.0, 0) is None

    def get_and_drop(self, refs):
        """get, as W1 calls it, and its pieces; then the refs dropped, and counted."""
        s, store, n = self.s, self.s.store, len(refs)
        assert not not_stored(refs, ObjectRef, store.pending, store.values)  # (get waits not)
        with self.clock("get", n):
            shmray.get(refs)
        with self.clock("not_stored", n):
            not_stored(refs, ObjectRef, store.pending, store.values)
        with self.clock("values", n):
            ser.values_of(refs, store.values)
        with self.clock("drop", n):
            refs.clear()
        with s.lock, self.clock("process_refs", n):
            s.lane.process_refs()
        assert not store.drop_queue

    @contextlib.contextmanager
    def watched(self):
        """NOT_CALLED's methods, counting their calls into self.not_called."""
        owners = {"dispatch": self.s.dispatch, "scheduler": self.s.scheduler, "session": self.s}
        for owner, name in NOT_CALLED:
            def call(*args, _fn=getattr(owners[owner], name), _name=f"{owner}.{name}"):
                self.not_called[_name] += 1
                return _fn(*args)
            setattr(owners[owner], name, call)
        try:
            yield
        finally:
            for owner, name in NOT_CALLED:
                delattr(owners[owner], name)


def stages(f, session) -> dict:
    """Median µs per task of every stage over CYCLES cycles, after a warm-up cycle of each
    kind. The session's task workers are swapped for the stand-ins meanwhile, and the pump
    lock held keeps its background thread off them. The stand-ins' segments are named
    under the session's prefix (shutdown removes them too) and unlinked at the end; their
    mappings stay valid until the process exits."""
    pool, lane = session.pool, session.lane
    control = _ring.ControlArea(session.prefix + CONTROL, create=True)
    saved, path = (pool.workers, lane.rr), None
    try:
        with session.loop.pump_lock:
            path = TaskPath(session, f, control)
            with session.lock:
                pool.workers = list(path.handles)
            with path.watched():
                for i in range(len(KINDS) + CYCLES):
                    path.cycle(KINDS[i % len(KINDS)])
                    if i == len(KINDS) - 1:
                        path.times.clear()
    finally:
        with session.lock:
            pool.workers, lane.rr = saved
            for h in path.handles if path else ():
                session.dispatch.unwoken.pop(h, None)
                session.ledger.uncharge(h)
        for name in [f"{CHANNEL}{i}" for i in range(CPUS)] + [CONTROL]:
            _shm.unlink(session.prefix + name)
    assert not path.not_called, f"the lane's path called Python: {dict(path.not_called)}"
    assert set(path.times) == {row[1] for row in ROWS}, set(path.times) ^ {r[1] for r in ROWS}
    return {key: statistics.median(v) for key, v in path.times.items()}
