"""The outcome of a multi-run prediction: one :class:`cryopick.io.runs.RunResult` per run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryopick.io.runs import RunResult

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RunResult", "RunsResult"]


@dataclass
class RunsResult:
    """What :func:`cryopick.scale.predict.predict_runs` did, run by run.

    Attributes
    ----------
    runs : list of RunResult
        One result per run handled, sorted by run name.
    output : Path, optional
        Where the merged picks were written; None when nothing was (every run failed, a
        shard whose siblings are not done yet, or no output was asked for).
    parts_dir : Path, optional
        ``<output>.parts`` of resumable tasks; None when the runs were predicted one after
        the other in this process, without parts.
    missing : list of str
        Runs without up-to-date picks (failed, or in shards not finished yet).
    picks : pandas.DataFrame, optional
        The picks of the runs that succeeded, when predicted in this process.
    """

    runs: list[RunResult]
    output: Path | None = None
    parts_dir: Path | None = None
    missing: list[str] = field(default_factory=list)
    picks: pd.DataFrame | None = None

    @property
    def complete(self) -> bool:
        """True when every run (of every shard) has up-to-date picks."""
        return not self.missing

    @property
    def failed(self) -> list[RunResult]:
        """Results of the runs that failed, with their ``error``."""
        return [r for r in self.runs if r.status == "failed"]

    @property
    def failures(self) -> dict[str, str]:
        """Failed run -> one-line reason."""
        return {r.run: r.error for r in self.failed}

    @property
    def processed(self) -> list[str]:
        """Runs predicted now (not skipped, not failed)."""
        return [r.run for r in self.runs if r.status == "done"]

    @property
    def skipped(self) -> list[str]:
        """Runs whose results were already up to date."""
        return [r.run for r in self.runs if r.status == "skipped"]
