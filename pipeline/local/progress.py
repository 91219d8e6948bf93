"""How a local run shows its steps: a live spinner in a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
from typing import IO

from pipeline.local.runner import StepRun

DETAIL_WIDTH = 90  # a failed step's detail on its status line; the whole error follows on its own line


def shorten(text: str, width: int) -> str:
    """``text`` cut at a space to at most ``width`` characters, never inside a word or path.

    Examples
    --------
    >>> shorten("no such file /data/in/transactions.csv", 30)
    'no such file ...'
    """
    if len(text) <= width:
        return text
    cut = text[:width - 3].rsplit(" ", 1)[0] if " " in text[:width - 3] else ""
    return f"{cut} ..." if cut else "..."


def describe_step(run: StepRun) -> str:
    """One status line for a finished step."""
    mark = {"Succeeded": "ok", "Failed": "FAILED", "Skipped": "skipped"}.get(run.status, run.status)
    timing = f"{run.seconds:6.1f} s" if run.status in {"Succeeded", "Failed"} else " " * 8
    detail = run.detail if run.status != "Failed" else shorten(run.detail, DETAIL_WIDTH)
    detail = f"  {detail}" if detail else ""
    return f"  {run.name:<20} {run.type:<14} {mark:<8} {timing}{detail}"


class StepReporter:
    """Callable for ``LocalRunner(on_step=...)``.

    In a terminal a rich spinner with the elapsed time shows the step that is running;
    elsewhere (CI, SageMaker, files) only the finished steps' lines are written.
    """

    def __init__(self, stream: IO[str] | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self._progress = None
        if self.live:
            from rich.console import Console

            self._console = Console(file=self.stream)

    def __call__(self, run: StepRun) -> None:
        if run.status == "Executing":
            if self.live:
                from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

                self._progress = Progress(SpinnerColumn(), TextColumn("  {task.description}"), TimeElapsedColumn(),
                                          console=self._console, transient=True)
                self._progress.add_task(f"{run.name:<20} {run.type:<14} running", total=None)
                self._progress.start()
            return
        self.stop()
        print(describe_step(run), file=self.stream, flush=True)

    def stop(self) -> None:
        """End the live display (if any)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
