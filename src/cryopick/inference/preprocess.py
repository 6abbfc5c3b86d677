"""Preprocessing: robust intensity normalisation and resampling to the model's voxel size.

Both functions work z-block by z-block, so a lazy volume (zarr array, memory-mapped MRC)
is read once and only the float32 result is held in memory. The checks that warn about
unusual inputs are in :mod:`cryopick.inference.input_checks`.

Resampling and coordinates
--------------------------
With the convention of :mod:`cryopick.core.coords` (voxel ``i`` centred at ``i * spacing_A``),
resampling from ``spacing_A`` to ``target_spacing_A`` keeps the physical frame fixed and
only changes the grid: output voxel ``j`` is centred at ``j * target_spacing_A`` Å, which is
input index ``j * target_spacing_A / spacing_A``. A position in Å therefore means the same
point in both grids, and picks found on the resampled grid (converted with
``voxels_to_angstrom(..., target_spacing_A)``) are already in the input's Å frame; no
coordinate mapping is needed beyond using the right spacing.

A tomogram within :data:`SPACING_TOLERANCE` of the model's voxel size is not resampled
(:func:`choose_network_spacing_A`): the network runs on its own voxels and positions are
converted with its own voxel size. The CZII portal's tomograms say 10.012 Å; resampling
them to 10 Å would interpolate every voxel at a sub-voxel shift that grows across the
volume (a blur that varies with position) and cost a pass over the data, for a scale
difference of 0.12 %.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from cryopick.core.errors import InputError
from cryopick.inference.background import BackgroundMode, flatten_column_background
from cryopick.inference.fiducials import (
    FIDUCIAL_SIGMA,
    NO_FIDUCIALS,
    Fiducials,
    find_dense_voxels,
    group_fiducials,
)
from cryopick.inference.fill import (
    find_fill_values,
    flat_sample_values,
    mark_fill,
    widen_fill,
)
from cryopick.inference.resample import align_z_step, resample_separable

if TYPE_CHECKING:
    from cryopick.io.tomograms import Tomogram

log = logging.getLogger(__name__)

CLIP_SIGMA = 5.0  # the network's input is clipped to this many robust spreads
_SAMPLE_VOXELS = 2_000_000  # voxels used to estimate the median and spread
_BLOCK_VOXELS = 16_000_000  # about 64 MB of float32 per z block


def _z_blocks(
    n_z: int, slice_voxels: int, block_voxels: int | None = None, source: Any = None
) -> list[tuple[int, int]]:
    step = max(1, (block_voxels or _BLOCK_VOXELS) // max(1, slice_voxels))
    if source is not None:  # read whole z chunks of a chunked source
        step = align_z_step(source, step)
    return [(z0, min(n_z, z0 + step)) for z0 in range(0, n_z, step)]


def normalise_volume(
    volume: Any,
    *,
    clip_sigma: float | None = CLIP_SIGMA,
    source: str | Path | None = None,
    inplace: bool = False,
) -> NDArray[np.float32]:
    """Normalise a tomogram robustly to zero median and unit spread, clipped.

    The centre is the median and the spread is ``(p84.13 - p15.87) / 2`` (the standard
    deviation for Gaussian data, but insensitive to gold beads and empty corners),
    both estimated from an evenly strided sample of at most ~2 M voxels. Values are then
    clipped to ``[-clip_sigma, clip_sigma]``. Constant fill (padding, masks, the corners of
    a rotated volume: :mod:`cryopick.inference.fill`) is left out of the estimate and set
    to 0, with a rim of :data:`~cryopick.inference.fill.FILL_RIM_VOXELS` voxels.

    Parameters
    ----------
    volume : array_like, shape (Z, Y, X)
        Any dtype (int8 MRCs are common) and any array supporting slicing (numpy,
        memmap, zarr). Read once, z block by z block.
    clip_sigma : float or None
        Clip limit in units of the robust spread; None: no clipping.
    source : str or Path, optional
        File the volume came from, named in errors.
    inplace : bool
        Normalise a float32 numpy ``volume`` in place (no second copy); ignored otherwise.

    Returns
    -------
    numpy.ndarray, float32, shape (Z, Y, X)
        The normalised volume. A constant volume gives all zeros.

    Raises
    ------
    InputError
        If the volume is not 3D, is empty, or contains NaN or infinite values.
    """
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) != 3 or min(shape) == 0:
        raise InputError(source, f"expected a non-empty 3D volume (z, y, x), got shape {shape}")
    if inplace and isinstance(volume, np.ndarray) and volume.dtype == np.float32:
        out = volume
    else:
        out = np.empty(shape, dtype=np.float32)
    sample, fill_values = _copy_and_sample(volume, out, source)
    if len(fill_values):
        sample = sample[~np.isin(sample, fill_values)]
    centre, spread = _robust_centre_spread(sample)
    if not spread > 0:
        log.warning("%s: constant volume; normalised to zeros", source or "volume")
        out.fill(0.0)
        return out
    scale = np.float32(1.0 / spread)
    fill_mask = np.zeros(shape, dtype=bool) if len(fill_values) else None
    for z0, z1 in _z_blocks(shape[0], shape[1] * shape[2]):
        block = out[z0:z1]
        if fill_mask is not None:
            fill_mask[z0:z1] = mark_fill(block, fill_values)
        block -= np.float32(centre)
        block *= scale
        if clip_sigma is not None:
            np.clip(block, -clip_sigma, clip_sigma, out=block)
    if fill_mask is not None:
        _blank_fill(out, fill_mask, fill_values, source)
    return out


def _copy_and_sample(
    volume: Any, out: NDArray[np.float32], source: str | Path | None
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Copy ``volume`` into ``out`` (float32) block by block; return its sample and fill values.

    The sample is every ``stride``-th voxel along each axis (~2 M voxels in all); the fill
    values are those of :func:`cryopick.inference.fill.find_fill_values` (usually none).
    """
    n_z, n_y, n_x = out.shape
    stride = max(1, round((out.size / _SAMPLE_VOXELS) ** (1 / 3)))
    samples, flat_values = [], []
    for z0, z1 in _z_blocks(n_z, n_y * n_x, source=volume):
        block = np.asarray(volume[z0:z1], dtype=np.float32)
        if not np.isfinite(block).all():
            bad = np.argwhere(~np.isfinite(block))[0] + (z0, 0, 0)
            raise InputError(
                source,
                f"the tomogram contains NaN or infinite values (first at voxel z,y,x = "
                f"{tuple(int(i) for i in bad)}); fix or mask it before picking",
            )
        out[z0:z1] = block
        first = (-z0) % stride  # global z indices that are multiples of the stride
        strided = block[first::stride, ::stride, ::stride]
        samples.append(strided.ravel())
        flat_values.append(flat_sample_values(strided))
    sample = np.concatenate(samples)
    return sample, find_fill_values(np.concatenate(flat_values), sample)


def _robust_centre_spread(sample: NDArray[np.float32]) -> tuple[float, float]:
    """Median and ``(p84.13 - p15.87) / 2`` of a sample (its std when that is 0)."""
    if len(sample) == 0:
        return 0.0, 0.0
    p_lo, median, p_hi = np.percentile(sample, [15.865, 50.0, 84.135])
    spread = (p_hi - p_lo) / 2.0
    if not spread > 0:  # (nearly) constant sample: fall back to the full standard deviation
        spread = float(sample.std())
    return float(median), float(spread)


def _blank_fill(
    out: NDArray[np.float32],
    fill_mask: NDArray[np.bool_],
    fill_values: NDArray[np.float32],
    source: str | Path | None,
) -> None:
    """Set the (widened) fill of a normalised volume to 0, the median; say how much."""
    widened = widen_fill(fill_mask)
    out[widened] = 0.0
    log.info(
        "%s: %.1f%% of the voxels hold the constant value%s %s (padding or a mask, no data): "
        "left out of the normalisation and set to the median",
        source or "volume",
        100.0 * float(widened.mean()),
        "s" if len(fill_values) > 1 else "",
        ", ".join(f"{v:g}" for v in fill_values),
    )


def resampled_shape(
    shape_zyx: tuple[int, ...], spacing_A: float, target_spacing_A: float
) -> tuple[int, int, int]:
    """Shape of the grid at ``target_spacing_A`` covering the same extent.

    The new grid keeps every voxel centre inside the input's extent: ``n_new - 1`` is the
    largest ``j`` with ``j * target_spacing_A <= (n - 1) * spacing_A``.
    """
    ratio = float(spacing_A) / float(target_spacing_A)
    # the small epsilon keeps exact multiples (e.g. 5 -> 10 Å on an odd length) from rounding down
    z, y, x = (math.floor((n - 1) * ratio + 1e-6) + 1 for n in shape_zyx)
    return z, y, x


SPACING_TOLERANCE = 0.01
"""Relative voxel-size difference up to which a tomogram keeps its own voxels (1 %: a
particle 1 % larger or smaller, far less than the networks' tolerance to size)."""


def choose_network_spacing_A(spacing_A: float, model_spacing_A: float) -> float:
    """Return the voxel size, in Å, at which the network reads a tomogram of ``spacing_A``.

    The tomogram's own when it is within :data:`SPACING_TOLERANCE` of the model's (no
    resampling), else the model's. Positions found on that grid are converted to Å with it.
    """
    if abs(float(spacing_A) / float(model_spacing_A) - 1.0) <= SPACING_TOLERANCE:
        return float(spacing_A)
    return float(model_spacing_A)


def prepare_volume(
    tomogram: Tomogram,
    model_spacing_A: float,
    *,
    find_beads: bool = True,
    background: BackgroundMode = "auto",
) -> tuple[NDArray[np.float32], Fiducials]:
    """Return the network's input: the tomogram near ``model_spacing_A``, normalised, clipped.

    Resampled first when its voxel size differs by more than :data:`SPACING_TOLERANCE`
    (:func:`resample_volume`; the grid's voxel size is :func:`choose_network_spacing_A`). When
    ``find_beads``, gold beads are looked for after normalising, in the same pass over the
    volume that clips it (:func:`cryopick.inference.fiducials.find_dense_voxels` before each
    block is clipped), and returned with the volume; otherwise the normalisation clips.
    Last, a grey level that drifts across x/y (a carbon film) is flattened as ``background``
    says (:func:`cryopick.inference.background.flatten_column_background`).
    """
    grid_spacing_A = choose_network_spacing_A(tomogram.spacing_A, model_spacing_A)
    volume, fiducials = _normalised_volume(tomogram, grid_spacing_A, find_beads)
    flatten_column_background(
        volume, grid_spacing_A, background, name=tomogram.name, clip_sigma=CLIP_SIGMA
    )
    return volume, fiducials


def _normalised_volume(
    tomogram: Tomogram, grid_spacing_A: float, find_beads: bool
) -> tuple[NDArray[np.float32], Fiducials]:
    """Resample, normalise, find beads and clip (:func:`prepare_volume` before flattening)."""
    clip_sigma = None if find_beads else CLIP_SIGMA  # with beads: clipped below, after them
    if tomogram.spacing_A == grid_spacing_A:
        volume = normalise_volume(tomogram.data, source=tomogram.source, clip_sigma=clip_sigma)
    else:
        log.info(
            "%s: resampling from %.3f Å to the model's %.3f Å voxels",
            tomogram.name,
            tomogram.spacing_A,
            grid_spacing_A,
        )
        resampled = resample_volume(tomogram.data, tomogram.spacing_A, grid_spacing_A)
        volume = normalise_volume(
            resampled, source=tomogram.source, inplace=True, clip_sigma=clip_sigma
        )
    if not find_beads:
        return volume, NO_FIDUCIALS
    dense = []
    for z0, z1 in _z_blocks(volume.shape[0], volume.shape[1] * volume.shape[2]):
        block = volume[z0:z1]
        dense.append(find_dense_voxels(block, FIDUCIAL_SIGMA, z0))
        np.clip(block, -CLIP_SIGMA, CLIP_SIGMA, out=block)
    return volume, group_fiducials(np.concatenate(dense), volume.size, grid_spacing_A)


def resample_volume(
    volume: Any,
    spacing_A: float,
    target_spacing_A: float,
    *,
    kernel: str | None = None,
) -> NDArray[np.float32]:
    """Resample a volume to another voxel size, keeping positions in Å fixed.

    Output voxel ``j`` (per axis) is centred at ``j * target_spacing_A`` Å, the same
    physical point as input index ``j * target_spacing_A / spacing_A`` (see the module
    docstring). Separable, one matrix product per axis
    (:func:`cryopick.inference.resample.resample_separable`): Lanczos-3 onto finer voxels,
    a Gaussian low-pass of sigma ``(f - 1) / 2`` input voxels then trilinear onto coarser
    ones (``f`` the downsampling factor). The input is read once, in z blocks.

    Parameters
    ----------
    volume : array_like, shape (Z, Y, X)
        Input volume (any dtype, any sliceable array).
    spacing_A : float
        Its voxel size in Å.
    target_spacing_A : float
        Wanted voxel size in Å.
    kernel : str, optional
        ``"lanczos3"``, ``"cubic"`` or ``"linear"``; default as above.

    Returns
    -------
    numpy.ndarray, float32, shape :func:`resampled_shape`
        The resampled volume (a float32 copy even when the spacings already match).
    """
    if spacing_A <= 0 or target_spacing_A <= 0:
        raise ValueError(f"voxel sizes must be positive, got {spacing_A} and {target_spacing_A}")
    shape = tuple(int(s) for s in volume.shape)
    if math.isclose(spacing_A, target_spacing_A, rel_tol=1e-4):
        same: NDArray[np.float32] = np.array(volume[:], dtype=np.float32)  # a copy
        return same
    out_shape = resampled_shape(shape, spacing_A, target_spacing_A)
    factor = float(target_spacing_A) / float(spacing_A)  # input voxels per output voxel
    return resample_separable(volume, out_shape, factor, kernel=kernel)
