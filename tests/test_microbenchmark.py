"""`shmray microbenchmark`: Ray's microbenchmark workloads, under Ray's names, on shmray
and on Ray in one run. Run here at a tiny size (what is checked is that every workload
runs on each engine and gives a figure, never how fast)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shmray._microbenchmark import WORKLOADS

pytestmark = pytest.mark.timeout(240)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "shmray", "microbenchmark", *args],
                          capture_output=True, text=True, timeout=220,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})


def test_every_workload_runs_on_shmray_under_rays_name():
    out = _run("--engines", "shmray", "--seconds", "0.01", "--scale", "0.01", "--json")
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert [f["name"] for f in figures] == [w.name for w in WORKLOADS]
    assert all(f["engine"] == "shmray" and f["per_second"] > 0 for f in figures), figures


def test_the_table_puts_ray_beside_shmray():
    pytest.importorskip("ray", reason="the side-by-side run needs the real ray")
    out = _run("--filter", "single client tasks sync", "--seconds", "0.05")
    assert out.returncode == 0, out.stderr
    head, rule, row = out.stdout.splitlines()[-3:]
    assert "shmray /s" in head and "ray /s" in head and "shmray ÷ ray" in head
    assert row.startswith("single client tasks sync") and float(row.split()[-1]) > 0


@pytest.mark.parametrize("args, message", [
    (["--engines", "spark"], "--engines takes shmray and ray"),
    (["--filter", "no such workload"], "nothing to run"),
])
def test_bad_arguments_are_named(args, message):
    out = _run(*args)
    assert out.returncode == 2 and message in out.stderr
