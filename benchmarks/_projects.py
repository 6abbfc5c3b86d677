"""Helpers shared by the benchmark scripts: scoring runs of several simulated projects.

Simulated projects name their runs ``sim_0000``, ``sim_0001``...; to score several
projects together, each run is renamed ``project_folder/run``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cryopick.io.picks import read_picks


def run_key(project: Path, run: str) -> str:
    """Experiment name unique across projects: ``project_folder/run``."""
    return f"{Path(project).parent.name}/{run}"


def rename_runs(picks: pd.DataFrame, project: Path) -> pd.DataFrame:
    """The picks of one project with experiments renamed by :func:`run_key`."""
    return picks.assign(experiment=[run_key(project, r) for r in picks["experiment"]])


def read_truth(projects: list[Path]) -> pd.DataFrame:
    """The simulation's picks of every project, experiments renamed by :func:`run_key`."""
    frames = [rename_runs(read_picks(p, user_id="simulation"), p) for p in projects]
    return pd.concat(frames, ignore_index=True)
