"""The public surface: Ray's names, signatures, validation and messages."""
from __future__ import annotations

import os
import warnings

import pytest

import shmray
from shmray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

pytestmark = pytest.mark.timeout(60)


def test_public_names():
    for name in ["init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "cancel",
                 "available_resources", "cluster_resources", "nodes", "get_gpu_ids",
                 "get_runtime_context", "ObjectRef", "exceptions", "util"]:
        assert name in shmray.__all__ and hasattr(shmray, name)
    from shmray.exceptions import GetTimeoutError, RayError, RayTaskError
    assert issubclass(RayTaskError, RayError) and issubclass(GetTimeoutError, TimeoutError)


def test_init_rejects_unknown_and_warns_about_ignored_arguments(fresh):
    with pytest.raises(TypeError, match="no_such_option"):
        fresh.init(no_such_option=1)
    assert not fresh.is_initialized()
    with pytest.warns(UserWarning, match="include_dashboard"):
        fresh.init(num_cpus=1, namespace="ns", include_dashboard=True)
    assert fresh.is_initialized()
    assert fresh.get_runtime_context().namespace == "ns"  # (actors' names live in it)


def test_init_twice(fresh):
    fresh.init(num_cpus=1)
    with pytest.raises(RuntimeError, match="Maybe you called ray.init twice by accident"):
        fresh.init(num_cpus=1)
    info = fresh.init(ignore_reinit_error=True)
    assert info["node_id"] == fresh.get_runtime_context().get_node_id()


@pytest.mark.parametrize("kwargs, error", [
    ({"num_cpus": -1}, ValueError), ({"num_cpus": "2"}, ValueError),
    ({"resources": {"x": -1}}, ValueError), ({"resources": [1]}, TypeError),
    ({"object_store_memory": 0}, ValueError),
])
def test_init_validates_its_arguments(fresh, kwargs, error):
    with pytest.raises(error):
        fresh.init(**kwargs)
    assert not fresh.is_initialized()


def test_shutdown_twice_and_init_again(fresh):
    fresh.init(num_cpus=1)
    fresh.shutdown()
    fresh.shutdown()
    assert not fresh.is_initialized()
    fresh.init(num_cpus=1)

    @fresh.remote
    def f():
        return "again"

    assert fresh.get(f.remote()) == "again"


def test_auto_init_on_first_use(fresh):
    @fresh.remote
    def f():
        return 1

    assert not fresh.is_initialized()
    assert fresh.get(f.remote()) == 1
    assert fresh.is_initialized()


def test_resources_reported(fresh):
    fresh.init(num_cpus=2, num_gpus=1, resources={"custom": 4})
    total = fresh.cluster_resources()
    assert total["CPU"] == 2 and total["GPU"] == 1 and total["custom"] == 4
    assert fresh.available_resources()["CPU"] == 2
    assert fresh.nodes()[0]["NodeID"] == fresh.get_runtime_context().get_node_id()


def test_remote_decorator_forms_and_option_validation(ray):
    @ray.remote
    def bare():
        return "bare"

    @ray.remote(num_cpus=0.5, max_retries=0, name="named")
    def configured():
        return "configured"

    assert ray.get([bare.remote(), configured.remote()]) == ["bare", "configured"]
    with pytest.raises(ValueError, match=r"Invalid option keyword num_cpu for remote functions. "
                                         r"Valid ones are \[.*'num_cpus'"):
        ray.remote(num_cpu=1)(lambda: None)
    with pytest.raises(ValueError, match="'num_cpus' must be non-negative"):
        bare.options(num_cpus=-1)
    with pytest.raises(ValueError, match="retry_exceptions must be either a boolean or a list"):
        bare.options(retry_exceptions=[int])
    with pytest.raises(ValueError, match="max_calls"):
        bare.options(max_calls=2)
    with pytest.raises(ValueError, match="instead of 'CPU'"):
        bare.options(resources={"CPU": 1})
    with pytest.raises(ValueError, match="scheduling_strategy must be one of"):
        bare.options(scheduling_strategy="ANYWHERE")
    with pytest.raises(TypeError, match="keyword arguments"):
        ray.remote(1, 2)


def test_options_leave_the_original_untouched(ray):
    @ray.remote(num_returns=2)
    def pair():
        return 1, 2

    assert ray.get(pair.options(num_returns=1).remote()) == (1, 2)
    assert ray.get(pair.remote()) == [1, 2]


def test_scheduling_strategies(ray):
    node = ray.get_runtime_context().get_node_id()

    @ray.remote
    def where():
        return os.getpid()

    pids = ray.get([where.options(scheduling_strategy="SPREAD").remote() for _ in range(6)])
    assert len(set(pids)) == 2
    here = NodeAffinitySchedulingStrategy(node, soft=False)
    assert ray.get(where.options(scheduling_strategy=here).remote())
    soft = NodeAffinitySchedulingStrategy("f" * 56, soft=True)
    assert ray.get(where.options(scheduling_strategy=soft).remote())
    seed_form = where.options(scheduling_strategy="NODE_AFFINITY", scheduling_strategy_node_id=node)
    assert ray.get(seed_form.remote())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hard = where.options(scheduling_strategy=NodeAffinitySchedulingStrategy("f" * 56, False))
        with pytest.raises(shmray.exceptions.TaskUnschedulableError, match="soft=False"):
            ray.get(hard.remote())


def test_get_validation_and_passthrough(ray):
    with pytest.raises(ValueError, match="nonnegative"):
        ray.get(ray.put(1), timeout=-1)
    with pytest.raises(ValueError, match="must either be an ObjectRef or a list"):
        ray.get(5)  # values pass through inside tasks only (DESIGN.md decision 2)
    with pytest.raises(TypeError, match="which is not an ray.ObjectRef"):
        ray.get([ray.put(1), 2])
    with pytest.raises(TypeError, match="Calling 'put' on an ObjectRef is not allowed"):
        ray.put(ray.put(1))


def test_strict_mode_follows_ray(fresh):
    fresh.init(num_cpus=1, resolve_nested_refs=False)
    with pytest.raises(ValueError, match="must either be an ObjectRef or a list of ObjectRefs"):
        fresh.get(5)

    @fresh.remote
    def kind(items):
        return type(items[0]).__name__

    assert fresh.get(kind.remote([fresh.put(1)])) == "ObjectRef"


class _CountsUnpickling:
    """Appends a line to a file each time a process unpickles it."""

    def __init__(self, path):
        self.path = path

    def __setstate__(self, state):
        self.__dict__.update(state)
        with open(self.path, "a") as f:
            f.write(f"{os.getpid()}\n")


def test_a_function_is_shipped_once_per_worker(ray, tmp_path):
    marker = _CountsUnpickling(str(tmp_path / "unpickled"))

    def uses_marker(i):
        return marker.path and (i, os.getpid())

    f = ray.remote(uses_marker)
    results = ray.get([f.remote(i) for i in range(200)])
    assert [i for i, _ in results] == list(range(200))
    unpickled_in = open(marker.path).read().split()
    # once in each worker that ran the function, and in no other process
    assert sorted(unpickled_in) == sorted({str(pid) for _, pid in results})
