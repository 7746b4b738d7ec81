"""What the driver and a worker say to each other: one named record per message kind,
and the kinds of stored values. Both processes import this module; it imports nothing
of either.

    driver ──task ring──►   Func, Tasks (of Task records), Reply, Exit, GpuFree, Become
    driver ◄─result ring──  Done, Submit, Put, Get, Wait, GpuHost, Log, Bounce, Refs,
                            Cancel, Abandon, ActorCall, ActorCreate, ActorAsk,
                            ActorKill, ActorExiting, GenItem, GenNext, GenPause, PgAsk,
                            Maps

An actor's calls are Task records too (their function id names the method: see
shmray.actor.method_id), run by the actor's own worker in the order they come.

On the wire a message is a plain tuple whose first item is its kind (pickling a
NamedTuple costs five times as much: its class goes with it, and rebuilding one
costs as much again). A sender builds the record (or, on the per-task path, the
plain tuple in the record's field order: see `task_record` and `done_record`). The
receiver looks its handler up by the kind and calls it with the fields as
arguments, `handler(worker, *message)`: each handler's parameters are its record's
fields, by name (tests/test_protocol.py holds them to it). A new kind of submission
(an actor call, a generator's item) is a new record here and a handler on each side.
"""
from __future__ import annotations

from ._records import NamedTuple

# The kinds: the first item of every message, a plain int (an enum member would pickle
# as its class, and the enums cost more to create than the rest of this module).
# driver -> worker
FUNC, TASKS, REPLY, EXIT, GPU_FREE, BECOME = 1, 2, 3, 4, 5, 6
# worker -> driver
DONE, SUBMIT, PUT, GET, WAIT, LOG, BOUNCE, REFS, CANCEL, ABANDON = range(10, 20)
GPU_HOST = 21
ACTOR_CALL, ACTOR_CREATE, ACTOR_ASK, ACTOR_KILL, ACTOR_EXITING = range(22, 27)
GEN_ITEM, GEN_NEXT, GEN_PAUSE, PG_ASK, MAPS = range(27, 32)
# either way: the real message is in a temporary segment (too big for a ring)
LARGE = 20
# A message whose first byte is this (a pickle's is 0x80) is a Done in its compact form:
# a task's one small inline result, nothing else to say (csrc/lane_done.c has its
# layout; _crecords.pack_done makes it, _ring.decode reads it back as a Done record).
DONE_MARK = 1
# ... a Tasks message of plain tasks in their compact form (csrc/task_form.c has its
# layout; _crecords.pack_tasks makes it, _ring.decode reads it back as a Tasks record).
TASKS_MARK = 3
# ... a streaming generator's small inline item in its compact form (csrc/item_form.c has
# its layout; _crecords.pack_item makes it, _ring.decode reads it back as a GenItem).
ITEM_MARK = 4

# A Task's num_returns for a generator: its items are streamed as they are yielded
# (see shmray._generator), or stored and listed in its one result ("dynamic").
STREAMING, DYNAMIC = -1, -2


# The first item of a stored form (see _serialization, _spill):
INLINE = 0      # (INLINE, pickle, out-of-band buffers): small, travels in the ring
SHM = 1         # (SHM, segment name, size, meta length, buffer layout)
ERROR = 2       # (ERROR, pickled exception, the cause's type name, "Type: message")
SPILLED = 3     # (SPILLED, file, size, the SHM form's layout): on disk, see _spill


# ------------------------------------------------------------ driver -> worker
class Func(NamedTuple):
    """A function, shipped once per worker (cloudpickled)."""
    kind: int
    fn_id: int
    fn_bytes: bytes
    name: str


class Task(NamedTuple):
    """One task for a worker (inside Tasks)."""
    task_id: int
    fn_id: int
    num_returns: int
    args_stored: tuple          # the stored form of (args, kwargs)
    dep_values: tuple | None    # stored forms of the refs resolved into the arguments
    lent: dict | None           # oid -> stored form of refs inside the arguments
    request: tuple              # its resources, (name, amount) pairs
    helping: bool               # run on top of the worker's blocked get (see _scheduler)
    attempt: int
    retry_exceptions: bytes | None  # the exception types it is retried for (a list in its
                                    # options): the worker tells whether an error is one
    backpressure: int           # a streaming generator pauses with this many items not
                                # consumed (-1: never)


def task_record(task_id, fn_id, num_returns, args_stored, dep_values, lent, request,
                helping, attempt, retry_exceptions, backpressure):
    """A Task as the plain tuple the wire carries (the per-task path: no record built)."""
    return (task_id, fn_id, num_returns, args_stored, dep_values, lent, request, helping,
            attempt, retry_exceptions, backpressure)


class Tasks(NamedTuple):
    kind: int
    tasks: list                 # Task tuples, run in order


class Reply(NamedTuple):
    kind: int
    req_id: int
    payload: object             # Get: stored forms (None: timed out); Wait: a ready mask


class Exit(NamedTuple):
    kind: int


class GpuFree(NamedTuple):
    """Objects freed whose cupy arrays the worker keeps (see _gpu)."""
    kind: int
    oids: tuple


class Become(NamedTuple):
    """This worker is an actor from now on: the class (a Func shipped before), its
    methods' ids, how its calls run. Its creation comes next, as a Task."""
    kind: int
    actor_id: int
    class_id: int
    methods: tuple              # (fn_id, method name) pairs
    max_concurrency: int
    is_async: bool
    handle: tuple               # shmray.actor.HandleState: the actor's own handle
    held: tuple                 # the resources it holds for life, as (name, amount) pairs


# ------------------------------------------------------------ worker -> driver
class Done(NamedTuple):
    """A task's attempt ended."""
    kind: int
    task_id: int
    outcome: tuple              # stored results, or one stored error for all of them
    start: int                  # CLOCK_MONOTONIC ns
    end: int
    inner: tuple | None         # per result, the ids of the refs inside it (None: none)
    gpu: tuple | None           # indexes of the results whose cupy arrays the worker keeps
    retryable: bool             # an error its task's retry_exceptions names


def done_record(task_id, outcome, start, end, inner, gpu, retryable):
    return (DONE, task_id, outcome, start, end, inner, gpu, retryable)


class Submit(NamedTuple):
    """A task submitted inside a task."""
    kind: int
    task_id: int
    fn_id: int
    fn_bytes: bytes | None      # None: the driver has it already
    name: str
    options: object             # _options.TaskOptions
    args_stored: tuple
    deps: list | None           # oids resolved into the arguments
    held: list | None           # oids of refs pickled inside the arguments
    parent: int | None          # the submitting task's id


class Put(NamedTuple):
    kind: int
    oid: int
    stored: tuple
    inner: list                 # ids of the refs inside the value
    gpu: bool                   # its cupy arrays stay in the worker


class Get(NamedTuple):
    kind: int
    req_id: int
    oids: list
    timeout: float | None


class Wait(NamedTuple):
    kind: int
    req_id: int
    oids: list
    num_returns: int
    timeout: float | None


class GpuHost(NamedTuple):
    """An rpc: host copies of a GPU object's arrays (see _gpu)."""
    kind: int
    req_id: int
    oid: int


class Log(NamedTuple):
    kind: int
    fd: int                     # 1: stdout, 2: stderr
    name: str | None            # the task's function
    text: str


# A line of a worker's output that carries a progress bar's state (a JSON object with
# this key, from shmray.experimental.tqdm_ray): the driver draws it, never prints it.
PROGRESS_BAR_TOKEN = "__ray_tqdm_magic_token__"


class Bounce(NamedTuple):
    """A task queued on a worker that blocked: back to the driver, for another worker."""
    kind: int
    task_id: int


class Refs(NamedTuple):
    """The ObjectRefs this worker came to hold and let go of (see _driver.workers)."""
    kind: int
    borrows: list
    releases: list              # (oid, references) pairs
    escaped: list               # pickled outside shmray: kept until shutdown


class Maps(NamedTuple):
    """The objects' segments this worker came to map (to read them) and those it maps
    no more, since its last message (see shmray._mappings): sent before the message
    that lets go of what it read, so the driver never writes a segment it reads."""
    kind: int
    mapped: list
    unmapped: list


class Cancel(NamedTuple):
    kind: int
    oid: int
    force: bool
    recursive: bool


class Abandon(NamedTuple):
    """The worker left an rpc early (a cancel interrupted its get)."""
    kind: int
    req_id: int


class ActorCall(NamedTuple):
    """An actor's method called inside a task or an actor."""
    kind: int
    task_id: int
    actor_id: int
    fn_id: int                  # the method's (shmray.actor.method_id)
    name: str
    options: object             # _options.TaskOptions of the call
    args_stored: tuple
    deps: list | None
    held: list | None
    parent: int | None


class ActorCreate(NamedTuple):
    """An rpc: create an actor (inside a task); the Reply is None or the error to raise,
    or, with get_if_exists, the existing actor's HandleState."""
    kind: int
    req_id: int
    handle: tuple               # shmray.actor.HandleState of the new actor
    class_bytes: bytes
    options: object             # _options.ActorOptions
    args_stored: tuple
    deps: list | None
    held: list | None


class ActorAsk(NamedTuple):
    """An rpc about named actors: `what` "get" (Reply: a HandleState or None) or
    "list" (Reply: (name, namespace) pairs)."""
    kind: int
    req_id: int
    what: str
    name: str | None
    namespace: str | None


class ActorKill(NamedTuple):
    kind: int
    actor_id: int
    no_restart: bool


class ActorExiting(NamedTuple):
    """This actor ends on purpose (exit_actor, __ray_terminate__, sys.exit): no restart."""
    kind: int
    reason: str


class GenItem(NamedTuple):
    """A streaming generator yielded its item `index` (see _driver.generators)."""
    kind: int
    task_id: int
    index: int
    stored: tuple
    inner: list | None          # the ids of the refs inside it
    gpu: bool                   # its cupy arrays went out as IPC handles (kept here)


class GenNext(NamedTuple):
    """An rpc: the next item of a generator this worker consumes. The Reply is True
    (item `index` exists: granted to this worker), False (the stream ended before it)
    or None (timed out)."""
    kind: int
    req_id: int
    task_id: int
    index: int
    timeout: float | None


class GenPause(NamedTuple):
    """An rpc: this streaming generator has `produced` items and its backpressure limit
    not consumed; the Reply comes when it may go on (the count consumed) or must stop
    (-1: the caller dropped it)."""
    kind: int
    req_id: int
    task_id: int
    produced: int


class PgAsk(NamedTuple):
    """An rpc about placement groups (see _driver.placement_groups): `what` "create"
    (arg: a GroupSpec), "remove" (a group's hex id), "table" (a hex id or None) or "get"
    ((name, namespace)). The Reply is the answer, or the ValueError to raise."""
    kind: int
    req_id: int
    what: str
    arg: object


class Large(NamedTuple):
    kind: int
    name: str
    size: int


RECORDS = {FUNC: Func, TASKS: Tasks, REPLY: Reply, EXIT: Exit, GPU_FREE: GpuFree, DONE: Done,
           SUBMIT: Submit, PUT: Put, GET: Get, WAIT: Wait, GPU_HOST: GpuHost, LOG: Log,
           BOUNCE: Bounce, REFS: Refs, CANCEL: Cancel, ABANDON: Abandon, LARGE: Large,
           BECOME: Become, ACTOR_CALL: ActorCall, ACTOR_CREATE: ActorCreate,
           ACTOR_ASK: ActorAsk, ACTOR_KILL: ActorKill, ACTOR_EXITING: ActorExiting,
           GEN_ITEM: GenItem, GEN_NEXT: GenNext, GEN_PAUSE: GenPause, PG_ASK: PgAsk,
           MAPS: Maps}
assert sorted(RECORDS) == [*range(FUNC, BECOME + 1), *range(DONE, MAPS + 1)]  # each has one
