"""Picks as RELION-5 particle STAR files (needs the ``starfile`` package: ``cryopick[star]``).

Written as RELION-5; read also from RELION-4, Warp and pytom files with positions in pixels
(:mod:`cryopick.io.picks.star_positions` turns every convention into Å).

RELION-5 stores tomogram particle positions as ``rlnCenteredCoordinate{X,Y,Z}Angst``:
Å relative to the tomogram centre. RELION turns them back into pixel positions as
``pixel = centered_A / pixel_size + centre`` with ``centre = size / 2.0`` (a float
division; ``ParticleSet::getParticleCoordDecenteredPixel`` in
``src/jaz/tomography/particle_set.cpp`` and ``TomogramSet::loadTomogram`` in
``src/jaz/tomography/tomogram_set.cpp``, RELION 5.0, github.com/3dem/relion), where
pixel ``i`` is centred at ``i`` (0-based). With cryopick's convention (voxel ``i``
centred at ``i * spacing_A`` Å) that gives, per axis of ``N`` voxels::

    position_A = centered_A + (N / 2) * spacing_A

so for even ``N`` the centre lies half a voxel past voxel ``N/2 - 1``, not at
``(N - 1) / 2``. Converting therefore needs each tomogram's shape and voxel size.

Columns written: ``rlnTomoName``, ``rlnCenteredCoordinate{X,Y,Z}Angst``,
``rlnClassNumber`` (the particle's label in the particle set in use, 1..N, see
:class:`cryopick.core.particles.ParticleSet`; the CZII set by default) and
``rlnAutopickFigureOfMerit`` (the score; omitted when no pick has one), after a first
comment line :data:`CRYOPICK_MARKER` listing the set's labels and names, e.g.
``(1 ring, 2 dumbbell)``. Orientations are not written.

``rlnClassNumber`` is read as the particle label only in files cryopick wrote (the
marker, or no columns beyond those above, as in files of earlier versions): elsewhere,
e.g. after a RELION Class3D job, it is a class of that job, not a particle type, and
the type of all picks must be given (``particle_type``). Labels are read in the set
given (default CZII); a file whose marker lists other names for its labels is refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet, UnknownParticleError, resolve_particle_set
from cryopick.core.picks import empty_picks, validate_picks
from cryopick.io.atomic import atomic_path
from cryopick.io.picks.star_positions import (
    CENTERED,
    PIXELS,
    TomogramShapes,
    find_particle_block,
    positions_xyz_A,
    tomogram_centre_xyz_A,
    tomogram_names,
)

CRYOPICK_MARKER = "# written by cryopick: rlnClassNumber is the particle label"
"""First line of STAR files cryopick writes: their rlnClassNumber is a particle label."""

_TYPE_HINT = (
    "give the particle type of all its picks (cryopick evaluate and report: "
    "--particle-type; evaluate: --truth-particle-type for the truth)"
)


def _import_starfile() -> ModuleType:
    try:
        import starfile
    except ImportError:  # pragma: no cover - starfile is a dev dependency
        raise InputError(
            None, "STAR files need the 'starfile' package: pip install 'cryopick[star]'"
        ) from None
    module: ModuleType = starfile  # untyped: its functions return Any
    return module


def _check_in_set(df: pd.DataFrame, path: str | Path, particle_set: ParticleSet) -> None:
    """Refuse picks whose type is not in the set whose labels become rlnClassNumber."""
    others = sorted({str(t) for t in df["particle_type"] if str(t) not in particle_set})
    if others:
        raise InputError(
            path,
            f"rlnClassNumber is a label of the particle set in use "
            f"({', '.join(particle_set.names)}); type(s) {', '.join(others)} are not in it: "
            "give the particle set of the picks",
        )


def write_star_picks(
    df: pd.DataFrame,
    path: str | Path,
    tomogram_shapes: TomogramShapes | None = None,
    particles: ParticleSet | None = None,
    pixel_A: float | None = None,
) -> Path:
    """Write picks as a RELION-5 particle STAR file (or in pixels), atomically.

    Parameters
    ----------
    df : pandas.DataFrame
        Picks table (Å, cryopick frame).
    path : str or Path
        Output ``.star`` file.
    tomogram_shapes : mapping
        ``experiment -> (shape_zyx, spacing_A)`` for every experiment in ``df``
        (RELION-5 positions only).
    particles : ParticleSet, optional
        The set whose labels are written as ``rlnClassNumber`` (default: the CZII set).
    pixel_A : float, optional
        Write ``rlnCoordinate{X,Y,Z}`` in pixels of this size (RELION-4, Warp; pixel
        ``i`` centred at ``i``) instead of RELION-5's Å from the tomogram centre.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    InputError
        If a pick's type is not in the set, or a tomogram shape is missing.
    """
    starfile = _import_starfile()
    particle_set = resolve_particle_set(particles)
    df = validate_picks(df)
    _check_in_set(df, path, particle_set)
    df = validate_picks(df, particles=particle_set)
    out = pd.DataFrame({"rlnTomoName": df["experiment"].astype(str).to_numpy()})
    columns = PIXELS if pixel_A is not None else CENTERED
    positions = _star_positions(df, tomogram_shapes, pixel_A, str(path))
    for column, xyz in zip(columns, positions.T, strict=True):
        out[column] = xyz
    out["rlnClassNumber"] = [particle_set.label(t) for t in df["particle_type"]]
    out["rlnAutopickFigureOfMerit"] = df["score"].to_numpy()
    if out["rlnAutopickFigureOfMerit"].isna().all():
        out = out.drop(columns="rlnAutopickFigureOfMerit")  # e.g. ground truth
    with atomic_path(path) as tmp:
        starfile.write({"particles": out}, tmp, float_format="%.6f", na_rep="nan")
        labels = ", ".join(f"{p.label} {p.name}" for p in particle_set)
        tmp.write_text(f"{CRYOPICK_MARKER} ({labels})\n{tmp.read_text()}")
    return Path(path)


def _star_positions(
    df: pd.DataFrame, shapes: TomogramShapes | None, pixel_A: float | None, path: str
) -> np.ndarray:
    """Positions (x, y, z) to write to ``path``: pixels of ``pixel_A``, else Å from centres."""
    xyz = df[["x", "y", "z"]].to_numpy(dtype=np.float64)
    if pixel_A is not None:
        if not pixel_A > 0:
            raise InputError(path, f"the STAR pixel size must be > 0, got {pixel_A}")
        return xyz / float(pixel_A)
    for exp, idx in df.groupby("experiment", sort=False).indices.items():
        xyz[idx] -= tomogram_centre_xyz_A(shapes, str(exp), path)
    return xyz


def _written_by_cryopick(path: Path, table: pd.DataFrame) -> bool:
    """Tell whether cryopick wrote this STAR file: its marker line, or only its columns."""
    with path.open(errors="replace") as f:
        head = [f.readline() for _ in range(3)]
    own = {"rlnTomoName", *CENTERED, *PIXELS, "rlnClassNumber", "rlnAutopickFigureOfMerit"}
    return any(line.startswith(CRYOPICK_MARKER) for line in head) or set(table) <= own


def _marker_labels(path: Path) -> dict[int, str]:
    """Label -> name as listed on the marker line of a file cryopick wrote (empty: none)."""
    with path.open(errors="replace") as f:
        head = [f.readline() for _ in range(3)]
    line = next((h for h in head if h.startswith(CRYOPICK_MARKER)), "")
    found = re.search(r"\((.*)\)\s*$", line[len(CRYOPICK_MARKER) :])
    labels: dict[int, str] = {}
    for item in found.group(1).split(", ") if found else ():
        number, _, name = item.strip().partition(" ")
        if number.isdigit() and name:
            labels[int(number)] = name
    return labels


def _check_marker(path: Path, particle_set: ParticleSet) -> None:
    """Refuse a file whose marker gives its labels other names than ``particle_set``."""
    written = _marker_labels(path)
    if any(n not in particle_set or particle_set.label(n) != k for k, n in written.items()):
        listed = ", ".join(f"{k} {v}" for k, v in sorted(written.items()))
        ours = ", ".join(f"{p.label} {p.name}" for p in particle_set)
        raise InputError(
            path,
            f"its rlnClassNumber labels are {listed}, not those of the particle set in use "
            f"({ours}): give the particle set it was written with",
        )


def _particle_types(
    path: Path, table: pd.DataFrame, particle_type: str | None, particle_set: ParticleSet
) -> list[str]:
    """Particle type of every row: ``particle_type``, else cryopick's rlnClassNumber."""
    if particle_type is not None:
        return [particle_type] * len(table)
    if "rlnClassNumber" not in table:
        raise InputError(path, f"no rlnClassNumber column: {_TYPE_HINT}")
    if not _written_by_cryopick(path, table):
        raise InputError(
            path,
            "not written by cryopick, so its rlnClassNumber is not a particle label (in "
            f"RELION it is e.g. a Class3D class): {_TYPE_HINT}",
        )
    _check_marker(path, particle_set)
    try:
        return [particle_set.by_label(int(c)).name for c in table["rlnClassNumber"]]
    except (UnknownParticleError, ValueError) as err:
        raise InputError(path, f"rlnClassNumber is not a particle label: {err}") from None


def read_star_picks(
    path: str | Path,
    tomogram_shapes: TomogramShapes | None = None,
    particle_type: str | None = None,
    particles: ParticleSet | None = None,
    pixel_A: float | None = None,
) -> pd.DataFrame:
    """Read a RELION-5, RELION-4 or Warp particle STAR file into a picks table.

    Parameters
    ----------
    path : str or Path
        STAR file with ``rlnCenteredCoordinate{X,Y,Z}Angst`` (RELION-5) or
        ``rlnCoordinate{X,Y,Z}`` (pixels), and ``rlnTomoName`` or ``rlnMicrographName``
        (:mod:`cryopick.io.picks.star_positions`); origin shifts are applied.
    tomogram_shapes : mapping
        ``experiment -> (shape_zyx, spacing_A)`` for every tomogram named in the file
        (RELION-5 positions only).
    particle_type : str, optional
        Type of all picks; needed unless the file was written by cryopick (only then is
        ``rlnClassNumber`` a particle label); overrides it otherwise.
    particles : ParticleSet, optional
        The set whose labels ``rlnClassNumber`` holds (default CZII).
    pixel_A : float, optional
        Pixel size of pixel positions; default the file's ``rlnTomoTiltSeriesPixelSize``.

    Returns
    -------
    pandas.DataFrame
        The picks table; ``score`` from ``rlnAutopickFigureOfMerit`` if present.
    """
    path = Path(path)
    starfile = _import_starfile()
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as err:  # starfile raises assorted parser errors
        raise InputError(path, f"cannot read STAR file: {err}") from None
    table, optics = find_particle_block(blocks, str(path))
    if table.empty:
        return empty_picks()
    experiments = tomogram_names(table, str(path))
    types = _particle_types(path, table, particle_type, resolve_particle_set(particles))
    xyz = positions_xyz_A(table, optics, experiments, str(path), tomogram_shapes, pixel_A)
    df = pd.DataFrame(
        {
            "experiment": experiments,
            "particle_type": types,
            "x": xyz[:, 0],
            "y": xyz[:, 1],
            "z": xyz[:, 2],
            "score": (
                table["rlnAutopickFigureOfMerit"].to_numpy()
                if "rlnAutopickFigureOfMerit" in table
                else np.nan
            ),
        }
    )
    return validate_picks(df, source=path, particles=particles)
