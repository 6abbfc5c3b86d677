"""Picks as CSV: ``experiment,particle_type,x,y,z[,score]`` in Å, and the Kaggle submission.

The Kaggle submission format is exactly ``id,experiment,particle_type,x,y,z`` with
``id`` running 0..N-1. The reader accepts both and ignores ``id``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cryopick.core.errors import InputError
from cryopick.core.picks import PICKS_COLUMNS, validate_picks
from cryopick.io.atomic import atomic_path


def read_csv_picks(path: str | Path) -> pd.DataFrame:
    """Read a picks CSV (plain or Kaggle submission) into a picks table.

    Parameters
    ----------
    path : str or Path
        CSV with columns ``experiment, particle_type, x, y, z`` (Å) and optionally
        ``score`` and ``id`` (ignored).

    Returns
    -------
    pandas.DataFrame
        The validated picks table.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"experiment": str, "particle_type": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot read picks CSV: {err}") from None
    return validate_picks(df, source=path)


def write_csv_picks(df: pd.DataFrame, path: str | Path) -> Path:
    """Write picks as ``experiment,particle_type,x,y,z,score`` (Å), atomically."""
    df = validate_picks(df)
    with atomic_path(path) as tmp:
        df.loc[:, list(PICKS_COLUMNS)].to_csv(tmp, index=False)
    return Path(path)


def write_kaggle_picks(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a Kaggle submission ``id,experiment,particle_type,x,y,z`` (Å), atomically."""
    df = validate_picks(df)
    out = df.loc[:, ["experiment", "particle_type", "x", "y", "z"]]
    out.insert(0, "id", range(len(out)))
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False)
    return Path(path)
