"""The placement-group half of the driver's facade (Session inherits it), and what a
worker's PgAsk rpc asks (MessageLoop hands it here, under the same locks).

Removing a group ends what runs in it, as in Ray: its tasks not started fail with
TaskPlacementGroupRemoved, running ones are cancelled (force: their worker goes), its
actors are killed. The resources come back, so waiting groups and tasks are placed.
"""
from __future__ import annotations

from .. import _serialization as ser
from ..exceptions import TaskPlacementGroupRemoved
from ..util.scheduling_strategies import PlacementGroupSchedulingStrategy
from .interrupts import sections
from .placement_groups import in_removed_group

CAPTURED_MAX = 4096         # options variants made for captured child tasks, kept


class PlacementGroupFacade:
    def placement_group_op(self, what: str, arg):
        # The pump lock first (see kill_actor): a removed group's actors are killed,
        # and their rings read here.
        with sections, self.loop.pump_lock, self.lock:
            self.check_open()
            answer = self.placement_op_locked(what, arg)
        self.loop.run_deferred()
        return answer

    def placement_op_locked(self, what: str, arg):
        groups = self.groups
        if what == "create":
            if groups.create(arg).state == "CREATED":
                self.resources_freed()
            return None
        if what == "remove":
            return self._remove_group(arg)
        return groups.query(what, arg)

    def resources_freed(self):
        """New resources (a group created) or freed ones: what waits for them runs."""
        self.dispatch.dispatch_queued()
        if self.actors.unplaced:
            self.actors.place_unplaced()

    def _remove_group(self, group_id: str) -> bool:
        group = self.groups.remove(group_id)
        if group is None:
            return False
        self.tasks.verdicts.clear()  # (verdicts of its tasks' options said "can run")
        removed = ser.error_stored(TaskPlacementGroupRemoved())
        for spec in list(self.tasks.tasks.values()):
            if (spec.actor is None and not spec.creates and not spec.cancelled
                    and in_removed_group(spec.request, group_id)):
                if spec.worker is None:  # not started: fails now
                    if spec.queued:
                        self.scheduler.take(spec)
                    self.tasks.finish(spec, removed)
                else:
                    self.tasks.cancel(spec.task_id, True, False)
        for actor in list(self.actors.by_id.values()):
            if in_removed_group(actor.creation_options.request, group_id):
                killed = self.life.kill(actor.actor_id, True)
                if killed is not None:
                    self.loop.on_death(killed)
        self.groups.place_pending()
        self.resources_freed()
        return True

    def on_pg_ask(self, w, kind, req_id, what, arg):
        """A worker's PgAsk (from the message loop: both locks held)."""
        try:
            answer = self.placement_op_locked(what, arg)
        except ValueError as e:
            answer = e
        self.rpcs.reply(w, req_id, answer)

    def child_options(self, w, parent, options):
        """The options (a task's or an actor's) of what `w` started while running task
        `parent` (None: the task it runs now): in the parent's group if that group
        captures its children."""
        if options.scheduling_strategy != "DEFAULT" or not self.groups.groups:
            return options
        if w.actor is not None:
            strategy = w.actor.options.scheduling_strategy
        else:
            if parent is None:  # the task on top: the latest help task, or the first
                running = [s for s in w.inflight if s.helping]
                spec = running[-1] if running else (w.inflight[0] if w.inflight else None)
            else:
                spec = self.tasks.tasks.get(parent)
            strategy = None if spec is None else spec.options.scheduling_strategy
        strategy = capturing_strategy(strategy, options)
        return options if strategy is None else self.captured(options, strategy)

    def captured(self, options, strategy):
        """`options` of a task started inside a group that captures its children (its
        `strategy`): the same, in that group (any bundle). One variant per options
        object and group, so each keeps its verdict."""
        key = (id(options), strategy.placement_group.id.hex())
        made = self._captured.get(key)
        if made is None or made[0] is not options:
            if len(self._captured) >= CAPTURED_MAX:
                self._captured.clear()
            made = self._captured[key] = (options, options.replace(
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    strategy.placement_group, -1, True)))
        return made[1]


def capturing_strategy(strategy, child_options):
    """The group strategy a child with `child_options` inherits from a parent running
    with `strategy`, or None."""
    if (isinstance(strategy, PlacementGroupSchedulingStrategy)
            and strategy.placement_group_capture_child_tasks
            and strategy.placement_group is not None
            and child_options.scheduling_strategy == "DEFAULT"):
        return strategy
    return None


__all__ = ["PlacementGroupFacade", "capturing_strategy"]
