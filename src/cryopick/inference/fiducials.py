"""Gold fiducials: find them in a normalised tomogram and drop weak picks in their streaks.

Gold beads (5-15 nm) are an order of magnitude denser than protein. In a tomogram each
one leaves, besides itself, the back-projected rays of its tilt images: streaks in the
plane through the bead perpendicular to the tilt axis (y, as IMOD, AreTomo and Warp
write tomograms), fanning out from the bead over the tilt range. The network fires on
them: with 8 beads per 0.2 µm² of view the bundled model's false picks tripled, and 75 %
of the extra ones lay within 25 Å in y of a bead (docs/benchmarks.md).

:func:`find_fiducials` finds the beads as connected sets of voxels beyond ``sigma``
robust spreads of the normalised volume (either sign: before the polarity is known; 12 by
default, where protein in a denoised tomogram stays within about 5).
:func:`drop_fiducial_streak_picks` drops the picks that lie in a bead's fan (within the
bead's radius plus ``margin_A`` in y, and within ``fan_half_angle_deg`` of the z axis
seen from the bead) and score below ``max_score``: a true particle there keeps its pick
when the network is confident. Tomograms without beads are left as they are.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

log = logging.getLogger(__name__)

FIDUCIAL_SIGMA = 12.0  # robust spreads beyond which a voxel is taken for gold
MIN_FIDUCIAL_RADIUS_A = 20.0  # smaller dense specks are not beads (equivalent radius)
MAX_DENSE_FRACTION = 0.01  # more dense voxels than this: not gold in ice; nothing done


@dataclass(frozen=True)
class Fiducials:
    """Gold beads: centres (z, y, x) in Å (voxel ``i`` at ``i * spacing_A``) and radii in Å."""

    centres_zyx_A: NDArray[np.float64]
    radii_A: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.radii_A)


NO_FIDUCIALS = Fiducials(np.zeros((0, 3)), np.zeros(0))


def find_dense_voxels(block: NDArray, sigma: float, z0: int = 0) -> NDArray[np.int64]:
    """Return the (z, y, x) of the voxels of a normalised block beyond ``±sigma``.

    ``z0`` is the block's first z in the volume (added to z). Scanning a volume block by
    block and concatenating gives :func:`group_fiducials` its input.
    """
    index = np.argwhere(np.abs(block) > sigma)
    index[:, 0] += z0
    return index


def group_fiducials(
    dense_zyx: NDArray[np.int64],
    n_voxels: int,
    spacing_A: float,
    *,
    min_radius_A: float = MIN_FIDUCIAL_RADIUS_A,
) -> Fiducials:
    """Group dense voxels into gold beads (26-connected sets).

    Parameters
    ----------
    dense_zyx : numpy.ndarray, shape (N, 3)
        Voxel indices from :func:`find_dense_voxels`.
    n_voxels : int
        Voxels in the volume: with more than :data:`MAX_DENSE_FRACTION` of them dense,
        the tomogram is not gold in ice and no bead is returned.
    spacing_A : float
        Voxel size in Å.
    min_radius_A : float
        Smallest bead kept, as the equivalent radius of its dense voxels.

    Returns
    -------
    Fiducials
        One entry per bead, possibly none.
    """
    dense = np.asarray(dense_zyx, dtype=np.int64).reshape(-1, 3)
    if len(dense) == 0:
        return NO_FIDUCIALS
    if len(dense) > MAX_DENSE_FRACTION * n_voxels:
        log.info("%d very dense voxels: not gold beads in ice; none looked for", len(dense))
        return NO_FIDUCIALS
    pairs = cKDTree(dense).query_pairs(r=1.75, output_type="ndarray")  # 26-neighbours
    links = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), (len(dense),) * 2)
    n_beads, labels = connected_components(links, directed=False)
    counts = np.bincount(labels, minlength=n_beads).astype(np.float64)
    centres = np.stack(
        [np.bincount(labels, weights=dense[:, a], minlength=n_beads) for a in range(3)], axis=1
    )
    centres_A = centres / counts[:, None] * spacing_A
    radii_A = np.cbrt(3.0 * counts / (4.0 * math.pi)) * spacing_A
    kept = radii_A >= min_radius_A
    return Fiducials(centres_A[kept], radii_A[kept])


def find_fiducials(
    volume: Any,
    spacing_A: float,
    *,
    sigma: float = FIDUCIAL_SIGMA,
    min_radius_A: float = MIN_FIDUCIAL_RADIUS_A,
) -> Fiducials:
    """Find gold beads in a normalised, unclipped tomogram held in memory.

    :func:`find_dense_voxels` over the whole volume, then :func:`group_fiducials`
    (:func:`cryopick.inference.preprocess.prepare_volume` does the same block by block,
    while it clips).

    Parameters
    ----------
    volume : array_like, shape (Z, Y, X)
        Normalised to zero centre and unit robust spread, not clipped (see
        :func:`cryopick.inference.preprocess.normalise_volume` with ``clip_sigma=None``).
    spacing_A : float
        Its voxel size in Å.
    sigma : float
        A voxel beyond ``±sigma`` is dense enough for gold.
    min_radius_A : float
        Smallest bead kept, as the equivalent radius of its dense voxels.
    """
    data = np.asarray(volume)
    dense = find_dense_voxels(data, sigma)
    return group_fiducials(dense, data.size, spacing_A, min_radius_A=min_radius_A)


def in_fiducial_streaks(
    positions_zyx_A: NDArray,
    fiducials: Fiducials,
    *,
    margin_A: float = 25.0,
    fan_half_angle_deg: float = 60.0,
) -> NDArray[np.bool_]:
    """Tell, per position, whether it lies in a bead's streak fan (tilt axis y).

    A position is inside when, for some bead, ``|dy| < radius + margin_A`` and
    ``|dx| <= |dz| tan(fan_half_angle_deg) + radius``.
    """
    points = np.asarray(positions_zyx_A, dtype=np.float64).reshape(-1, 3)
    if len(fiducials) == 0 or len(points) == 0:
        return np.zeros(len(points), dtype=bool)
    offset = np.abs(points[:, None, :] - fiducials.centres_zyx_A[None, :, :])
    radius = fiducials.radii_A[None, :]
    in_slab = offset[..., 1] < radius + margin_A
    in_fan = offset[..., 2] <= offset[..., 0] * math.tan(math.radians(fan_half_angle_deg)) + radius
    return np.asarray((in_slab & in_fan).any(axis=1))


def drop_fiducial_streak_picks(
    picks: pd.DataFrame, fiducials: Fiducials, max_score: float = 0.5
) -> pd.DataFrame:
    """Return the picks without those in a bead's streaks scoring below ``max_score``.

    ``picks`` is a picks table (x, y, z in Å, score); the result keeps its order and index
    is reset.
    """
    if len(fiducials) == 0 or picks.empty:
        return picks
    inside = in_fiducial_streaks(picks[["z", "y", "x"]].to_numpy(), fiducials)
    dropped = inside & (picks["score"].to_numpy() < max_score)
    return picks[~dropped].reset_index(drop=True)
