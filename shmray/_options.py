"""Task options: one validation table for ``@remote(...)`` and ``.options(...)``.

Validation happens once, when a RemoteFunction or an ``.options()`` variant is
made; the result is a frozen TaskOptions that every call reuses for free.
"""
from __future__ import annotations

import math
import numbers
import warnings

from . import _runtime_env
from ._protocol import DYNAMIC, STREAMING
from ._stack import user_stacklevel
from ._placement import in_group
from ._records import Frozen
from .util.scheduling_strategies import (NodeAffinitySchedulingStrategy,
                                          PlacementGroupSchedulingStrategy)

DEFAULT_MAX_RETRIES = 3
# num_returns of a generator (see _protocol): as the user spells it -> as tasks carry it
GENERATOR_RETURNS = {"streaming": STREAMING, "dynamic": DYNAMIC}
STRATEGIES = ("DEFAULT", "SPREAD", "NODE_AFFINITY")


def finite(v) -> bool:
    """Whether the number `v` is neither NaN, nor infinite, nor an int beyond a float's
    range. Resources are floats, and NaN fails every comparison: it slips past a check
    like `v < 0` and makes every later fits() test of the accounting pass."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _quantity(name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return f"'{name}' must be a number, got {type(v).__name__} {v!r}"
    if not finite(v):
        return f"'{name}' must be a finite number, got {v!r}"
    if v < 0:
        return f"'{name}' must be non-negative, got {v}"
    if name == "num_gpus" and v > 1 and v != int(v):
        return f"'num_gpus' above 1 must be a whole number, got {v}"
    return None


def _count(name, v, minimum):
    if isinstance(v, bool) or not isinstance(v, int):
        return f"'{name}' must be an int, got {type(v).__name__} {v!r}"
    if v < minimum:
        return f"'{name}' must be >= {minimum}, got {v}"
    return None


def _resources(name, v):
    if not isinstance(v, dict):
        return f"'resources' must be a dict, got {type(v).__name__}"
    if "CPU" in v or "GPU" in v:
        return ("Use the 'num_cpus' and 'num_gpus' keyword instead of 'CPU' and 'GPU' "
                "in 'resources' keyword")
    for k, q in v.items():
        if not isinstance(k, str):
            return f"resource names must be str, got {k!r}"
        err = _quantity(f"resources[{k!r}]", q)
        if err:
            return err
    return None


def _retry_exceptions(name, v):
    if isinstance(v, bool):
        return None
    if isinstance(v, (list, tuple)) and all(isinstance(t, type) and issubclass(t, BaseException)
                                            for t in v):
        return None
    return "retry_exceptions must be either a boolean or a list of exceptions"


def _strategy(name, v):
    if isinstance(v, (NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy)) or v is None:
        return None
    if isinstance(v, str) and v in STRATEGIES:
        return None
    return (f"scheduling_strategy must be one of {', '.join(map(repr, STRATEGIES))} or a "
            f"NodeAffinitySchedulingStrategy or PlacementGroupSchedulingStrategy, got {v!r}")


def _typed(*types):
    def check(name, v):
        if not isinstance(v, types):
            return f"'{name}' must be {' or '.join(t.__name__ for t in types)}, got {v!r}"
        return None
    return check


def _num_returns(name, v):
    if v in GENERATOR_RETURNS:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        return (f"'num_returns' must be a non-negative int, \"streaming\" or \"dynamic\", "
                f"got {v!r}")
    if not 0 <= v <= 65535:
        return f"'num_returns' must be between 0 and 65535, got {v}"
    return None


def _runtime_env_check(name, v):
    try:
        _runtime_env.normalize(v)
    except (TypeError, ValueError) as e:
        return str(e)
    return None


def _none_only(message):
    return lambda name, v: None if v is None else message


def _ignored(name, v):
    return None


# name -> validator(name, value) -> error text or None. None is accepted for every
# option and means "the default".
TASK_OPTIONS = {
    "num_cpus": _quantity,
    "num_gpus": _quantity,
    "memory": _quantity,
    "resources": _resources,
    "max_retries": lambda n, v: _count(n, v, -1),
    "retry_exceptions": _retry_exceptions,
    "runtime_env": _runtime_env_check,
    "max_calls": lambda n, v: _count(n, v, 0),
    "scheduling_strategy": _strategy,
    "scheduling_strategy_node_id": _typed(str),
    "num_returns": _num_returns,
    "name": _typed(str),
    "accelerator_type": _typed(str),
    "label_selector": _typed(dict),
    "enable_task_events": _typed(bool),
    "_generator_backpressure_num_objects": lambda n, v: _count(n, v, -1),
    "object_store_memory": _none_only("Setting 'object_store_memory' is not implemented for tasks"),
    "placement_group": _ignored,
    "placement_group_bundle_index": _ignored,
    "placement_group_capture_child_tasks": _ignored,
    "_metadata": _ignored,
}
# Accepted for compatibility, meaningless on one node: warned about once.
_NO_EFFECT = {"accelerator_type", "label_selector", "placement_group",
              "placement_group_bundle_index", "placement_group_capture_child_tasks"}
_warned: set = set()


def placed(strategy, resources: dict) -> tuple:
    """`resources` as a request tuple; in a placement group, as its bundle's resources."""
    request = tuple(sorted((k, float(v)) for k, v in resources.items() if v))
    if isinstance(strategy, PlacementGroupSchedulingStrategy) and strategy.placement_group:
        return in_group(request, strategy.placement_group.id.hex(),
                        strategy.placement_group_bundle_index)
    return request


def plain_request(options) -> tuple:
    """What a task or actor with `options` asks for, outside any placement group."""
    num_cpus = options.num_cpus
    if num_cpus is None:  # (an actor's default: 1 CPU to place it)
        num_cpus = 1
    req = {"CPU": num_cpus, "GPU": options.num_gpus, "memory": options.memory}
    req.update(options.resources)
    return tuple(sorted((k, float(v)) for k, v in req.items() if v))


class TaskOptions(Frozen):
    num_cpus: float = 1
    num_gpus: float = 0
    memory: float = 0
    resources: dict = {}
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_exceptions: object = False
    runtime_env: dict | None = None
    max_calls: int = 0
    scheduling_strategy: object = "DEFAULT"
    scheduling_strategy_node_id: str | None = None
    num_returns: int = 1
    name: str | None = None
    max_task_retries: int | None = None  # an actor call's own (None: its actor's)
    # A streaming generator pauses with this many items not consumed (-1: never).
    _generator_backpressure_num_objects: int = -1

    def __post_init__(self):
        # The resource request as a hashable, sorted tuple of (name, amount): the
        # scheduler's key for "tasks that fit the same slot", computed once.
        req = {"CPU": self.num_cpus, "GPU": self.num_gpus, "memory": self.memory}
        req.update(self.resources)
        self.__dict__["request"] = placed(self.scheduling_strategy, req)


DEFAULT = TaskOptions()


def _check_each(options: dict, table: dict, what: str, no_effect: set):
    """Check each option against `table` (Ray's message for an unknown one, naming
    `what` takes it); warn once about those that mean nothing on one node."""
    for k, v in options.items():
        check = table.get(k)
        if check is None:
            raise ValueError(f"Invalid option keyword {k} for {what}. "
                             f"Valid ones are {list(table)}.")
        if v is None:
            continue
        err = check(k, v)
        if err:
            raise ValueError(err)
        if k in no_effect and k not in _warned:
            _warned.add(k)
            warnings.warn(f"shmray runs on one node: the option {k!r} has no effect",
                          stacklevel=user_stacklevel())


def validate(options: dict, in_options: bool = False) -> dict:
    """Check every option; raise ValueError naming the first bad one."""
    _check_each(options, TASK_OPTIONS, "remote functions", _NO_EFFECT)
    if in_options and "max_calls" in options:
        raise ValueError("Setting 'max_calls' is not supported in '.options()'.")
    if options.get("scheduling_strategy") == "NODE_AFFINITY" and not options.get(
            "scheduling_strategy_node_id"):
        raise ValueError("scheduling_strategy='NODE_AFFINITY' needs scheduling_strategy_node_id")
    return options


def merge(base, options: dict, default=None):
    """Validated `options` applied over `base` (a TaskOptions, or an ActorOptions);
    None values mean `default`'s (the defaults of base's kind, if not given)."""
    if default is None:
        default = DEFAULT if isinstance(base, TaskOptions) else ACTOR_DEFAULT
    fields = type(base).FIELDS
    updates = {}
    for k, v in options.items():
        if k not in fields:
            continue
        if v is None:
            v = getattr(default, k)
        if k == "resources":
            v = dict(v)
        if k == "num_returns":
            v = GENERATOR_RETURNS.get(v, v)
        if k == "retry_exceptions" and isinstance(v, list):
            v = tuple(v)
        if k == "runtime_env":  # absolute paths now: relative ones mean the current directory
            v = _runtime_env.normalize(v)
        updates[k] = v
    return base.replace(**updates) if updates else base


# ------------------------------------------------------------ actors
def _lifetime(name, v):
    return None if v in ("detached", "non_detached") else (
        f"actor `lifetime` argument must be one of 'detached', 'non_detached' and 'None', "
        f"got {v!r}")


def _positive(name, v):
    return _count(name, v, 1)


ACTOR_OPTIONS = {
    "num_cpus": _quantity,
    "num_gpus": _quantity,
    "memory": _quantity,
    "resources": _resources,
    "runtime_env": _runtime_env_check,
    "scheduling_strategy": _strategy,
    "scheduling_strategy_node_id": _typed(str),
    "name": _typed(str),
    "namespace": _typed(str),
    "get_if_exists": _typed(bool),
    "lifetime": _lifetime,
    "max_restarts": lambda n, v: _count(n, v, -1),
    "max_task_retries": lambda n, v: _count(n, v, -1),
    "max_concurrency": _positive,
    "max_pending_calls": lambda n, v: _count(n, v, -1),
    "accelerator_type": _typed(str),
    "label_selector": _typed(dict),
    "enable_task_events": _typed(bool),
    "object_store_memory": _none_only("Setting 'object_store_memory' is not implemented "
                                      "for actors"),
    "concurrency_groups": _ignored,
    "allow_out_of_order_execution": _ignored,
    "placement_group": _ignored,
    "placement_group_bundle_index": _ignored,
    "placement_group_capture_child_tasks": _ignored,
    "_metadata": _ignored,
}
_NO_EFFECT_FOR_ACTORS = _NO_EFFECT | {"concurrency_groups", "allow_out_of_order_execution"}


class ActorOptions(Frozen):
    num_cpus: float | None = None    # None: Ray's default, 1 CPU to place, none held after
    num_gpus: float = 0
    memory: float = 0
    resources: dict = {}
    runtime_env: dict | None = None
    scheduling_strategy: object = "DEFAULT"
    scheduling_strategy_node_id: str | None = None
    name: str | None = None
    namespace: str | None = None
    get_if_exists: bool = False
    lifetime: str | None = None
    max_restarts: int = 0
    max_task_retries: int = 0
    max_concurrency: int | None = None  # None: 1 for a sync actor, 1000 for an async one
    max_pending_calls: int = -1

    def creation(self, class_name: str) -> TaskOptions:
        """The options of its creation, as a task's: what it needs to be placed (Ray's
        default actor takes 1 CPU to place and holds none while it lives). Made once per
        options and class: the driver keeps a verdict per TaskOptions it sees."""
        made = self.__dict__.get("_creation")
        if made is not None and made.name == f"{class_name}.__init__":
            return made
        made = TaskOptions(num_cpus=1 if self.num_cpus is None else self.num_cpus,
                           num_gpus=self.num_gpus, memory=self.memory,
                           resources=dict(self.resources), max_retries=0,
                           runtime_env=self.runtime_env,
                           scheduling_strategy=self.scheduling_strategy,
                           scheduling_strategy_node_id=self.scheduling_strategy_node_id,
                           name=f"{class_name}.__init__")
        self.__dict__["_creation"] = made  # (frozen: not one of its fields)
        return made

    @property
    def held(self) -> tuple:
        """The resources it holds for its whole life, as a request tuple."""
        req = {"CPU": self.num_cpus or 0, "GPU": self.num_gpus, "memory": self.memory}
        req.update(self.resources)
        return placed(self.scheduling_strategy, req)


ACTOR_DEFAULT = ActorOptions()


def validate_actor(options: dict) -> dict:
    """Check every actor option; raise ValueError naming the first bad one."""
    _check_each(options, ACTOR_OPTIONS, "actors", _NO_EFFECT_FOR_ACTORS)
    if options.get("scheduling_strategy") == "NODE_AFFINITY" and not options.get(
            "scheduling_strategy_node_id"):
        raise ValueError("scheduling_strategy='NODE_AFFINITY' needs scheduling_strategy_node_id")
    if options.get("get_if_exists") and not options.get("name"):
        raise ValueError("The actor name must be specified to use `get_if_exists`.")
    return options


# ------------------------------------------------------------ actor methods
# Options of ``@method(...)`` and ``handle.f.options(...)`` (name: only the latter).
METHOD_OPTIONS = {
    "num_returns": _num_returns,
    "name": _typed(str),
    "max_task_retries": lambda n, v: _count(n, v, -1),
    "retry_exceptions": _retry_exceptions,
    "enable_task_events": _typed(bool),
    "concurrency_group": _typed(str),
    "tensor_transport": _typed(str),
    "_generator_backpressure_num_objects": lambda n, v: _count(n, v, -1),
}
# Those a call's TaskOptions carries; the others change nothing here.
CALL_FIELDS = ("num_returns", "name", "max_task_retries", "retry_exceptions",
               "_generator_backpressure_num_objects")
_NO_EFFECT_FOR_METHODS = {"concurrency_group", "tensor_transport"}


def validate_method(options: dict) -> dict:
    _check_each(options, METHOD_OPTIONS, "actor methods", _NO_EFFECT_FOR_METHODS)
    return options


def call_options(name: str, num_returns, max_task_retries=None, retry_exceptions=False,
                 backpressure=-1) -> TaskOptions:
    """An actor call's options, as a task's: it holds nothing (its actor does), and
    failures are retried by its actor's rules (max_task_retries, unless the method or
    the call has its own), not by max_retries."""
    if isinstance(retry_exceptions, list):
        retry_exceptions = tuple(retry_exceptions)
    return TaskOptions(num_cpus=0, max_retries=0, num_returns=GENERATOR_RETURNS.get(
        num_returns, num_returns), name=name, max_task_retries=max_task_retries,
        retry_exceptions=retry_exceptions, _generator_backpressure_num_objects=backpressure)
