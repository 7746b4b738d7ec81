"""The driver's progress bars for ``shmray.experimental.tqdm_ray``: real tqdm bars
drawn in this terminal, one per bar of any process, kept below the lines printed
around them.

    tqdm_ray.tqdm in a worker ─► its state, one JSON line marked PROGRESS_BAR_TOKEN, on
      the worker's stdout ─► Log ─► the driver's on_log ─► worker_output():
         state lines ─► BarManager.apply ─► a tqdm bar made, moved, updated, closed
         other lines ─► bars cleared, the lines printed whole, bars drawn again
    tqdm_ray.tqdm in the driver ─► BarManager.apply directly
    print() in the driver ─► safe_print (builtins.print, once a bar exists) ─► the same
      clear, print, draw

Rows: the bars of one process form a block as tall as their highest position + 1;
blocks are stacked in the order their processes first drew a bar, and a bar's row is
its block's first row plus its position. A closed bar is left as a finished line
above the others (tqdm's leave=True), which is also where printed lines go.

A worker uses only BarState from here (it writes state lines); the driver draws with
the `tqdm` package.
"""
from __future__ import annotations

import builtins
import importlib
import importlib.util
import io
import json
import os
import sys
import threading
from typing import Dict, NamedTuple, Optional, Tuple

# tqdm itself is imported by the first BarManager, in the driver only: a worker writes
# state lines and never pays for it (tqdm.auto takes about 0.1 s to import). Without it
# tqdm_ray refuses to load, and the driver prints state lines as text.
HAVE_TQDM = importlib.util.find_spec("tqdm") is not None
MISSING_TQDM = ("shmray.experimental.tqdm_ray draws its progress bars with the `tqdm` "
                "package, which is not installed: pip install 'shmray[tqdm]'")

from .._protocol import PROGRESS_BAR_TOKEN

_print = builtins.print  # the real one: safe_print wraps it


class BarState(NamedTuple):
    """What a tqdm_ray bar sends: its whole state, each time (a lost line loses nothing)."""
    uuid: str
    pid: int
    pos: int                    # its row among its own process's bars
    desc: str
    total: Optional[float]
    unit: str
    n: float
    closed: bool

    def to_line(self) -> str:
        return json.dumps({PROGRESS_BAR_TOKEN: 1, **self._asdict()})

    @classmethod
    def from_line(cls, line: str) -> Optional["BarState"]:
        """The state a line carries; None if it is not a whole state line (it is then
        printed as any other)."""
        try:
            fields = json.loads(line)
            fields.pop(PROGRESS_BAR_TOKEN)
            return cls(**fields)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


class BarSnapshot(NamedTuple):
    """A bar as the driver draws it (BarManager.snapshot)."""
    pid: int
    uuid: str
    row: int
    desc: str
    n: float
    total: Optional[float]


class _Bar(NamedTuple):
    state: BarState
    drawn: object               # a tqdm.tqdm


class BarManager:
    """Every bar drawn in this terminal. Thread-safe: the pump thread (workers' output),
    the user's threads (their bars, their prints) call it; one RLock orders the writes.
    No shmray lock is taken under it, and no user code runs under it."""

    def __init__(self):
        self._tqdm = importlib.import_module("tqdm.auto")  # (see HAVE_TQDM)
        self.lock = threading.RLock()
        self._blocks: Dict[int, Dict[str, _Bar]] = {}  # pid -> uuid -> bar, stacked in order
        self._hidden = False

    # ------------------------------------------------------------ states
    def apply(self, state: BarState, prefix: str = "") -> None:
        """Draw `state`: a new bar, an update, or the end of one. `prefix` names the
        process ("(f pid=12) ") in front of the bar's description."""
        with self.lock:
            bar = self._blocks.get(state.pid, {}).get(state.uuid)
            if bar is None and state.closed:
                return  # (drawn and closed already)
            block = self._blocks.setdefault(state.pid, {})
            if bar is None:
                block[state.uuid] = _Bar(state, None)
                rows = self._rows()
                self._move(rows, skip=state.uuid)
                block[state.uuid] = bar = _Bar(state, self._tqdm.tqdm(
                    desc=prefix + state.desc, total=state.total, unit=state.unit,
                    position=rows[state.uuid], initial=state.n, dynamic_ncols=True))
            else:
                block[state.uuid] = bar = self._update(bar, state, prefix)
            if state.closed:
                self._close(state)

    def _update(self, bar: _Bar, state: BarState, prefix: str) -> _Bar:
        drawn = bar.drawn
        if state.desc != bar.state.desc:
            drawn.set_description(prefix + state.desc, refresh=False)
        if state.total != bar.state.total:
            drawn.total = state.total
        if state.unit != bar.state.unit:
            drawn.unit = state.unit
        if state.n > bar.state.n:
            drawn.update(state.n - bar.state.n)  # (tqdm's rate: from its updates)
        else:
            drawn.n = state.n
        if not self._hidden:
            drawn.refresh()
        return _Bar(state, drawn)

    def _close(self, state: BarState) -> None:
        # Hidden around it: the closed bar is written as a finished line where the
        # cursor is (tqdm's leave), the others are drawn again below it.
        self.hide_bars()
        try:
            block = self._blocks[state.pid]
            block.pop(state.uuid).drawn.close()
            if not block:
                del self._blocks[state.pid]
            self._move(self._rows())
        finally:
            self.unhide_bars()

    def _rows(self) -> Dict[str, int]:
        """uuid -> the row of each bar, blocks stacked in order."""
        rows, first = {}, 0
        for block in self._blocks.values():
            for uuid, bar in block.items():
                rows[uuid] = first + bar.state.pos
            first += 1 + max((bar.state.pos for bar in block.values()), default=-1)
        return rows

    def _move(self, rows: Dict[str, int], skip: Optional[str] = None) -> None:
        """Bars whose row changed: all cleared, then all drawn at their new rows."""
        moved = [bar.drawn for block in self._blocks.values() for uuid, bar in block.items()
                 if uuid != skip and bar.drawn is not None and abs(bar.drawn.pos) != rows[uuid]]
        for drawn in moved:
            drawn.clear()
        for block in self._blocks.values():
            for uuid, bar in block.items():
                if uuid != skip and bar.drawn is not None:
                    bar.drawn.pos = -rows[uuid]  # (tqdm keeps a fixed position negative)
        if not self._hidden:
            for drawn in moved:
                drawn.refresh()

    # ------------------------------------------------------------ other output
    def hide_bars(self) -> None:
        """Clear every bar from the screen (until unhide_bars)."""
        with self.lock:
            if not self._hidden:
                self._hidden = True
                for bar in self._bars():
                    bar.drawn.clear()

    def unhide_bars(self) -> None:
        """Draw every bar again."""
        with self.lock:
            if self._hidden:
                self._hidden = False
                for bar in self._bars():
                    bar.drawn.refresh()

    def print_around(self, stream, text: str) -> None:
        """Write `text` (whole lines) to `stream` with the bars out of the way: cleared
        first, drawn again below it."""
        with self.lock:
            if not self._blocks:
                _write(stream, text)
                return
            self.hide_bars()
            try:
                _write(stream, text)
            finally:
                self.unhide_bars()

    def _bars(self):
        return [bar for block in self._blocks.values() for bar in block.values()
                if bar.drawn is not None]

    def snapshot(self) -> Tuple[BarSnapshot, ...]:
        """The bars drawn now, top row first."""
        with self.lock:
            rows = self._rows()
            return tuple(sorted(
                (BarSnapshot(pid, uuid, rows[uuid], bar.state.desc, bar.state.n,
                             bar.state.total)
                 for pid, block in self._blocks.items() for uuid, bar in block.items()),
                key=lambda s: s.row))


def _write(stream, text: str) -> None:
    try:
        stream.write(text)
        stream.flush()
    except Exception:  # (a closed or broken terminal: the output is lost, as print's)
        pass


# ---------------------------------------------------------------- the process's manager
_manager: Optional[BarManager] = None
_manager_lock = threading.Lock()


def instance() -> BarManager:
    """This process's BarManager, made at the first bar; from then on print() goes
    through safe_print (unless RAY_TQDM_PATCH_PRINT=0, as in Ray)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = BarManager()
            if os.environ.get("RAY_TQDM_PATCH_PRINT", "1") not in ("0", "false", "False"):
                builtins.print = safe_print
        return _manager


def safe_print(*args, **kwargs) -> None:
    """print() that keeps the bars intact: they are cleared, the text printed, and
    they are drawn again below it. Prints to other files are plain prints."""
    file = kwargs.get("file")
    manager = _manager
    if manager is None or file not in (None, sys.stdout, sys.stderr):
        return _print(*args, **kwargs)
    text = io.StringIO()  # (formatted here, outside the manager's lock: __str__ is user code)
    _print(*args, **{**kwargs, "file": text, "flush": False})
    manager.print_around(file if file is not None else sys.stdout, text.getvalue())


def worker_output(stream, prefix: str, text: str) -> None:
    """A worker's output lines (`text`, from one Log message) as the driver shows them:
    bar states drawn, the other lines printed whole with `prefix`, in their order."""
    printed = []
    for line in text.split("\n"):
        state = None
        if PROGRESS_BAR_TOKEN in line and HAVE_TQDM:
            state = BarState.from_line(line)
        if state is None:
            printed.append(prefix + line + "\n")
            continue
        if printed:
            _print_lines(stream, printed)
            printed = []
        try:
            instance().apply(state, prefix)
        except Exception as e:  # (a bar that cannot be drawn must not stop the driver)
            _write(sys.stderr, f"shmray: progress bar not drawn: {e!r}\n")
    if printed:
        _print_lines(stream, printed)


def _print_lines(stream, lines) -> None:
    manager = _manager
    if manager is None:
        _write(stream, "".join(lines))
    else:
        manager.print_around(stream, "".join(lines))


def _after_fork_in_child():
    # A worker forked from a driver that draws bars draws none: its output goes to the
    # driver as lines, and its print is the real one again.
    global _manager, _manager_lock
    _manager, _manager_lock = None, threading.Lock()
    if builtins.print is safe_print:
        builtins.print = _print


os.register_at_fork(after_in_child=_after_fork_in_child)
