"""The command line: ``python -m shmray demo --quick`` computes the seed's answers,
compares against multiprocessing and leaves no shared memory behind; no command is
a usage error."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

DEMO_TIMEOUT = 120


def shm_segments_of(pid):
    return [name for name in os.listdir("/dev/shm") if name.startswith(f"shmray_{pid}_")]


@pytest.mark.timeout(DEMO_TIMEOUT + 10)
def test_quick_demo_prints_the_answers_and_cleans_up():
    # Popen rather than run: the leak check needs the driver's pid, which names its segments.
    proc = subprocess.Popen([sys.executable, "-m", "shmray", "demo", "--quick"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=DEMO_TIMEOUT)
    finally:
        proc.kill()  # only if still running: a hung demo must not outlive the test
        proc.wait()
    assert proc.returncode == 0, err
    for answer in ["285", "[4, 16, 36, 64, 100]", "D(B(A), C(A))", "[1, 2, 3]",
                   "Counter({'hello': 2, 'world': 2, 'ray': 1, 'of': 1, 'distributed': 1})",
                   "100 elements read, all correct", "running total 2,000 after 2,000 calls"]:
        assert answer in out, f"{answer!r} missing from:\n{out}"
    assert re.search(r"[\d,]+ tasks/s vs Pool\(\d+\) [\d,]+ tasks/s: speed-up \d+\.\d\d×", out), out
    assert re.search(r"µs vs Pool\(\d+\) [\d.]+ µs: speed-up \d+\.\d\d×", out), out
    assert shm_segments_of(proc.pid) == []


def test_no_command_prints_usage_and_exits_2():
    proc = subprocess.run([sys.executable, "-m", "shmray"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "usage: shmray" in proc.stderr and "demo" in proc.stderr
