"""The one progress bar of every long command (rich), with a free-text status; disabled, it does nothing."""

from __future__ import annotations

import time
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

__all__ = ["Progress"]


class Progress:
    """A rich progress bar with a free-text status (``enabled=False``: does nothing).

    Use as a context manager: ``with Progress(total, "training") as bar: bar.advance(1, "loss 1.23")``.

    Args:
        total: Steps (or frames, items) to the end.
        description: What is progressing, shown left of the bar.
        enabled: ``False`` (``--no-progress``, or a non-main rank) draws nothing.
        completed: Steps already done (a resumed run starts its bar there).
        transient: Remove the bar when done.
        rate_unit: Show the rate as the status, e.g. ``"frames"`` -> ``"212 frames/s"`` (a ``status`` given to
            :meth:`advance` takes its place).
    """

    def __init__(
        self,
        total: int,
        description: str,
        *,
        enabled: bool = True,
        completed: int = 0,
        transient: bool = False,
        rate_unit: str | None = None,
    ):
        self.enabled = enabled
        self.total, self.description, self.completed = total, description, completed
        self.transient, self.rate_unit = transient, rate_unit
        self._progress: Any = None
        self._start = 0.0

    def __enter__(self) -> Progress:
        if self.enabled:
            self._progress = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), TextColumn("{task.fields[status]}"), transient=self.transient,
            )  # fmt: skip
            self._progress.__enter__()
            self._task = self._progress.add_task(
                self.description, total=self.total, completed=self.completed, status=""
            )
            self._start = time.perf_counter()
        return self

    def advance(self, n: int = 1, status: str | None = None) -> None:
        """Count ``n`` more steps done; ``status`` replaces the text right of the bar."""
        self.completed += n
        if self._progress is not None:
            if status is None and self.rate_unit is not None:
                elapsed = max(time.perf_counter() - self._start, 1e-9)
                status = f"{self.completed / elapsed:.0f} {self.rate_unit}/s"
            fields = {} if status is None else {"status": status}
            self._progress.update(self._task, advance=n, **fields)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None
