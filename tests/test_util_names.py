"""The rest of the names Ray programs import: shmray.cloudpickle, shmray.runtime_env,
inspect_serializability, register_serializer / deregister_serializer (in the driver
and in real workers, both ways), get_node_ip_address, the runtime context's ids,
init()'s RayContext, the id classes and log_once."""
from __future__ import annotations

import io
import os
import pickle
import threading
import warnings

import pytest

import shmray
from shmray import _ids, cloudpickle as shm_cloudpickle
from shmray.exceptions import RayTaskError
from shmray.runtime_env import RuntimeEnv, RuntimeEnvConfig
from shmray.util import debug
from shmray.util._node import get_node_instance_id, get_node_ip_address
from shmray.util.check_serialize import FailureTuple, inspect_serializability
from shmray.util.serialization import deregister_serializer, register_serializer

pytestmark = pytest.mark.timeout(60)


class Guarded:
    """Holds a lock: pickle refuses it unless a serializer is registered."""

    def __init__(self, value):
        self.value = value
        self.lock = threading.Lock()


class GuardedChild(Guarded):
    pass


def guarded_to_value(g):
    return g.value


def guarded_from_value(value):
    return Guarded(value)


@pytest.fixture
def guarded_serializer():
    register_serializer(Guarded, serializer=guarded_to_value, deserializer=guarded_from_value)
    yield
    deregister_serializer(Guarded)


# ------------------------------------------------------------------ shmray.cloudpickle
def test_cloudpickle_is_the_cloudpickle_api():
    import cloudpickle
    for name in cloudpickle.__all__:
        assert hasattr(shm_cloudpickle, name), name
    square = lambda x: x * x  # noqa: E731 (by value: no importable name)
    assert shm_cloudpickle.loads(shm_cloudpickle.dumps(square))(7) == 49
    file = io.BytesIO()
    shm_cloudpickle.dump(square, file)
    file.seek(0)
    assert shm_cloudpickle.load(file)(3) == 9
    assert issubclass(shm_cloudpickle.CloudPickler, cloudpickle.Pickler)
    with pytest.raises(TypeError):
        shm_cloudpickle.dumps(threading.Lock())


def test_cloudpickle_uses_registered_serializers(guarded_serializer):
    back = shm_cloudpickle.loads(shm_cloudpickle.dumps(Guarded(5)))
    assert type(back) is Guarded and back.value == 5


# ------------------------------------------------------------------ runtime_env
def test_runtime_env_is_a_checked_dict():
    env = RuntimeEnv(env_vars={"A": "1"}, config=RuntimeEnvConfig(setup_timeout_seconds=30))
    assert env == {"env_vars": {"A": "1"}, "config": {"setup_timeout_seconds": 30,
                                                      "eager_install": True, "log_files": []}}
    assert isinstance(env["config"], RuntimeEnvConfig)
    assert RuntimeEnv() == {} and RuntimeEnv(pip=None) == {}
    assert env.env_vars() == {"A": "1"} and not env.has_pip() and not env.has_working_dir()
    assert RuntimeEnv(pip=["requests"]).pip_config() == {"packages": ["requests"]}
    assert RuntimeEnv.deserialize(env.serialize()) == env
    assert pickle.loads(pickle.dumps(env)) == env
    assert type(pickle.loads(pickle.dumps(env))) is RuntimeEnv
    assert RuntimeEnv(config={"setup_timeout_seconds": 5})["config"]["setup_timeout_seconds"] == 5
    with pytest.raises(TypeError, match="env_vars"):
        RuntimeEnv(env_vars={"A": 1})
    with pytest.raises(TypeError, match="working_dir"):
        RuntimeEnv(working_dir=3)
    with pytest.raises(ValueError, match="pip and conda"):
        RuntimeEnv(pip=["x"], conda="base")
    with pytest.raises(ValueError, match="setup_timeout_seconds"):
        RuntimeEnvConfig(setup_timeout_seconds=0)
    with pytest.raises(TypeError, match="eager_install"):
        RuntimeEnvConfig(eager_install="yes")


@shmray.remote
def env_var(name):
    return os.environ.get(name), type(shmray.get_runtime_context().runtime_env).__name__


def test_runtime_env_works_where_a_dict_does(ray):
    env = RuntimeEnv(env_vars={"SHMRAY_TEST_NAMES": "from-runtime-env"})
    assert ray.get(env_var.options(runtime_env=env).remote("SHMRAY_TEST_NAMES")) == \
        ("from-runtime-env", "RuntimeEnv")
    decorated = shmray.remote(runtime_env=env)(env_var._function)
    assert ray.get(decorated.remote("SHMRAY_TEST_NAMES"))[0] == "from-runtime-env"
    # A field shmray cannot set up on one node is kept by RuntimeEnv (Ray's does too)
    # and refused where it is used, naming it.
    with pytest.raises(ValueError, match="conda"):
        env_var.options(runtime_env=RuntimeEnv(conda="base")).remote("X")


def test_init_takes_a_runtime_env(fresh):
    fresh.init(num_cpus=1, runtime_env=RuntimeEnv(env_vars={"SHMRAY_TEST_JOB": "job"}))
    assert fresh.get(env_var.remote("SHMRAY_TEST_JOB"))[0] == "job"
    assert fresh.get_runtime_context().runtime_env == {"env_vars": {"SHMRAY_TEST_JOB": "job"}}


# ------------------------------------------------------------------ inspect_serializability
_module_lock = threading.Lock()


class _Holder:
    def __init__(self):
        self.fine = [1, 2]
        self.parts = {"ok": 1, "bad": threading.Lock()}


def test_inspect_serializability_of_a_fine_value():
    out = io.StringIO()
    assert inspect_serializability([1, "a", {"b": 2}], print_file=out) == (True, set())
    assert "serializes" in out.getvalue()


def test_inspect_serializability_finds_a_functions_global():
    def _uses_the_lock():  # (local: pickled by value, with the globals it uses)
        return _module_lock.locked()

    out = io.StringIO()
    ok, failures = inspect_serializability(_uses_the_lock, name="fn", print_file=out)
    assert not ok
    (failure,) = failures
    assert isinstance(failure, FailureTuple)
    assert failure.obj is _module_lock and failure.parent is _uses_the_lock
    assert failure.path == ("fn", "_module_lock")
    text = out.getvalue()
    assert "FAIL" in text and "_module_lock" in text and repr(failure) in text


def test_inspect_serializability_walks_attributes_to_its_depth():
    holder = _Holder()
    ok, failures = inspect_serializability(holder, print_file=io.StringIO())
    assert not ok and [f.obj for f in failures] == [holder.parts["bad"]]
    assert next(iter(failures)).path == ("parts", "['bad']")
    ok, failures = inspect_serializability(holder, depth=1, print_file=io.StringIO())
    assert [f.obj for f in failures] == [holder.parts]  # (not looked into)
    lock = threading.Lock()
    assert [f.obj for f in inspect_serializability(lock, print_file=io.StringIO())[1]] == [lock]
    with pytest.raises(ValueError, match="depth"):
        inspect_serializability(holder, depth=-1)


def test_inspect_serializability_counts_registered_serializers(guarded_serializer):
    assert inspect_serializability(Guarded(1), print_file=io.StringIO()) == (True, set())


# ------------------------------------------------------------------ register_serializer
@shmray.remote
def make_guarded(value):
    return Guarded(value)


@shmray.remote
def bump(guarded):
    assert type(guarded) is Guarded and guarded.lock.acquire(blocking=False)
    return Guarded(guarded.value + 1)


@shmray.remote
class GuardedKeeper:
    def __init__(self, guarded):
        self.kept = guarded

    def swap(self, guarded):
        old, self.kept = self.kept, guarded
        return old

    def fresh(self, value):
        return Guarded(value)


def test_without_a_serializer_the_type_is_refused(ray):
    with pytest.raises(TypeError, match="Guarded"):
        ray.put(Guarded(1))
    with pytest.raises(RayTaskError, match="lock"):
        ray.get(make_guarded.remote(1))


def test_registered_serializer_in_driver_and_workers(ray, guarded_serializer):
    back = ray.get(ray.put(Guarded(3)))
    assert type(back) is Guarded and back.value == 3
    # made in a worker started before the registration, and returned
    assert [g.value for g in ray.get([make_guarded.remote(i) for i in range(4)])] == [0, 1, 2, 3]
    # passed to a task, and a new one returned
    assert ray.get(bump.remote(Guarded(41))).value == 42
    assert ray.get(bump.remote(make_guarded.remote(9))).value == 10
    # an actor (a process started after the registration): arguments and results
    keeper = GuardedKeeper.remote(Guarded(1))
    assert ray.get(keeper.swap.remote(Guarded(2))).value == 1
    assert ray.get(keeper.fresh.remote(7)).value == 7
    # a subclass is not the registered type (pickling looks up the exact type)
    with pytest.raises(TypeError, match="GuardedChild"):
        ray.put(GuardedChild(1))


def test_registered_serializer_in_a_functions_closure(ray, guarded_serializer):
    captured = Guarded(11)

    @shmray.remote
    def read_captured():
        return captured.value

    assert ray.get(read_captured.remote()) == 11


def test_deregistered_serializer_is_gone_in_workers_too(ray):
    register_serializer(Guarded, serializer=guarded_to_value, deserializer=guarded_from_value)
    assert ray.get(make_guarded.remote(1)).value == 1
    deregister_serializer(Guarded)
    deregister_serializer(Guarded)  # (again: no effect)
    with pytest.raises(RayTaskError, match="lock"):
        ray.get(make_guarded.remote(1))
    with pytest.raises(TypeError, match="Guarded"):
        ray.put(Guarded(1))


def child_from_value(value):
    return GuardedChild(value)


@shmray.remote
def register_here_and_make(value):
    register_serializer(GuardedChild, serializer=guarded_to_value, deserializer=child_from_value)
    return GuardedChild(value)  # (pickled after the return: registered till the end)


def test_a_tasks_registration_stays_in_its_worker(ray):
    made = ray.get(register_here_and_make.remote(4))  # (the deserializer comes with it)
    assert type(made) is GuardedChild and made.value == 4
    with pytest.raises(TypeError, match="GuardedChild"):  # the driver never registered it
        ray.put(GuardedChild(1))


def test_registered_before_init_then_deregistered(fresh):
    register_serializer(Guarded, serializer=guarded_to_value, deserializer=guarded_from_value)
    try:
        fresh.init(num_cpus=1)  # (its workers are forked with the registration)
        assert fresh.get(make_guarded.remote(2)).value == 2
    finally:
        deregister_serializer(Guarded)
    with pytest.raises(RayTaskError, match="lock"):  # what the fork inherited is gone too
        fresh.get(make_guarded.remote(1))


def test_register_serializer_checks_its_arguments(ray):
    with pytest.raises(TypeError, match="class"):
        register_serializer(Guarded(1), serializer=guarded_to_value,
                            deserializer=guarded_from_value)
    with pytest.raises(TypeError, match="deserializer"):
        register_serializer(Guarded, serializer=guarded_to_value, deserializer=3)
    lock = threading.Lock()
    with pytest.raises(TypeError, match="picklable"):  # it could never reach a worker
        register_serializer(Guarded, serializer=lambda g: (lock, g.value),
                            deserializer=guarded_from_value)
    with pytest.raises(TypeError, match="Guarded"):  # and nothing was registered
        ray.put(Guarded(1))


# ------------------------------------------------------------------ the node's address
@shmray.remote
def node_ip():
    return get_node_ip_address()


def test_get_node_ip_address_names_this_node(ray, monkeypatch):
    ip = get_node_ip_address()
    assert ip == ray.nodes()[0]["NodeManagerAddress"] == ray.get(node_ip.remote())
    assert f"node:{ip}" in ray.cluster_resources()
    assert ray.get(node_ip.options(resources={f"node:{ip}": 0.01}).remote()) == ip
    monkeypatch.delenv("RAY_CLOUD_INSTANCE_ID", raising=False)
    assert get_node_instance_id() == ""
    monkeypatch.setenv("RAY_CLOUD_INSTANCE_ID", "i-123")
    assert get_node_instance_id() == "i-123"


# ------------------------------------------------------------------ get_runtime_context
@shmray.remote
def context_ids():
    ctx = shmray.get_runtime_context()
    return (ctx.get_task_id(), ctx.get_job_id(), ctx.get_node_id(), ctx.get_worker_id(),
            ctx.get_assigned_resources(), ctx.namespace)


def _is_hex(text, digits):
    return isinstance(text, str) and len(text) == digits and int(text, 16) >= 0


def test_runtime_context_ids(ray):
    ctx = ray.get_runtime_context()
    assert ctx.get_task_id() is None and ctx.get_actor_id() is None
    assert _is_hex(ctx.get_job_id(), 8) and _is_hex(ctx.get_node_id(), 56)
    assert _is_hex(ctx.get_worker_id(), 56)
    task_id, job_id, node_id, worker_id, resources, namespace = ray.get(context_ids.remote())
    assert _is_hex(task_id, 32)
    assert (job_id, node_id, namespace) == (ctx.get_job_id(), ctx.get_node_id(), ctx.namespace)
    assert _is_hex(worker_id, 56) and worker_id != ctx.get_worker_id()
    assert resources == {"CPU": 1.0}
    assert ctx.get_temp_dir() and os.path.isdir(ctx.get_temp_dir())
    assert isinstance(ctx.runtime_env, RuntimeEnv)


@shmray.remote
def group_context():
    ctx = shmray.get_runtime_context()
    return ctx.get_placement_group_id(), ctx.get_assigned_resources()


def test_runtime_context_in_a_placement_group(ray):
    from shmray.util.placement_group import placement_group, remove_placement_group
    from shmray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    assert ray.get_runtime_context().get_placement_group_id() is None
    assert ray.get(group_context.remote()) == (None, {"CPU": 1.0})
    group = placement_group([{"CPU": 1}])
    try:
        ray.get(group.ready())
        for bundle in (0, -1):
            in_group = group_context.options(
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, bundle))
            # (Ray's names, not the bundle's resources: CPU_group_0_<id>, bundle_group_...)
            assert ray.get(in_group.remote()) == (group.id.hex(), {"CPU": 1.0})
    finally:
        remove_placement_group(group)


def test_runtime_context_older_forms(ray):
    ctx = ray.get_runtime_context()
    with pytest.warns(DeprecationWarning, match="get_node_id"):
        node = ctx.node_id
    assert isinstance(node, _ids.NodeID) and node.hex() == ctx.get_node_id()
    with pytest.warns(DeprecationWarning):
        assert ctx.job_id.hex() == ctx.get_job_id()
    with pytest.warns(DeprecationWarning):
        assert ctx.task_id is None
    with pytest.warns(DeprecationWarning):
        assert set(ctx.get()) == {"job_id", "node_id", "namespace"}


# ------------------------------------------------------------------ init's RayContext
def test_init_returns_rays_context(fresh):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # include_dashboard=False: what shmray does anyway
        context = fresh.init(num_cpus=1, include_dashboard=False)
    assert context.dashboard_url is None
    info = context.address_info
    for key in ("node_ip_address", "session_dir", "webui_url", "gcs_address", "address",
                "redis_address", "object_store_address", "raylet_socket_name",
                "metrics_export_port", "dashboard_agent_listen_port", "node_id"):
        assert key in info, key
    assert info["node_ip_address"] == get_node_ip_address()
    assert info["node_id"] == fresh.get_runtime_context().get_node_id()
    assert os.path.isdir(info["session_dir"]) and info["webui_url"] is None
    assert context["node_id"] == info["node_id"]  # (Ray's older form: the context as a dict)
    with context:
        pass
    assert not fresh.is_initialized() and not os.path.exists(info["session_dir"])


def test_init_warns_about_a_dashboard(fresh):
    with pytest.warns(UserWarning, match="include_dashboard"):
        fresh.init(num_cpus=1, include_dashboard=True)


# ------------------------------------------------------------------ ids and log_once
def test_id_classes():
    node = _ids.NodeID.from_random()
    assert _ids.NodeID.from_hex(node.hex()) == node and len(node.hex()) == 56
    assert repr(node) == f"NodeID({node.hex()})" and hash(node) == hash(_ids.NodeID(node.binary()))
    assert _ids.NodeID.nil().is_nil() and not node.is_nil()
    assert _ids.JobID.from_int(1).hex() == "01000000" and _ids.JobID.from_int(7).int() == 7
    assert pickle.loads(pickle.dumps(node)) == node and node != node.hex()
    with pytest.raises(ValueError, match="28"):
        _ids.NodeID(b"12")
    with pytest.raises(ValueError, match="hex"):
        _ids.ActorID.from_hex("zz")


def test_log_once(monkeypatch):
    monkeypatch.setattr(debug, "_logged", set())
    monkeypatch.setattr(debug, "_disabled", False)
    assert debug.log_once("k") and not debug.log_once("k") and debug.log_once("other")
    debug.reset_log_once("k")
    assert debug.log_once("k")
    debug.disable_log_once_globally()
    assert not debug.log_once("new")
