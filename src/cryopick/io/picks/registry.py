"""Read and write picks tables in every format cryopick knows.

The table itself (columns, :func:`make_picks`, :func:`validate_picks`) is defined in
:mod:`cryopick.core.picks`; each format lives in its own module and is listed once in the
registry :data:`PICKS_FORMATS` (copick's handler registry is the model): its name, file
extensions, ``matches(path)`` (does this path hold picks of this format?), reader and
writer. :func:`read_picks` reads with the first format that matches the path;
:func:`write_picks` writes with the format named. Adding a format = adding one entry.

============  ==============  ================================================
format        matches         what
============  ==============  ================================================
``copick``    folders,        one copick pick file, or a whole project: a copick
              ``.json``,      config (any file name), a Kaggle root, its
              copick configs  ``overlay`` folder, any ``ExperimentRuns`` parent
                              (read); a project (write)
``kaggle``    ``.csv`` with   ``id,experiment,particle_type,x,y,z``
              an ``id,``
              header
``csv``       ``.csv``        ``experiment,particle_type,x,y,z,score`` (Å)
``star``      ``.star``       RELION-5 particles, Å from the tomogram centre
                              (read also: RELION-4 / Warp pixel positions)
============  ==============  ================================================

Every reader and writer takes the particle set of the picks (``particles``, a
:class:`cryopick.core.particles.ParticleSet`): names are checked against it, STAR class
numbers are its labels, copick files use its names. Without one, a copick project's
config gives the set (:func:`cryopick.io.picks.copick_config.read_particle_set`), STAR
labels are CZII labels, and CSV names outside the CZII set are kept as they are. The
Kaggle format holds only the CZII set.

Ground truth is read with :func:`read_truth` (one annotation source, duplicates merged),
and :func:`check_experiments` says which runs of picks and truth do not match by name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet
from cryopick.core.picks import (
    PICKS_COLUMNS,
    TRANSFORMATION_COLUMN,
    empty_picks,
    make_picks,
    validate_picks,
)
from cryopick.io.mrc import MRC_SUFFIXES, TILT_SERIES_SUFFIXES, split_volume_name
from cryopick.io.picks.checks import check_experiments
from cryopick.io.picks.copick_read import (
    is_copick_source,
    project_particle_set,
    read_copick_project_picks,
    read_copick_source,
    write_copick_picks,
)
from cryopick.io.picks.csv_io import read_csv_picks, write_csv_picks, write_kaggle_picks
from cryopick.io.picks.star_io import read_star_picks, write_star_picks

__all__ = [
    "PICKS_COLUMNS",
    "PICKS_FORMATS",
    "TRANSFORMATION_COLUMN",
    "PicksFormat",
    "check_experiments",
    "empty_picks",
    "make_picks",
    "read_copick_project_picks",
    "read_picks",
    "read_truth",
    "validate_picks",
    "write_copick_picks",
    "write_picks",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PicksFormat:
    """One picks format: its name, extensions, how to recognise it, reader and writer.

    ``matches(path)`` tells whether an existing ``path`` holds picks of this format
    (default: its extension is one of ``extensions``). ``reader(path, **options)`` returns
    a picks table; it receives every option of :func:`read_picks` and uses those it needs.
    ``writer(df, path, **options)`` writes one and returns the path (or paths) written.
    Reader or writer may be None.
    """

    name: str
    extensions: tuple[str, ...]
    reader: Callable[..., pd.DataFrame] | None
    writer: Callable[..., Any] | None
    matches: Callable[[Path], bool] | None = None

    def can_read(self, path: Path) -> bool:
        """Tell whether this format's reader is the one for ``path``."""
        if self.reader is None:
            return False
        if self.matches is not None:
            return self.matches(path)
        return path.suffix.lower() in self.extensions


def _write_copick(df: pd.DataFrame, path: str | Path, **options: Any) -> list[Path]:
    if "user_id" not in options or "session_id" not in options:
        raise InputError(path, "writing copick picks needs user_id and session_id")
    return write_copick_picks(df, path, **options)


def _has_kaggle_header(path: Path) -> bool:
    """Tell whether ``path`` is a CSV whose header starts ``id,`` (a Kaggle submission)."""
    if path.suffix.lower() != ".csv":
        return False
    try:
        with path.open(errors="replace") as f:
            return f.readline().lstrip("\ufeff").startswith("id,")
    except OSError:
        return False


def _read_csv(path: Path, *, particles: ParticleSet | None = None, **_: Any) -> pd.DataFrame:
    return read_csv_picks(path, particles=particles)


def _read_star(
    path: Path,
    *,
    tomogram_shapes: dict[str, tuple[tuple[int, int, int], float]] | None = None,
    particle_type: str | None = None,
    particles: ParticleSet | None = None,
    star_pixel_A: float | None = None,
    **_: Any,
) -> pd.DataFrame:
    return read_star_picks(
        path,
        tomogram_shapes=tomogram_shapes,
        particle_type=particle_type,
        particles=particles,
        pixel_A=star_pixel_A,
    )


#: The registry: :func:`read_picks` reads with the first entry that matches a path.
PICKS_FORMATS: tuple[PicksFormat, ...] = (
    PicksFormat("copick", (".json",), read_copick_source, _write_copick, is_copick_source),
    PicksFormat("kaggle", (".csv",), _read_csv, write_kaggle_picks, _has_kaggle_header),
    PicksFormat("csv", (".csv",), _read_csv, write_csv_picks),
    PicksFormat("star", (".star",), _read_star, write_star_picks),
)
_BY_NAME = {f.name: f for f in PICKS_FORMATS}


def _get_format(name: str) -> PicksFormat:
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(_BY_NAME)
        raise InputError(None, f"unknown picks format {name!r}; known: {known}") from None


def read_picks(
    path: str | Path,
    *,
    tomogram_shapes: dict[str, tuple[tuple[int, int, int], float]] | None = None,
    particle_type: str | None = None,
    user_id: str | None = None,
    session_id: str | None = None,
    single_source: bool = False,
    particles: ParticleSet | None = None,
    star_pixel_A: float | None = None,
) -> pd.DataFrame:
    """Read picks from a file, project or folder, whatever format it is in.

    Parameters
    ----------
    path : str or Path
        A picks CSV (plain or Kaggle submission), a RELION-5 STAR file, a copick pick
        file, a copick config JSON, a Kaggle root, its ``overlay`` folder, or any folder
        holding ``ExperimentRuns``.
    tomogram_shapes : dict, optional
        ``experiment -> (shape_zyx, spacing_A)``; needed for STAR files.
    particle_type : str, optional
        For STAR files: the type of all picks (needed unless the file carries
        cryopick's own class labels, see :func:`cryopick.io.picks.star_io.read_star_picks`).
    user_id, session_id : str, optional
        For projects: read only pick files of this user / session.
    single_source : bool
        For projects: an error if picks of several user/session pairs remain (else they
        are merged with a warning).
    particles : ParticleSet, optional
        The set the picks' types belong to (names outside it are an error; in a copick
        project, objects outside it are skipped with a warning). Default: a copick
        project's declared set, else the CZII set for STAR labels and copick projects;
        other files keep names outside the CZII set as they are.
    star_pixel_A : float, optional
        For STAR files with positions in pixels (``rlnCoordinateX``; RELION-4, Warp): the
        pixel size they are in; default the file's ``rlnTomoTiltSeriesPixelSize``.

    Returns
    -------
    pandas.DataFrame
        The validated picks table (Å).

    Raises
    ------
    InputError
        If the path is missing or not a picks source cryopick can read, or a name is
        not in ``particles``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    for fmt in PICKS_FORMATS:
        if fmt.can_read(path):
            assert fmt.reader is not None
            return fmt.reader(
                path,
                tomogram_shapes=tomogram_shapes,
                particle_type=particle_type,
                user_id=user_id,
                session_id=session_id,
                single_source=single_source,
                particles=particles,
                star_pixel_A=star_pixel_A,
            )
    if split_volume_name(path)[1] in (*MRC_SUFFIXES, *TILT_SERIES_SUFFIXES, ".zarr"):
        raise InputError(
            path,
            "is a tomogram, not picks: give picks (CSV, STAR, a copick pick file) or a "
            "project holding tomograms and picks (a copick config, a Kaggle root)",
        )
    known = sorted({e for f in PICKS_FORMATS for e in f.extensions})
    raise InputError(
        path,
        f"unknown picks file type {path.suffix.lower()!r}: expected {', '.join(known)}, "
        "a copick config, or a project folder",
    )


def read_truth(
    path: str | Path,
    *,
    tomogram_shapes: dict[str, tuple[tuple[int, int, int], float]] | None = None,
    particle_type: str | None = None,
    user_id: str | None = None,
    session_id: str | None = None,
    particles: ParticleSet | None = None,
    star_pixel_A: float | None = None,
) -> pd.DataFrame:
    """Read ground-truth picks: from one annotation source, without duplicates.

    As :func:`read_picks`, except that a project must hold one user/session pair after
    the ``user_id`` / ``session_id`` filter (an error lists the pairs and their pick
    counts: merging annotators, or cryopick's own picks, into the truth inflates the
    score), and truth points of one run and type within the match distance of each
    other are merged with a warning naming the file
    (:func:`cryopick.evaluation.metric.merge_duplicate_truth`). Every type must be one of
    the set (the match distance is half its radius).

    Parameters
    ----------
    path : str or Path
        Any source :func:`read_picks` reads.
    tomogram_shapes, particle_type, user_id, session_id, star_pixel_A
        As for :func:`read_picks`.
    particles : ParticleSet, optional
        The set of the truth; default the set a copick project's config declares, else
        the CZII set.

    Returns
    -------
    pandas.DataFrame
        The truth picks table.

    Raises
    ------
    InputError
        If a truth type is not in the set (the message lists the set's names).
    """
    from cryopick.evaluation.metric import merge_duplicate_truth

    if particles is None:
        particles = project_particle_set(path)
    df = read_picks(
        path,
        tomogram_shapes=tomogram_shapes,
        particle_type=particle_type,
        user_id=user_id,
        session_id=session_id,
        single_source=True,
        particles=particles,
        star_pixel_A=star_pixel_A,
    )
    return merge_duplicate_truth(df, source=path, particles=particles)


def write_picks(
    df: pd.DataFrame,
    path: str | Path,
    format: str = "csv",
    particles: ParticleSet | None = None,
    **options: Any,
) -> Any:
    """Write a picks table, atomically.

    Parameters
    ----------
    df : pandas.DataFrame
        Picks table (Å).
    path : str or Path
        Output file; for ``copick`` an overlay folder, copick config or Kaggle root.
    format : {"csv", "kaggle", "star", "copick"}
        Output format (see the module docstring).
    particles : ParticleSet, optional
        The set of the picks: STAR ``rlnClassNumber`` is its label, copick files use its
        names (declared in the project's config when missing). ``kaggle`` refuses a set
        other than the CZII one.
    **options
        Passed to the writer: ``tomogram_shapes`` for ``star``; ``user_id``,
        ``session_id``, ``voxel_spacing``, ``runs``, ``particle_types`` for ``copick``.

    Returns
    -------
    Path or list of Path
        What was written.

    Raises
    ------
    InputError
        For an unknown format, a pick whose type is not in ``particles``, or a non-CZII
        set written as ``kaggle`` (the message names the types).
    """
    fmt = _get_format(format)
    if fmt.writer is None:  # pragma: no cover - every format has a writer today
        raise InputError(path, f"format {format!r} cannot be written")
    return fmt.writer(df, path, particles=particles, **options)
