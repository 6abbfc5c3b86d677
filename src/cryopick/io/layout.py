"""Where things live in copick filesystem projects and in the Kaggle challenge layout.

Both layouts share the same tree below a root::

    <root>/ExperimentRuns/<run>/VoxelSpacing<spacing:.3f>/<tomo_type>.zarr
    <root>/ExperimentRuns/<run>/Picks/<user>_<session>_<object>.json
    <root>/ExperimentRuns/<run>/Segmentations/<spacing:.3f>_<user>_<session>_<name>[-multilabel].zarr

A copick project has a config JSON naming an ``overlay_root`` (read-write: picks,
segmentations) and optionally a ``static_root`` (read-only: tomograms). The Kaggle
challenge layout is a folder with ``static/`` and ``overlay/`` subfolders and no config;
its pick files are named ``<object>.json`` (or ``curation_0_<object>.json``). The
competition download holds two such folders, ``train/`` and ``test/``.
This module only computes paths; reading and writing is done by the io modules.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet, resolve_particle_set

log = logging.getLogger(__name__)

RUNS_DIR = "ExperimentRuns"
COMPETITION_SPLITS = ("train", "test")
# a copick config is a few kB; larger files are not read to find out whether they are one
_MAX_CONFIG_BYTES = 16 * 2**20


@dataclass(frozen=True)
class ProjectLayout:
    """The roots of a copick project or Kaggle challenge folder.

    Attributes
    ----------
    overlay_root : Path
        Root holding picks and segmentations (and tomograms when there is no static root).
    static_root : Path or None
        Root holding tomograms, if separate.
    config_path : Path or None
        The copick config JSON, or None for the Kaggle layout.
    pickable_objects : list of dict
        The config's ``pickable_objects`` (empty for the Kaggle layout).
    """

    overlay_root: Path
    static_root: Path | None = None
    config_path: Path | None = None
    pickable_objects: list[dict] = field(default_factory=list)

    @property
    def roots(self) -> list[Path]:
        """The roots to search, overlay first."""
        return [r for r in (self.overlay_root, self.static_root) if r is not None]

    def run_names(self) -> list[str]:
        """Sorted names of all runs found under any root."""
        names: set[str] = set()
        for root in self.roots:
            runs = root / RUNS_DIR
            if runs.is_dir():
                names.update(p.name for p in runs.iterdir() if p.is_dir())
        return sorted(names)

    def run_dirs(self, run: str) -> list[Path]:
        """Return the folders of one run under each root that has it, overlay first."""
        return [root / RUNS_DIR / run for root in self.roots if (root / RUNS_DIR / run).is_dir()]

    def picks_dir(self, run: str) -> Path:
        """Folder where picks of ``run`` are written (in the overlay)."""
        return self.overlay_root / RUNS_DIR / run / "Picks"

    def segmentations_dir(self, run: str) -> Path:
        """Folder where segmentations of ``run`` are written (in the overlay)."""
        return self.overlay_root / RUNS_DIR / run / "Segmentations"

    def tomogram_write_path(self, run: str, spacing_A: float, tomo_type: str) -> Path:
        """Where a new tomogram of ``run`` is written (static root if any, else overlay)."""
        root = self.static_root or self.overlay_root
        return root / RUNS_DIR / run / voxel_spacing_dirname(spacing_A) / f"{tomo_type}.zarr"


def voxel_spacing_dirname(spacing_A: float) -> str:
    """Folder name of a voxel spacing, e.g. ``VoxelSpacing10.000``."""
    return f"VoxelSpacing{float(spacing_A):.3f}"


def picks_filename(user_id: str, session_id: str, object_name: str) -> str:
    """Return copick's pick file name ``<user>_<session>_<object>.json``."""
    return f"{user_id}_{session_id}_{object_name}.json"


_DOWNLOAD_HINT = (
    "cryopick reads local files only: download the tomograms first (e.g. with the "
    "cryoet-data-portal client or copick's own tools) into a filesystem project"
)


def _strip_url(root: str, base: Path, config_path: Path) -> Path:
    if "://" in root:
        scheme, rest = root.split("://", 1)
        if scheme not in ("local", "file"):
            raise InputError(
                config_path,
                f"copick root {root!r} is not on the local filesystem; {_DOWNLOAD_HINT}",
            )
        root = rest
    p = Path(root).expanduser()
    return p if p.is_absolute() else (base / p)


def read_copick_config(config_path: str | Path) -> ProjectLayout:
    """Read a copick filesystem config JSON (without needing the copick package).

    Raises
    ------
    InputError
        If the file is not JSON or has no ``overlay_root``.
    """
    config_path = Path(config_path)
    try:
        cfg = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(config_path, f"cannot read copick config: {err}") from None
    if isinstance(cfg, dict) and cfg.get("config_type") == "cryoet_data_portal":
        raise InputError(config_path, f"a CryoET Data Portal copick config; {_DOWNLOAD_HINT}")
    if not isinstance(cfg, dict) or "overlay_root" not in cfg:
        raise InputError(config_path, "not a copick filesystem config: no 'overlay_root' key")
    base = config_path.parent
    static = cfg.get("static_root")
    return ProjectLayout(
        overlay_root=_strip_url(cfg["overlay_root"], base, config_path),
        static_root=_strip_url(static, base, config_path) if static else None,
        config_path=config_path,
        pickable_objects=list(cfg.get("pickable_objects", [])),
    )


def is_kaggle_root(path: str | Path) -> bool:
    """Tell whether ``path`` looks like the challenge layout (``static/`` or ``overlay/`` below)."""
    path = Path(path)
    return path.is_dir() and any((path / d / RUNS_DIR).is_dir() for d in ("static", "overlay"))


def kaggle_layout(root: str | Path) -> ProjectLayout:
    """Layout of a Kaggle challenge folder (``<root>/static`` and ``<root>/overlay``)."""
    root = Path(root)
    static = root / "static"
    return ProjectLayout(
        overlay_root=root / "overlay",
        static_root=static if static.is_dir() else None,
    )


def is_copick_config(path: str | Path) -> bool:
    """Tell whether ``path`` is a copick config: a JSON object with ``overlay_root``.

    The file name does not matter (the CZII Kaggle notebooks use ``copick.config``);
    files that do not start with ``{`` or are larger than 16 MiB are not parsed.
    """
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size > _MAX_CONFIG_BYTES:
            return False
        with path.open("rb") as f:
            if not f.read(4096).lstrip().startswith(b"{"):
                return False
        head = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(head, dict) and "overlay_root" in head


def _raise_if_broken_json(path: Path) -> None:
    """Raise InputError when ``path`` starts like a JSON object but does not parse.

    A copick config broken by a hand edit would otherwise be "not a tomogram" or "no runs".
    """
    try:
        if path.stat().st_size > _MAX_CONFIG_BYTES:
            return
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    if not text.lstrip().startswith("{"):
        return
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(
            path, f"not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
        ) from None


def resolve_layout(path: str | Path, content: str = "tomograms") -> ProjectLayout | None:
    """Layout for a copick config, a Kaggle root, or a bare ``ExperimentRuns`` parent.

    Parameters
    ----------
    path : str or Path
        A copick config (any file name, see :func:`is_copick_config`), a Kaggle folder
        (``static/`` and/or ``overlay/``), a folder holding ``ExperimentRuns/``, or the
        competition download holding ``train/`` and ``test/`` Kaggle folders.
    content : {"tomograms", "picks"}
        What will be read, to choose a split of the competition download: a split counts
        when it has ``ExperimentRuns`` under ``static/`` or ``overlay/`` (tomograms) or under
        ``overlay/`` only (picks, e.g. truth: only ``train`` has them). The split read is
        logged.

    Returns
    -------
    ProjectLayout or None
        None when ``path`` is none of these (e.g. an MRC file or a CSV).

    Raises
    ------
    InputError
        If ``path`` is a copick config that cannot be used, or a competition download
        where both splits qualify (the message names both).
    """
    path = Path(path)
    if path.is_file():
        if is_copick_config(path):
            return read_copick_config(path)
        _raise_if_broken_json(path)
        return None
    if is_kaggle_root(path):
        return kaggle_layout(path)
    if path.is_dir() and (path / RUNS_DIR).is_dir():
        return ProjectLayout(overlay_root=path)
    if path.is_dir() and (split := _competition_split(path, content)) is not None:
        log.info("%s: reading the %r split of the competition data (%s)", path, split.name, split)
        return kaggle_layout(split)
    return None


def _competition_split(root: Path, content: str) -> Path | None:
    """Return the one split of a competition download holding ``content`` (None: no split)."""
    if content not in ("tomograms", "picks"):
        raise ValueError(f"content must be 'tomograms' or 'picks', got {content!r}")
    subdirs = ("overlay",) if content == "picks" else ("static", "overlay")
    splits = [
        root / s
        for s in COMPETITION_SPLITS
        if any((root / s / d / RUNS_DIR).is_dir() for d in subdirs)
    ]
    if len(splits) > 1:
        raise InputError(
            root,
            f"competition data with {content} in both {splits[0]} and {splits[1]}: "
            f"pass {splits[0]} or {splits[1]} instead",
        )
    return splits[0] if splits else None


def pickable_objects_for(particles: ParticleSet | None = None) -> list[dict]:
    """Copick ``pickable_objects`` entries of a particle set (default: the CZII six).

    Name, label, colour (RGBA), radius and PDB id are copick's own fields; the score weight
    and aliases go in ``metadata["cryopick"]`` (read back by
    :func:`cryopick.io.picks.copick_config.particle_set_from_objects`).
    """
    particle_set = resolve_particle_set(particles)
    objects = []
    for p in particle_set:
        colour = str(p.colour)
        rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
        entry: dict = {"name": p.name, "is_particle": True}
        if p.pdb_id:
            entry["pdb_id"] = p.pdb_id
        entry.update({"label": p.label, "color": [*rgb, 128], "radius": p.radius_A})
        if not particle_set.is_czii:  # the CZII six need none: config as before sets
            entry["metadata"] = {"cryopick": {"weight": p.weight, "aliases": list(p.aliases)}}
        objects.append(entry)
    return objects


def make_copick_config(
    name: str,
    overlay_root: str | Path,
    static_root: str | Path | None = None,
    description: str = "",
    particles: ParticleSet | None = None,
) -> dict:
    """Build a copick 1.x filesystem config dict declaring a particle set's objects."""
    objects = pickable_objects_for(particles)
    cfg: dict = {
        "config_type": "filesystem",
        "name": name,
        "description": description,
        "version": "1.0.0",
        "pickable_objects": objects,
        "overlay_root": f"local://{Path(overlay_root).resolve()}",
        "overlay_fs_args": {"auto_mkdir": True},
    }
    if static_root is not None:
        cfg["static_root"] = f"local://{Path(static_root).resolve()}"
        cfg["static_fs_args"] = {"auto_mkdir": True}
    return cfg
