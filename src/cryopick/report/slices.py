"""Slices of a tomogram for the report: which ones, read lazily, their grey range, empty ones."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    from cryopick.report.figures import PanelBox

log = logging.getLogger(__name__)

DISPLAY_PERCENTILES = (1.0, 99.0)  # robust contrast limits per slice


def choose_slice_indices(n_vox: int, count: int) -> list[int]:
    """Evenly spaced slice indices: the centres of ``count`` equal bins along ``n_vox``."""
    return sorted({min(n_vox - 1, int((k + 0.5) * n_vox / count)) for k in range(count)})


def read_slice(data: Any, axis: str, index: int, slab_voxels: int = 1) -> np.ndarray:
    """Read one slice (mean over a slab of ``slab_voxels``) from a lazy (z, y, x) array.

    Only the voxels of the slab are read, so zarr arrays and memmaps stay on disk.

    Parameters
    ----------
    data : array-like, shape (Z, Y, X)
        Tomogram, e.g. ``zarr.Array``, ``numpy.memmap`` or ``numpy.ndarray``.
    axis : {"z", "y"}
        ``"z"`` for an XY slice, ``"y"`` for an XZ slice.
    index : int
        Slice index along ``axis``.
    slab_voxels : int
        Number of neighbouring slices averaged (clipped at the volume edge).

    Returns
    -------
    numpy.ndarray, float32
        Shape (Y, X) for XY, (Z, X) for XZ.
    """
    dim = {"z": 0, "y": 1}[axis]
    n = data.shape[dim]
    half = slab_voxels // 2
    lo, hi = max(0, index - half), min(n, index + half + 1)
    block = np.asarray(data[lo:hi] if dim == 0 else data[:, lo:hi], dtype=np.float32)
    slab: NDArray[np.float32] = block.mean(axis=dim)
    return slab


def describe_empty_slice(image: ArrayLike) -> str | None:
    """Say what is wrong with a slice that shows nothing: no finite value, or one value.

    Returns None for a slice with data (some NaNs among finite values are fine).
    """
    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "has no finite value (all NaN or infinite)"
    if finite.min() == finite.max():
        return f"is constant ({finite.min():g} everywhere)"
    return None


def warn_empty_slices(label: str, slices: Sequence[ArrayLike], boxes: Sequence[PanelBox]) -> int:
    """Log one warning naming the slices of a tomogram that show no data; return their count."""
    problems = [
        f"{box.axis}={box.index} {problem}"
        for image, box in zip(slices, boxes, strict=True)
        if (problem := describe_empty_slice(image))
    ]
    if problems:
        log.warning("%s: slices show no data: %s", label, "; ".join(problems))
    return len(problems)


def compute_display_range(image: ArrayLike) -> tuple[float, float]:
    """Robust grey-value limits of one slice: its 1st and 99th percentiles.

    Parameters
    ----------
    image : array_like
        A 2D slice.

    Returns
    -------
    tuple of float
        ``(vmin, vmax)``; ``vmax > vmin`` even for a constant slice.
    """
    values = np.asarray(image, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    vmin, vmax = np.percentile(values, DISPLAY_PERCENTILES)
    if vmax <= vmin:
        vmax = vmin + 1.0
    return float(vmin), float(vmax)
