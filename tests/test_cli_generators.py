"""`shmray status` shows a streaming generator task that is still running, with the
items it has produced and the caller has consumed (the session runs in another
process, as in test_cli_status)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from test_cli_status import _human, _json

pytestmark = pytest.mark.timeout(120)

SESSION = textwrap.dedent("""
    import os, sys, time
    import shmray as ray

    marks = sys.argv[1]
    ray.init(num_cpus=2)

    @ray.remote
    def produce(marks):
        for i in range(3):
            yield i
        while not os.path.exists(os.path.join(marks, "stop")):
            time.sleep(0.02)
        yield "last"

    gen = produce.remote(marks)
    assert ray.get(next(gen)) == 0
    while ray._context.runtime.generators.streams[gen._ref._id].produced < 3:
        time.sleep(0.01)
    print("READY", os.getpid(), flush=True)
    while not os.path.exists(os.path.join(marks, "stop")):  # (nothing more consumed)
        time.sleep(0.02)
    assert ray.get(list(gen)) == [1, 2, "last"]
    ray.shutdown()
    print("DONE", flush=True)
""")


def test_status_lists_a_running_generator_with_its_items(tmp_path):
    script = tmp_path / "session.py"
    script.write_text(SESSION)
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(marks)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY"), line + proc.stderr.read()
        pid = line.split()[1]
        data = _json("status", "--session", pid)
        [row] = data["generators"]
        assert (row["name"], row["items"], row["consumed"], row["ended"]) == \
            ("produce", 3, 1, False)
        text = _human("status", "--session", pid)
        assert "generators: 1 streaming" in text
        [line] = [t for t in text.splitlines() if t.strip().startswith("produce")]
        assert line.split()[2:5] == ["3", "1", "running"]
    finally:
        (marks / "stop").write_text("")
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "DONE" in out, err
