"""One live progress line in the runner's terminal while a stage's notebook runs.

A notebook's progress bars belong to the notebook (tqdm's widgets, one line each in the saved file);
the terminal that started `python -m recnb.run` would see nothing move for the 20 minutes of an SFT
stage. So the runner names a status file in `RECNB_PROGRESS_FILE` (kernels inherit the variable),
every long loop in `recnb` reports its position there (`bar`, `report`), and the runner shows the
latest line next to its stage bar (`watch`). Without the variable (JupyterLab, nbval, tests) the
reports are no-ops.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm
from tqdm.std import tqdm as std_tqdm

ENV = "RECNB_PROGRESS_FILE"
MIN_INTERVAL_S = 0.5  # at most two writes a second


_last_write = 0.0


def report(text: str, force: bool = False) -> None:
    """Write `text` as the current status line (atomic rename; throttled unless `force`)."""
    global _last_write
    target = os.environ.get(ENV)
    now = time.monotonic()
    if not target or (not force and now - _last_write < MIN_INTERVAL_S):
        return
    _last_write = now
    path = Path(target)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(" ".join(text.split()))
    tmp.replace(path)


class _Reporting:
    """Mixin: every update also reports the bar's position to the status file."""

    def update(self, n: float | None = 1) -> bool | None:
        shown = super().update(n)
        if self.disable:  # (tqdm sets up nothing else for a disabled bar)
            return shown
        total = f"/{self.total:.0f}" if self.total else ""
        postfix = f" {self.postfix}" if self.postfix else ""
        report(f"{self.desc} {self.n:.0f}{total}{postfix}", force=self.total is not None and self.n >= self.total)
        return shown


class _AutoBar(_Reporting, tqdm):
    """tqdm.auto's bar: a widget when a person runs the notebook in JupyterLab."""


class _TextBar(_Reporting, std_tqdm):
    """A text bar: under the runner, whose papermill coalesces each cell's stream, so the saved notebook
    keeps one line per bar in its final state (a widget would be saved as its first frame, "0 %")."""


def bar(*args, **kwargs) -> tqdm:
    """A tqdm bar (`tqdm.auto` arguments) that also feeds the runner's live line; text under the runner."""
    return (_TextBar if os.environ.get(ENV) else _AutoBar)(*args, **kwargs)


def watch(status_file: Path, show: Callable[[str], None], every_s: float = 1.0) -> Callable[[], None]:
    """Call `show(line)` whenever the status file changes, from a daemon thread; returns `stop()`."""
    done = threading.Event()

    def loop() -> None:
        seen = None
        while not done.wait(every_s):
            try:
                line = status_file.read_text()
            except FileNotFoundError:
                continue
            if line != seen:
                seen = line
                show(line)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        thread.join(timeout=2 * every_s)

    return stop
