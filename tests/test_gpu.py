"""GPUs (issue 9): detection, workers bound to device sets (fake GPUs: the scheduling
is the same, only CUDA calls would fail), and cupy arrays through CUDA IPC handles
(skipped, with the reason, on a machine without cupy and a GPU)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from shmray import _resources

pytestmark = pytest.mark.timeout(120)


_GPU_MISSING = _resources.cupy_gpus()[1]  # None when cupy and a GPU are here


# ------------------------------------------------------------------- detection
def _fake_bin(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o755)
    return str(tmp_path)


def test_gpus_are_counted_by_nvidia_smi_when_cuda_visible_devices_is_unset(tmp_path,
                                                                         monkeypatch):
    # a stand-in for nvidia-smi (none on this machine): its output format, two GPUs
    bin_dir = _fake_bin(tmp_path, "nvidia-smi", "#!/bin/sh\n"
                        "echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)'\n"
                        "echo 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbb)'\n")
    monkeypatch.setenv("PATH", bin_dir + os.pathsep + os.environ["PATH"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _resources.detect_gpus() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # the driver's restriction wins
    assert _resources.detect_gpus() == 1


def test_init_reports_detected_gpus_and_num_gpus_overrides(tmp_path):
    bin_dir = _fake_bin(tmp_path, "nvidia-smi", "#!/bin/sh\necho 'GPU 0: X (UUID: GPU-a)'\n"
                        "echo 'GPU 1: X (UUID: GPU-b)'\necho 'GPU 2: X (UUID: GPU-c)'\n")
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"])
    env.pop("CUDA_VISIBLE_DEVICES", None)
    script = textwrap.dedent("""
        import shmray as ray
        ray.init(num_cpus=1)
        print(ray.cluster_resources().get("GPU"))
        ray.shutdown()
        ray.init(num_cpus=1, num_gpus=1)
        print(ray.cluster_resources().get("GPU"))
        ray.shutdown()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3.0", "1.0"]


# ----------------------------------------------------- workers per device set
def test_a_gpu_worker_serves_one_device_set_and_is_reused(fresh):
    fresh.init(num_cpus=2, num_gpus=2)

    @fresh.remote(num_gpus=1)
    def on_gpu(hold=0.0):
        time.sleep(hold)
        return os.getpid(), os.environ["CUDA_VISIBLE_DEVICES"], fresh.get_gpu_ids()

    @fresh.remote
    def on_cpu():
        return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")

    first = [fresh.get(on_gpu.remote(), timeout=60) for _ in range(4)]
    # one at a time: the same worker (device 0) every time, reused
    assert {(pid, devices) for pid, devices, _ in first} == {(first[0][0], "0")}
    assert first[0][2] == [0]
    # two at once (each held long enough to overlap the other): two devices
    both = fresh.get([on_gpu.remote(0.5) for _ in range(2)], timeout=60)
    assert sorted(d for _, d, _ in both) == ["0", "1"]
    cpu_pid, cpu_devices = fresh.get(on_cpu.remote(), timeout=60)
    assert cpu_devices == "" and cpu_pid not in {pid for pid, _, _ in first + both}


# ------------------------------------------------------------ cupy through IPC
needs_gpu = pytest.mark.skipif(_GPU_MISSING is not None,
                               reason=f"cupy IPC needs cupy and a GPU: {_GPU_MISSING}")

GB = 1 << 30


@needs_gpu
def test_a_cupy_array_put_by_a_task_is_read_by_another_without_a_copy(fresh):
    import cupy

    fresh.init(num_cpus=2, num_gpus=1)
    n = (256 << 20) // 4  # 256 MB of float32

    @fresh.remote(num_gpus=0.5, max_calls=1)  # retires, but lives on for its export:
    def produce():                              # the reader runs in another process
        x = cupy.arange(n, dtype=cupy.float32)
        return fresh.put(x), os.getpid()

    @fresh.remote(num_gpus=0.5)
    def consume(box):
        import cupy

        cupy.cuda.Device(0).use()
        cupy.zeros(1).sum()  # the context exists before measuring
        free_before = cupy.cuda.Device(0).mem_info[0]
        y = fresh.get(box[0][0])
        free_after = cupy.cuda.Device(0).mem_info[0]
        return (float(y[12345]), float(y.sum()), int(free_before - free_after),
                type(y).__name__, os.getpid())

    inner, producer = fresh.get(produce.remote(), timeout=60)
    value, total, allocated, kind, reader = fresh.get(consume.remote([[inner]]), timeout=60)
    assert reader != producer  # through the IPC handle, not the producer's own copy
    assert kind == "ndarray" and value == 12345.0
    assert total == pytest.approx(float(n) * (n - 1) / 2, rel=1e-3)
    assert allocated < (n * 4) // 10  # the 256 MB were mapped, not copied


@needs_gpu
def test_a_gpu_object_is_freed_in_its_producer_when_the_refs_go(fresh):
    import time

    fresh.init(num_cpus=1, num_gpus=1)

    @fresh.remote(num_gpus=1)
    def make():
        import cupy

        return cupy.ones((64 << 20) // 8)

    @fresh.remote(num_gpus=1)
    def used():
        import cupy

        return cupy.get_default_memory_pool().used_bytes()

    ref = make.remote()
    assert fresh.get(used.remote(), timeout=60) >= 64 << 20  # kept for its readers
    assert float(fresh.get(ref).sum()) == (64 << 20) // 8  # the driver reads it too
    del ref
    deadline = time.monotonic() + 30
    while fresh.get(used.remote(), timeout=60) >= 64 << 20:
        assert time.monotonic() < deadline, "the producer kept the array"
        time.sleep(0.05)


@needs_gpu
def test_a_consumer_without_the_device_gets_a_host_copy(fresh):
    fresh.init(num_cpus=1, num_gpus=1)

    @fresh.remote(num_gpus=1)
    def make():
        import cupy

        return {"x": cupy.arange(1000)}

    @fresh.remote  # a CPU task: CUDA_VISIBLE_DEVICES="" here
    def read(box):
        value = fresh.get(box[0][0])["x"]
        return type(value).__module__.split(".")[0], int(value[999])

    assert fresh.get(read.remote([[make.remote()]]), timeout=60) == ("numpy", 999)


@needs_gpu
def test_gpu_results_of_every_shape_round_trip(fresh):
    """Empty arrays, views of mapped arrays read back by their producer, the driver and
    a CPU task, a task whose result nobody keeps."""
    fresh.init(num_cpus=2, num_gpus=1)

    @fresh.remote(num_gpus=0.5, max_calls=1)
    def make():
        import cupy

        return cupy.arange(100, dtype=cupy.float64), cupy.zeros((0, 3))

    @fresh.remote(num_gpus=0.5, scheduling_strategy="SPREAD")
    def view(box):
        full, empty = fresh.get(box[0][0])
        return full[10:20], empty

    @fresh.remote
    def on_cpu(box):
        part, empty = fresh.get(box[0][0])
        return [float(v) for v in part], empty.shape

    made = make.remote()
    part = view.remote([[made]])
    values, shape = fresh.get(on_cpu.remote([[part]]), timeout=60)
    assert values == [float(v) for v in range(10, 20)] and shape == (0, 3)
    in_driver, _ = fresh.get(part, timeout=60)
    assert [float(v) for v in in_driver] == values
    make.remote()  # fire and forget: its worker retires once, cleanly
    assert fresh.get(view.remote([[make.remote()]]), timeout=60)[1].shape == (0, 3)


@needs_gpu
def test_workers_work_when_the_driver_initialised_cuda_before_init():
    """A fork of a process that initialised CUDA cannot use CUDA: workers are spawned."""
    script = textwrap.dedent("""
        import cupy
        import shmray as ray
        from shmray import _gpu
        cupy.arange(4).sum()  # the driver's CUDA context exists before init
        assert _gpu.cuda_initialised()
        ray.init(num_cpus=1, num_gpus=1)

        @ray.remote(num_gpus=1)
        def on_gpu():
            import cupy
            return cupy.arange(10)

        @ray.remote
        def on_cpu(box):
            value = ray.get(box[0])
            return type(value).__module__.split(".")[0], int(value.sum())

        ref = on_gpu.remote()
        print(int(ray.get(ref).sum()), *ray.get(on_cpu.remote([ref])))
        ray.shutdown()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=100)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["45", "numpy", "45"]


def test_cuda_counts_as_uninitialised_where_libcuda_was_never_loaded():
    out = subprocess.run([sys.executable, "-c",
                          "from shmray import _gpu; print(_gpu.cuda_initialised())"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
