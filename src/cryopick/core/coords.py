"""The coordinate convention, written once.

* Arrays are indexed ``(z, y, x)``: x runs along the last array axis.
* Coordinates of particles are in Å, in the tomogram's frame.
* Voxel index ``i`` along an axis is centred at ``i * spacing_A`` Å: the centre of the
  first voxel is at 0 Å (the copick / CZII challenge convention).
* A map at stride ``s`` (a network's coarse output grid) has voxel ``j`` covering input
  voxels ``j*s .. j*s+s-1``, so centred at input voxel ``j*s + (s-1)/2``
  (:func:`strided_origin_vox`, :func:`strided_origin_A`, :func:`input_to_strided_vox`).

Every conversion between voxel indices and Å goes through the functions below.
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


def strided_origin_vox(stride: int) -> float:
    """Input-voxel position of voxel 0 of a stride-``stride`` map: ``(stride - 1) / 2``.

    Parameters
    ----------
    stride : int
        Grid step of the map in input voxels (1: the input grid itself).

    Returns
    -------
    float
        Fractional input-voxel index (0 for stride 1, 0.5 for stride 2).
    """
    return (stride - 1) / 2.0


def strided_origin_A(stride: int, spacing_A: float) -> float:
    """Position in Å of voxel 0 of a stride-``stride`` map of an input at ``spacing_A``.

    Voxel ``j`` of the map is then at ``strided_origin_A + j * stride * spacing_A`` Å.

    Parameters
    ----------
    stride : int
        Grid step of the map in input voxels.
    spacing_A : float
        Voxel size of the input in Å.

    Returns
    -------
    float
        Offset in Å on every axis.
    """
    return strided_origin_vox(stride) * float(spacing_A)


def input_to_strided_vox(coords_zyx_vox: ArrayLike, stride: int) -> NDArray[np.float64]:
    """Map fractional input-voxel indices to fractional voxels of a stride-``stride`` map.

    Parameters
    ----------
    coords_zyx_vox : array_like, shape (..., 3)
        Input-grid voxel indices.
    stride : int
        Grid step of the map in input voxels.

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        Fractional indices on the map (input voxel 0.5 is map voxel 0 at stride 2).
    """
    return (np.asarray(coords_zyx_vox, dtype=np.float64) - strided_origin_vox(stride)) / stride


def xyz_to_zyx(coords_xyz: ArrayLike) -> NDArray[np.float64]:
    """Reverse the last axis: (x, y, z) columns to (z, y, x)."""
    return np.flip(np.asarray(coords_xyz, dtype=np.float64), axis=-1).copy()


zyx_to_xyz = xyz_to_zyx  # the reversal is its own inverse
