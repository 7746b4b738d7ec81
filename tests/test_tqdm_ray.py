"""shmray.experimental.tqdm_ray: bars made in tasks, actors and the driver are drawn by
the driver as real tqdm bars. Each scenario runs as a driver program on a pseudo
terminal; what it wrote is replayed on a small terminal model (carriage return, line
feed, cursor up: all tqdm uses) and the test reads the final screen: one finished line
per bar, every printed line whole, the bars' intermediate states drawn in place."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time

import pytest

pytestmark = pytest.mark.timeout(90)

COLUMNS = 120
_CURSOR_UP = "\x1b[A"


def run_on_terminal(tmp_path, source: str, seconds: float = 60.0) -> str:
    """Run `source` as a driver program whose stdout and stderr are a pseudo terminal
    (COLUMNS wide); all it wrote, decoded."""
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(source))
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, COLUMNS, 0, 0))
    proc = subprocess.Popen([sys.executable, str(script)], stdin=terminal, stdout=terminal,
                            stderr=terminal, close_fds=True, start_new_session=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.close(terminal)
    out, deadline = b"", time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                data = os.read(controller, 65536)
            except OSError:  # (EIO: every writer closed the terminal)
                break
            if not data:
                break
            out += data
    finally:
        os.close(controller)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"the driver failed ({proc.returncode}):\n{text}"
    return text


def screen_of(text: str) -> list:
    """The rows a terminal shows after `text` (no wrapping: lines are shorter than it)."""
    rows, row, col, i = [[]], 0, 0, 0
    while i < len(text):
        if text.startswith(_CURSOR_UP, i):
            row, i = max(0, row - 1), i + len(_CURSOR_UP)
            continue
        ch = text[i]
        assert ch != "\x1b", f"an escape sequence the model does not know: {text[i:i + 8]!r}"
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row += 1
        else:
            line = rows[row]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = ch
            col += 1
        rows.extend([] for _ in range(row + 1 - len(rows)))
        i += 1
    return ["".join(r).rstrip() for r in rows]


def finished_bar(desc: str, total: int) -> str:
    """A closed bar's line: `desc` at 100% of `total`."""
    return rf"{desc}: 100%\|[^|]*\| {total}/{total} \["


def test_task_bars_drawn_in_place_with_whole_printed_lines(tmp_path):
    out = run_on_terminal(tmp_path, """
        import shmray
        from shmray.experimental.tqdm_ray import tqdm

        shmray.init(num_cpus=2)

        @shmray.remote
        def work(i, n):
            bar = tqdm(total=n, desc=f"task{i}", flush_interval_s=0)
            for k in range(n):
                print(f"task {i} line {k}")
                bar.update(1)
            bar.close()
            return i

        print("results", shmray.get([work.remote(i, 6) for i in range(4)]))
        for x in tqdm(range(3), desc="driver", flush_interval_s=0):
            print("driver line", x)
        shmray.shutdown()
        print("DONE")
    """)
    rows = screen_of(out)
    printed = [r for r in rows if re.fullmatch(r"\(work pid=\d+\) task \d line \d", r)]
    assert sorted(r.split(") ")[1] for r in printed) == sorted(
        f"task {i} line {k}" for i in range(4) for k in range(6))
    for i in range(4):
        bars = [r for r in rows if re.match(r"\(work pid=\d+\) " + finished_bar(f"task{i}", 6), r)]
        assert len(bars) == 1, rows  # one line per bar: drawn in place, finished
        # ... through its intermediate states, each drawn
        for k in range(6):
            assert re.search(rf"task{i}: +\d+%\|[^|]*\| {k}/6 ", out)
    assert [r for r in rows if r.startswith("driver line")] == [f"driver line {x}" for x in range(3)]
    assert len([r for r in rows if re.match(finished_bar("driver", 3), r)]) == 1
    # Nothing else: no line holds a piece of a bar and a piece of printed text.
    others = [r for r in rows if r and r not in printed and not r.startswith("driver line")
              and not re.search(r": 100%\|", r)]
    assert others == ["results [0, 1, 2, 3]", "DONE"], rows


def test_actor_bars_at_positions_and_bars_of_processes_apart(tmp_path):
    out = run_on_terminal(tmp_path, """
        import shmray
        from shmray.experimental import tqdm_ray
        from shmray.experimental.tqdm_ray import tqdm
        from shmray.util.queue import Queue

        shmray.init(num_cpus=2)

        @shmray.remote
        class Trainer:
            def train(self, name, epochs, steps, arrived, go):
                outer = tqdm(total=epochs, desc=f"{name} epochs", position=0,
                             flush_interval_s=0)
                for e in range(epochs):
                    with tqdm(range(steps), desc=f"{name} steps", position=1,
                              flush_interval_s=0) as inner:
                        for _ in inner:
                            if e == 0 and inner.n == 1:  # both trainers' bars open here
                                arrived.put(name)
                                go.get(timeout=60)
                    print(f"{name} epoch {e} done")
                    outer.update()
                outer.close()
                return name

        arrived, go = Queue(), Queue()
        trainers = [Trainer.remote(), Trainer.remote()]
        refs = [t.train.remote(f"m{i}", 3, 4, arrived, go) for i, t in enumerate(trainers)]
        arrived.get(timeout=60), arrived.get(timeout=60)
        rows = {b.desc: b.row for b in tqdm_ray.instance().snapshot()}
        print("ROWS", sorted(rows.values()),
              all(rows[f"m{i} steps"] == rows[f"m{i} epochs"] + 1 for i in range(2)))
        go.put(1), go.put(1)
        print(shmray.get(refs))
        shmray.shutdown()
    """)
    rows = screen_of(out)
    assert "ROWS [0, 1, 2, 3] True" in rows  # a block of two rows per actor, stacked
    for name in ("m0", "m1"):
        assert len([r for r in rows if re.search(finished_bar(f"{name} epochs", 3), r)]) == 1
        assert len([r for r in rows if re.search(finished_bar(f"{name} steps", 4), r)]) == 3
        assert len([r for r in rows
                    if re.fullmatch(rf"\(Trainer\.train pid=\d+\) {name} epoch \d done", r)]) == 3
    assert "['m0', 'm1']" in rows


def test_a_held_back_update_is_sent_when_its_interval_ends(tmp_path):
    out = run_on_terminal(tmp_path, """
        import time
        import shmray
        from shmray.experimental import tqdm_ray
        from shmray.util.queue import Queue

        shmray.init(num_cpus=2)

        @shmray.remote
        def slow(gate):
            bar = tqdm_ray.tqdm(total=10, desc="slow", flush_interval_s=0.3)
            bar.update(3)  # within the interval of the first state: held back
            gate.get(timeout=60)
            bar.close()

        gate = Queue()
        ref = slow.remote(gate)
        deadline = time.monotonic() + 30
        seen = ()
        while time.monotonic() < deadline:
            seen = [(b.desc, b.n) for b in tqdm_ray.instance().snapshot()]
            if seen == [("slow", 3)]:
                break
            time.sleep(0.01)
        print("SEEN", seen)
        gate.put("go")
        shmray.get(ref)
        shmray.shutdown()
    """)
    assert "SEEN [('slow', 3)]" in screen_of(out)


def test_partial_output_before_a_bar_stays_whole_and_local_mode_draws(tmp_path):
    out = run_on_terminal(tmp_path, """
        import shmray
        from shmray.experimental.tqdm_ray import tqdm

        shmray.init(num_cpus=1)

        @shmray.remote
        def work():
            print("partial", end="")  # no newline yet: the bar's state must not join it
            bar = tqdm(total=2, desc="after", flush_interval_s=0)
            print(" and the rest")
            bar.update(2)
            bar.close()

        shmray.get(work.remote())
        shmray.shutdown()
        shmray.init(local_mode=True)
        shmray.get(work.remote())  # in the driver's process: drawn directly
        shmray.shutdown()
    """)
    rows = screen_of(out)
    assert len([r for r in rows if re.fullmatch(r"\(work pid=\d+\) partial", r)]) == 1
    assert len([r for r in rows if re.fullmatch(r"\(work pid=\d+\)  and the rest", r)]) == 1
    assert len([r for r in rows if re.search(finished_bar("after", 2), r)]) == 2
    assert not [r for r in rows if "magic" in r]  # no state line printed as text


def test_the_api_in_the_driver(monkeypatch):
    monkeypatch.setenv("RAY_TQDM_PATCH_PRINT", "0")  # (this process's print stays)
    from shmray.experimental import tqdm_ray

    bar = tqdm_ray.tqdm(desc="api", total=5, unit="files", flush_interval_s=0)
    assert (bar.n, bar.total, bar.desc) == (0, 5, "api")
    bar.update(2)
    bar.n = 4
    bar.total = 8
    bar.set_description("renamed")
    bar.refresh()
    drawn = {s.uuid: s for s in tqdm_ray.instance().snapshot()}[bar._uuid]
    assert (drawn.desc, drawn.n, drawn.total) == ("renamed", 4, 8)
    bar.close()
    bar.update(1)  # after close: nothing (as tqdm)
    assert bar._uuid not in {s.uuid for s in tqdm_ray.instance().snapshot()}
    with tqdm_ray.tqdm(["a", "b"], flush_interval_s=0) as listed:
        assert listed.total == 2 and list(listed) == ["a", "b"] and listed.n == 2
    with tqdm_ray.tqdm(total=1, flush_interval_s=0) as no_iterable:
        with pytest.raises(ValueError, match="No iterable provided"):
            list(no_iterable)
    with pytest.raises(TypeError, match="position must be an int >= 0"):
        tqdm_ray.tqdm(position=-1)
    with pytest.raises(TypeError, match="total must be a number"):
        tqdm_ray.tqdm(total="ten")
    with pytest.raises(TypeError, match="flush_interval_s"):
        tqdm_ray.tqdm(flush_interval_s=-1)
    assert tqdm_ray.instance().snapshot() == ()  # every bar made here was closed


def test_without_tqdm_the_import_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['tqdm'] = None\n"
            "try:\n"
            "    from shmray.experimental import tqdm_ray\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "pip install 'shmray[tqdm]'" in out
