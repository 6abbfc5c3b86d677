"""Write picks into a copick project: all pick files of a write, or none of them.

:func:`write_copick_picks` builds every pick file's content first, then commits them as
one transaction (:func:`commit_files`):

1. each file is written and flushed to a temporary beside its destination; a failure here
   (a full disk) removes the temporaries and leaves the project as it was;
2. a journal listing the renames is written atomically into the overlay root;
3. the temporaries are renamed onto their destinations, then the journal is removed.

A process killed during step 3 leaves its journal behind; the next write into the project
finishes those renames first (:func:`recover_interrupted_writes`), so a run's set of pick
files is never left half-replaced. Temporaries of killed writers without a journal are
removed. Every destination must resolve inside the project's overlay root: a run folder
that is a symlink to elsewhere, or a run name with ``/`` or ``..``, is refused.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet, UnknownParticleError, default_particle_set
from cryopick.core.picks import IDENTITY_MATRIX, TRANSFORMATION_COLUMN, validate_picks
from cryopick.io.atomic import is_stale_temporary, remove_stale_temporaries, temp_prefix
from cryopick.io.layout import RUNS_DIR, ProjectLayout, picks_filename, resolve_layout
from cryopick.io.picks.copick_config import declare_pickable_objects, read_particle_set

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".journal"


def _check_id(value: str, what: str) -> str:
    value = str(value)
    if not value or any(c in value for c in "_/\\ \t\n"):
        raise InputError(
            None, f"copick {what} {value!r} must be non-empty without '_', '/' or spaces"
        )
    return value


def _check_run_name(run: str) -> str:
    run = str(run)
    if not run or run in (".", "..") or any(c in run for c in "/\\\0") or run.startswith("."):
        raise InputError(None, f"run name {run!r} cannot be a copick run folder name")
    return run


def resolve_copick_target(target: ProjectLayout | str | Path) -> ProjectLayout:
    """Return the project to write picks into, from a layout, a copick config or a folder.

    A folder that does not exist yet, or is empty, becomes a new overlay root. Any other
    folder must already hold ``ExperimentRuns/`` (or be a Kaggle root): copick picks are
    never written into a plain folder of tomograms.

    Raises
    ------
    InputError
        If ``target`` is a file that is not a copick config, or a non-empty folder that is
        not a copick project.
    """
    if isinstance(target, ProjectLayout):
        return target
    path = Path(target)
    layout = resolve_layout(path)
    if layout is not None:
        return layout
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return ProjectLayout(overlay_root=path)
    raise InputError(
        path,
        "not a copick project (no copick config, no ExperimentRuns/ folder): copick picks "
        "go into a project; give a copick config JSON, or write --format csv or star",
    )


def _write_set(
    layout: ProjectLayout, df: pd.DataFrame, particles: ParticleSet | None
) -> ParticleSet:
    """Return the set to write: ``particles``; else CZII for CZII picks, else the project's.

    Raises
    ------
    InputError
        If picks of types outside the CZII set come without a set and the project's
        config declares none.
    """
    if particles is not None:
        return particles
    czii = default_particle_set()
    others = sorted(set(df["particle_type"]) - set(czii.names))
    if not others:
        return czii
    declared = read_particle_set(layout)
    if declared is None:
        raise InputError(
            layout.config_path or layout.overlay_root,
            f"picks of {', '.join(others)} (not CZII types) need their particle set: the "
            "project's config declares none",
        )
    return declared


def _declared_names(layout: ProjectLayout, particle_set: ParticleSet) -> dict[str, str]:
    """Type of the set -> the name the project's config declares it under (name or alias)."""
    declared: dict[str, str] = {}
    objects: list[object] = list(layout.pickable_objects)  # JSON: any entry may be malformed
    for obj in objects:
        name = obj.get("name") if isinstance(obj, dict) else None
        if isinstance(name, str) and name in particle_set:
            declared[particle_set.resolve(name)] = name
    return declared


def _object_names(layout: ProjectLayout, particle_set: ParticleSet) -> dict[str, str]:
    """Type of the set -> the object name to write it under (declared alias, else itself)."""
    return {**{p: p for p in particle_set.names}, **_declared_names(layout, particle_set)}


def _types_to_write(
    layout: ProjectLayout,
    df: pd.DataFrame,
    particle_types: Sequence[str] | None,
    particle_set: ParticleSet,
) -> list[str]:
    """Types of the set to write files for; declares missing ones in the project's config."""
    declared = _declared_names(layout, particle_set)
    if particle_types is not None:
        try:
            types = [particle_set.resolve(t) for t in particle_types]
        except UnknownParticleError as err:
            raise InputError(layout.config_path, str(err)) from None
    elif layout.config_path is None:
        types = list(particle_set.names)
    else:  # the types the project declares, plus any with picks
        picked = set(df["particle_type"])
        types = [t for t in particle_set.names if t in declared or t in picked]
    types = list(dict.fromkeys(types))
    if layout.config_path is not None:
        missing = [t for t in types if t not in declared]
        declare_pickable_objects(layout.config_path, missing, particle_set)
        aliases = _object_names(layout, particle_set)
        for t in types:
            if aliases[t] != t:
                log.info("writing %s picks as the project's object %r", t, aliases[t])
    return types


def _pick_file_content(
    sel: pd.DataFrame, meta: Mapping[str, object], has_tf: bool
) -> dict[str, object]:
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
    return {**meta, "points": points, "trust_orientation": has_tf}


def write_copick_picks(
    df: pd.DataFrame,
    layout_or_overlay_root: ProjectLayout | str | Path,
    user_id: str,
    session_id: str,
    voxel_spacing: float | None = None,
    runs: Iterable[str] = (),
    particle_types: Sequence[str] | None = None,
    particles: ParticleSet | None = None,
) -> list[Path]:
    """Write picks as copick pick files, one per run and particle type, as one transaction.

    For every run in ``df`` (and in ``runs``) and every type written,
    ``ExperimentRuns/<run>/Picks/<user>_<session>_<object>.json`` is (re)written, with
    an empty point list where there are no picks, so picks of an earlier session with
    the same ids do not linger. Files of other users or sessions are never touched.
    Types the project's config does not declare are added to it (every other byte of
    the config kept); types the config names by an alias are written under that alias.

    Parameters
    ----------
    df : pandas.DataFrame
        Picks table (Å).
    layout_or_overlay_root : ProjectLayout or str or Path
        A project layout, a copick config JSON, a Kaggle root, a folder holding
        ``ExperimentRuns``, or a new (missing or empty) overlay folder.
    user_id, session_id : str
        Pick file owner; no ``_``, ``/`` or spaces.
    voxel_spacing : float, optional
        Recorded in the files (``null`` if omitted).
    runs : iterable of str
        Extra runs to write (empty) files for, e.g. runs where nothing was found.
    particle_types : sequence of str, optional
        Types to write files for; default the types the project's config declares plus
        the types with picks (every type of the set without a config).
    particles : ParticleSet, optional
        The set of the picks; default the CZII set when every pick is a CZII type, else
        the set the project's config declares. Types the config lacks are declared with
        the set's radius, colour, weight and aliases.

    Returns
    -------
    list of Path
        The files written.
    """
    user_id, session_id = _check_id(user_id, "user_id"), _check_id(session_id, "session_id")
    layout = resolve_copick_target(layout_or_overlay_root)
    df = validate_picks(df, particles=particles)  # a given set resolves names strictly
    particle_set = _write_set(layout, df, particles)
    if particles is None:
        df = validate_picks(df, particles=particle_set)
    run_names = [_check_run_name(r) for r in sorted(set(df["experiment"]) | set(map(str, runs)))]
    types = _types_to_write(layout, df, particle_types, particle_set)
    names = _object_names(layout, particle_set)
    has_tf = TRANSFORMATION_COLUMN in df.columns
    files: dict[Path, str] = {}
    for run in run_names:
        run_df = df[df["experiment"] == run]
        for ptype in types:
            meta = {
                "pickable_object_name": names[ptype],
                "user_id": user_id,
                "session_id": session_id,
                "run_name": run,
                "voxel_spacing": None if voxel_spacing is None else float(voxel_spacing),
                "unit": "angstrom",
            }
            content = _pick_file_content(run_df[run_df["particle_type"] == ptype], meta, has_tf)
            path = layout.picks_dir(run) / picks_filename(user_id, session_id, names[ptype])
            files[path] = json.dumps(content, indent=1)
    commit_files(files, layout.overlay_root)
    return list(files)


def check_inside(path: Path, root: Path) -> None:
    """Refuse a destination that resolves (through symlinks) outside ``root``."""
    resolved_root = root.resolve()
    resolved = path.resolve()
    if path.is_symlink() or not resolved.is_relative_to(resolved_root):
        raise InputError(
            path,
            f"resolves to {resolved}, outside the project root {resolved_root} (a symbolic "
            "link?): cryopick writes only inside the project",
        )


def _stage(path: Path, text: str) -> Path:
    """Write ``text`` to a temporary beside ``path``, flushed to disk; return the temporary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def commit_files(files: Mapping[Path, str], root: Path) -> None:
    """Write ``files`` (path -> text) under ``root`` all together or not at all.

    See the module docstring for the protocol.

    Raises
    ------
    InputError
        If a destination lies outside ``root``.
    OSError
        If staging fails (e.g. the disk is full); nothing was replaced then.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for path in files:
        check_inside(path, root)
    recover_interrupted_writes(root, {p.parent for p in files})
    staged: dict[Path, Path] = {}
    journal = None
    try:
        for path, text in files.items():
            staged[path] = _stage(path, text)
        fd, name = tempfile.mkstemp(prefix=temp_prefix("picks"), suffix=JOURNAL_SUFFIX, dir=root)
        journal = Path(name)
        with os.fdopen(fd, "w") as handle:
            json.dump([[str(t), str(p)] for p, t in staged.items()], handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        if journal is not None:
            journal.unlink(missing_ok=True)
        raise
    for path, tmp in staged.items():
        os.replace(tmp, path)
    journal.unlink()  # the commit is complete


def recover_interrupted_writes(root: Path, folders: Iterable[Path] = ()) -> int:
    """Finish the renames of writers killed mid-commit, then drop their leftovers.

    Journals in ``root`` whose writer is gone are replayed (renames whose temporary still
    exists are done) and removed; stale temporaries in ``folders`` and in every run's
    ``Picks`` folder are removed.

    Returns
    -------
    int
        How many journals were replayed.
    """
    replayed = 0
    for journal in sorted(Path(root).glob(f".*{JOURNAL_SUFFIX}")):
        if not is_stale_temporary(journal.with_suffix(".tmp")):
            continue  # a writer that is still running
        try:
            pairs = json.loads(journal.read_text())
        except (OSError, ValueError):
            pairs = []  # written partly: its renames never started
        for tmp, final in pairs:
            if Path(tmp).exists():
                os.replace(tmp, final)
        journal.unlink(missing_ok=True)
        replayed += 1
    runs_dir = Path(root) / RUNS_DIR
    picks_dirs = set(folders) | (
        {d / "Picks" for d in runs_dir.iterdir() if d.is_dir()} if runs_dir.is_dir() else set()
    )
    for folder in picks_dirs:
        remove_stale_temporaries(folder)
    return replayed
