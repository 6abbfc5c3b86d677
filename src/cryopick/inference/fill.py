"""Constant fill: regions of a tomogram that hold one repeated value instead of data.

Rotated tomograms (IMOD ``rotatevol``, ``trimvol -rx`` of a tilted slab), masked lamellae
and padded volumes carry such regions: 0, the mean, the minimum or an integer type's
limit, written wherever there is no reconstruction. Left as they are, they break the
normalisation (a quarter of the voxels at the minimum made the robust spread so large
that a held-out tomogram gave no picks at all) and their edges read as dense objects.

:func:`find_fill_values` finds such values in the strided sample the normalisation
already takes: a value counts as fill when it sits, exactly, on flat patches (a sample
voxel equal to its four in-plane sample neighbours) covering at least
:data:`FILL_MIN_FRACTION` of the sample, and when most voxels of that value are flat.
Noisy data never do this (for float data a repeat is rare; in int8 data a value would
need to hold most of the voxels).
:func:`mark_fill` marks the fill voxels of a block (equal to a fill value and to their
four in-plane neighbours), and :func:`widen_fill` widens the marks by
:data:`FILL_RIM_VOXELS` to cover the edge voxels (and what resampling blends there); the
normalisation then sets them to the median, the value the network's window padding has.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

FILL_MIN_FRACTION = 0.01
"""Share of the sample a value's flat patches must cover to count as fill."""
FILL_RIM_VOXELS = 3
"""Voxels around the flat fill also set to the median: the fill's own edge (never flat)
and two voxels beyond it (what resampling blends there)."""


def flat_in_plane(block: NDArray[np.generic]) -> NDArray[np.bool_]:
    """Return where a (Z, Y, X) block equals its four in-plane neighbours.

    At the block's y and x edges only the neighbours inside it count.
    """
    padded = np.pad(block, ((0, 0), (1, 1), (1, 1)), mode="edge")
    centre = padded[:, 1:-1, 1:-1]
    flat: NDArray[np.bool_] = np.equal(centre, padded[:, :-2, 1:-1])
    flat &= centre == padded[:, 2:, 1:-1]
    flat &= centre == padded[:, 1:-1, :-2]
    flat &= centre == padded[:, 1:-1, 2:]
    return flat


def flat_sample_values(sample_block: NDArray[np.float32]) -> NDArray[np.float32]:
    """Return the values of the flat voxels of a (strided) sample block."""
    return sample_block[flat_in_plane(sample_block)]


def find_fill_values(
    flat_values: NDArray[np.float32], sample: NDArray[np.float32]
) -> NDArray[np.float32]:
    """Return the values that fill flat patches of the volume.

    A value counts when its flat voxels are at least :data:`FILL_MIN_FRACTION` of the
    sample and at least half of the sample voxels holding it (a fill is flat nearly
    everywhere; a value of coarsely quantised data that happens to be common is not).

    Parameters
    ----------
    flat_values : numpy.ndarray
        The values of every flat voxel of the sample (:func:`flat_sample_values`).
    sample : numpy.ndarray
        Every voxel of the sample.

    Returns
    -------
    numpy.ndarray, float32
        The fill values, sorted (usually none, at most a few).
    """
    min_count = FILL_MIN_FRACTION * max(1, len(sample))
    if len(flat_values) < min_count:
        return np.empty(0, dtype=np.float32)
    values, counts = np.unique(flat_values, return_counts=True)
    fills = [
        value
        for value, count in zip(values, counts, strict=True)
        if count >= min_count and count >= 0.5 * np.count_nonzero(sample == value)
    ]
    return np.asarray(fills, dtype=np.float32)


def mark_fill(block: NDArray[np.float32], fill_values: NDArray[np.float32]) -> NDArray[np.bool_]:
    """Return where a block is flat fill: equal to a fill value and to its in-plane neighbours."""
    is_fill = np.isin(block, fill_values)
    if not is_fill.any():
        return is_fill
    return is_fill & flat_in_plane(block)


def widen_fill(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Widen a fill mask by :data:`FILL_RIM_VOXELS` voxels (faces connected, all axes)."""
    if not mask.any():
        return mask
    widened: NDArray[np.bool_] = ndimage.binary_dilation(mask, iterations=FILL_RIM_VOXELS)
    return widened
