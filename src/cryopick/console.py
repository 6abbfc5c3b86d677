"""Console output shared by the commands: progress bars (on stderr, so stdout stays data)."""

from __future__ import annotations

from typing import Any


class _NoBar:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def window_progress_bar(show: bool) -> Any:
    """Return a rich progress bar over windows, on stderr (a no-op when ``show`` is False)."""
    if not show:
        return _NoBar()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("windows"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
