"""The picks table: one row per particle position, the format every stage exchanges.

Columns (in this order):

``experiment`` (str)
    Run / tomogram name.
``particle_type`` (str)
    Particle type: the name of a type of the particle set in use
    (:class:`cryopick.core.particles.ParticleSet`; CZII names and aliases are
    canonicalised even without a set, other names are kept as given).
``x``, ``y``, ``z`` (float)
    Position in Å in the tomogram frame (see :mod:`cryopick.core.coords`).
``score`` (float)
    Confidence of the pick; NaN when unknown (e.g. ground truth).
``transformation`` (object, optional)
    4x4 rotation/translation matrix per pick (copick's ``transformation_``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from cryopick.core.errors import InputError
from cryopick.core.particles import (
    ParticleSet,
    UnknownParticleError,
    default_particle_set,
)

PICKS_COLUMNS: tuple[str, ...] = ("experiment", "particle_type", "x", "y", "z", "score")
TRANSFORMATION_COLUMN = "transformation"
IDENTITY_MATRIX: tuple[tuple[float, ...], ...] = tuple(
    tuple(float(i == j) for j in range(4)) for i in range(4)
)


def empty_picks() -> pd.DataFrame:
    """Return a picks table with no rows and the standard columns and dtypes."""
    return pd.DataFrame(
        {
            "experiment": pd.Series([], dtype=object),
            "particle_type": pd.Series([], dtype=object),
            "x": pd.Series([], dtype=np.float64),
            "y": pd.Series([], dtype=np.float64),
            "z": pd.Series([], dtype=np.float64),
            "score": pd.Series([], dtype=np.float64),
        }
    )


def _broadcast(value: str | Sequence[str], n: int, what: str) -> list[str]:
    if isinstance(value, str):
        return [value] * n
    values = [str(v) for v in value]
    if len(values) != n:
        raise ValueError(f"{what} has {len(values)} entries for {n} coordinates")
    return values


def make_picks(
    experiment: str | Sequence[str],
    particle_type: str | Sequence[str],
    coords_zyx_A: ArrayLike,
    score: float | ArrayLike | None = None,
    transformation: ArrayLike | None = None,
    particles: ParticleSet | None = None,
) -> pd.DataFrame:
    """Build a validated picks table from positions in (z, y, x) Å order.

    Parameters
    ----------
    experiment : str or sequence of str
        Run name, one for all picks or one per pick.
    particle_type : str or sequence of str
        Particle name or alias, one for all picks or one per pick.
    coords_zyx_A : array_like, shape (N, 3)
        Positions in Å, (z, y, x) order (the array axis order).
    score : float or array_like of shape (N,), optional
        Pick confidences; NaN when omitted.
    transformation : array_like, shape (N, 4, 4), optional
        Per-pick 4x4 matrices; the ``transformation`` column is added only when given.
    particles : ParticleSet, optional
        Set the names must belong to (see :func:`validate_picks`).

    Returns
    -------
    pandas.DataFrame
        The picks table, particle names canonicalised, x/y/z in Å.
    """
    coords = np.asarray(coords_zyx_A, dtype=np.float64).reshape(-1, 3)
    n = len(coords)
    scores = (
        np.full(n, np.nan)
        if score is None
        else np.broadcast_to(np.asarray(score, dtype=np.float64), (n,))
    )
    df = pd.DataFrame(
        {
            "experiment": pd.Series(_broadcast(experiment, n, "experiment"), dtype=object),
            "particle_type": pd.Series(_broadcast(particle_type, n, "particle_type"), dtype=object),
            "x": coords[:, 2],
            "y": coords[:, 1],
            "z": coords[:, 0],
            "score": np.array(scores, dtype=np.float64),
        }
    )
    if transformation is not None:
        mats = np.asarray(transformation, dtype=np.float64).reshape(-1, 4, 4)
        if len(mats) != n:
            raise ValueError(f"transformation has {len(mats)} matrices for {n} coordinates")
        df[TRANSFORMATION_COLUMN] = pd.Series(list(mats), dtype=object)
    return validate_picks(df, particles=particles)


def canonical_names(
    names: ArrayLike, source: str | Path | None = None, particles: ParticleSet | None = None
) -> dict[str, str]:
    """Map each distinct particle name of a table to its canonical name.

    With ``particles`` every name must be a name or alias of that set. Without, names and
    aliases of the CZII set become their CZII names and any other name is kept, stripped
    of surrounding spaces (custom types are legal in a picks table).

    Raises
    ------
    InputError
        For an empty name, or with ``particles`` a name the set does not know (the
        message lists the set's names).
    """
    lookup = default_particle_set() if particles is None else particles
    canonical: dict[str, str] = {}
    for name in pd.unique(np.asarray(names, dtype=object).ravel()):
        text = str(name)
        if not text.strip():
            raise InputError(source, f"a pick has an empty particle type ({text!r})")
        if particles is None and text not in lookup:
            canonical[text] = text.strip()
            continue
        try:
            canonical[text] = lookup.resolve(text)
        except UnknownParticleError as err:
            raise InputError(source, str(err)) from None
    return canonical


def validate_picks(
    df: pd.DataFrame, source: str | Path | None = None, particles: ParticleSet | None = None
) -> pd.DataFrame:
    """Check a picks table and return a clean copy.

    Canonicalises particle names (aliases such as ``ferritin-complex`` become
    ``apo-ferritin``, see :func:`canonical_names`), casts columns to their dtypes, adds a
    NaN ``score`` column if missing, orders the columns, drops any other column and
    resets the index.

    Parameters
    ----------
    df : pandas.DataFrame
        Table with at least ``experiment``, ``particle_type``, ``x``, ``y``, ``z``.
    source : str or Path, optional
        The file the table came from, named in error messages.
    particles : ParticleSet, optional
        The set every particle name must belong to. None: CZII names and aliases are
        canonicalised, other names kept as they are.

    Returns
    -------
    pandas.DataFrame
        The validated picks table.

    Raises
    ------
    InputError
        If columns are missing, a particle name is empty or not in ``particles`` (the
        message lists the set's names), or a coordinate or transformation is not a
        finite number.
    """
    missing = [c for c in PICKS_COLUMNS[:5] if c not in df.columns]
    if missing:
        raise InputError(
            source,
            f"picks table lacks column(s) {', '.join(missing)}; "
            f"expected {', '.join(PICKS_COLUMNS)} (x, y, z in Å)",
        )
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    out["experiment"] = pd.Series(df["experiment"].astype(str).to_numpy(), dtype=object)
    missing_type = df["particle_type"].isna().to_numpy()
    if missing_type.any():
        row = int(np.flatnonzero(missing_type)[0])
        raise InputError(
            source, f"{int(missing_type.sum())} pick(s) have no particle type (first at row {row})"
        )
    names = df["particle_type"].astype(str).to_numpy()
    canonical = canonical_names(names, source, particles)
    out["particle_type"] = pd.Series([canonical[n] for n in names], dtype=object)
    for axis in ("x", "y", "z"):
        values = pd.to_numeric(pd.Series(df[axis].to_numpy()), errors="coerce").to_numpy(
            dtype=np.float64
        )
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(
                source,
                f"{int(bad.sum())} pick(s) have a non-finite or non-numeric {axis} coordinate "
                f"(first in pick {row + 1}, counting from 1: {str(df[axis].iloc[row])!r})",
            )
        out[axis] = values
    if "score" in df.columns:
        out["score"] = pd.to_numeric(pd.Series(df["score"].to_numpy()), errors="coerce").to_numpy(
            dtype=np.float64
        )
    else:
        out["score"] = np.nan
    if TRANSFORMATION_COLUMN in df.columns:
        out[TRANSFORMATION_COLUMN] = pd.Series(
            [_check_matrix(m, source) for m in df[TRANSFORMATION_COLUMN]], dtype=object
        )
    return out


def group_rows(
    df: pd.DataFrame, columns: Sequence[str], *, sort: bool = True
) -> dict[tuple[str, ...], NDArray[np.intp]]:
    """Row positions of ``df`` for each combination of values of ``columns``.

    ``df.groupby(columns).indices`` with its keys typed: a tuple of ``str``, one per column.
    """
    return {
        tuple(str(v) for v in key) if isinstance(key, tuple) else (str(key),): np.asarray(idx)
        for key, idx in df.groupby(list(columns), sort=sort).indices.items()
    }


def _check_matrix(matrix: ArrayLike | None, source: str | Path | None) -> np.ndarray:
    if matrix is None or (isinstance(matrix, (float, np.floating)) and math.isnan(matrix)):
        return np.array(IDENTITY_MATRIX)
    try:
        arr = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.empty(0)  # e.g. a matrix that a CSV round trip turned into text
    if arr.shape != (4, 4) or not np.isfinite(arr).all():
        raise InputError(source, f"a pick transformation is not a finite 4x4 matrix: {matrix!r}")
    return arr
