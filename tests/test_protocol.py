"""The driver-worker protocol: every handler takes its record's fields by name, and a
worker process loads nothing of the driver."""
from __future__ import annotations

import inspect
import subprocess
import sys

from shmray import _context, _protocol
from shmray._worker_tasks import run_task


def _parameters(fn, skip):
    return tuple(inspect.signature(fn).parameters)[skip:]


def test_driver_handlers_take_their_records_fields(ray):
    @ray.remote
    def one():
        return 1

    assert ray.get(one.remote()) == 1
    handlers = _context.runtime.loop.handlers
    assert set(handlers) == {k for k, record in _protocol.RECORDS.items()
                             if k >= _protocol.DONE and k != _protocol.LARGE}
    for kind, handler in handlers.items():
        record = _protocol.RECORDS[kind]
        assert _parameters(handler, 1) == record._fields, (kind, handler)  # after the worker


def test_worker_receivers_and_run_task_take_their_records_fields(ray):
    from shmray._worker_actor import become
    from shmray._worker_concurrent import ConcurrentRuntime
    from shmray._worker_runtime import WorkerRuntime
    receivers = {_protocol.TASKS: WorkerRuntime._on_tasks, _protocol.REPLY: WorkerRuntime._on_reply,
                 _protocol.FUNC: WorkerRuntime._on_func, _protocol.GPU_FREE:
                 WorkerRuntime._on_gpu_free, _protocol.EXIT: WorkerRuntime._on_exit,
                 _protocol.BECOME: become}  # (the worker binds it to its runtime)
    assert {k for k in _protocol.RECORDS if k < _protocol.DONE} == set(receivers)
    for kind, receiver in receivers.items():
        assert _parameters(receiver, 2) == _protocol.RECORDS[kind]._fields  # self, blocked
    assert _parameters(ConcurrentRuntime._on_reply, 2) == _protocol.Reply._fields
    assert _parameters(run_task, 1) == _protocol.Task._fields
    assert _parameters(_protocol.task_record, 0) == _protocol.Task._fields
    assert ("kind",) + _parameters(_protocol.done_record, 0) == _protocol.Done._fields


def test_a_worker_imports_no_driver_module():
    code = ("import sys, shmray._worker\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith(('shmray', 'asyncio')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert "shmray._worker_runtime" in out
    # only threaded and async actors pay for these (see _worker_actor)
    assert not [m for m in out if m in ("shmray._worker_concurrent", "asyncio")]
    driver = [m for m in out if m.startswith("shmray._driver") or m in (
        "shmray._scheduler", "shmray._object_store", "shmray._worker_pool",
        "shmray._segment_pool", "shmray._resources", "shmray._spill", "shmray._snapshot",
        "shmray._cli", "shmray._cli_text")]
    assert driver == []
