"""Find and open tomograms wherever they live: copick projects, Kaggle folders, MRC, OME-Zarr.

``read_tomograms(path)`` accepts

* a copick filesystem config JSON, whatever its file name (tomograms under its static or
  overlay root),
* a Kaggle challenge root (``<root>/static/ExperimentRuns/...``), or the competition
  download holding ``train/`` and ``test/`` such roots when only one of them has runs,
* a folder holding ``ExperimentRuns/``,
* a folder of ``.mrc``/``.rec``/``.zarr`` volumes (run name = file stem),
* one ``.mrc``/``.rec`` file or one ``.zarr`` store (run name = stem).

MRC files may be gzip- or bzip2-compressed (``TS_1.mrc.gz``: run ``TS_1``), read into
memory.

The voxel size always comes from the data's own metadata (zarr ``scale``, MRC header),
never from a ``VoxelSpacing`` folder name: the challenge data sit in ``VoxelSpacing10.000``
but their metadata say 10.012 Å. Data stay lazy (zarr.Array / numpy.memmap) until
:meth:`Tomogram.to_numpy`. In projects, runs without the requested reconstruction type
are skipped with a warning (:func:`cryopick.io.tomo_types.runs_with_tomo_type`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from cryopick.core.errors import InputError
from cryopick.io.layout import ProjectLayout, resolve_layout
from cryopick.io.mrc import (
    COMPRESSED_SUFFIXES,
    MRC_SUFFIXES,
    TILT_SERIES_SUFFIXES,
    read_mrc,
    split_volume_name,
)
from cryopick.io.omezarr import (
    is_plain_zarr_array,
    read_ome_zarr,
    read_plain_zarr,
    write_ome_zarr,
)
from cryopick.io.tomo_types import (
    select_runs_with_tomo_type,
    tomo_type_stores,
)

log = logging.getLogger(__name__)

DEFAULT_TOMO_TYPE = "denoised"


@dataclass
class Tomogram:
    """One tomogram, opened lazily.

    Attributes
    ----------
    name : str
        Run (experiment) name; picks of this tomogram carry it as ``experiment``.
    data : zarr.Array or numpy.memmap or numpy.ndarray, shape (Z, Y, X)
        The voxels, not necessarily in memory. OME-Zarr levels are checked zarr arrays:
        reading a missing or corrupt chunk raises InputError naming the store and chunk
        (:mod:`cryopick.io.omezarr_checks`).
    spacing_A : float
        Voxel size in Å, from the file's metadata.
    source : Path
        The file or zarr store the data come from.
    tomo_type : str or None
        Reconstruction type (``denoised``, ``wbp``, ...) when known.
    """

    name: str
    data: Any
    spacing_A: float
    source: Path
    tomo_type: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape (Z, Y, X) in voxels."""
        z, y, x = (int(s) for s in self.data.shape)
        return z, y, x

    def to_numpy(self, dtype: DTypeLike = np.float32) -> NDArray:
        """Read the whole volume into memory as a new array of ``dtype``."""
        if isinstance(self.data, np.ndarray):  # memmap or in-memory: copy, never alias
            return np.array(self.data, dtype=dtype)
        return np.asarray(self.data[...]).astype(dtype, copy=False)


def _read_mrc_tomogram(path: Path, level: int, spacing_A: float | None) -> Tomogram:
    if level != 0:
        raise InputError(path, f"an MRC file has one resolution level; got level={level}")
    data, spacing = read_mrc(path, spacing_A=spacing_A)
    return Tomogram(name=split_volume_name(path)[0], data=data, spacing_A=spacing, source=path)


def _read_zarr_tomogram(path: Path, level: int, spacing_A: float | None) -> Tomogram:
    if is_plain_zarr_array(path):  # no metadata: the caller's voxel size
        data, spacing = read_plain_zarr(path, spacing_A)
    else:
        data, spacing = read_ome_zarr(path, level=level)  # metadata spacing wins over spacing_A
    return Tomogram(name=path.stem, data=data, spacing_A=spacing, source=path)


# one reader per file extension; adding a format = adding a row
_READERS: dict[str, Callable[[Path, int, float | None], Tomogram]] = {
    **{suffix: _read_mrc_tomogram for suffix in MRC_SUFFIXES},
    ".zarr": _read_zarr_tomogram,
}


def read_tomograms(
    path: str | Path,
    tomo_type: str = DEFAULT_TOMO_TYPE,
    level: int = 0,
    spacing_A: float | None = None,
    runs: Sequence[str] | None = None,
    prefer_spacing_A: float | None = None,
) -> list[Tomogram]:
    """Open every tomogram found at ``path`` (see the module docstring for what it may be).

    Parameters
    ----------
    path : str or Path
        Copick config JSON (any file name), Kaggle root, competition folder with one
        split, ``ExperimentRuns`` parent, folder of volumes, or a single
        ``.mrc``/``.rec``/``.zarr``.
    tomo_type : str
        Reconstruction type to take from project layouts (ignored for plain files).
    level : int
        OME-Zarr pyramid level (0 = full resolution).
    spacing_A : float, optional
        For project layouts with several ``VoxelSpacing`` folders: take the one closest
        to this (default: the smallest). For MRC files: voxel size overriding the header.
    runs : sequence of str, optional
        Only these runs (default: all), in this order.
    prefer_spacing_A : float, optional
        Without ``spacing_A``: the ``VoxelSpacing`` folder to take, the closest to this
        (a model's voxel size: the CZII portal keeps runs at 4.99 and 10.012 Å, and a
        10 Å model is best fed the 10.012 Å tomogram, not 8 times the voxels at 4.99).
        Never overrides a file's voxel size.

    Returns
    -------
    list of Tomogram
        Sorted by run name unless ``runs`` gives the order.

    Raises
    ------
    InputError
        If nothing readable is found or a requested run is missing.
    MissingTomoTypeError
        If no selected run has ``tomo_type`` (the message lists the types they have).
        Runs lacking it are otherwise skipped with a warning.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    if _is_tilt_series(path):
        raise InputError(path, TILT_SERIES_PROBLEM)
    if (reader := _reader_for(path)) is not None:
        members = [(path, reader)]
    elif (layout := resolve_layout(path)) is not None:
        target_A = spacing_A if spacing_A is not None else prefer_spacing_A
        return _read_layout(path, layout, tomo_type, level, target_A, runs)
    elif path.is_dir():
        members = _folder_members(path)
    else:
        raise InputError(
            path, f"not a tomogram: expected a copick config or a {_describe_suffixes()} file"
        )
    stems = [split_volume_name(p)[0] for p, _ in members]
    if dupes := sorted({n for n in stems if stems.count(n) > 1}):
        raise InputError(path, f"several volumes share the run name(s) {dupes}")
    by_name = dict(zip(stems, members, strict=True))
    selected = _check_runs(path, sorted(by_name), runs)
    return [read(p, level, spacing_A) for p, read in (by_name[n] for n in selected)]


def read_tomogram(
    path: str | Path,
    tomo_type: str = DEFAULT_TOMO_TYPE,
    level: int = 0,
    spacing_A: float | None = None,
    run: str | None = None,
    prefer_spacing_A: float | None = None,
) -> Tomogram:
    """Open exactly one tomogram (``run`` picks it from a project); see :func:`read_tomograms`.

    Raises
    ------
    MissingTomoTypeError
        If ``run`` (or the only run) has no ``tomo_type`` tomogram.
    InputError
        If ``path`` holds several tomograms and no ``run`` is given, or cannot be read.
    """
    runs = None if run is None else [run]
    tomograms = read_tomograms(path, tomo_type, level, spacing_A, runs, prefer_spacing_A)
    if len(tomograms) != 1:
        names = [t.name for t in tomograms]
        raise InputError(path, f"holds {len(names)} tomograms {names[:10]}; choose one run")
    return tomograms[0]


def read_tomogram_shapes(
    path: str | Path, tomo_type: str = DEFAULT_TOMO_TYPE, spacing_A: float | None = None
) -> dict[str, tuple[tuple[int, int, int], float]]:
    """Return each run's tomogram shape (z, y, x voxels) and voxel size in Å at ``path``.

    What RELION-5 STAR positions (Å from the tomogram's centre) are converted with;
    nothing but the metadata is read. ``spacing_A`` as for :func:`read_tomograms`.
    """
    found = read_tomograms(path, tomo_type=tomo_type, spacing_A=spacing_A)
    return {t.name: (t.shape, t.spacing_A) for t in found}


def write_tomogram(
    layout: ProjectLayout,
    run: str,
    volume_zyx: ArrayLike,
    spacing_A: float,
    tomo_type: str = DEFAULT_TOMO_TYPE,
    n_levels: int = 3,
    zarr_format: int = 2,
) -> Path:
    """Write a tomogram into a copick/Kaggle project as OME-Zarr and return its path.

    It goes to ``ExperimentRuns/<run>/VoxelSpacing<spacing:.3f>/<tomo_type>.zarr`` under
    the static root (or the overlay root when there is none).
    """
    path = layout.tomogram_write_path(run, spacing_A, tomo_type)
    return write_ome_zarr(path, volume_zyx, spacing_A, n_levels=n_levels, zarr_format=zarr_format)


TILT_SERIES_PROBLEM = (
    "is a tilt series (a stack of 2-D projections), not a tomogram: reconstruct it first "
    "(IMOD, AreTomo, Warp, RELION) and give the tomogram"
)


def _is_tilt_series(path: Path) -> bool:
    """Tell whether ``path`` is a file named as a tilt series (``.st``, ``.ali``, ``.mrcs``)."""
    return split_volume_name(path)[1] in TILT_SERIES_SUFFIXES and path.is_file()


def _folder_members(
    path: Path,
) -> list[tuple[Path, Callable[[Path, int, float | None], Tomogram]]]:
    """Return the volumes of a plain folder with their readers (tilt series left out)."""
    entries = [p for p in sorted(path.iterdir()) if not p.name.startswith(".")]
    members = [(p, read) for p in entries if (read := _reader_for(p)) is not None]
    tilt_series = [p.name for p in entries if _is_tilt_series(p)]
    if tilt_series:
        log.info("%s: %d tilt series left out (not tomograms)", path, len(tilt_series))
    if not members:
        found = f" (it holds only tilt series: {', '.join(tilt_series[:3])})" if tilt_series else ""
        raise InputError(
            path,
            "no tomograms found: expected a copick config, a folder with ExperimentRuns/, "
            f"or files ending in {_describe_suffixes()}{found}",
        )
    return members


def _describe_suffixes() -> str:
    """Describe the volume suffixes read, for messages."""
    compressed = "/".join(COMPRESSED_SUFFIXES)
    return f"{', '.join(_READERS)} (MRC files also {compressed}-compressed)"


def _reader_for(path: Path) -> Callable[[Path, int, float | None], Tomogram] | None:
    suffix = split_volume_name(path)[1]
    reader = _READERS.get(suffix)
    if reader is None:
        return None
    # a *.zarr that is not a zarr store is reported by the zarr reader, naming it
    return reader if (path.is_dir() if suffix == ".zarr" else path.is_file()) else None


def _read_layout(
    source: Path,
    layout: ProjectLayout,
    tomo_type: str,
    level: int,
    spacing_A: float | None,
    runs: Sequence[str] | None,
) -> list[Tomogram]:
    names = layout.run_names()
    if not names:
        raise InputError(source, "no runs: the ExperimentRuns/ folder is missing or empty")
    selected = select_runs_with_tomo_type(
        source, layout, _check_runs(source, names, runs), tomo_type
    )
    tomograms = []
    for run in selected:
        candidates = tomo_type_stores(layout, run, tomo_type)
        if spacing_A is None:
            folder_A = min(candidates)
        else:
            folder_A = min(candidates, key=lambda s: (abs(s - spacing_A), s))
        store = candidates[folder_A]
        data, spacing = read_ome_zarr(store, level=level)
        tomograms.append(
            Tomogram(name=run, data=data, spacing_A=spacing, source=store, tomo_type=tomo_type)
        )
    return tomograms


def _check_runs(source: Path, names: Sequence[str], runs: Sequence[str] | None) -> list[str]:
    if runs is None:
        return list(names)
    missing = [r for r in runs if r not in names]
    if missing:
        shown = ", ".join(list(names)[:20]) + (" ..." if len(names) > 20 else "")
        raise InputError(source, f"run(s) {missing} not found; available: {shown}")
    return list(dict.fromkeys(runs))
