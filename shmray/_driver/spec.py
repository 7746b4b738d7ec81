"""TaskSpec: a task as the driver tracks it, from submission to its last attempt.

Its fields live in a C type (shmray._crecords.TaskSpecBase): the driver makes one per
task, and constructing it in C costs one call instead of 23 attribute stores in
bytecode. They read and write as __slots__ would:

    task_id, fn_id, name, options   given; request, num_returns: the options'
    args_stored                     the stored form of (args, kwargs)
    deps                            oids resolved into the arguments, or None
    unresolved = 0                  deps not yet in the store
    attempt = 0
    worker = None                   WorkerHandle while dispatched
    owned                           submitted by the driver (it holds the returned refs)
    helping = False                 runs inside a blocked worker's wait (see _scheduler)
    queued = False                  in the scheduler's ready queues
    held = None                     ids of the refs pickled inside the args: held until it ends
    lent = None                     oid -> stored form of those refs (see TaskTable.lend)
    parent = None                   the task that submitted it (None: the driver)
    cancelled = False               cancel() was called: it ends as TaskCancelledError
    pinned = None                   deps handed to its worker: kept in shm until it ends there
    pipelinable = True              may queue on a busy worker (not when it reads large objects)
    env = None                      its runtime_env's key (None: the plain workers)
    queue = request                 its queue in the scheduler: request, and env if any
    retry_exceptions = None         the exception types it is retried for, pickled (see
                                    TaskTable.add): the worker tells whether an error is
                                    one (the driver never unpickles a user's exception)
    simple = False                  a task with one return, no refs in or among its
                                    arguments, not an actor's: its ending may take the
                                    short way (MessageLoop.on_done)
"""
from __future__ import annotations

from .._crecords import TaskSpecBase


class TaskSpec(TaskSpecBase):
    # An actor's call is an ActorCallSpec (_driver.actors), whose slots shadow these.
    actor = None
    creates = False

    __slots__ = ()

    def return_ids(self):
        base = self.task_id
        # (a generator's one return: None or its error for a streaming one, the list of
        # its items' refs for a dynamic one)
        return [base + i for i in range(self.num_returns)] if self.num_returns >= 0 else [base]

    def __repr__(self):
        return f"TaskSpec({self.name}, id={self.task_id:032x}, attempt={self.attempt})"
