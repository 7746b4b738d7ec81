"""The bench/ scripts that are not pytest-benchmark tests still run (they use shmray's
internals, so a change there can break them): a smoke run, no figures checked."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


@pytest.mark.timeout(120)
def test_hot_path_breakdown_runs():
    out = subprocess.run([sys.executable, os.path.join(BENCH, "hot_path.py")],
                         capture_output=True, text=True, timeout=110)
    assert out.returncode == 0, out.stderr[-3000:]
    for heading in ("W1 end to end", "Stage by stage", "driver CPU per task", "Reading:"):
        assert heading in out.stdout


@pytest.mark.timeout(60)
def test_actor_path_runs():
    out = subprocess.run([sys.executable, os.path.join(BENCH, "actor_path.py"), "--rounds", "1"],
                         capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "calls/s" in out.stdout and "actor worker" in out.stdout and "W10" in out.stdout
