"""From probability maps to picks: local maxima, NMS, sub-voxel refinement, validation.

For each particle class (channel ``label`` of the map), :func:`find_peaks`

1. takes voxels at or above the class threshold that are maxima of their 3x3x3 neighbourhood
   (evaluated only at those voxels, z slab by z slab, so a float16 map is never copied whole);
2. suppresses, greedily by score, any maximum closer than ``nms_fraction * radius`` to a
   stronger one;
3. refines each survivor to sub-voxel precision by mean-shift steps of the centroid of
   ``p - peak/2`` over its blob (connected voxels above half the peak, within 1.5 expected
   blob radii);
4. rejects a peak whose blob (the connected voxels above half its peak value around the
   maximum, within three expected blob radii) has an equivalent radius outside
   ``blob_ratio_range`` times the expected blob radius (``blob_radius_fraction * radius``,
   the training target's);
5. suppresses again (refinement can move maxima of one flat-topped blob together).

and finally, optionally (off by default), across classes, drops the weaker of two detections
of different classes whose centres are closer than ``cross_class_fraction`` times the
smaller radius.

Coordinates: map index ``i`` is at ``origin_A + i * spacing_A`` Å per axis (the convention of
:mod:`cryopick.core.coords`; ``origin_A`` is non-zero only for strided maps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from cryopick.core.coords import voxels_to_angstrom
from cryopick.core.particles import ParticleSet, resolve_particle_set
from cryopick.core.picks import empty_picks, make_picks
from cryopick.inference.blobs import measure_blob_radii, refine_peaks
from cryopick.inference.runtime import map_in_threads

DEFAULT_THRESHOLD = 0.5
DEFAULT_NMS_FRACTION = 0.6
DEFAULT_BLOB_RATIO_RANGE = (0.35, 1.8)
_SLAB = 16  # z slices per slab when scanning for maxima
_OFFSETS = np.array(
    [(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dz or dy or dx]
)
_EARLIER = [tuple(off) < (0, 0, 0) for off in _OFFSETS]  # neighbours before a voxel in raster order


def find_local_maxima(
    prob: NDArray, threshold: float
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Voxels ``>= threshold`` that are maxima of their 3x3x3 neighbourhood.

    On a plateau of equal values only voxels with no equal neighbour earlier in raster
    order are kept (a few per plateau; refinement then moves them to its centre).

    Parameters
    ----------
    prob : numpy.ndarray, shape (Z, Y, X)
        One class's probability map (float16 or float32).
    threshold : float
        Minimum value.

    Returns
    -------
    coords_zyx : numpy.ndarray, int64, shape (N, 3)
        Voxel indices, in raster order.
    values : numpy.ndarray, float32, shape (N,)
        The map at those voxels.
    """
    shape = np.array(prob.shape)
    found_coords, found_values = [], []
    for z0 in range(0, prob.shape[0], _SLAB):
        slab = torch.from_numpy(np.ascontiguousarray(prob[z0 : z0 + _SLAB]))
        idx = torch.nonzero(slab >= threshold).numpy()
        if len(idx) == 0:
            continue
        idx[:, 0] += z0
        values = prob[idx[:, 0], idx[:, 1], idx[:, 2]]
        keep = np.ones(len(idx), dtype=bool)
        for off, earlier in zip(_OFFSETS, _EARLIER, strict=True):
            moved = idx + off
            nb = np.clip(moved, 0, shape - 1)
            inside = (nb == moved).all(1)
            nb_values = prob[nb[:, 0], nb[:, 1], nb[:, 2]]
            # ties: only the first voxel of a plateau in raster order is a maximum
            beats = values > nb_values if earlier else values >= nb_values
            keep &= beats | ~inside
        found_coords.append(idx[keep])
        found_values.append(values[keep].astype(np.float32))
    if not found_coords:
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.float32)
    return np.concatenate(found_coords).astype(np.int64), np.concatenate(found_values)


def suppress_non_maxima(
    coords_zyx: NDArray, scores: NDArray, radius_vox: float
) -> NDArray[np.int64]:
    """Greedy non-maximum suppression: indices of kept points, strongest first.

    A point is dropped when a stronger kept point lies within ``radius_vox`` (Euclidean).
    Ties are broken by input order (stable), so the result is deterministic.
    """
    if len(coords_zyx) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    tree = cKDTree(np.asarray(coords_zyx, dtype=np.float64))
    suppressed = np.zeros(len(coords_zyx), dtype=bool)
    kept = []
    for i in order:
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed[tree.query_ball_point(coords_zyx[i], r=radius_vox)] = True
    return np.asarray(kept, dtype=np.int64)


def _find_class_peaks(
    prob: NDArray,
    radius_vox: float,
    threshold: float,
    nms_fraction: float,
    blob_radius_vox: float | None,
    blob_ratio_range: tuple[float, float] | None,
    max_peaks: int,
) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
    coords, values = find_local_maxima(prob, threshold)
    kept = suppress_non_maxima(coords, values, nms_fraction * radius_vox)[:max_peaks]
    coords, values = coords[kept], values[kept]
    if blob_radius_vox and blob_ratio_range is not None and len(coords):
        # measured around the maximum itself: the refined centre of a ring- or
        # two-lobed blob can fall in a dip below half the peak (an empty blob)
        r_eq = measure_blob_radii(prob, coords, values, 3.0 * blob_radius_vox)
        lo, hi = blob_ratio_range
        right_size = (lo * blob_radius_vox <= r_eq) & (r_eq <= hi * blob_radius_vox)
        coords, values = coords[right_size], values[right_size]
    refine_r = max(2.0, 1.5 * (blob_radius_vox if blob_radius_vox else 0.5 * radius_vox))
    centres = refine_peaks(prob, coords, values, refine_r)  # only the peaks of the right size
    if not len(centres):
        return np.zeros((0, 3)), np.zeros(0, dtype=np.float32)
    scores = np.asarray(values, dtype=np.float32)
    # refinement moves several maxima of one flat-topped blob to its centre: suppress again
    kept = np.sort(suppress_non_maxima(centres, scores, nms_fraction * radius_vox))
    return centres[kept], scores[kept]


def resolve_cross_class(
    picks: pd.DataFrame,
    fraction: float = 0.5,
    ratio: float = 1.0,
    *,
    particles: ParticleSet | None = None,
) -> pd.DataFrame:
    """Resolve picks of different classes at one place.

    Of two picks of different classes closer than ``fraction * min(radius)``, the weaker is
    dropped when its score is at most ``ratio`` times the stronger's (``ratio=1``: always;
    ``ratio=0.5``: only when clearly dominated). Greedy by score over all picks of one
    experiment at a time; the result keeps input order. Radii are those of ``particles``
    (default: the CZII set), whose names (or aliases) the picks' types must be.
    """
    if len(picks) < 2 or fraction <= 0:
        return picks
    particle_set = resolve_particle_set(particles)
    keep = np.ones(len(picks), dtype=bool)
    max_radius = particle_set.max_radius_A
    for _, group in picks.groupby("experiment", sort=False):
        pos = group.index.to_numpy()
        xyz = group[["x", "y", "z"]].to_numpy(dtype=np.float64)
        radii = np.array([particle_set.radius_A(t) for t in group["particle_type"]])
        types = group["particle_type"].to_numpy()
        scores = group["score"].to_numpy(dtype=np.float64)
        tree = cKDTree(xyz)
        order = np.argsort(-scores, kind="stable")
        alive = np.ones(len(group), dtype=bool)
        for i in order:
            if not alive[i]:
                continue
            for j in tree.query_ball_point(xyz[i], r=fraction * max_radius):
                if alive[j] and j != i and types[j] != types[i]:
                    limit = fraction * min(radii[i], radii[j])
                    close = np.linalg.norm(xyz[i] - xyz[j]) < limit
                    if close and scores[j] <= ratio * scores[i]:
                        alive[j] = False
        keep[np.searchsorted(picks.index.to_numpy(), pos[~alive])] = False
    return picks[keep].reset_index(drop=True)


def _classes_to_find(
    probs: NDArray, particle_set: ParticleSet, particle_types: Sequence[str] | None
) -> list[tuple[str, int]]:
    """(name, channel) of the set's types to look for: those asked for that the map has."""
    if len(probs) > particle_set.n_classes:
        raise ValueError(
            f"the probability map has {len(probs)} channels but the particle set has "
            f"{particle_set.n_classes} classes ({', '.join(particle_set.names)} and background)"
        )
    names = {particle_set.resolve(n) for n in particle_types} if particle_types else None
    return [
        (spec.name, label)
        for spec in particle_set
        if (names is None or spec.name in names) and (label := int(spec.label or 0)) < len(probs)
    ]


def find_peaks(
    probs: NDArray,
    spacing_A: float,
    experiment: str,
    thresholds: Mapping[str, float] | None = None,
    *,
    default_threshold: float = DEFAULT_THRESHOLD,
    min_score: float = 0.0,
    particle_types: Sequence[str] | None = None,
    nms_fraction: float = DEFAULT_NMS_FRACTION,
    blob_radius_fraction: float | None = 0.5,
    blob_ratio_range: tuple[float, float] | None = DEFAULT_BLOB_RATIO_RANGE,
    cross_class_fraction: float = 0.0,
    cross_class_ratio: float = 1.0,
    origin_A: float = 0.0,
    max_peaks_per_class: int = 20_000,
    particles: ParticleSet | None = None,
) -> pd.DataFrame:
    """Find picks (Å) in per-class probability maps.

    Parameters
    ----------
    probs : numpy.ndarray, shape (C, Z, Y, X)
        Probabilities (float16 is fine): channel ``c`` is the type of ``particles`` with
        label ``c``, 0 = background.
    spacing_A, experiment : float, str
        Voxel size of the map in Å; run name written into the picks.
    thresholds, default_threshold, min_score : mapping, float, float
        Per-class minimum peak probability by name or alias of ``particles`` (e.g. the
        model card's tuned thresholds); the one for classes missing from it; a floor on
        every threshold (e.g. 0.05 when collecting candidates for tuning).
    particle_types : sequence of str, optional
        Only these classes (default: all).
    nms_fraction : float
        Suppression distance as a fraction of the class radius (the set's ``radius_A``).
    blob_radius_fraction : float or None
        Expected blob radius as a fraction of the class radius (the training target's);
        None disables blob validation.
    blob_ratio_range : (float, float) or None
        Accepted range of measured / expected blob radius; None disables validation.
    cross_class_fraction : float
        Cross-class suppression distance as a fraction of the smaller radius; 0 (default)
        disables it (a second label costs little under F4; see docs/predict.md).
    cross_class_ratio : float
        Drop the weaker of two nearby picks of different classes only when its score is at
        most this fraction of the stronger's (see :func:`resolve_cross_class`).
    origin_A : float
        Position in Å of map index 0 on every axis.
    max_peaks_per_class : int
        Keep at most this many (the strongest) maxima per class after suppression; bounds
        the time spent on a noisy map with a low threshold.
    particles : ParticleSet, optional
        The map's types, names and radii: the model card's set; default the CZII set.

    Returns
    -------
    pandas.DataFrame
        Picks (experiment, particle_type, x, y, z in Å, score), by class, strongest first.

    Raises
    ------
    ValueError
        For a map with more channels than the set has classes, or a name not in the set.
    """
    ps = resolve_particle_set(particles)
    thresholds = {ps.resolve(k): v for k, v in (thresholds or {}).items()}

    def find_class(item: tuple[str, int]) -> pd.DataFrame | None:
        name, label = item
        threshold = max(float(thresholds.get(name, default_threshold)), min_score)
        radius_vox = ps.radius_A(name) / spacing_A
        blob_vox = blob_radius_fraction * radius_vox if blob_radius_fraction else None
        limits = (threshold, nms_fraction, blob_vox, blob_ratio_range, max_peaks_per_class)
        coords, scores = _find_class_peaks(probs[label], radius_vox, *limits)
        if not len(coords):
            return None
        coords_A = voxels_to_angstrom(coords, spacing_A) + origin_A
        return make_picks(experiment, name, coords_A, score=scores)

    found = map_in_threads(find_class, _classes_to_find(probs, ps, particle_types))
    frames = [frame for frame in found if frame is not None]
    if not frames:
        return empty_picks()
    picks = pd.concat(frames, ignore_index=True)
    return resolve_cross_class(picks, cross_class_fraction, cross_class_ratio, particles=ps)
