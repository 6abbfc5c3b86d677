"""The blobs of a class map's peaks, many peaks at a time: sub-voxel centres and sizes.

A peak's blob is the connected set (face neighbours) of voxels at or above half the peak
value, within a radius of a centre, that holds the voxel nearest that centre; connectivity
keeps a neighbouring particle's blob out. :func:`refine_peaks` moves each peak to the
centroid of its blob (mean shift), :func:`measure_blob_radii` gives each blob's equivalent
radius (:func:`cryopick.inference.peaks.find_peaks` rejects peaks of the wrong size with it).

Both work on chunks of peaks at once: each peak's cube around its centre is gathered from
the map (voxels outside the map count as outside the blob), the cubes are stacked and
labelled in one :func:`scipy.ndimage.label` call with a structure that never connects two
cubes. Candidate-rich maps (a rescorer looks at every peak above 0.2) have thousands of
peaks; one call per chunk instead of one per peak and step is what makes that fast.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

_CHUNK_VOXELS = 2_000_000  # cube voxels gathered at once (~30 MB of temporaries)
_STACKED_FACE_NEIGHBOURS = np.zeros((3, 3, 3, 3), dtype=bool)
_STACKED_FACE_NEIGHBOURS[1] = ndimage.generate_binary_structure(3, 1)  # no link across cubes
_CONVERGED_VOX = 1e-3  # mean shift stops when no coordinate moves more than this


def find_blobs(
    prob: NDArray, centres_zyx: NDArray, peaks: NDArray, radius_vox: float
) -> tuple[NDArray[np.bool_], NDArray, NDArray[np.int64]]:
    """Blobs of peaks around ``centres_zyx``: membership, map values and voxel indices.

    Parameters
    ----------
    prob : numpy.ndarray, shape (Z, Y, X)
        One class's map (float16 or float32).
    centres_zyx : numpy.ndarray, shape (N, 3)
        Fractional voxel centres; the cube around each is centred on the nearest voxel.
    peaks : numpy.ndarray, shape (N,)
        Peak values; a blob holds voxels ``>= peak / 2`` (compared in the map's dtype).
    radius_vox : float
        Blob voxels lie within this distance of their centre.

    Returns
    -------
    in_blob : numpy.ndarray, bool, shape (N, S, S, S)
        Membership within each cube (``S = 2 * ceil(radius_vox) + 1``); all False when
        the voxel nearest the centre is below half the peak.
    values : numpy.ndarray, shape (N, S, S, S)
        The map over each cube (edge voxels repeated outside the map; never in a blob).
    index_zyx : numpy.ndarray, int64, shape (N, 3, S)
        Voxel index of each cube position, per axis.
    """
    centres = np.asarray(centres_zyx, dtype=np.float64).reshape(-1, 3)
    r = math.ceil(radius_vox)
    index = np.round(centres).astype(np.int64)[:, :, None] + np.arange(-r, r + 1)
    last = np.array(prob.shape, dtype=np.int64)[None, :, None] - 1
    clipped = np.clip(index, 0, last)
    z, y, x = (
        clipped[:, 0, :, None, None],
        clipped[:, 1, None, :, None],
        clipped[:, 2, None, None, :],
    )
    values = prob[z, y, x]
    d2 = (index - centres[:, :, None]) ** 2
    d2[index != clipped] = np.inf  # outside the map: never inside the ball
    inside = d2[:, 0, :, None, None] + d2[:, 1, None, :, None] + d2[:, 2, None, None, :]
    half = (0.5 * np.asarray(peaks, dtype=np.float64)).astype(prob.dtype)[:, None, None, None]
    labels, _ = ndimage.label(
        (values >= half) & (inside <= radius_vox**2), structure=_STACKED_FACE_NEIGHBOURS
    )
    own = labels[:, r, r, r][:, None, None, None]
    return (labels == own) & (own > 0), values, index


def _blob_centroids(
    prob: NDArray, centres: NDArray, peaks: NDArray, radius_vox: float
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Centroid of ``p - peak/2`` over each blob, and whether the blob has any weight."""
    in_blob, values, index = find_blobs(prob, centres, peaks, radius_vox)
    weights = np.where(in_blob, values.astype(np.float64) - 0.5 * peaks[:, None, None, None], 0.0)
    total = weights.sum(axis=(1, 2, 3))
    moments = np.stack(
        [
            (weights.sum(axis=(2, 3)) * index[:, 0]).sum(1),
            (weights.sum(axis=(1, 3)) * index[:, 1]).sum(1),
            (weights.sum(axis=(1, 2)) * index[:, 2]).sum(1),
        ],
        axis=1,
    )
    ok = total > 0
    return np.divide(moments, total[:, None], out=centres.copy(), where=ok[:, None]), ok


def _chunks(n_items: int, radius_vox: float) -> list[slice]:
    side = 2 * math.ceil(radius_vox) + 1
    step = max(1, _CHUNK_VOXELS // side**3)
    return [slice(i, min(n_items, i + step)) for i in range(0, n_items, step)]


def refine_peaks(
    prob: NDArray, coords_zyx: NDArray, peaks: NDArray, radius_vox: float, n_iter: int = 5
) -> NDArray[np.float64]:
    """Sub-voxel centres: mean shift of the centroid of ``p - peak/2`` over each peak's blob.

    Parameters
    ----------
    prob : numpy.ndarray, shape (Z, Y, X)
        The class map.
    coords_zyx : numpy.ndarray, shape (N, 3)
        Starting voxels (the local maxima).
    peaks : numpy.ndarray, shape (N,)
        Map values at the maxima.
    radius_vox : float
        Window radius in voxels (larger than the expected blob, so that the centroid of a
        flat-topped blob is found from any of its voxels).
    n_iter : int
        Mean-shift iterations; a peak stops early once it moves less than 0.001 voxel or
        its blob is empty (its centre then stays where it was).

    Returns
    -------
    numpy.ndarray, float64, shape (N, 3)
        Fractional voxel positions (z, y, x), never further than ``radius_vox`` from the
        starting voxel.
    """
    start = np.asarray(coords_zyx, dtype=np.float64).reshape(-1, 3)
    peaks = np.asarray(peaks, dtype=np.float64).reshape(-1)
    centres = start.copy()
    active = np.ones(len(start), dtype=bool)
    for _ in range(n_iter):
        moving = np.flatnonzero(active)
        for part in _chunks(len(moving), radius_vox):
            ids = moving[part]
            new, ok = _blob_centroids(prob, centres[ids], peaks[ids], radius_vox)
            converged = np.abs(new - centres[ids]).max(axis=1) < _CONVERGED_VOX
            centres[ids[ok]] = new[ok]
            active[ids[~ok | converged]] = False
        if not active.any():
            break
    shift = centres - start
    norm = np.linalg.norm(shift, axis=1, keepdims=True)
    too_far = norm[:, 0] > radius_vox
    shift[too_far] *= radius_vox / norm[too_far]
    result: NDArray[np.float64] = start + shift
    return result


def measure_blob_radii(
    prob: NDArray, centres_zyx: NDArray, peaks: NDArray, window_vox: float
) -> NDArray[np.float64]:
    """Equivalent radius (voxels) of each peak's blob within ``window_vox`` of its centre.

    The blob holds the voxel nearest the centre; its equivalent radius is that of a ball of
    the same volume, ``(3 n / 4 pi)^(1/3)`` (0 for an empty blob).
    """
    centres = np.asarray(centres_zyx, dtype=np.float64).reshape(-1, 3)
    peaks = np.asarray(peaks, dtype=np.float64).reshape(-1)
    counts = np.zeros(len(centres), dtype=np.float64)
    for part in _chunks(len(centres), window_vox):
        in_blob, _, _ = find_blobs(prob, centres[part], peaks[part], window_vox)
        counts[part] = in_blob.sum(axis=(1, 2, 3))
    radii: NDArray[np.float64] = np.cbrt(3.0 * counts / (4.0 * math.pi))
    return radii
