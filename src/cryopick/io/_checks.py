"""Argument checks shared by the tomogram writers."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def as_volume_to_write(volume_zyx: ArrayLike, spacing_A: float) -> NDArray:
    """Return ``volume_zyx`` as an array after checking it is 3-D and ``spacing_A`` > 0.

    Raises
    ------
    ValueError
        If the volume is not 3-D or the voxel size is not positive.
    """
    volume = np.asarray(volume_zyx)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D (z, y, x) volume, got shape {volume.shape}")
    if not spacing_A > 0:
        raise ValueError(f"spacing_A must be > 0, got {spacing_A}")
    return volume
