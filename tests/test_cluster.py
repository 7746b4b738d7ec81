"""The Ray-cluster path: `init(address=...)` or RAY_ADDRESS runs the same program on a
real Ray cluster through the real ray. A local Ray head (`ray start --head`) is started
for this module and stopped after it; the programs run in subprocesses against it."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from test_seed_examples import EXPECTED_STDOUT, SEED_DIR

ray = pytest.importorskip("ray", reason="the cluster path needs the real ray "
                                        "(pip install 'shmray[cluster]')")
pytestmark = pytest.mark.timeout(300)

# Ray 2.60 turns on token authentication for clusters it starts; the test cluster is a
# private one on this machine, and its clients are these tests' subprocesses.
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _run(code_or_args, **env):
    args = code_or_args if isinstance(code_or_args, list) else ["-c", code_or_args]
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=240, env={**ENV, **env}, cwd=SEED_DIR)


# Where `ray start` writes the address "auto" finds (Ray's own file).
CURRENT_CLUSTER = "/tmp/ray/ray_current_cluster"


def test_auto_without_a_cluster_is_an_error_naming_the_address():
    # (before the module's head starts: no cluster runs on this machine yet)
    if os.path.exists(CURRENT_CLUSTER):
        pytest.skip(f"a Ray cluster was started on this machine ({CURRENT_CLUSTER}): "
                    f"'auto' would look for it")
    out = _run("import shmray\nshmray.init(address='auto')")
    assert out.returncode == 1
    assert "ConnectionError: Could not connect to a Ray cluster at address='auto'" in out.stderr


def test_an_address_where_nothing_answers_is_an_error_naming_it():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _run(f"import shmray\nshmray.init(address='127.0.0.1:{port}')")
    assert out.returncode == 1
    assert f"Could not connect to a Ray cluster at address='127.0.0.1:{port}'" in out.stderr


def test_without_the_real_ray_the_error_says_what_to_install():
    out = _run("import sys, shmray\nsys.modules['ray'] = None\n"
               "shmray.init(address='127.0.0.1:6379')")
    assert out.returncode == 1 and "pip install 'shmray[cluster]'" in out.stderr


@pytest.fixture(scope="module")
def head():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    # --block, in a process group of its own: this head (and only it, not a Ray cluster
    # the machine may run besides) ends with the group at the end
    proc = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         '--resources={"custom_resource": 4}', "--include-dashboard=false",
         "--disable-usage-stats"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=ENV, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:  # up once its GCS port answers (and ray status sees it)
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the Ray head did not start in 120 s"
            status = subprocess.run([ray_cli, "status", f"--address=127.0.0.1:{port}"],
                                    capture_output=True, timeout=60, env=ENV)
            if status.returncode == 0:
                break
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        _end_group(proc)
        try:  # ("auto" must not find it: ray stop removes it, a killed head does not)
            with open(CURRENT_CLUSTER) as f:
                if f.read().strip().endswith(f":{port}"):
                    os.unlink(CURRENT_CLUSTER)
        except OSError:
            pass


def _end_group(proc):
    """Ctrl-C to the head's group (ray start --block stops its processes on it), then
    SIGKILL to whatever of the group is left."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    time.sleep(1)  # (its children may outlive it a moment)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


PROGRAM = textwrap.dedent("""
    import os, sys, time
    import shmray as ray
    from shmray.exceptions import GetTimeoutError, RayTaskError, TaskCancelledError

    ctx = ray.init(address=sys.argv[1] if len(sys.argv) > 1 else None)

    @ray.remote
    def square(x):
        return x * x

    @ray.remote
    def total(values):  # a list of refs: resolved first, as in a shmray session
        return sum(values)

    @ray.remote
    def nested(x):
        return ray.get(square.remote(x)) + 1

    @ray.remote
    def fails():
        raise KeyError("on the cluster")

    @ray.remote
    def slow():
        time.sleep(3)  # (a cancel may wait for the sleep to end on Ray)

    @ray.remote
    def count(n):
        yield from range(n)

    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n

        def through_a_task(self, x):
            return ray.get(square.remote(x))

    print("fork-join", ray.get(total.remote([square.remote(i) for i in range(10)])))
    print("nested", ray.get(nested.remote(4)))
    try:
        ray.get(fails.remote())
    except RayTaskError as e:
        print("error", isinstance(e, KeyError), "on the cluster" in str(e))
    ref = slow.remote()
    try:
        ray.get(ref, timeout=0.2)
    except GetTimeoutError:
        print("timeout ok")
    ray.cancel(ref)
    try:
        ray.get(ref, timeout=60)
    except TaskCancelledError:
        print("cancelled ok")
    print("stream", [ray.get(r) for r in count.remote(3)])
    c = Counter.options(name="counter").remote()
    print("actor", ray.get([c.incr.remote() for _ in range(3)]),
          ray.get(c.through_a_task.remote(5)), ray.get(ray.get_actor("counter").incr.remote()))
    print("named", ray.util.list_named_actors())
    ready, _ = ray.wait([ray.put(7)], timeout=10)
    print("put", ray.get(ready[0]), ray.cluster_resources()["CPU"])
    print("context", ray.get_runtime_context().get_node_id() == ctx["node_id"])
    ray.shutdown()
""")


def test_a_program_means_the_same_on_the_cluster(head):
    for how in ([head], []):  # init(address=...), and init() with RAY_ADDRESS
        out = _run(["-c", PROGRAM, *how], RAY_ADDRESS="" if how else head)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == [
            "fork-join 285", "nested 17", "error True True", "timeout ok", "cancelled ok",
            "stream [0, 1, 2]", "actor [1, 2, 3] 25 4", "named ['counter']", "put 7 2.0",
            "context True"], out.stderr


# Each example as its users run it on shmray: `import shmray as ray` in place of `import
# ray` (the real ray must stay itself in this process, to reach the cluster), and `ray`
# a global too (one example is a fragment that uses it without importing it). All in
# one interpreter, one after the other (each connects, and shuts down), their output
# captured one by one: an interpreter each would cost this suite a minute more.
CLUSTER_RUNNER = textwrap.dedent("""
    import contextlib, io, json, re, sys
    import shmray
    results = {}
    for path in sys.argv[1:]:
        source = re.sub(r"^import ray$", "import shmray as ray", open(path).read(),
                        flags=re.M)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(source, path, "exec"), {"__name__": "__main__", "ray": shmray})
        shmray.shutdown()  # (in case an example left it connected)
        results[path.rsplit("/", 1)[1]] = out.getvalue()
    print(json.dumps(results))
""")


def test_the_seed_examples_run_unchanged_on_the_cluster(head):
    names = sorted(EXPECTED_STDOUT)
    out = _run(["-c", CLUSTER_RUNNER, *(os.path.join(SEED_DIR, n) for n in names)],
               RAY_ADDRESS=head)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {n: EXPECTED_STDOUT[n] for n in names}


# shmray.util on the cluster is Ray's own ray.util (groups, pools, queues are Ray's there).
UTIL_PROGRAM = textwrap.dedent("""
    import sys
    import shmray as ray
    from shmray.util import placement_group, placement_group_table, remove_placement_group
    from shmray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    ray.init(address=sys.argv[1])
    one = ray.remote(lambda x: x)  # (first: with three actors alive, Ray's 2-CPU head
    print("completed", sorted(ray.util.as_completed([one.remote(i) for i in range(3)])),
          sorted(ray.util.map_unordered(one, range(3))))  # starts no worker for tasks)

    @ray.remote(num_cpus=1)
    def where():
        current = ray.util.get_current_placement_group()
        return None if current is None else current.id.hex()

    pg = placement_group([{"CPU": 1}], name="on-the-cluster")
    ray.get(pg.ready(), timeout=60)
    print("group", type(pg).__module__.split(".")[0], placement_group_table(pg)["state"],
          placement_group_table(pg)["bundles"])
    print("in it", ray.get(where.options(
        scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote()) == pg.id.hex())
    remove_placement_group(pg)

    @ray.remote
    class Doubler:
        def double(self, x):
            return 2 * x

    pool = ray.util.ActorPool([Doubler.remote(), Doubler.remote()])
    print("pool", type(pool).__module__.split(".")[0],
          list(pool.map(lambda a, v: a.double.remote(v), range(4))))
    from shmray.util.queue import Queue
    q = Queue()
    q.put(1)
    print("queue", type(q).__module__.split(".")[0], q.get(timeout=30))
    from shmray.util.state import list_actors
    try:  # (Ray's state API asks the dashboard, which this test head runs without)
        print("state", type(list_actors()[0]).__module__.split(".")[0])
    except Exception as e:
        import traceback
        frames = [f.filename for f in traceback.extract_tb(e.__traceback__)]
        print("state", "ray" if any("/ray/util/state/" in f for f in frames) else frames)
    ray.shutdown()
    from shmray.util.multiprocessing import Pool
    with Pool(ray_address=sys.argv[1]) as pool:  # (Ray's Pool connects by itself)
        print("Pool", type(pool).__module__.split(".")[0], pool.map(abs, [-1, -2]))
    import joblib
    from shmray.util.joblib import register_ray
    register_ray()
    with joblib.parallel_backend("ray"):
        print("joblib", joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(-i) for i in range(3)),
              type(joblib.parallel.get_active_backend()[0]).__module__.split(".")[0])
    ray.shutdown()
""")


def test_shmray_util_is_rays_own_on_the_cluster(head):
    out = _run(["-c", UTIL_PROGRAM, head])
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "completed [0, 1, 2] [0, 1, 2]", "group ray CREATED {0: {'CPU': 1.0}}", "in it True",
        "pool ray [0, 2, 4, 6]", "queue ray 1", "state ray", "Pool ray [1, 2]",
        "joblib [0, 1, 2] ray"], out.stderr
