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
