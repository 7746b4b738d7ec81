"""Verdicts: what the driver concludes once per TaskOptions object, never per task
(the options of a RemoteFunction, an .options() variant, an actor method's calls):
whether tasks with them can ever run on this node, their runtime_env's key, and their
retry_exceptions list pickled for the workers."""
from __future__ import annotations

from .. import _serialization as ser
from .._records import NamedTuple
from .._resources import infeasible
from .._options import plain_request
from ..exceptions import TaskPlacementGroupRemoved, TaskUnschedulableError
from ..util.scheduling_strategies import (NodeAffinitySchedulingStrategy,
                                          PlacementGroupSchedulingStrategy)

VERDICTS_MAX = 4096          # options objects whose verdict is kept


class Verdict(NamedTuple):
    options: object             # the TaskOptions it is for (its id may be reused)
    never: Exception | None     # the error every task with them gets at once (None: runs)
    env: object                 # their runtime_env's key (None: the plain workers)
    retry_types: bytes | None   # their retry_exceptions list, pickled (the workers decide)


class Verdicts:
    def __init__(self, ledger, envs, node_id):
        self.ledger = ledger
        self.envs = envs
        self.node_id = node_id
        self._by_id = {}            # id(TaskOptions) -> Verdict
        # id(TaskOptions) -> TaskOptions, for the options whose tasks may take the C lane
        # (csrc/lane.c: runnable, plain workers, no retried exception types, one return,
        # the default strategy, no GPU, no max_calls). Cleared, never replaced: the lane
        # holds it.
        self.common = {}
        self.groups = None          # the session's PlacementGroupTable (set once made)

    def of(self, options) -> Verdict:
        verdict = self._by_id.get(id(options))
        if verdict is None or verdict.options is not options:
            if len(self._by_id) >= VERDICTS_MAX:  # (options made per call: .options())
                self.clear()
            retry = options.retry_exceptions
            verdict = self._by_id[id(options)] = Verdict(
                options, self._never_runs(options), self.envs.key_for(options),
                ser.dumps(retry) if type(retry) is tuple else None)
            if (verdict.never is None and verdict.env is None and verdict.retry_types is None
                    and options.num_returns == 1 and options.scheduling_strategy == "DEFAULT"
                    and not options.num_gpus and not options.max_calls):
                self.common[id(options)] = options
        return verdict

    def __len__(self):
        return len(self._by_id)

    def clear(self):
        """Forget every verdict (a placement group was removed: its tasks never run)."""
        self._by_id.clear()
        self.common.clear()

    def _never_runs(self, options):
        """The error every task with these options gets at once, or None if they can run."""
        strategy = options.scheduling_strategy
        if isinstance(strategy, PlacementGroupSchedulingStrategy) and strategy.placement_group:
            return self._never_in_group(strategy, options)
        node, soft = None, True
        if isinstance(strategy, NodeAffinitySchedulingStrategy):
            node, soft = strategy.node_id, strategy.soft
        elif strategy == "NODE_AFFINITY":
            node, soft = options.scheduling_strategy_node_id, False
        if node is not None and node != self.node_id and not soft:
            return TaskUnschedulableError(
                f"node affinity to node {node!r}, which does not exist (this node is "
                f"{self.node_id}) and soft=False")
        reason = infeasible(self.ledger.totals, options.request)
        return TaskUnschedulableError(reason) if reason else None

    def _never_in_group(self, strategy, options):
        """Why tasks with `options` can never run in their placement group, or None."""
        group_id = strategy.placement_group.id.hex()
        group = None if self.groups is None else self.groups.groups.get(group_id)
        if group is None:
            return TaskUnschedulableError(f"placement group {group_id} does not exist in "
                                          f"this session")
        if group.state == "REMOVED":
            return TaskPlacementGroupRemoved()
        index = strategy.placement_group_bundle_index
        bundles = group.spec.bundles
        candidates = range(len(bundles)) if index < 0 else (index,)
        request = plain_request(options)
        if any(infeasible(bundles[i], request) is None for i in candidates):
            return None
        where = "any bundle" if index < 0 else f"bundle {index}"
        return TaskUnschedulableError(
            f"the task requires {dict(request)}, more than {where} of placement group "
            f"{group_id} reserves ({', '.join(str(dict(bundles[i])) for i in candidates)})")
