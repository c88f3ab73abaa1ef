"""Progress of long work where the user looks: a live bar on a terminal, plain lines when output is a pipe.

``mlflow run`` pipes a step's output, so a terminal bar never shows there. :class:`Progress` then writes one
line at least every ``SEGMODELS_PROGRESS_SECONDS`` seconds (default 30), with the count, rate and ETA, from a
timer thread, so a slow first batch or a stalled download still reports; and one line when the work ends.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

log = logging.getLogger("segmodels.progress")

INTERVAL_ENV = "SEGMODELS_PROGRESS_SECONDS"
DEFAULT_INTERVAL_S = 30.0
T = TypeVar("T")


def interval_seconds() -> float:
    """Seconds between progress lines on a pipe: ``$SEGMODELS_PROGRESS_SECONDS`` (a positive number), else 30."""
    text = os.environ.get(INTERVAL_ENV, "")
    try:
        value = float(text)
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if 0 < value < float("inf") else DEFAULT_INTERVAL_S


def quiet_mlflow_transfers_on_pipes() -> None:
    """On a pipe (``mlflow run``, a CI log, a captured stream) no MLflow artifact transfer bars: they redraw with
    carriage returns; this module reports progress there instead."""
    if not on_terminal():
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def on_terminal(stream=None) -> bool:
    """True when `stream` (stderr by default) is a terminal, where a live bar redraws in place."""
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def duration(seconds: float) -> str:
    """`seconds` as `1h02m`, `4m05s` or `12s`."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Count `total` units of work labelled `label` (`total` None: unknown); a context manager.

    `update(n)` adds done units; `scale` turns units into the shown figure (e.g. bytes to MB with unit `MB`).
    `enabled=False` shows nothing (another rank's copy, a disabled bar)."""

    def __init__(
        self,
        label: str,
        total: float | None = None,
        unit: str = "it",
        *,
        enabled: bool = True,
        scale: float = 1.0,
        interval: float | None = None,
    ):
        self.label, self.total, self.unit, self.scale = label, total, unit, scale
        self.done = 0.0
        self.enabled = enabled
        self.start = time.monotonic()
        self._bar = None
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._lock = threading.Lock()
        if not enabled:
            return
        if on_terminal():
            self._bar = tqdm(
                total=None if total is None else total * scale,
                desc=label,
                unit=unit,
                leave=False,
                dynamic_ncols=True,
                unit_scale=scale != 1.0,
            )
        else:
            self._interval = interval if interval is not None else interval_seconds()
            self._timer = threading.Thread(target=self._report_every_interval, name=f"progress {label}", daemon=True)
            self._timer.start()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, failed, *_) -> None:
        self.close(report=not failed)

    def update(self, n: float = 1) -> None:
        """Add `n` units done."""
        with self._lock:
            self.done += n
        if self._bar is not None:
            self._bar.update(n * self.scale)

    def line(self) -> str:
        """`label: done/total unit (pct%), rate unit/s, elapsed, ETA` as now."""
        with self._lock:
            done = self.done
        elapsed = time.monotonic() - self.start
        shown = done * self.scale
        rate = shown / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.label}: {_figure(shown)}"]
        if self.total:
            total = self.total * self.scale
            parts[0] += f"/{_figure(total)} {self.unit} ({100 * done / self.total:.0f}%)"
        else:
            parts[0] += f" {self.unit}"
        parts.append(f"{rate:.3g} {self.unit}/s")
        parts.append(f"{duration(elapsed)} elapsed")
        if self.total and done and done < self.total:
            parts.append(f"ETA {duration((self.total - done) * self.scale / rate) if rate else '?'}")
        return ", ".join(parts)

    def _report_every_interval(self) -> None:
        while not self._stop.wait(self._interval):
            log.info(self.line())

    def close(self, report: bool = True) -> None:
        """Stop the bar or the timer; on a pipe, one last line when the work took longer than an interval."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._timer is not None:
            self._stop.set()
            self._timer.join()
            self._timer = None
            if report and time.monotonic() - self.start >= self._interval:
                log.info(self.line())


def track(
    items: Iterable[T], label: str, total: int | None = None, unit: str = "it", *, enabled: bool = True
) -> Iterator[T]:
    """Yield `items`, counting each as one unit of a :class:`Progress` (`total` defaults to ``len(items)``)."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with Progress(label, total, unit, enabled=enabled) as progress:
        for item in items:
            yield item
            progress.update()


def _figure(value: float) -> str:
    return f"{value:.0f}" if value == int(value) or value >= 100 else f"{value:.1f}"
