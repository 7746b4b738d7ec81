"""W9: a 1 GB cupy array through a chain of GPU tasks (ms per hop), shmray's CUDA IPC
handles against the same hops through host memory. Skipped without cupy and a GPU."""

import pytest

import _results
from shmray import _resources

HOPS = 4
ELEMENTS = (1 << 30) // 4   # 1 GB of float32
ROUNDS = 3
GROUP = "W9 1 GB cupy array through GPU tasks"


_MISSING = _resources.cupy_gpus()[1]  # None when cupy and a GPU are here


pytestmark = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", ["shmray"], indirect=True)
def test_ipc_chain(benchmark, engine):
    import cupy
    import shmray

    @shmray.remote(num_gpus=0.5)
    def start():
        return cupy.ones(ELEMENTS, dtype=cupy.float32)

    # SPREAD: each hop goes to the other idle worker, so every hop opens the handle in
    # another process (on the same worker it would be the producer's own array).
    @shmray.remote(num_gpus=0.5, scheduling_strategy="SPREAD")
    def hop(x):
        return x  # the same array goes on: only a handle travels

    first = start.remote()
    shmray.get(hop.remote(first))  # warm: workers and contexts exist

    def chain():
        ref = first
        for _ in range(HOPS):
            ref = hop.remote(ref)
        shmray.wait([ref], timeout=120)

    benchmark.pedantic(chain, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    _results.record("W9", "shmray", _results.median(benchmark) / HOPS * 1e3)


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("engine", ["ref"], indirect=True)
def test_host_memory_chain(benchmark, engine):
    """What each hop costs through host memory: device to host, then host to device."""
    import cupy

    x = cupy.ones(ELEMENTS, dtype=cupy.float32)

    def chain():
        y = x
        for _ in range(HOPS):
            y = cupy.asarray(y.get())
        cupy.cuda.Device().synchronize()

    benchmark.pedantic(chain, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    _results.record("W9", "ref", _results.median(benchmark) / HOPS * 1e3)
