"""Console output: progress bars and tables, all on stderr (stdout stays data).

Library functions take ``show_progress`` flags and draw their bars with
:func:`window_progress_bar` (windows of one tomogram), :class:`RunProgress` (runs of a
multi-run prediction) or :func:`step_progress_bar` (counted steps, e.g. simulated runs);
the command line prints the tables (:func:`print_pick_summary`, :func:`print_run_report`).
rich is imported only when something is drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from cryopick.core.particles import ParticleSet
    from cryopick.evaluation.metric import ScoreResult
    from cryopick.io.runs import RunResult
    from cryopick.scale.results import RunsResult
    from cryopick.training.loop import TrainProgress, TrainState

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
"""How log messages print (the CLI and the demo): ``WARNING cryopick.x: what happened``."""


class _NoBar:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def window_progress_bar(show: bool) -> Any:
    """Return a rich progress bar over windows, on stderr (a no-op when ``show`` is False)."""
    if not show:
        return _NoBar()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("windows"),
        TimeElapsedColumn(),
        console=_stderr_console(),
    )


@contextmanager
def step_progress_bar(show: bool, total: int, label: str) -> Iterator[Callable[[int, str], None]]:
    """Show a progress bar over ``total`` steps on stderr; yield ``advance(n, description)``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=_stderr_console(), disable=not show) as bar:
        task = bar.add_task(label, total=total)

        def advance(n: int, description: str) -> None:
            bar.update(task, advance=n, description=description)

        yield advance


class RunProgress:
    """A bar over the runs of a multi-run prediction, on stderr; nothing when disabled.

    Use as a context manager and call :meth:`advance` after each run.
    """

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.enabled = total, enabled
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> RunProgress:
        if self.enabled:
            from rich.progress import Progress

            self._progress = Progress(console=_stderr_console(), transient=False)
            self._progress.start()
            self._task = self._progress.add_task("predicting runs", total=self.total)
        return self

    def advance(self) -> None:
        """Count one more run as finished."""
        if self._progress is not None:
            self._progress.advance(self._task)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def build_run_table(results: Sequence[RunResult], title: str = "") -> Any:
    """Build a rich table of run results: run, status, pick count, seconds and error."""
    from rich.table import Table

    table = Table(title=title or f"{len(results)} runs")
    for col in ("run", "status", "picks", "seconds", "error"):
        table.add_column(col, justify="right" if col in ("picks", "seconds") else "left")
    for result in results:
        seconds = result.seconds
        table.add_row(
            result.run,
            result.status,
            "" if result.n_picks is None else str(result.n_picks),
            "" if seconds is None or seconds != seconds else f"{seconds:.1f}",
            result.error,
            style="red" if result.status == "failed" else None,
        )
    return table


def print_run_report(result: RunsResult, output_label: str | Path | None = None) -> None:
    """Print the per-run table of resumable tasks, then where the picks went (stderr).

    Failed runs are in the table; the command line lists them again with its error.
    """
    console = _stderr_console()
    console.print(build_run_table(result.runs, title=str(result.parts_dir)))
    if result.output is not None:
        n_runs = len(result.runs) - len(result.failed)
        console.print(f"wrote picks of {n_runs} runs to {output_label or result.output}")


def print_pick_summary(
    picks: pd.DataFrame, runs: list[str], particles: ParticleSet | None = None
) -> None:
    """Print picks per particle type (rows: ``particles``' types) and run (columns)."""
    from rich.table import Table

    from cryopick.inference.pipeline import count_picks_per_run

    counts = count_picks_per_run(picks, runs, particles)  # rows: runs + total; columns: types
    per_run = counts.drop(index="total")
    table = Table(title="picks per particle type")
    table.add_column("particle type")
    if len(per_run) <= 6:
        columns = {str(run): per_run.loc[run] for run in per_run.index}
    else:
        columns = {"min/run": per_run.min(), "median": per_run.median(), "max/run": per_run.max()}
    columns["total"] = counts.loc["total"]
    for name in columns:
        table.add_column(name, justify="right")
    for ptype in counts.columns:
        table.add_row(ptype, *(f"{col[ptype]:g}" for col in columns.values()))
    _stderr_console().print(table)


def format_score_table(result: ScoreResult, width: int = 100) -> str:
    """Render a score (:class:`cryopick.evaluation.metric.ScoreResult`) as a text table."""
    import io

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"score (CZII metric, F{result.beta:g}, weighted)", title_justify="left")
    table.add_column("particle type", justify="left")
    for name in ("TP", "FP", "FN", "precision", "recall", f"F{result.beta:g}", "weight"):
        table.add_column(name, justify="right")
    for row in result.per_class.to_dict("records"):
        table.add_row(
            row["particle_type"],
            str(int(row["tp"])),
            str(int(row["fp"])),
            str(int(row["fn"])),
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['fbeta']:.3f}",
            f"{row['weight']:g}",
        )
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    console.print(table)
    console.print(f"score: {result.score:.4f}")
    return buffer.getvalue()


def _score_text(best_score: float | None) -> str:
    return "-" if best_score is None else f"{best_score:.3f}"


@contextmanager
def training_progress_bar(
    show: bool, total_steps: int, start: TrainState
) -> Iterator[Callable[[TrainProgress], None]]:
    """Yield a training progress callback drawing a bar (steps, loss, rate, best validation)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:.2f} steps/s"),
        TextColumn("val {task.fields[score]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=_stderr_console(),
        disable=not show,
    )
    with bar:
        score = _score_text(start.best_score)
        task = bar.add_task(
            "train", total=total_steps, completed=start.step, loss=0.0, rate=0.0, score=score
        )

        def report(p: TrainProgress) -> None:
            score = _score_text(p.best_score)
            bar.update(task, completed=p.step, loss=p.loss, rate=p.steps_per_s, score=score)

        yield report
