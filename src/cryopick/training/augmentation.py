"""Seeded data augmentation for training patches.

Geometric transforms keep the missing wedge along Z: flips of x, y and z, and
90-degree rotations in the XY plane only (a rotation that moved Z into XY would show
the network wedge artefacts it never meets in real data). A z flip combined with an x
or y flip is a 180-degree rotation about the other in-plane axis. Input and target are
transformed together; the target may be on a stride-2 grid (flipping an even-sized
patch maps output voxel ``j`` to ``n-1-j`` on both grids, so the two stay aligned).

Intensity transforms (input only): scale and offset, extra Gaussian noise, blur, a step
in the background (a carbon film's edge), and coarsening (resampling to coarser voxels
and back, as ``predict`` does with a tomogram recorded at a larger voxel size than the
model's). All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, Field
from scipy import ndimage

from cryopick.inference.preprocess import resample_volume


class AugmentConfig(BaseModel):
    """Augmentation probabilities and ranges (0 disables an augmentation)."""

    flip_xy: bool = True
    flip_z: bool = True
    rotate_xy: bool = True
    scale_range: tuple[float, float] = (0.8, 1.25)
    offset_sigma: float = Field(0.1, ge=0.0)
    noise_probability: float = Field(0.3, ge=0.0, le=1.0)
    noise_sigma_max: float = Field(0.5, ge=0.0)
    blur_probability: float = Field(0.2, ge=0.0, le=1.0)
    blur_sigma_max_vox: float = Field(1.0, ge=0.0)
    # True: rescale a patch to its spread before the noise was added, as predict's
    # normalisation does with a noisier tomogram (the signal drops, the spread does not)
    noise_keep_spread: bool = False
    coarsen_probability: float = Field(0.0, ge=0.0, le=1.0)
    coarsen_factor_max: float = Field(1.5, ge=1.0)
    # a smooth step in the background (a carbon film's edge: the columns beyond it read
    # brighter or darker than the rest of the tomogram), up to +-edge_offset_max spreads
    edge_probability: float = Field(0.0, ge=0.0, le=1.0)
    edge_offset_max: float = Field(1.5, ge=0.0)


def augment_geometry(
    volume: NDArray, target: NDArray, rng: np.random.Generator, config: AugmentConfig
) -> tuple[NDArray, NDArray]:
    """Apply the same random flips / XY rotation to an input patch and its target.

    Parameters
    ----------
    volume : numpy.ndarray, shape (Z, Y, X)
        Input patch (Y == X when rotations are on).
    target : numpy.ndarray, shape (z, y, x) or (C, z, y, x)
        Class map or soft target on the same or a strided grid.
    rng : numpy.random.Generator
        Source of randomness.
    config : AugmentConfig
        Which transforms to use.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Contiguous transformed copies.
    """
    lead = target.ndim - 3
    draws = rng.random(3)
    k = int(rng.integers(0, 4))
    axes = []
    if config.flip_z and draws[0] < 0.5:
        axes.append(0)
    if config.flip_xy and draws[1] < 0.5:
        axes.append(1)
    if config.flip_xy and draws[2] < 0.5:
        axes.append(2)
    if axes:
        volume = np.flip(volume, axis=tuple(axes))
        target = np.flip(target, axis=tuple(a + lead for a in axes))
    if config.rotate_xy and k:
        volume = np.rot90(volume, k, axes=(1, 2))
        target = np.rot90(target, k, axes=(1 + lead, 2 + lead))
    return np.ascontiguousarray(volume), np.ascontiguousarray(target)


def coarsen_patch(volume: NDArray[np.float32], factor: float) -> NDArray[np.float32]:
    """Resample a patch to ``factor`` times coarser voxels and back to its own grid.

    Both steps are :func:`cryopick.inference.preprocess.resample_volume` (anti-aliased
    trilinear downsampling, Lanczos-3 upsampling), so the patch looks like a tomogram recorded at
    ``factor`` times the model's voxel size and resampled to it by ``predict``. Positions
    in the patch stay where they were (voxel centres at ``i * spacing``); the far edge,
    which the round trip can shorten by up to one coarse voxel, repeats its last plane.
    """
    coarse = resample_volume(volume, 1.0, factor)
    fine = resample_volume(coarse, factor, 1.0)
    pad = [(0, n - m) for n, m in zip(volume.shape, fine.shape, strict=True)]
    return np.pad(fine, pad, mode="edge")


def background_step(
    shape_zyx: tuple[int, ...], rng: np.random.Generator, offset_max: float
) -> NDArray[np.float32]:
    """Return a background step across a patch: 0 on one side of a line in XY, ``offset`` beyond.

    The line (a vertical plane: the step is the same in every z) has a random direction
    and passes through a random point of the patch; the step rises over a width of 1 to 6
    voxels (a logistic); ``offset`` is uniform in ``[-offset_max, offset_max]``.
    """
    _, ny, nx = shape_zyx
    angle = rng.uniform(0.0, 2.0 * np.pi)
    through = rng.uniform(0.0, 1.0, size=2) * (ny - 1, nx - 1)
    width = rng.uniform(1.0, 6.0)
    offset = rng.uniform(-offset_max, offset_max)
    y, x = np.arange(ny)[:, None], np.arange(nx)[None, :]
    distance = (y - through[0]) * np.sin(angle) + (x - through[1]) * np.cos(angle)
    step = offset / (1.0 + np.exp(-np.clip(distance / width, -50.0, 50.0)))
    return np.broadcast_to(step.astype(np.float32), shape_zyx)


def _keep_spread(out: NDArray[np.float32], spread: float) -> NDArray[np.float32]:
    out *= np.float32(max(spread, 1e-6) / max(float(out.std()), 1e-6))
    return out


def augment_intensity(
    volume: NDArray[np.float32], rng: np.random.Generator, config: AugmentConfig
) -> NDArray[np.float32]:
    """Random coarsening, blur, extra noise, background step, scale/offset of a normalised patch.

    Coarsening and blur lower a patch's spread; it is restored, so the network sees the
    usual contrast (as after predict's normalisation). Noise raises it; with
    ``noise_keep_spread`` it is restored too.
    """
    scale = rng.uniform(*config.scale_range)
    offset = rng.normal(0.0, config.offset_sigma) if config.offset_sigma > 0 else 0.0
    blur_draw, blur_sigma = rng.random(), rng.uniform(0.0, config.blur_sigma_max_vox)
    noise_draw, noise_sigma = rng.random(), rng.uniform(0.0, config.noise_sigma_max)
    out = volume.astype(np.float32, copy=True)
    spread = float(volume.std())
    if config.coarsen_probability > 0:  # drawn only when on: older seeds keep their patches
        coarsen_draw, factor = rng.random(), rng.uniform(1.0, config.coarsen_factor_max)
        if coarsen_draw < config.coarsen_probability and factor > 1.02:
            out = _keep_spread(coarsen_patch(out, factor), spread)
    if blur_draw < config.blur_probability and blur_sigma > 0.05:
        out = _keep_spread(ndimage.gaussian_filter(out, blur_sigma, mode="nearest"), spread)
    if noise_draw < config.noise_probability and noise_sigma > 0:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(noise_sigma)
        if config.noise_keep_spread:
            out = _keep_spread(out, spread)
    if config.edge_probability > 0 and rng.random() < config.edge_probability:
        out += background_step(out.shape, rng, config.edge_offset_max)
    out *= np.float32(scale)
    out += np.float32(offset)
    return out
