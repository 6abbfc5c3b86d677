"""OME-Zarr (OME-NGFF) multiscale volumes: read one level lazily, write a pyramid.

Two flavours are read and written, both as stored by the CZ cryoET data portal and copick:

* zarr v2 + OME-NGFF 0.4: ``.zgroup``/``.zattrs`` with a top-level ``multiscales`` key;
* zarr v3 + OME-NGFF 0.5: ``zarr.json`` whose attributes hold ``{"ome": {"multiscales": ...}}``.

Axes are ``z, y, x``, after any time or channel axes of length 1 (``t, c, z, y, x``;
:mod:`cryopick.io.omezarr_axes`); the voxel size of each level is the ``scale`` of that
level's ``coordinateTransformations``, in Å (converted when the axes declare another unit).
Works with zarr-python 2 (copick's environment, v2 stores only) and zarr-python 3.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import ArrayLike, NDArray

from cryopick.core.errors import InputError
from cryopick.io._checks import as_volume_to_write
from cryopick.io.atomic import atomic_path
from cryopick.io.omezarr_axes import (
    AXES_ZYX,
    count_leading_axes,
    drop_leading_axes,
    read_spacing_A,
)
from cryopick.io.omezarr_checks import ZARR3, checked_array, warn_if_translated

DEFAULT_CHUNKS = (128, 128, 128)
_GROUP_FILES = (".zgroup", ".zattrs", "zarr.json")


# ---------------------------------------------------------------- reading


def read_ome_zarr(path: str | Path, level: int = 0) -> tuple[Any, float]:
    """Open one resolution level of an OME-Zarr volume lazily.

    Parameters
    ----------
    path : str or Path
        The OME-Zarr group (a ``*.zarr`` folder), zarr v2 or v3.
    level : int
        Index into ``multiscales[0].datasets`` (0 = full resolution). The array's path
        inside the group is taken from the metadata, not assumed to be ``str(level)``.

    Returns
    -------
    data : zarr.Array or SpatialView, shape (Z, Y, X)
        The level, not read into memory (a level with leading time or channel axes of
        length 1 comes as a :class:`cryopick.io.omezarr_axes.SpatialView` of its volume).
        Reads with ``data[...]`` raise InputError naming the chunk when a chunk file is
        missing or corrupt (:mod:`cryopick.io.omezarr_checks`).
    spacing_A : float
        Voxel size of that level in Å.

    Raises
    ------
    InputError
        If ``path`` is not a zarr group, its metadata are corrupt or lack ``multiscales``,
        ``level`` is out of range, the voxel size is missing, or the array is not one
        3-D volume (more than one channel or time point, or axes other than z, y, x).

    Notes
    -----
    An OME-NGFF ``translation`` is not applied (positions stay in the array's voxel frame,
    voxel ``i`` at ``i * spacing_A``); a warning says so, once per store.
    """
    path = Path(path)
    group, ms = _read_multiscale(path)
    datasets = ms["datasets"]
    if not 0 <= level < len(datasets):
        raise InputError(
            path, f"level {level} out of range: the pyramid has levels 0..{len(datasets) - 1}"
        )
    dataset = datasets[level]
    ds_path = dataset.get("path") if isinstance(dataset, dict) else None
    if not isinstance(ds_path, str):
        raise InputError(path, f"multiscales dataset {level} has no 'path'")
    try:
        data = group[ds_path]
    except Exception:
        raise InputError(
            path, f"level {level}: array {ds_path!r} named in the metadata is missing"
        ) from None
    if not isinstance(data, zarr.Array):
        raise InputError(path, f"level {level}: {ds_path!r} is not an array")
    if data.dtype.kind not in "iuf":  # complex (a Fourier transform?), bool, strings
        raise InputError(
            path, f"level {level}: data type {data.dtype} is not a tomogram's (integers or floats)"
        )
    n_leading = count_leading_axes(path, ms, data.shape, level)
    spacing_A, unit_A = read_spacing_A(path, ms, dataset, level, n_leading)
    warn_if_translated(path, level, ms, dataset, unit_A)
    return drop_leading_axes(checked_array(path, ds_path, data), n_leading), spacing_A


def read_ome_zarr_levels(path: str | Path) -> list[tuple[tuple[int, ...], float]]:
    """List the levels of an OME-Zarr volume as ``(shape, spacing_A)`` pairs, finest first."""
    _, ms = _read_multiscale(Path(path))
    levels = []
    for level in range(len(ms["datasets"])):
        data, spacing_A = read_ome_zarr(path, level)
        levels.append((tuple(data.shape), spacing_A))
    return levels


def _read_multiscale(path: Path) -> tuple[Any, dict]:
    group = _open_group(path)
    try:
        attrs = group.attrs.asdict()
    except Exception as err:  # corrupt .zattrs surface here with some stores
        raise InputError(path, f"corrupt or unreadable zarr attributes: {err}") from None
    ome = attrs.get("ome", attrs)
    multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
    if not isinstance(multiscales, list) or not multiscales:
        raise InputError(path, "not an OME-Zarr image: no 'multiscales' in the zarr attributes")
    ms = multiscales[0]
    datasets = ms.get("datasets") if isinstance(ms, dict) else None
    if not isinstance(datasets, list) or not datasets:
        raise InputError(path, "OME-Zarr 'multiscales' lists no datasets")
    return group, ms


def is_zarr_store(path: str | Path) -> bool:
    """Tell whether ``path`` is a folder holding zarr group or array metadata."""
    path = Path(path)
    return path.is_dir() and any((path / f).exists() for f in (*_GROUP_FILES, ".zarray"))


def is_plain_zarr_array(path: str | Path) -> bool:
    """Tell whether ``path`` is a zarr array outside any OME-Zarr image (no voxel size).

    A level of an OME-Zarr image (``TS_1.zarr/0``) is not: its parent holds the metadata.
    """
    path = Path(path)
    if not _is_bare_array(path):
        return False
    return not (is_zarr_store(path.parent) and not _is_bare_array(path.parent))


def read_plain_zarr(path: str | Path, spacing_A: float | None) -> tuple[Any, float]:
    """Open a plain 3-D zarr array (z, y, x) lazily, at the voxel size the caller gives.

    Raises InputError naming ``path`` without ``spacing_A`` (the array says none), for
    another number of axes, or for data that are not integers or floats.
    """
    path = Path(path)
    if spacing_A is None or not spacing_A > 0:
        raise InputError(
            path,
            "a plain zarr array (no OME-NGFF metadata) has no voxel size: pass it with "
            "--spacing-A, or write the tomogram as OME-Zarr",
        )
    try:
        data = zarr.open_array(str(path), mode="r")
    except Exception as err:  # zarr raises many types for corrupt metadata
        raise InputError(path, f"corrupt or unreadable zarr metadata: {err}") from None
    if data.ndim != 3:
        raise InputError(path, f"expected a 3-D (z, y, x) array, got shape {data.shape}")
    if data.dtype.kind not in "iuf":
        raise InputError(path, f"data type {data.dtype} is not a tomogram's (integers or floats)")
    return checked_array(path, "", data), float(spacing_A)


def _is_bare_array(path: Path) -> bool:
    return (path / ".zarray").exists() or _v3_node_type(path) == "array"


def _open_group(path: Path) -> Any:
    if not path.exists():
        raise InputError(path, "does not exist")
    if not is_zarr_store(path):
        raise InputError(path, "not a zarr store: no .zgroup/.zattrs (v2) or zarr.json (v3)")
    if _is_bare_array(path):
        hint = (
            "give its voxel size with --spacing-A"
            if is_plain_zarr_array(path)
            else "pass the parent *.zarr folder"
        )
        raise InputError(path, f"is a bare zarr array, not an OME-Zarr group: {hint}")
    if (path / "zarr.json").exists() and not (path / ".zgroup").exists() and not ZARR3:
        raise InputError(path, f"zarr v3 store needs zarr-python >= 3 (have {zarr.__version__})")
    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as err:  # zarr raises many types for corrupt metadata
        raise InputError(path, f"corrupt or unreadable zarr metadata: {err}") from None


def _v3_node_type(path: Path) -> str | None:
    meta = path / "zarr.json"
    if not meta.exists():
        return None
    try:
        node = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(path, f"corrupt zarr.json: {err}") from None
    return node.get("node_type") if isinstance(node, dict) else None


# ---------------------------------------------------------------- writing


def downsample_mean(volume: NDArray) -> NDArray:
    """Halve each axis by 2x2x2 block averaging (ceil size; edge blocks average what exists).

    Integer volumes are rounded back to their dtype; float volumes keep theirs.
    """
    vol = np.asarray(volume)
    pad = [(0, s % 2) for s in vol.shape]
    # edge padding duplicates every voxel of a partial block equally, so its mean is exact
    padded = np.pad(vol, pad, mode="edge") if any(p for _, p in pad) else vol
    z, y, x = (s // 2 for s in padded.shape)
    blocks = padded.reshape(z, 2, y, 2, x, 2).astype(np.float32, copy=False)
    out = blocks.mean(axis=(1, 3, 5), dtype=np.float32)
    result: NDArray  # in the input's dtype
    if np.issubdtype(vol.dtype, np.integer):
        info = np.iinfo(vol.dtype)
        result = np.clip(np.rint(out), info.min, info.max).astype(vol.dtype)
    else:
        result = out.astype(vol.dtype, copy=False)
    return result


def downsample_nearest(volume: NDArray) -> NDArray:
    """Halve each axis by taking every second voxel (for label volumes); ceil size."""
    return np.ascontiguousarray(np.asarray(volume)[::2, ::2, ::2])


def write_ome_zarr(
    path: str | Path,
    volume_zyx: ArrayLike,
    spacing_A: float,
    n_levels: int = 3,
    zarr_format: int = 2,
    chunks: Sequence[int] = DEFAULT_CHUNKS,
    downsample: Callable[[NDArray], NDArray] = downsample_mean,
    name: str | None = None,
) -> Path:
    """Write a volume as a multiscale OME-Zarr, atomically.

    Level ``k`` (array path ``str(k)``) is the volume downsampled ``k`` times by 2, with
    voxel size ``spacing_A * 2**k``. Metadata follow OME-NGFF 0.4 (zarr v2, as on the
    cryoET data portal) or 0.5 (zarr v3); axes are z, y, x in angstrom. Only ``scale``
    transformations are written, as the portal does. Every chunk is written, also those
    equal to the fill value, so a missing chunk file always means a damaged store.

    Parameters
    ----------
    path : str or Path
        Destination ``*.zarr`` folder; replaced if it exists.
    volume_zyx : array_like, shape (Z, Y, X)
        The full-resolution volume. float64 is stored as float32.
    spacing_A : float
        Voxel size of level 0 in Å.
    n_levels : int
        Number of pyramid levels (>= 1).
    zarr_format : {2, 3}
        Zarr format of the store.
    chunks : sequence of int
        Chunk shape (clipped to the level shape).
    downsample : callable
        Maps a level to the next coarser one (:func:`downsample_mean` for images,
        :func:`downsample_nearest` for labels).
    name : str, optional
        The multiscales ``name`` (default: the folder stem).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    volume = as_volume_to_write(volume_zyx, spacing_A)
    _check_write_args(n_levels, zarr_format, chunks)
    if volume.dtype == np.float64:
        volume = volume.astype(np.float32)
    multiscale = {
        "name": name or path.stem,
        "axes": [{"name": a, "type": "space", "unit": "angstrom"} for a in AXES_ZYX],
        "datasets": [
            {
                "path": str(k),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [float(spacing_A) * 2**k] * 3}
                ],
            }
            for k in range(n_levels)
        ],
        "type": getattr(downsample, "__name__", "custom").removeprefix("downsample_"),
    }
    if zarr_format == 2:
        attrs: dict = {"multiscales": [{"version": "0.4", **multiscale}]}
    else:
        attrs = {"ome": {"version": "0.5", "multiscales": [multiscale]}}
    # an existing zarr store (our own kind of output) may be replaced; any other folder not
    with atomic_path(path, replace_folder=is_zarr_store(path)) as tmp:
        root = zarr.open_group(str(tmp), mode="w", **_format_kwargs(zarr_format))
        level = volume
        for k in range(n_levels):
            if k > 0:
                level = downsample(level)
            _write_array(root, str(k), level, chunks, zarr_format)
        root.attrs.update(attrs)
    return path


def write_label_zarr(
    path: str | Path,
    labels_zyx: ArrayLike,
    spacing_A: float,
    n_levels: int = 1,
    zarr_format: int = 2,
    chunks: Sequence[int] = DEFAULT_CHUNKS,
) -> Path:
    """Write an integer label volume (e.g. a multilabel segmentation) as uint8 OME-Zarr.

    Coarser levels, if any, take every second voxel so labels stay labels.

    Raises
    ------
    ValueError
        If the labels are not integers in 0..255.
    """
    labels = np.asarray(labels_zyx)
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.bool_:
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"labels must lie in 0..255, got {labels.min()}..{labels.max()}")
    return write_ome_zarr(
        path,
        labels.astype(np.uint8, copy=False),
        spacing_A,
        n_levels=n_levels,
        zarr_format=zarr_format,
        chunks=chunks,
        downsample=downsample_nearest,
    )


def _check_write_args(n_levels: int, zarr_format: int, chunks: Sequence[int]) -> None:
    if n_levels < 1:
        raise ValueError(f"n_levels must be >= 1, got {n_levels}")
    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, got {zarr_format}")
    if len(chunks) != 3:
        raise ValueError(f"chunks must have 3 entries (z, y, x), got {chunks}")
    if zarr_format == 3 and not ZARR3:
        raise ValueError(f"zarr v3 stores need zarr-python >= 3 (have {zarr.__version__})")


def _format_kwargs(zarr_format: int) -> dict:
    return {"zarr_format": zarr_format} if ZARR3 else {}


def _write_array(root: Any, name: str, data: NDArray, chunks: Sequence[int], fmt: int) -> None:
    chunk_shape = tuple(
        max(1, min(int(c), int(s))) for c, s in zip(chunks, data.shape, strict=True)
    )
    if not ZARR3:
        root.create_dataset(
            name, data=data, chunks=chunk_shape, dimension_separator="/", write_empty_chunks=True
        )
        return
    extra: dict = (
        {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
        if fmt == 2
        else {"dimension_names": list(AXES_ZYX)}
    )
    arr = root.create_array(
        name,
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunk_shape,
        config={"write_empty_chunks": True},  # zarr 3 skips all-fill chunks by default
        **extra,
    )
    arr[...] = data
