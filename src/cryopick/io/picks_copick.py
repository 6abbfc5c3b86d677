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
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cryopick.errors import InputError
from cryopick.io.atomic import write_text_atomic
from cryopick.io.layout import RUNS_DIR, ProjectLayout, picks_filename, resolve_layout
from cryopick.io.picks_table import (
    IDENTITY_MATRIX,
    TRANSFORMATION_COLUMN,
    empty_picks,
    validate_picks,
)
from cryopick.particles import PARTICLE_NAMES, UnknownParticleError, resolve_particle_name

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


def read_copick_picks_file(path: str | Path, data: object | None = None) -> pd.DataFrame:
    """Read one copick pick file into a picks table.

    Parameters
    ----------
    path : str or Path
        The JSON file.
    data : object, optional
        Its parsed content, if already loaded.

    Returns
    -------
    pandas.DataFrame
        Picks with ``score`` (NaN where absent) and a ``transformation`` column
        (identity where absent).

    Raises
    ------
    InputError
        If the file is not a copick pick file, names an unknown object, or has a
        point without a finite location.
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
    return validate_picks(df, source=path)


def _pick_files(layout: ProjectLayout) -> list[Path]:
    files = []
    for run in layout.run_names():
        for run_dir in layout.run_dirs(run):
            picks_dir = run_dir / "Picks"
            if picks_dir.is_dir():
                files.extend(sorted(picks_dir.glob("*.json")))
    return files


def read_copick_project_picks(
    path: str | Path | ProjectLayout,
    user_id: str | None = None,
    session_id: str | None = None,
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

    Returns
    -------
    pandas.DataFrame
        Picks of all runs. Files of objects that are not particle types (e.g. membranes)
        are skipped with a warning. When one run holds the same user, session and object
        twice (``<object>.json`` beside ``<user>_<session>_<object>.json``), it is read once.
    """
    layout = path if isinstance(path, ProjectLayout) else resolve_layout(path)
    if layout is None:
        raise InputError(
            path, "not a copick config, a Kaggle root, or a folder holding ExperimentRuns"
        )
    frames, seen, found = [], set(), set()
    for file in _pick_files(layout):
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
            continue
        try:
            canonical = resolve_particle_name(obj)
        except UnknownParticleError:
            log.warning("%s: skipping picks of %r: not a particle type cryopick knows", file, obj)
            continue
        key = (file.parent.parent.name, user, session, canonical)
        if key in seen:
            continue
        seen.add(key)
        found.add((user, session))
        frames.append(read_copick_picks_file(file, data))
    if len(found) > 1:
        log.warning(
            "%s: picks of several user/session pairs were merged: %s (filter by user/session)",
            layout.config_path or layout.overlay_root,
            ", ".join(f"{u}/{s}" for u, s in sorted(found)),
        )
    if not frames:
        return empty_picks()
    return validate_picks(pd.concat(frames, ignore_index=True))


def _check_id(value: str, what: str) -> str:
    value = str(value)
    if not value or any(c in value for c in "_/\\ \t\n"):
        raise InputError(
            None, f"copick {what} {value!r} must be non-empty without '_', '/' or spaces"
        )
    return value


def _object_names(layout: ProjectLayout | None) -> dict[str, str]:
    """Canonical particle name -> the name the project's config uses for it."""
    names = {p: p for p in PARTICLE_NAMES}
    for obj in layout.pickable_objects if layout else []:
        try:
            names[resolve_particle_name(obj["name"])] = obj["name"]
        except (UnknownParticleError, KeyError, TypeError):
            continue
    return names


def write_copick_picks(
    df: pd.DataFrame,
    layout_or_overlay_root: ProjectLayout | str | Path,
    user_id: str,
    session_id: str,
    voxel_spacing: float | None = None,
    runs: Iterable[str] = (),
    particle_types: Sequence[str] | None = None,
) -> list[Path]:
    """Write picks as copick pick files, one per run and particle type, atomically.

    For every run in ``df`` (and in ``runs``) and every type in ``particle_types``,
    ``ExperimentRuns/<run>/Picks/<user>_<session>_<object>.json`` is (re)written, with
    an empty point list where there are no picks, so picks of an earlier session with
    the same ids do not linger. Files of other users or sessions are never touched.

    Parameters
    ----------
    df : pandas.DataFrame
        Picks table (Å).
    layout_or_overlay_root : ProjectLayout or str or Path
        A project layout, a copick config JSON, a Kaggle root, or an overlay folder
        (created if missing).
    user_id, session_id : str
        Pick file owner; no ``_``, ``/`` or spaces.
    voxel_spacing : float, optional
        Recorded in the files (``null`` if omitted).
    runs : iterable of str
        Extra runs to write (empty) files for, e.g. runs where nothing was found.
    particle_types : sequence of str, optional
        Types to write files for; default all six.

    Returns
    -------
    list of Path
        The files written.
    """
    user_id, session_id = _check_id(user_id, "user_id"), _check_id(session_id, "session_id")
    if isinstance(layout_or_overlay_root, ProjectLayout):
        layout: ProjectLayout | None = layout_or_overlay_root
    else:
        layout = resolve_layout(layout_or_overlay_root)
    overlay = layout.overlay_root if layout else Path(layout_or_overlay_root)
    df = validate_picks(df)
    types = PARTICLE_NAMES if particle_types is None else particle_types
    types = list(dict.fromkeys(resolve_particle_name(t) for t in types))
    names = _object_names(layout)
    has_tf = TRANSFORMATION_COLUMN in df.columns
    written = []
    for run in sorted(set(df["experiment"]) | {str(r) for r in runs}):
        run_df = df[df["experiment"] == run]
        for ptype in types:
            sel = run_df[run_df["particle_type"] == ptype]
            tfs = sel[TRANSFORMATION_COLUMN] if has_tf else [IDENTITY_MATRIX] * len(sel)
            columns = (sel["x"], sel["y"], sel["z"], sel["score"], tfs)
            points = [
                {
                    "location": {"x": float(x), "y": float(y), "z": float(z)},
                    "transformation_": np.asarray(tf, dtype=np.float64).tolist(),
                    "instance_id": 0,
                    "score": None if math.isnan(s) else float(s),
                }
                for x, y, z, s, tf in zip(*columns, strict=True)
            ]
            content = {
                "pickable_object_name": names[ptype],
                "user_id": user_id,
                "session_id": session_id,
                "run_name": run,
                "voxel_spacing": None if voxel_spacing is None else float(voxel_spacing),
                "unit": "angstrom",
                "points": points,
                "trust_orientation": has_tf,
            }
            path = (
                overlay
                / RUNS_DIR
                / run
                / "Picks"
                / picks_filename(user_id, session_id, names[ptype])
            )
            written.append(write_text_atomic(path, json.dumps(content, indent=1)))
    return written
