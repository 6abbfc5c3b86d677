"""Training targets rendered from picks: class spheres or Gaussian heatmaps.

Targets are drawn on the network's output grid for one patch at a time (memory stays
small whatever the tomogram size). Output voxel ``j`` of a stride-``s`` grid is centred
at input voxel ``j*s + (s-1)/2``: pick centres are mapped onto it with
:func:`cryopick.core.coords.input_to_strided_vox`. The model card records the target as a
:class:`cryopick.model.TargetSpec`.

* ``"sphere"``: a class-index map (uint8); voxels within ``fraction * radius`` of a pick
  get its label; where spheres overlap the nearer centre (relative to its radius) wins.
* ``"gaussian"``: soft class probabilities ``(C, z, y, x)`` (float32); class ``c`` is the
  maximum over its picks of ``exp(-d^2 / (2 sigma^2))`` with ``sigma = fraction * radius``,
  background is what is left (the channels sum to 1).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

from cryopick.core.particles import default_particle_set
from cryopick.model.card import TargetKind


def render_targets(
    centres_zyx: NDArray,
    labels: Sequence[int] | NDArray,
    radii_vox: Sequence[float] | NDArray,
    shape_zyx: Sequence[int],
    kind: TargetKind = "sphere",
    fraction: float = 0.5,
    n_classes: int | None = None,
) -> NDArray:
    """Render the target of one patch.

    Parameters
    ----------
    centres_zyx : numpy.ndarray, shape (n, 3)
        Pick centres in fractional voxels of the target grid, relative to the patch origin
        (may lie outside the patch; their spheres are clipped).
    labels : sequence of int, length n
        Class labels (1..n_classes-1).
    radii_vox : sequence of float, length n
        Particle radii in target-grid voxels.
    shape_zyx : sequence of 3 int
        Target patch shape.
    kind : {"sphere", "gaussian"}
        Target type (see module docstring).
    fraction : float
        Sphere radius, or Gaussian sigma, as a fraction of the particle radius.
    n_classes : int, optional
        Number of classes including background: the particle set's ``n_classes``
        (default: the CZII set's).

    Returns
    -------
    numpy.ndarray
        ``"sphere"``: uint8 class map of ``shape_zyx``; ``"gaussian"``: float32 soft
        probabilities of shape ``(n_classes, *shape_zyx)``.
    """
    shape = tuple(int(s) for s in shape_zyx)
    centres = np.asarray(centres_zyx, dtype=np.float64).reshape(-1, 3)
    label_ids = np.asarray(labels, dtype=np.int64).reshape(-1)
    radii = np.asarray(radii_vox, dtype=np.float64).reshape(-1) * float(fraction)
    if kind == "sphere":
        return _render_spheres(centres, label_ids, radii, shape)
    if kind == "gaussian":
        if n_classes is None:
            n_classes = default_particle_set().n_classes
        return _render_gaussians(centres, label_ids, radii, shape, n_classes)
    raise ValueError(f"target kind must be 'sphere' or 'gaussian', got {kind!r}")


def _boxes(
    centres: NDArray[np.float64], reach: NDArray[np.float64], shape: tuple[int, ...]
) -> Iterator[tuple[int, tuple[slice, ...], NDArray[np.float64]]]:
    """Yield (pick index, box inside ``shape`` within ``reach`` of it, squared distances)."""
    for i, (centre, r_max) in enumerate(zip(centres, reach, strict=True)):
        lo = np.maximum(np.floor(centre - r_max).astype(int), 0)
        hi = np.minimum(np.ceil(centre + r_max).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        grids = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        d2 = np.zeros((hi - lo).tolist(), dtype=np.float64)
        for g, c in zip(grids, centre, strict=True):
            d2 += (g - c) ** 2
        yield i, tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)), d2


def _render_spheres(
    centres: NDArray[np.float64],
    labels: NDArray[np.int64],
    radii: NDArray[np.float64],
    shape: tuple[int, ...],
) -> NDArray[np.uint8]:
    out = np.zeros(shape, dtype=np.uint8)
    best = np.full(shape, np.inf, dtype=np.float32)  # distance / radius of the owner
    for i, region, d2 in _boxes(centres, radii, shape):
        rel = (np.sqrt(d2) / radii[i]).astype(np.float32)
        take = (rel <= 1.0) & (rel < best[region])
        out[region][take] = labels[i]
        best[region][take] = rel[take]
    return out


def _render_gaussians(
    centres: NDArray[np.float64],
    labels: NDArray[np.int64],
    radii: NDArray[np.float64],
    shape: tuple[int, ...],
    n_classes: int,
) -> NDArray[np.float32]:
    out = np.zeros((n_classes, *shape), dtype=np.float32)
    for i, region, d2 in _boxes(centres, 3.0 * radii, shape):
        heat = np.exp(-d2 / (2.0 * radii[i] ** 2)).astype(np.float32)
        channel = out[labels[i]]
        np.maximum(channel[region], heat, out=channel[region])
    fg = out[1:].sum(axis=0)
    over = fg > 1.0
    if over.any():
        out[1:, over] /= fg[over]
        fg[over] = 1.0
    out[0] = 1.0 - fg
    return out
