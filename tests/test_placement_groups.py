"""Placement groups (issue 19): a group reserves its bundles on the node (seen in
available_resources), tasks and actors in a bundle use the bundle's share, a group
that cannot fit yet waits, one that never can fails at once, removal gives the
resources back and ends what ran in it. Real workers and actors throughout."""
from __future__ import annotations

import os
import tempfile
import time

import pytest

from shmray.exceptions import (RayActorError, TaskCancelledError, TaskPlacementGroupRemoved,
                               TaskUnschedulableError)
from shmray.util import (get_current_placement_group, get_placement_group, placement_group,
                         placement_group_table, remove_placement_group)
from shmray.util.scheduling_strategies import PlacementGroupSchedulingStrategy as InGroup
from test_scheduling import _interval, meeting, most_at_once

pytestmark = pytest.mark.timeout(120)


def _cpu(ray):
    return ray.available_resources().get("CPU", 0.0)


def _wait_for_file(path, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


@pytest.fixture
def ray(fresh):
    fresh.init(num_cpus=2)
    return fresh


def test_a_group_reserves_its_bundles_and_removal_gives_them_back(ray):
    pg = placement_group([{"CPU": 1}, {"CPU": 0.5}], name="reserve")
    assert ray.get(pg.ready(), timeout=30) == pg
    assert pg.wait(5) is True
    free = ray.available_resources()
    assert free["CPU"] == pytest.approx(0.5)
    gid = pg.id.hex()
    assert free[f"CPU_group_{gid}"] == pytest.approx(1.5)
    assert free[f"CPU_group_0_{gid}"] == pytest.approx(1.0)
    assert free[f"CPU_group_1_{gid}"] == pytest.approx(0.5)
    row = placement_group_table(pg)
    assert row["state"] == "CREATED" and row["strategy"] == "PACK" and row["name"] == "reserve"
    assert row["bundles"] == {0: {"CPU": 1.0}, 1: {"CPU": 0.5}}
    remove_placement_group(pg)
    free = ray.available_resources()
    assert free["CPU"] == pytest.approx(2.0)
    assert not [k for k in free if gid in k]
    assert placement_group_table(pg)["state"] == "REMOVED"


def test_tasks_in_a_bundle_share_only_the_bundle(ray):
    pg = placement_group([{"CPU": 1}])
    ray.get(pg.ready(), timeout=30)
    f = ray.remote(num_cpus=1)(_interval)
    in_bundle = f.options(scheduling_strategy=InGroup(pg, 0))
    runs = ray.get([in_bundle.remote(meeting(1)) for _ in range(3)], timeout=60)
    assert most_at_once(runs) == 1  # the bundle holds one CPU: one at a time
    # ... while the CPU left outside the group runs the others
    outside = ray.get([f.remote(meeting(1)) for _ in range(2)], timeout=60)
    assert most_at_once(outside) == 1
    remove_placement_group(pg)


def test_the_group_and_resources_seen_inside_a_task_and_an_actor(ray):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}])
    ray.get(pg.ready(), timeout=30)

    @ray.remote
    def where():
        current = get_current_placement_group()
        return (None if current is None else current.id.hex(),
                None if current is None else current.bundle_specs,
                ray.get_runtime_context().get_assigned_resources())

    gid, bundles, assigned = ray.get(where.options(scheduling_strategy=InGroup(pg, 1)).remote())
    assert gid == pg.id.hex() and bundles == [{"CPU": 1.0}, {"CPU": 1.0}]
    assert assigned == {"CPU": 1.0}  # (Ray names the resources as asked for)
    assert ray.get(where.options(num_cpus=0).remote())[0] is None  # (no CPU is left outside)
    assert get_current_placement_group() is None  # the driver is in no group

    @ray.remote(num_cpus=1)
    class Member:
        def group(self):
            current = get_current_placement_group()
            return None if current is None else current.id.hex()

    member = Member.options(scheduling_strategy=InGroup(pg, 0)).remote()
    assert ray.get(member.group.remote(), timeout=30) == pg.id.hex()
    free = ray.available_resources()  # the actor holds bundle 0's CPU while it lives
    assert f"CPU_group_0_{gid}" not in free and free[f"CPU_group_{gid}"] == pytest.approx(1.0)
    remove_placement_group(pg)
    with pytest.raises(RayActorError):
        ray.get(member.group.remote(), timeout=30)


def test_children_run_in_the_group_when_it_captures_them(ray):
    pg = placement_group([{"CPU": 1}])
    ray.get(pg.ready(), timeout=30)

    @ray.remote(num_cpus=0)
    def child():
        current = get_current_placement_group()
        return None if current is None else current.id.hex()

    @ray.remote(num_cpus=0)
    def parent():
        return ray.get(child.remote())

    captured = parent.options(scheduling_strategy=InGroup(pg, 0, True)).remote()
    assert ray.get(captured, timeout=30) == pg.id.hex()
    plain = parent.options(scheduling_strategy=InGroup(pg, 0)).remote()
    assert ray.get(plain, timeout=30) is None

    @ray.remote(num_cpus=0)
    class Child:
        def group(self):
            current = get_current_placement_group()
            return None if current is None else current.id.hex()

    @ray.remote(num_cpus=0)
    def parent_of_an_actor():
        return ray.get(Child.remote().group.remote())

    made = parent_of_an_actor.options(scheduling_strategy=InGroup(pg, 0, True)).remote()
    assert ray.get(made, timeout=30) == pg.id.hex()
    remove_placement_group(pg)


def test_a_group_waits_for_resources_in_use_then_is_placed(ray):
    flag = os.path.join(tempfile.mkdtemp(prefix="shmray-test-pg-"), "go")
    started = flag + ".started"

    @ray.remote(num_cpus=2)
    def hold(flag, started):
        open(started, "w").close()
        _wait_for_file(flag)
        return "held"

    holding = hold.remote(flag, started)
    _wait_for_file(started)
    pg = placement_group([{"CPU": 1}])
    assert placement_group_table(pg)["state"] == "PENDING"
    assert pg.wait(0.2) is False
    open(flag, "w").close()
    assert ray.get(pg.ready(), timeout=30) == pg
    assert ray.get(holding) == "held"
    assert placement_group_table(pg)["state"] == "CREATED"
    remove_placement_group(pg)


def test_a_group_this_node_can_never_hold_fails_at_once(ray):
    with pytest.raises(ValueError, match="can never be placed on this node"):
        placement_group([{"CPU": 1}, {"CPU": 2}])
    with pytest.raises(ValueError, match="STRICT_SPREAD"):
        placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    one = placement_group([{"CPU": 1}], strategy="STRICT_SPREAD")  # one bundle: one node
    assert one.wait(30)
    remove_placement_group(one)
    assert placement_group_table() and _cpu(ray) == pytest.approx(2.0)


def test_a_task_larger_than_its_bundle_is_unschedulable(ray):
    pg = placement_group([{"CPU": 0.5}])
    ray.get(pg.ready(), timeout=30)
    f = ray.remote(num_cpus=1)(lambda: 1)
    with pytest.warns(UserWarning, match="can never run"):
        ref = f.options(scheduling_strategy=InGroup(pg, 0)).remote()
    with pytest.raises(TaskUnschedulableError, match="bundle 0 of placement group"):
        ray.get(ref, timeout=30)
    remove_placement_group(pg)


def test_removal_fails_waiting_tasks_and_cancels_running_ones(ray):
    pg = placement_group([{"CPU": 1}])
    ray.get(pg.ready(), timeout=30)
    flag = os.path.join(tempfile.mkdtemp(prefix="shmray-test-pg-"), "never")
    started = flag + ".started"

    @ray.remote(num_cpus=1, max_retries=0)
    def block(flag, started):
        open(started, "w").close()
        _wait_for_file(flag, 600)

    in_group = block.options(scheduling_strategy=InGroup(pg, 0))
    running = in_group.remote(flag, started)
    _wait_for_file(started)
    waiting = in_group.remote(flag, started + "2")  # the bundle is busy: it waits
    remove_placement_group(pg)
    with pytest.raises(TaskPlacementGroupRemoved):
        ray.get(waiting, timeout=30)
    with pytest.raises(TaskCancelledError):
        ray.get(running, timeout=30)
    late = in_group.remote(flag, started)  # submitted after the removal
    with pytest.raises(TaskPlacementGroupRemoved):
        ray.get(late, timeout=30)
    assert _cpu(ray) == pytest.approx(2.0)


def test_names_and_the_table(ray):
    pg = placement_group([{"CPU": 1}], name="named", strategy="SPREAD")
    assert get_placement_group("named") == pg
    assert get_placement_group("named").bundle_specs == [{"CPU": 1.0}]
    with pytest.raises(ValueError, match="already exists"):
        placement_group([{"CPU": 0.1}], name="named")
    with pytest.raises(ValueError, match="Failed to look up placement group with name: nope"):
        get_placement_group("nope")
    assert pg.id.hex() in placement_group_table()
    remove_placement_group(pg)
    with pytest.raises(ValueError, match="Failed to look up"):
        get_placement_group("named")


def test_groups_made_and_removed_inside_a_task(ray):
    @ray.remote(num_cpus=0)
    def make_and_use():
        pg = placement_group([{"CPU": 1}], name="from-a-task")
        ray.get(pg.ready())
        inner = ray.remote(num_cpus=1)(lambda: get_current_placement_group().id.hex())
        seen = ray.get(inner.options(scheduling_strategy=InGroup(pg, 0)).remote())
        table = placement_group_table(pg)
        remove_placement_group(pg)
        return seen == pg.id.hex(), table["state"]

    assert ray.get(make_and_use.remote(), timeout=60) == (True, "CREATED")
    assert _cpu(ray) == pytest.approx(2.0)


@pytest.mark.parametrize("bundles, strategy, lifetime, message", [
    ([], "PACK", None, "non-empty list"),
    ([{"CPU": 0}], "PACK", None, "only 0 values"),
    ([{"CPU": -1}], "PACK", None, "non-negative"),
    ([["CPU"]], "PACK", None, "must be a dict"),
    ([{"CPU": 1}], "TIGHT", None, "Invalid placement group strategy"),
    ([{"CPU": 1}], "PACK", "forever", "lifetime"),
])
def test_bad_arguments_are_named(ray, bundles, strategy, lifetime, message):
    with pytest.raises(ValueError, match=message):
        placement_group(bundles, strategy=strategy, lifetime=lifetime)


def test_a_bundle_index_out_of_range_is_refused(ray):
    pg = placement_group([{"CPU": 1}])
    with pytest.raises(ValueError, match="between 0 and 0"):
        InGroup(pg, 1)
    remove_placement_group(pg)


def test_a_gpu_bundle_gives_its_tasks_a_device(fresh):
    fresh.init(num_cpus=2, num_gpus=2)
    pg = placement_group([{"GPU": 1, "CPU": 1}])
    fresh.get(pg.ready(), timeout=30)
    assert fresh.available_resources()["GPU"] == pytest.approx(1.0)
    f = fresh.remote(num_gpus=1)(lambda: (fresh.get_gpu_ids(),
                                          os.environ.get("CUDA_VISIBLE_DEVICES")))
    ids, visible = fresh.get(f.options(scheduling_strategy=InGroup(pg, 0)).remote(), timeout=30)
    assert len(ids) == 1 and visible == str(ids[0])
    remove_placement_group(pg)
    assert fresh.available_resources()["GPU"] == pytest.approx(2.0)


def test_local_mode_has_groups_too(fresh):
    fresh.init(num_cpus=2, local_mode=True)
    pg = placement_group([{"CPU": 1}])
    assert fresh.get(pg.ready()) == pg
    f = fresh.remote(lambda: get_current_placement_group().id.hex())
    assert fresh.get(f.options(scheduling_strategy=InGroup(pg, 0)).remote()) == pg.id.hex()
    remove_placement_group(pg)
    assert placement_group_table(pg)["state"] == "REMOVED"


def test_the_state_api_lists_the_groups(ray):
    from shmray.util.state import get_placement_group as state_of, list_placement_groups

    pg = placement_group([{"CPU": 1}], name="listed")
    ray.get(pg.ready(), timeout=30)
    [row] = list_placement_groups(filters=[("name", "=", "listed")], detail=True)
    assert (row.placement_group_id, row.state, row.is_detached) == (pg.id.hex(), "CREATED", False)
    assert row.bundles[0]["unit_resources"] == {"CPU": 1.0}
    remove_placement_group(pg)
    assert state_of(pg.id.hex()).state == "REMOVED"
    assert list_placement_groups(filters=[("state", "=", "CREATED")]) == []
