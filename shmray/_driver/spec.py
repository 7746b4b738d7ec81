"""TaskSpec: a task as the driver tracks it, from submission to its last attempt."""
from __future__ import annotations


class TaskSpec:
    # An actor's call is an ActorCallSpec (_driver.actors), whose slots shadow these.
    actor = None
    creates = False

    __slots__ = ("task_id", "fn_id", "name", "options", "request", "args_stored", "deps",
                 "unresolved", "attempt", "worker", "num_returns", "owned", "helping", "queued",
                 "lent", "held", "parent", "cancelled", "pinned", "pipelinable", "env", "queue",
                 "retry_exceptions")

    def __init__(self, task_id, fn_id, name, options, args_stored, deps, owned):
        self.task_id = task_id
        self.fn_id = fn_id
        self.name = name
        self.options = options
        self.request = options.request
        self.num_returns = options.num_returns
        self.args_stored = args_stored
        self.deps = deps            # oids resolved into the arguments, or None
        self.unresolved = 0         # deps not yet in the store
        self.attempt = 0
        self.worker = None          # WorkerHandle while dispatched
        self.owned = owned          # submitted by the driver (it holds the returned refs)
        self.helping = False        # runs inside a blocked worker's wait (see _scheduler)
        self.queued = False         # in the scheduler's ready queues
        self.held = None            # ids of the refs pickled inside the args: held until it ends
        self.lent = None            # oid -> stored form of those refs (see _lend)
        self.parent = None          # the task that submitted it (None: the driver)
        self.cancelled = False      # cancel() was called: it ends as TaskCancelledError
        self.pinned = None          # deps handed to its worker: kept in shm until it ends there
        self.pipelinable = True     # may queue on a busy worker (not when it reads large objects)
        self.env = None             # its runtime_env's key (None: the plain workers)
        self.queue = self.request   # its queue in the scheduler: request, and env if any
        # A list of exception types to retry, pickled (see TaskTable.add): the worker
        # tells whether an error is one (the driver never unpickles a user's exception).
        self.retry_exceptions = None

    def return_ids(self):
        base = self.task_id
        # (a generator's one return: None or its error for a streaming one, the list of
        # its items' refs for a dynamic one)
        return [base + i for i in range(self.num_returns)] if self.num_returns >= 0 else [base]

    def __repr__(self):
        return f"TaskSpec({self.name}, id={self.task_id:032x}, attempt={self.attempt})"
