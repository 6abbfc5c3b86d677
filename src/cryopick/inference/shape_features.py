"""Describe the density at a candidate pick by numbers that do not depend on its orientation.

A beta-galactosidase, a thyroglobulin and a crowder of about the same size can score alike
in the network's map and have similar radial density profiles in shells of their class
radius. What tells them apart is shape: how elongated the density is, how it is spread
over absolute distances, and how much structure it has at each spatial frequency.
:func:`shape_features` measures these on cubic crops of the normalised tomogram centred
on the candidates (:data:`CROP_HALF_VOX` voxels each side at the model's voxel size),
with particles dark as the network sees them:

- the mean and the spread of the density in 1-voxel shells around the centre
  (:data:`N_SHELLS` and ``N_SHELLS - 1`` numbers);
- the principal axes of the dark density within :data:`INERTIA_RADIUS_FRACTION` of the
  class radius (three lengths, two ratios), how far its centre of mass lies from the
  pick and how much dark density there is (7 numbers);
- the rotationally averaged power spectrum of the crop in the bands
  :data:`POWER_BAND_EDGES` (log power), once under a soft spherical mask as wide as the
  crop, once under one of :data:`CLASS_MASK_FRACTION` of the class radius (the
  particle's own structure, less of its neighbours'), each relative to the median over
  crops at fixed positions of the same tomogram when those are given, so that a
  tomogram's own spectrum (voxel size it was resampled from, reconstruction filter,
  denoising) does not shift the numbers.

Each is invariant to rotations of the particle (up to the voxel grid), so a classifier on
them needs no orientation. :mod:`cryopick.inference.rescoring` adds them to the feature
rows of a rescorer with ``features="map+density+shape"``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft
import torch
from numpy.typing import NDArray

CROP_HALF_VOX = 12
"""Crops reach this many voxels each side of the centre (24 voxels wide)."""

N_SHELLS = 12
"""1-voxel shells of the density profile, from the centre out to the crop's edge."""

INERTIA_RADIUS_FRACTION = 1.2
"""The principal axes are measured on the dark density within this fraction of the
class radius (at most the crop's inscribed sphere)."""

POWER_BAND_EDGES = tuple(range(1, CROP_HALF_VOX + 1))
"""Edges of the power spectrum's bands, in cycles per crop width (24 voxels)."""

CLASS_MASK_FRACTION = 1.3
"""The second power spectrum's mask reaches this fraction of the class radius (at most
the crop's inscribed sphere)."""

MASK_RADIUS_VOX = CROP_HALF_VOX - 0.5
"""Radius of the soft spherical mask under which the power spectrum is measured."""

N_REFERENCE_CROPS = 128
"""Crops at fixed positions of a tomogram whose median power spectrum is the reference."""

MASK_EDGE_VOX = 2.0
"""Width of the mask's linear fall-off, in voxels."""


def shape_column_groups() -> dict[str, range]:
    """Return the columns of :func:`shape_features` rows, by group, in their order.

    ``profile``: shell means, then spreads; ``axes``: the principal-axes numbers;
    ``power_wide`` and ``power_class``: the bands under the wide and the class mask.
    """
    n_bands = len(POWER_BAND_EDGES) - 1
    sizes = {"profile": 2 * N_SHELLS - 1, "axes": 7, "power_wide": n_bands, "power_class": n_bands}
    groups, start = {}, 0
    for name, size in sizes.items():
        groups[name] = range(start, start + size)
        start += size
    return groups


def count_shape_features() -> int:
    """Return the number of columns :func:`shape_features` returns."""
    return shape_column_groups()["power_class"].stop


def crop_offsets() -> NDArray[np.int64]:
    """Return the (z, y, x) offsets of a crop's voxels from its centre, shape (K, 3).

    In C order of a ``(2h, 2h, 2h)`` cube, ``h = CROP_HALF_VOX``: offsets ``-h .. h-1``.
    """
    return _geometry().offsets


def gather_crops(volume: NDArray, centres: NDArray) -> NDArray[np.float32]:
    """Return the crops of ``volume`` centred on ``centres``, shape (N, 2h, 2h, 2h), float32.

    Voxel ``h`` of each axis is the centre (:func:`crop_offsets`, ``h = CROP_HALF_VOX``);
    voxels a crop reaches beyond the volume repeat the nearest edge's. Crops wholly inside
    are copied as blocks (a strided view), the others by clipped indices per axis.
    """
    side = 2 * CROP_HALF_VOX
    centres = np.asarray(centres, dtype=np.int64).reshape(-1, 3)
    starts = centres - CROP_HALF_VOX
    shape = np.asarray(volume.shape[-3:], dtype=np.int64)
    inside = ((starts >= 0) & (starts + side <= shape)).all(axis=1)
    crops = np.empty((len(centres), side, side, side), dtype=np.float32)
    if inside.any():
        blocks = np.lib.stride_tricks.sliding_window_view(volume, (side, side, side))
        z, y, x = starts[inside].T
        crops[inside] = blocks[z, y, x]
    edge = np.flatnonzero(~inside)
    if len(edge):
        index = np.clip(starts[edge, :, None] + np.arange(side), 0, shape[None, :, None] - 1)
        crops[edge] = volume[
            index[:, 0, :, None, None], index[:, 1, None, :, None], index[:, 2, None, None, :]
        ]
    return crops


def shape_features(
    crops: NDArray, radius_vox: float, reference_power: NDArray | None = None
) -> NDArray[np.float32]:
    """Return the shape descriptors of density crops centred on candidates.

    Parameters
    ----------
    crops : numpy.ndarray, shape (N, 2h, 2h, 2h) or (N, (2h)**3)
        Normalised density, particles dark, centred on the candidates (voxel ``h`` of each
        axis is the centre), ``h = CROP_HALF_VOX``; see :func:`crop_offsets`.
    radius_vox : float
        The candidates' class radius in voxels.
    reference_power : numpy.ndarray, optional
        The tomogram's own band powers for this radius (:func:`median_reference_power`).
        Each power band is then given relative to it (log difference): the tomogram's own
        spectrum (its resampling, filter, CTF, denoising) divides out, and what is left is
        how a candidate differs from the rest of its tomogram.

    Returns
    -------
    numpy.ndarray, shape (N, :func:`count_shape_features`), float32
    """
    geometry = _geometry()
    density = _centred_density(crops, geometry)
    power = _power_columns(density, geometry, radius_vox)
    if reference_power is not None:
        power = power - reference_power
    columns = [
        _shell_profile(density, geometry),
        _principal_axes(density, geometry, radius_vox),
        power,
    ]
    return np.concatenate(columns, axis=1).astype(np.float32)


def median_reference_power(reference: NDArray, radius_vox: float) -> NDArray | None:
    """Return the median band powers of crops at fixed positions of a tomogram.

    Parameters
    ----------
    reference : numpy.ndarray, shape (M, 2h, 2h, 2h) or (M, (2h)**3)
        Crops of the tomogram at positions that do not depend on the candidates
        (:func:`reference_centres`).
    radius_vox : float
        The class radius the candidates' power is measured for (the class mask).

    Returns
    -------
    numpy.ndarray or None
        The median of each power column of :func:`shape_features`; crops of constant
        value (padding, a masked region) are left out, None when every crop is.
    """
    geometry = _geometry()
    density = _centred_density(reference, geometry)
    varied = density.std(axis=1) > 1e-6  # not in a constant fill or padding
    if not varied.any():
        return None
    result: NDArray = np.median(_power_columns(density[varied], geometry, radius_vox), axis=0)
    return result


def reference_centres(shape: tuple[int, ...]) -> NDArray[np.int64]:
    """Return :data:`N_REFERENCE_CROPS` fixed pseudo-random crop centres inside ``shape``.

    The same for every call with one shape (seed 0), kept :data:`CROP_HALF_VOX` voxels
    from the faces where the volume is large enough.
    """
    rng = np.random.default_rng(0)
    low = [min(CROP_HALF_VOX, (n - 1) // 2) for n in shape[-3:]]
    high = [max(n - CROP_HALF_VOX, lo + 1) for n, lo in zip(shape[-3:], low, strict=True)]
    return np.stack(
        [rng.integers(lo, hi, N_REFERENCE_CROPS) for lo, hi in zip(low, high, strict=True)], axis=1
    )


def _centred_density(crops: NDArray, geometry: _CropGeometry) -> NDArray:
    """Return the crops as rows of density about their mean, particles positive."""
    values = np.asarray(crops, dtype=np.float32).reshape(len(crops), -1)
    if values.shape[1] != len(geometry.offsets):
        raise ValueError(f"crops must hold {len(geometry.offsets)} voxels, not {values.shape[1]}")
    centred: NDArray = values.mean(axis=1, keepdims=True) - values
    return centred


def _power_columns(density: NDArray, geometry: _CropGeometry, radius_vox: float) -> NDArray:
    """Return the band powers under the wide mask, then under the class-radius mask."""
    class_mask_vox = min(CLASS_MASK_FRACTION * radius_vox, MASK_RADIUS_VOX)
    return np.concatenate(
        [
            _power_bands(density, geometry, _soft_sphere(geometry.distance, MASK_RADIUS_VOX)),
            _power_bands(density, geometry, _soft_sphere(geometry.distance, class_mask_vox)),
        ],
        axis=1,
    )


@dataclass(frozen=True)
class _CropGeometry:
    """Fixed matrices over a crop's voxels (K of them) and its half spectrum."""

    offsets: NDArray[np.int64]  # (K, 3)
    distance: NDArray[np.float64]  # (K,) voxels from the centre
    shell_means: NDArray[np.float32]  # (K, N_SHELLS): averages each shell
    moments: NDArray[np.float32]  # (K, 9): z, y, x, zz, yy, xx, zy, zx, yx
    # (2 x half-spectrum size, bands): averages each band of the squared (real, imaginary)
    # parts, each half-spectrum entry's weight given twice
    band_means_pairs: NDArray[np.float32]


@lru_cache(maxsize=1)
def _geometry() -> _CropGeometry:
    h = CROP_HALF_VOX
    axis = np.arange(-h, h)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    distance = np.linalg.norm(grid, axis=1)
    shell = np.floor(distance).astype(np.int64)
    shell_means = np.stack([_mean_column(shell == s) for s in range(N_SHELLS)], axis=1)
    z, y, x = grid.T.astype(np.float64)
    moments = np.stack([z, y, x, z * z, y * y, x * x, z * y, z * x, y * x], axis=1)
    full = np.fft.fftfreq(2 * h) * 2 * h
    half = np.fft.rfftfreq(2 * h) * 2 * h
    fz, fy, fx = np.meshgrid(full, full, half, indexing="ij")
    frequency = np.sqrt(fz**2 + fy**2 + fx**2).ravel()
    # the half spectrum holds the planes x = 0 and x = h once, every other one for itself
    # and its mirror: weights make the band means those of the full spectrum
    mirrored = np.where((fx == 0) | (fx == h), 1.0, 2.0).ravel()
    edges = POWER_BAND_EDGES
    bands = [
        _mean_column(((frequency >= a) & (frequency < b)) * mirrored)
        for a, b in itertools.pairwise(edges)
    ]
    return _CropGeometry(
        offsets=grid,
        distance=distance,
        shell_means=shell_means,
        moments=moments.astype(np.float32),
        band_means_pairs=np.repeat(np.stack(bands, axis=1), 2, axis=0),
    )


def _mean_column(weights: NDArray) -> NDArray[np.float32]:
    """Return a column that averages a row's entries with these weights (matrix product)."""
    return (weights / max(float(weights.sum()), 1.0)).astype(np.float32)


def _shell_profile(density: NDArray, geometry: _CropGeometry) -> NDArray:
    """Mean density per 1-voxel shell, and its spread in every shell but the centre's."""
    mean = density @ geometry.shell_means
    mean_square = (density * density) @ geometry.shell_means
    spread = np.sqrt(np.maximum(mean_square - mean * mean, 0.0))
    return np.concatenate([mean, spread[:, 1:]], axis=1)


def _principal_axes(density: NDArray, geometry: _CropGeometry, radius_vox: float) -> NDArray:
    """Principal lengths (largest first), two ratios, centre-of-mass offset, log mass."""
    reach = min(INERTIA_RADIUS_FRACTION * radius_vox, MASK_RADIUS_VOX)
    weight = np.maximum(density, 0.0) * (geometry.distance <= reach)
    mass = weight.sum(axis=1) + 1e-6
    moments = (weight @ geometry.moments) / mass[:, None]
    centre = moments[:, :3]
    covariance = np.empty((len(density), 3, 3), np.float64)
    for i, j, column in ((0, 0, 3), (1, 1, 4), (2, 2, 5), (0, 1, 6), (0, 2, 7), (1, 2, 8)):
        covariance[:, i, j] = covariance[:, j, i] = moments[:, column] - centre[:, i] * centre[:, j]
    eigenvalues = np.linalg.eigvalsh(covariance)[:, ::-1]  # largest first
    lengths = np.sqrt(np.maximum(eigenvalues, 1e-6))
    return np.concatenate(
        [
            lengths,
            lengths[:, 1:2] / lengths[:, :1],
            lengths[:, 2:3] / lengths[:, :1],
            np.linalg.norm(centre, axis=1)[:, None],
            np.log(mass)[:, None],
        ],
        axis=1,
    )


def _fft_workers() -> int:
    """Threads for the crops' FFTs: torch's (the CPU share the user or the batch gave us)."""
    return max(1, int(torch.get_num_threads()))


def _soft_sphere(distance: NDArray, radius_vox: float) -> NDArray[np.float32]:
    """1 within ``radius_vox - MASK_EDGE_VOX``, falling linearly to 0 at ``radius_vox``."""
    return np.clip((radius_vox - distance) / MASK_EDGE_VOX, 0.0, 1.0).astype(np.float32)


def _power_bands(density: NDArray, geometry: _CropGeometry, mask: NDArray) -> NDArray:
    """Log mean power of the crop under ``mask`` (per voxel) in each frequency band."""
    side = 2 * CROP_HALF_VOX
    cubes = (density * mask).reshape(-1, side, side, side)
    spectrum = np.ascontiguousarray(scipy.fft.rfftn(cubes, axes=(1, 2, 3), workers=_fft_workers()))
    # the spectrum's (real, imaginary) pairs as one real array, squared in place: the band
    # means of |F|^2 = re^2 + im^2 without the strided real/imaginary temporaries
    parts = spectrum.view(spectrum.real.dtype).reshape(len(density), -1)
    np.multiply(parts, parts, out=parts)
    band_power: NDArray = parts @ geometry.band_means_pairs.astype(parts.dtype, copy=False)
    return np.log(band_power + 1e-6)
