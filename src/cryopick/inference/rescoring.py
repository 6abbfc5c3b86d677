"""Describe each candidate pick by what surrounds it, for a second look (re-scoring).

The network's peak value says how sure it is at one voxel. A candidate's neighbourhood says
more: how the other classes score around it, and the radial density profile of the tomogram
around its centre, measured in shells scaled to the candidate's class radius (a particle of
the right size has a dense core and a lighter rim where it should). :func:`candidate_features`
turns candidates into one row of numbers each; a :class:`cryopick.model.rescorer.Rescorer`
maps them to the probability that the pick is right (:func:`rescore_picks`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cryopick.core.coords import angstrom_to_voxels, input_to_strided_vox
from cryopick.core.particles import ParticleSet, resolve_particle_set
from cryopick.inference.runtime import map_in_threads
from cryopick.inference.shape_features import (
    count_shape_features,
    gather_crops,
    median_reference_power,
    reference_centres,
    shape_features,
)
from cryopick.model.rescorer import FeatureSet, Rescorer

SHELL_EDGES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
"""Edges of the density shells, as fractions of the class radius."""

MAX_SHELL_OFFSETS = 200
"""Voxels sampled per shell at most (large particles): fixed, evenly drawn offsets."""

NEIGHBOURHOOD_FRACTION = 0.5
"""Other classes' maxima are taken within this fraction of the candidate's class radius."""

SHAPE_CHUNK = 512
"""Candidates whose density crops are read and described at once (memory: ~28 MB)."""


def count_features(n_channels: int, features: FeatureSet = "map+density") -> int:
    """Return the length of a candidate's feature row for a map of ``n_channels`` channels."""
    n_map = 1 + n_channels + (n_channels - 1)
    if features == "map":
        return n_map
    n_density = n_map + (len(SHELL_EDGES) - 1) + 1
    return n_density if features == "map+density" else n_density + count_shape_features()


def candidate_features(
    picks: pd.DataFrame,
    probs: NDArray,
    volume: NDArray | None = None,
    *,
    spacing_A: float,
    stride: int,
    particles: ParticleSet | None = None,
    features: FeatureSet = "map+density",
) -> NDArray[np.float32]:
    """Return one row of features per candidate pick.

    Parameters
    ----------
    picks : pandas.DataFrame
        Candidates (``particle_type``, ``x``, ``y``, ``z`` in Å, raw ``score``).
    probs : numpy.ndarray, shape (C, Z', Y', X')
        The probability map they were found in (channel 0 background).
    volume : numpy.ndarray, shape (Z, Y, X), optional
        The normalised tomogram the network saw (model voxel size); needed for
        ``features="map+density"``.
    spacing_A : float
        Voxel size of ``volume`` (the model's) in Å.
    stride : int
        Grid step of ``probs`` in those voxels.
    particles : ParticleSet, optional
        The map's types (default the CZII set).
    features : {"map", "map+density", "map+density+shape"}
        ``map``: the logit of the score, every channel's probability at the candidate's
        voxel, each class's maximum within :data:`NEIGHBOURHOOD_FRACTION` of the
        candidate's class radius. ``map+density`` adds the mean density in the shells
        :data:`SHELL_EDGES` of the class radius and the density spread within it;
        ``map+density+shape`` adds the orientation-free shape descriptors of
        :func:`cryopick.inference.shape_features.shape_features`.

    Returns
    -------
    numpy.ndarray, shape (N, :func:`count_features`), float32
    """
    if features != "map" and volume is None:
        raise ValueError("density features need the volume")
    ps = resolve_particle_set(particles)
    rows = np.zeros((len(picks), count_features(probs.shape[0], features)), np.float32)
    if len(picks) == 0:
        return rows
    coords_zyx = picks[["z", "y", "x"]].to_numpy(np.float64)
    scores = picks["score"].to_numpy(np.float64)
    reference = None
    if volume is not None and features == "map+density+shape":
        reference = gather_crops(volume, reference_centres(volume.shape))

    def describe_class(item: tuple[str, NDArray]) -> NDArray:
        name, index = item
        radius_vox = ps.radius_A(name) / spacing_A
        centres_vox = angstrom_to_voxels(coords_zyx[index], spacing_A)
        centres = np.rint(centres_vox).astype(np.int64)
        map_centres = np.rint(input_to_strided_vox(centres_vox, stride)).astype(np.int64)
        columns = [
            _logit(scores[index])[:, None],
            _map_features(probs, map_centres, radius_vox / stride),
        ]
        if volume is not None and features != "map":
            columns.append(_shell_features(volume, centres, radius_vox))
        if volume is not None and reference is not None:
            columns.append(_shape_columns(volume, centres, radius_vox, reference))
        return np.concatenate(columns, axis=1)

    groups = [
        (str(name), np.asarray(index))
        for name, index in picks.groupby("particle_type").indices.items()
    ]
    for (_, index), block in zip(groups, map_in_threads(describe_class, groups), strict=True):
        rows[index] = block
    return rows


def rescore_picks(
    picks: pd.DataFrame,
    rescorer: Rescorer,
    probs: NDArray,
    volume: NDArray | None = None,
    *,
    spacing_A: float,
    stride: int,
    particles: ParticleSet | None = None,
) -> pd.DataFrame:
    """Return a copy of ``picks`` whose ``score`` is the rescorer's probability.

    Parameters
    ----------
    picks : pandas.DataFrame
        Candidates with raw peak values as ``score`` (positions in Å).
    rescorer : Rescorer
        The model card's rescorer.
    probs, volume, spacing_A, stride, particles
        As for :func:`candidate_features` (``volume`` only for density features).
    """
    out = picks.copy()
    if len(out) == 0:
        return out
    rows = candidate_features(
        picks,
        probs,
        volume,
        spacing_A=spacing_A,
        stride=stride,
        particles=particles,
        features=rescorer.features,
    )
    out["score"] = rescorer.score(rows, out["particle_type"].astype(str).to_numpy())
    return out


def _logit(p: NDArray) -> NDArray:
    p = np.clip(p, 1e-4, 1.0 - 1e-4)
    return np.log(p / (1.0 - p))


def _gather(array: NDArray, centres: NDArray, offsets: NDArray) -> NDArray:
    """Values of ``array`` (last 3 axes) at ``centres + offsets``: shape (..., N, K).

    Centres closer to an edge than the offsets reach are moved inward so that every
    position lies in the array (a candidate at the border is described by its nearest
    interior neighbourhood).
    """
    shape = np.asarray(array.shape[-3:])
    reach_low = np.maximum(-offsets.min(axis=0), 0)
    reach_high = np.maximum(offsets.max(axis=0), 0)
    inside = np.clip(centres, reach_low, np.maximum(shape - 1 - reach_high, reach_low))
    inside = np.minimum(inside, shape - 1)
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    flat = inside @ strides
    flat_offsets = offsets @ strides
    index = np.clip(flat[:, None] + flat_offsets[None, :], 0, int(np.prod(shape)) - 1)
    values = np.asarray(array).reshape(*array.shape[:-3], -1)
    return np.asarray(values[..., index], np.float32)


def _map_features(probs: NDArray, centres: NDArray, radius_vox: float) -> NDArray:
    """Every channel at the centre, then each class's maximum within the neighbourhood."""
    at_centre = _gather(probs, centres, np.zeros((1, 3), np.int64))[..., 0].T
    offsets, _ = _ball_offsets(max(NEIGHBOURHOOD_FRACTION * radius_vox, 1.0), (0.0, 1.0))
    nearby = _gather(probs[1:], centres, offsets).max(axis=2).T
    return np.concatenate([at_centre, nearby], axis=1)


def _shape_columns(
    volume: NDArray, centres: NDArray, radius_vox: float, reference: NDArray
) -> NDArray:
    """Shape descriptors of each centre's crop (power relative to the ``reference`` crops').

    The reference's power is measured once for the class radius; the candidates' crops
    are read :data:`SHAPE_CHUNK` at a time.
    """
    reference_power = median_reference_power(reference, radius_vox)
    parts = [
        shape_features(
            gather_crops(volume, centres[start : start + SHAPE_CHUNK]), radius_vox, reference_power
        )
        for start in range(0, len(centres), SHAPE_CHUNK)
    ]
    return np.concatenate(parts)


def _shell_features(volume: NDArray, centres: NDArray, radius_vox: float) -> NDArray:
    """Mean density per shell of the class radius, and the spread inside the radius."""
    offsets, shell = _ball_offsets(radius_vox, SHELL_EDGES)
    values = _gather(volume, centres, offsets)
    n_shells = len(SHELL_EDGES) - 1
    means = np.stack([values[:, shell == s].mean(axis=1) for s in range(n_shells)], axis=1)
    inside = values[:, shell < 4]
    return np.concatenate([means, inside.std(axis=1)[:, None]], axis=1)


@lru_cache(maxsize=32)
def _ball_offsets(radius_vox: float, edges: tuple[float, ...]) -> tuple[NDArray, NDArray]:
    """Integer offsets within ``edges[-1] * radius_vox`` and the shell index of each.

    At most :data:`MAX_SHELL_OFFSETS` per shell, drawn evenly (a fixed seed: the same
    offsets every call); every shell keeps at least its nearest offset.
    """
    reach = max(int(np.ceil(edges[-1] * radius_vox)), 1)
    axis = np.arange(-reach, reach + 1)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    distance = np.linalg.norm(grid, axis=1) / max(radius_vox, 1e-6)
    shell = np.searchsorted(np.asarray(edges), distance, side="right") - 1
    rng = np.random.default_rng(0)
    keep_offsets, keep_shells = [], []
    for s in range(len(edges) - 1):
        members = np.flatnonzero(shell == s)
        if len(members) == 0:
            members = np.array([int(np.argmin(np.abs(distance - edges[s])))])
        if len(members) > MAX_SHELL_OFFSETS:
            members = np.sort(rng.choice(members, MAX_SHELL_OFFSETS, replace=False))
        keep_offsets.append(grid[members])
        keep_shells.append(np.full(len(members), s))
    return np.concatenate(keep_offsets), np.concatenate(keep_shells)
