"""Picks in copick's JSON format, one file per run, object, user and session.

A pick file (copick ``CopickPicksFile``) looks like::

    {"pickable_object_name": "ribosome", "user_id": "cryopick", "session_id": "0",
     "run_name": "TS_5_4", "voxel_spacing": null, "unit": "angstrom",
     "points": [{"location": {"x": 1.0, "y": 2.0, "z": 3.0},
                 "transformation_": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                 "instance_id": 0, "score": 0.93}],
     "trust_orientation": true}

Locations are in Å. The position read into the picks table is ``location``; the 4x4
``transformation_`` is kept as is in the ``transformation`` column (copick >= 1.x
defines the particle centre as ``location + transformation_[:3, 3]``; cryopick writes
identity translations, and the CZII ground truth has identity matrices).

Files live in ``<root>/ExperimentRuns/<run>/Picks/<user>_<session>_<object>.json``; the
Kaggle challenge data also has ``<object>.json`` files there (user ``curation``,
session ``0`` inside the JSON).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pandas as pd

from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet, resolve_particle_set
from cryopick.core.picks import (
    TRANSFORMATION_COLUMN,
    empty_picks,
    validate_picks,
)
from cryopick.io.layout import RUNS_DIR, ProjectLayout, is_copick_config, resolve_layout
from cryopick.io.picks.copick_config import read_particle_set

# the writer lives in its own module; re-exported here for callers of this module
from cryopick.io.picks.copick_write import write_copick_picks

log = logging.getLogger(__name__)


def is_copick_picks(data: object) -> bool:
    """Return True if parsed JSON ``data`` looks like a copick pick file."""
    return isinstance(data, dict) and "points" in data and isinstance(data["points"], list)


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"cannot read JSON: {err}") from None


def _split_filename(path: Path) -> tuple[str | None, str | None, str]:
    """(user, session, object) from ``<user>_<session>_<object>.json`` or ``<object>.json``."""
    parts = path.stem.split("_", 2)
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return None, None, path.stem


def _run_from_path(path: Path) -> str | None:
    if path.parent.name == "Picks" and path.parent.parent.parent.name == RUNS_DIR:
        return path.parent.parent.name
    return None


def read_copick_picks_file(
    path: str | Path, data: object | None = None, particles: ParticleSet | None = None
) -> pd.DataFrame:
    """Read one copick pick file into a picks table.

    Parameters
    ----------
    path : str or Path
        The JSON file.
    data : object, optional
        Its parsed content, if already loaded.
    particles : ParticleSet, optional
        The set its object must belong to; None keeps a name outside the CZII set as it
        is (see :func:`cryopick.core.picks.validate_picks`).

    Returns
    -------
    pandas.DataFrame
        Picks with ``score`` (NaN where absent) and a ``transformation`` column
        (identity where absent).

    Raises
    ------
    InputError
        If the file is not a copick pick file, names an object not in ``particles``,
        or has a point without a finite location.
    """
    path = Path(path)
    data = _load_json(path) if data is None else data
    if not is_copick_picks(data):
        raise InputError(path, "not a copick pick file: no 'points' list")
    assert isinstance(data, dict)
    run = _run_from_path(path) or data.get("run_name")
    if not run:
        raise InputError(
            path, "pick file has no 'run_name' and is not in ExperimentRuns/<run>/Picks"
        )
    name = data.get("pickable_object_name") or _split_filename(path)[2]
    rows = []
    for i, point in enumerate(data["points"]):
        try:
            loc = point["location"]
            xyz = (loc["x"], loc["y"], loc["z"])
        except (KeyError, TypeError):
            raise InputError(path, f"point {i} has no location {{x, y, z}}") from None
        score = point.get("score")
        rows.append((*xyz, math.nan if score is None else score, point.get("transformation_")))
    if not rows:
        df = empty_picks()
        df[TRANSFORMATION_COLUMN] = pd.Series([], dtype=object)
    else:
        df = pd.DataFrame(rows, columns=["x", "y", "z", "score", TRANSFORMATION_COLUMN])
        df.insert(0, "particle_type", name)
        df.insert(0, "experiment", str(run))
    return validate_picks(df, source=path, particles=particles)


def list_pick_files(layout: ProjectLayout) -> list[Path]:
    """Every ``*.json`` in the ``Picks`` folders of the project's runs (overlay, static)."""
    files = []
    for run in layout.run_names():
        for run_dir in layout.run_dirs(run):
            picks_dir = run_dir / "Picks"
            if picks_dir.is_dir():
                files.extend(sorted(picks_dir.glob("*.json")))
    return files


def _several_sources(
    layout: ProjectLayout, found: dict[tuple[str, str], int], single_source: bool
) -> None:
    """Warn that picks of several user/session pairs were merged, or refuse to merge them."""
    where = layout.config_path or layout.overlay_root
    pairs = ", ".join(f"{u}/{s} ({n} picks)" for (u, s), n in sorted(found.items()))
    if single_source:
        raise InputError(
            where,
            f"holds picks of {len(found)} user/session pairs: {pairs}; choose one "
            "(--truth-user/--truth-session, --picks-user/--picks-session)",
        )
    log.warning(
        "%s: picks of several user/session pairs were merged: %s (filter by user/session)",
        where,
        pairs,
    )


def _project_layout(path: str | Path | ProjectLayout) -> ProjectLayout:
    if isinstance(path, ProjectLayout):
        return path
    layout = resolve_layout(path, content="picks")
    if layout is None:
        raise InputError(
            path, "not a copick config, a Kaggle root, or a folder holding ExperimentRuns"
        )
    return layout


def project_particle_set(path: str | Path | ProjectLayout) -> ParticleSet | None:
    """Return the particle set a copick project's config declares; None for anything else.

    None also for a project without config (a Kaggle root, a bare ``ExperimentRuns``
    parent) or one that declares no particle objects; a single pick file is no project.
    """
    if not isinstance(path, ProjectLayout):
        path = Path(path)
        if path.is_file() and not is_copick_config(path):
            return None
        layout = resolve_layout(path, content="picks")
        if layout is None:
            return None
        path = layout
    return read_particle_set(path)


def read_copick_project_picks(
    path: str | Path | ProjectLayout,
    user_id: str | None = None,
    session_id: str | None = None,
    single_source: bool = False,
    particles: ParticleSet | None = None,
) -> pd.DataFrame:
    """Read all pick files of a copick project or Kaggle challenge folder.

    Parameters
    ----------
    path : str or Path or ProjectLayout
        A copick config JSON, a Kaggle root (with ``overlay/``), its ``overlay`` folder,
        or any folder holding ``ExperimentRuns``.
    user_id, session_id : str, optional
        Keep only files of this user / session (as recorded in the JSON, else in the
        file name). None keeps all.
    single_source : bool
        Require the picks kept to come from one user/session pair (ground truth, where
        merging annotators, or cryopick's own picks, would be wrong); by default several
        pairs are merged with a warning.
    particles : ParticleSet, optional
        The particle types to read; default the set the project's config declares
        (:func:`cryopick.io.picks.copick_config.read_particle_set`), else the CZII set.

    Returns
    -------
    pandas.DataFrame
        Picks of all runs. Files of objects that are not types of the set (e.g.
        membranes) are skipped with a warning. When one run holds the same user, session and object
        twice (``<object>.json`` beside ``<user>_<session>_<object>.json``), it is read once.

    Raises
    ------
    InputError
        With ``single_source``, if several user/session pairs remain; the message lists
        them with their pick counts.
    """
    layout = _project_layout(path)
    particle_set = resolve_particle_set(particles or read_particle_set(layout))
    frames: list[pd.DataFrame] = []
    seen: set[tuple[str, str, str, str]] = set()
    found: dict[tuple[str, str], int] = {}  # picks per (user, session)
    skipped: dict[tuple[str, str], int] = {}  # picks per (user, session) filtered out
    for file in list_pick_files(layout):
        data = _load_json(file)
        if not is_copick_picks(data):
            continue
        assert isinstance(data, dict)
        f_user, f_session, f_object = _split_filename(file)
        user = str(data.get("user_id") or f_user)
        session = str(data.get("session_id") or f_session)
        obj = str(data.get("pickable_object_name") or f_object)
        if (user_id is not None and user != user_id) or (
            session_id is not None and session != session_id
        ):
            points = data.get("points") or []
            skipped[(user, session)] = skipped.get((user, session), 0) + len(points)
            continue
        if obj not in particle_set:
            log.warning(
                "%s: skipping picks of %r: not a type of the particle set (%s)",
                file,
                obj,
                ", ".join(particle_set.names),
            )
            continue
        key = (file.parent.parent.name, user, session, particle_set.resolve(obj))
        if key in seen:
            continue
        seen.add(key)
        frames.append(read_copick_picks_file(file, data, particle_set))
        found[(user, session)] = found.get((user, session), 0) + len(frames[-1])
    if len(found) > 1:
        _several_sources(layout, found, single_source)
    if not frames:
        if skipped and not found:
            pairs = ", ".join(f"{u}/{v} ({n} picks)" for (u, v), n in sorted(skipped.items()))
            log.warning(
                "%s: no picks of user %s, session %s; the project has picks of %s",
                path,
                user_id or "any",
                session_id or "any",
                pairs,
            )
        return empty_picks()
    return validate_picks(pd.concat(frames, ignore_index=True), particles=particle_set)


def is_copick_source(path: Path) -> bool:
    """Tell whether ``path`` is for the copick reader: a folder, a JSON file or a copick config.

    Folders are projects (a Kaggle root, its ``overlay``, any ``ExperimentRuns`` parent);
    a copick config may have any name (the CZII notebooks use ``copick.config``).
    """
    return path.is_dir() or path.suffix.lower() == ".json" or is_copick_config(path)


def read_copick_source(
    path: str | Path,
    *,
    user_id: str | None = None,
    session_id: str | None = None,
    single_source: bool = False,
    particles: ParticleSet | None = None,
    **_: object,
) -> pd.DataFrame:
    """Read a copick pick file, or every pick file of a project (folder or config).

    ``user_id``, ``session_id``, ``single_source`` and ``particles`` apply as for
    :func:`read_copick_project_picks` (``particles`` also to a single pick file, see
    :func:`read_copick_picks_file`); other keyword arguments are ignored.

    Raises
    ------
    InputError
        If a JSON file is neither a copick config nor a copick pick file.
    """
    path = Path(path)

    def read_project() -> pd.DataFrame:
        return read_copick_project_picks(path, user_id, session_id, single_source, particles)

    if path.is_dir() or path.suffix.lower() != ".json":  # a folder, or a config of any name
        return read_project()
    data = _load_json(path)
    if isinstance(data, dict) and "overlay_root" in data:
        return read_project()
    if is_copick_picks(data):
        return read_copick_picks_file(path, data, particles)
    raise InputError(path, "JSON is neither a copick config nor a copick pick file")


__all__ = [
    "is_copick_picks",
    "is_copick_source",
    "project_particle_set",
    "read_copick_picks_file",
    "read_copick_project_picks",
    "read_copick_source",
    "write_copick_picks",
]
