"""The coordinate convention, written once.

* Arrays are indexed ``(z, y, x)``: x runs along the last array axis.
* Coordinates of particles are in Å, in the tomogram's frame.
* Voxel index ``i`` along an axis is centred at ``i * spacing_A`` Å: the centre of the
  first voxel is at 0 Å (the copick / CZII challenge convention).

Every conversion between voxel indices and Å goes through the two functions below.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def voxels_to_angstrom(coords_zyx_vox: ArrayLike, spacing_A: float) -> NDArray[np.float64]:
    """Convert (possibly fractional) voxel indices to Å.

    Parameters
    ----------
    coords_zyx_vox : array_like, shape (..., 3)
        Voxel indices in (z, y, x) order.
    spacing_A : float
        Voxel size in Å.

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        Positions in Å, (z, y, x) order.
    """
    return np.asarray(coords_zyx_vox, dtype=np.float64) * float(spacing_A)


def angstrom_to_voxels(coords_zyx_A: ArrayLike, spacing_A: float) -> NDArray[np.float64]:
    """Convert positions in Å to fractional voxel indices (inverse of :func:`voxels_to_angstrom`).

    Parameters
    ----------
    coords_zyx_A : array_like, shape (..., 3)
        Positions in Å, (z, y, x) order.
    spacing_A : float
        Voxel size in Å.

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        Fractional voxel indices; round them to get the nearest voxel.
    """
    return np.asarray(coords_zyx_A, dtype=np.float64) / float(spacing_A)


def xyz_to_zyx(coords_xyz: ArrayLike) -> NDArray[np.float64]:
    """Reverse the last axis: (x, y, z) columns to (z, y, x)."""
    return np.asarray(coords_xyz, dtype=np.float64)[..., ::-1].copy()


zyx_to_xyz = xyz_to_zyx  # the reversal is its own inverse
