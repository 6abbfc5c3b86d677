"""Picks as CSV: ``experiment,particle_type,x,y,z[,score]`` in Å, and the Kaggle submission.

The plain CSV holds any particle types (the names of the set in use). The Kaggle
submission format is exactly ``id,experiment,particle_type,x,y,z`` with ``id`` running
0..N-1, and only for the CZII challenge's six types. The reader accepts both and
ignores ``id``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet, default_particle_set
from cryopick.core.picks import PICKS_COLUMNS, validate_picks
from cryopick.io.atomic import atomic_path

# pandas before 3.1 parses floats with its fast "high" precision by default, which misses
# the written value by one unit in the last place for about one number in eight;
# "round_trip" is exact (pandas 3.1 is exact by default and deprecates the argument)
_PANDAS_VERSION = tuple(int(n) for n in re.findall(r"\d+", pd.__version__)[:2])
_EXACT_FLOATS: dict[str, Any] = (
    {} if _PANDAS_VERSION >= (3, 1) else {"float_precision": "round_trip"}
)


def read_csv_exactly(path: str | Path, **options: Any) -> pd.DataFrame:
    """``pandas.read_csv`` that reads every float back exactly as it was written.

    Parameters
    ----------
    path : str or Path
        The CSV file.
    **options
        Passed to :func:`pandas.read_csv`.
    """
    table: pd.DataFrame = pd.read_csv(path, **options, **_EXACT_FLOATS)
    return table


def read_csv_picks(path: str | Path, particles: ParticleSet | None = None) -> pd.DataFrame:
    """Read a picks CSV (plain or Kaggle submission) into a picks table.

    Parameters
    ----------
    path : str or Path
        CSV with columns ``experiment, particle_type, x, y, z`` (Å) and optionally
        ``score`` and ``id`` (ignored).
    particles : ParticleSet, optional
        Set the particle names must belong to; None keeps names outside the CZII set
        as they are (see :func:`cryopick.core.picks.validate_picks`).

    Returns
    -------
    pandas.DataFrame
        The validated picks table.
    """
    path = Path(path)
    try:
        df = read_csv_exactly(path, dtype={"experiment": str, "particle_type": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot read picks CSV: {err}") from None
    return validate_picks(df, source=path, particles=particles)


def write_csv_picks(
    df: pd.DataFrame, path: str | Path, particles: ParticleSet | None = None
) -> Path:
    """Write picks as ``experiment,particle_type,x,y,z,score`` (Å), atomically.

    With ``particles`` every name must be a type of that set (written under its name).
    """
    df = validate_picks(df, particles=particles)
    with atomic_path(path) as tmp:
        df.loc[:, list(PICKS_COLUMNS)].to_csv(tmp, index=False)
    return Path(path)


def write_kaggle_picks(
    df: pd.DataFrame, path: str | Path, particles: ParticleSet | None = None
) -> Path:
    """Write a Kaggle submission ``id,experiment,particle_type,x,y,z`` (Å), atomically.

    Raises
    ------
    InputError
        If ``particles`` is not the CZII set, or a pick's type is not a CZII type: the
        submission format is the challenge's (the message names the types).
    """
    czii = default_particle_set()
    if particles is not None and not particles.is_czii:
        raise InputError(
            path,
            "the Kaggle submission format is for the CZII challenge's six types, not for "
            f"{', '.join(particles.names)}: write --format csv (or star, copick)",
        )
    df = validate_picks(df)  # CZII names canonical, others as they are
    others = sorted(set(df["particle_type"]) - set(czii.names))
    if others:
        raise InputError(
            path,
            f"the Kaggle submission format is for the CZII challenge's six types, not for "
            f"{', '.join(others)}: write --format csv (or star, copick)",
        )
    out = df.loc[:, ["experiment", "particle_type", "x", "y", "z"]]
    out.insert(0, "id", range(len(out)))
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False)
    return Path(path)
