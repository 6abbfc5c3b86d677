"""Checks that picks and truth describe the same runs in the same units, before scoring.

The metric pairs picks with truth by run name and by distance in Å. Two mistakes give a
score of 0 without an error: run names that differ (``TS_1`` against ``ts1``), and
positions in other units (pixels, or nm, where Å are expected).
:func:`check_experiments` names the runs that do not pair; :func:`check_position_scale`
warns when the picks' positions span a range several times smaller or larger than the
truth's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cryopick.core.errors import InputError

log = logging.getLogger(__name__)

SCALE_RATIO_LIMIT = 4.0
"""Picks spanning this many times less (or more) than the truth are likely in other units."""

MIN_POSITIONS = 20
"""Picks and truth points (of the shared runs) needed to compare their spans."""


def _some(names: Sequence[str], n: int = 5) -> str:
    """List the first ``n`` names, and how many more there are."""
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def check_experiments(
    truth: pd.DataFrame,
    picks: pd.DataFrame,
    truth_source: str | Path | None = None,
    picks_source: str | Path | None = None,
) -> None:
    """Say which runs of the picks and of the truth do not match by name.

    The metric pairs picks and truth by run name (``experiment``): picks of runs without
    truth are ignored, and truth runs without picks count as all missed. Both are logged
    as warnings, naming the runs.

    Parameters
    ----------
    truth, picks : pandas.DataFrame
        Truth and picks tables.
    truth_source, picks_source : str or Path, optional
        Where they came from, named in the messages.

    Raises
    ------
    InputError
        If there are picks but none of their runs is a truth run (the score would be 0
        for a naming mismatch); the message lists a few run names of each side.
    """
    truth_runs, pick_runs = set(truth["experiment"]), set(picks["experiment"])
    if pick_runs and truth_runs and not pick_runs & truth_runs:
        truth_name = f"truth ({truth_source})" if truth_source else "truth"
        raise InputError(
            picks_source,
            f"no run of the picks is a run of the {truth_name}: picks have "
            f"{_some(sorted(pick_runs))}; truth has {_some(sorted(truth_runs))} "
            "(run names must be equal)",
        )
    if extra := sorted(pick_runs - truth_runs):
        log.warning(
            "%s: %d run(s) have no truth, their picks are not scored: %s",
            picks_source or "picks",
            len(extra),
            _some(extra),
        )
    if missing := sorted(truth_runs - pick_runs):
        log.warning(
            "%s: %d truth run(s) have no picks (all their particles count as missed): %s",
            truth_source or "truth",
            len(missing),
            _some(missing),
        )


def check_position_scale(
    truth: pd.DataFrame,
    picks: pd.DataFrame,
    picks_source: str | Path | None = None,
) -> float | None:
    """Warn when the picks' positions span a very different range from the truth's.

    Positions in pixels of a 10 Å tomogram span a tenth of the same positions in Å; a
    picker's picks and the truth of the same runs span about the same. Compared over the
    runs both tables have, on x and y (the axes a tomogram is widest along): the 98th
    percentile of each axis's positions.

    Parameters
    ----------
    truth, picks : pandas.DataFrame
        Truth and picks tables (positions in Å).
    picks_source : str or Path, optional
        Where the picks came from, named in the warning.

    Returns
    -------
    float or None
        The picks' span over the truth's (geometric mean of x and y), or None when too few
        positions of shared runs (:data:`MIN_POSITIONS` each) allow the comparison.
    """
    shared = set(truth["experiment"]) & set(picks["experiment"])
    truth = truth[truth["experiment"].isin(shared)]
    picks = picks[picks["experiment"].isin(shared)]
    if len(truth) < MIN_POSITIONS or len(picks) < MIN_POSITIONS:
        return None
    spans = []
    for table in (picks, truth):
        xy = np.abs(table[["x", "y"]].to_numpy(np.float64))
        spans.append(np.percentile(xy, 98, axis=0))
    if np.any(spans[1] <= 0) or np.any(spans[0] <= 0):
        return None
    ratio = float(np.sqrt(np.prod(spans[0] / spans[1])))
    if 1.0 / SCALE_RATIO_LIMIT <= ratio <= SCALE_RATIO_LIMIT:
        return ratio
    log.warning(
        "%s: the picks' positions reach %.0f Å in x and y, the truth's %.0f Å (%.3g times): "
        "positions must be in Å (picks in pixels or nm look like this; STAR files in pixels "
        "need --star-pixel-A)",
        picks_source or "picks",
        float(np.mean(spans[0])),
        float(np.mean(spans[1])),
        ratio,
    )
    return ratio


def describe_position_problems(
    picks: pd.DataFrame, shape_zyx: tuple[int, int, int], spacing_A: float
) -> str | None:
    """Say what is wrong with one run's positions (Å) for its tomogram, or None.

    Two signs of positions in other units: more than 5 % of them outside the volume (by
    more than 5 voxels), or, with :data:`MIN_POSITIONS` or more, all of them crowded into
    less than a quarter of its width on both x and y (pixels of a 10 Å tomogram read as Å
    fill a tenth of it).

    Parameters
    ----------
    picks : pandas.DataFrame
        One run's picks (``x``, ``y``, ``z`` in Å).
    shape_zyx : tuple of int
        The tomogram's shape in voxels.
    spacing_A : float
        Its voxel size in Å (positions: voxel ``i`` at ``i * spacing_A``).
    """
    if picks.empty:
        return None
    xyz_A = picks[["x", "y", "z"]].to_numpy(np.float64)
    extent_A = (np.asarray(shape_zyx[::-1], np.float64) - 1.0) * spacing_A
    margin_A = 5.0 * spacing_A
    outside = np.any((xyz_A < -margin_A) | (xyz_A > extent_A + margin_A), axis=1)
    if outside.mean() > 0.05:
        return (
            f"{int(outside.sum())} of {len(picks)} picks lie outside the tomogram "
            f"({' x '.join(f'{e:.0f}' for e in extent_A)} Å in x, y, z): are the positions "
            "in Å, and of this tomogram?"
        )
    span_xy = np.percentile(np.abs(xyz_A[:, :2]), 98, axis=0)
    if len(picks) >= MIN_POSITIONS and np.all(span_xy < extent_A[:2] / SCALE_RATIO_LIMIT):
        return (
            f"all {len(picks)} picks lie within {span_xy.max():.0f} Å of the origin in x and "
            f"y, of a tomogram {extent_A[0]:.0f} x {extent_A[1]:.0f} Å wide: are the "
            "positions in pixels? They must be in Å"
        )
    return None


def warn_position_problems(
    picks: pd.DataFrame,
    tomogram_shapes: dict[str, tuple[tuple[int, int, int], float]],
    source: str | Path | None = None,
) -> None:
    """Log :func:`describe_position_problems` of every run of ``picks`` with a known shape.

    ``tomogram_shapes`` maps run name to (shape zyx in voxels, voxel size in Å).
    """
    for run, run_picks in picks.groupby("experiment"):
        if str(run) in tomogram_shapes:
            shape, spacing_A = tomogram_shapes[str(run)]
            if problem := describe_position_problems(run_picks, shape, spacing_A):
                log.warning("%s: run %s: %s", source or "picks", run, problem)
