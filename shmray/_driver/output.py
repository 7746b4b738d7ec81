"""A worker's output in the driver's terminal: each line prefixed with the task's name
and the worker's pid, as Ray prints it; progress bars (shmray.experimental.tqdm_ray)
drawn, never printed, once a worker sent the first bar's state."""
from __future__ import annotations

import importlib
import sys

from .._protocol import PROGRESS_BAR_TOKEN

_PROGRESS_BARS = "shmray.experimental._progress_bars"


def on_log(w, kind, fd, name, text):
    stream = sys.stdout if fd == 1 else sys.stderr
    prefix = f"({name} pid={w.pid}) " if name else f"(pid={w.pid}) "
    if PROGRESS_BAR_TOKEN in text or _PROGRESS_BARS in sys.modules:
        # Progress bars (shmray.experimental.tqdm_ray) are drawn here, other lines printed
        # around them; loaded at the first bar only (it is optional: it needs tqdm).
        return importlib.import_module(_PROGRESS_BARS).worker_output(stream, prefix, text)
    try:
        stream.write("".join(prefix + line + "\n" for line in text.split("\n")))
        stream.flush()
    except Exception:
        pass
