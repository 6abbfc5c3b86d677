"""Separable resampling of a tomogram to another voxel size, one axis at a time.

Scaling a grid is separable: along each axis, output voxel ``j`` (centred at
``j * target_spacing_A``) is a weighted sum of the input voxels near input position
``p = j * target_spacing_A / spacing_A`` (the convention of :mod:`cryopick.core.coords`).
:func:`interpolation_matrix` writes those weights as an ``(n_out, n_in)`` matrix, so each
axis is one matrix product: BLAS does the work (about 1 s for a 13.48 Å tomogram of
137 x 467 x 467 voxels brought to 10 Å on 2 cores, where ``scipy.ndimage.affine_transform``
takes 3 s trilinear and 23 s with cubic splines).

Kernels (``kernel=``):

* ``"lanczos3"``: a windowed sinc over 6 input voxels, close to ideal band-limited
  interpolation; the default onto finer voxels (a 13.48 Å tomogram read at 10 Å);
* ``"cubic"``: Keys' cubic convolution (a = -0.5) over 4;
* ``"linear"``: trilinear; the default onto coarser voxels, after a Gaussian low-pass of
  sigma ``(f - 1) / 2`` input voxels against aliasing (``f`` the ratio of the spacings).

Edges repeat the last voxel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

_COLUMNS = 1 << 20  # columns per matrix product along z (4 MB of float32 per input row)
_MAX_ALIGNED_VOXELS = 128_000_000  # a chunk-aligned z block may grow to 512 MB of float32


def align_z_step(volume: Any, slices: int) -> int:
    """Return how many z slices to read at a time: ``slices``, or whole chunks of the source.

    A chunked source (a zarr array) decodes every chunk a read touches, so reads of
    ``slices`` that cut its z chunks decode each chunk row several times (an OME-Zarr of
    128³ chunks read 40 slices at a time: 3-4 times). The step becomes a multiple of the
    z chunk (at least one chunk) unless a chunk row holds more than 128 M voxels.
    """
    chunks = getattr(volume, "chunks", None)
    slices = max(1, int(slices))
    if not (isinstance(chunks, tuple) and len(chunks) == 3):
        return slices
    if not all(isinstance(c, int | np.integer) for c in chunks):  # e.g. dask's chunk tuples
        return slices
    chunk_z = max(1, int(chunks[0]))
    slice_voxels = int(volume.shape[1]) * int(volume.shape[2])
    if chunk_z * slice_voxels > _MAX_ALIGNED_VOXELS:
        return slices
    return max(chunk_z, slices // chunk_z * chunk_z)


def _linear(t: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.clip(1.0 - np.abs(t), 0.0, None)


def _cubic(t: NDArray[np.float64]) -> NDArray[np.float64]:
    a, x = -0.5, np.abs(t)
    near = (a + 2) * x**3 - (a + 3) * x**2 + 1
    far = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _lanczos3(t: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.where(np.abs(t) < 3, np.sinc(t) * np.sinc(t / 3.0), 0.0)


KERNELS: dict[str, tuple[Callable[[NDArray[np.float64]], NDArray[np.float64]], int]] = {
    "linear": (_linear, 1),
    "cubic": (_cubic, 2),
    "lanczos3": (_lanczos3, 3),
}
"""Kernel name -> (weight function of the distance in input voxels, half-width)."""


def choose_kernel(factor: float) -> str:
    """Return the default kernel: ``"lanczos3"`` onto finer voxels, ``"linear"`` onto coarser.

    Measured on the robustness runs (4 per voxel size, bundled model): a 13.48 Å tomogram
    scores 0.715 with Lanczos-3 against 0.650 trilinear (cubic 0.697); a 7.84 Å one 0.885
    with the Gaussian low-pass and trilinear against 0.872-0.881 with stretched Lanczos-3
    or cubic kernels.
    """
    return "lanczos3" if factor < 1.0 else "linear"


def _gaussian_matrix(n: int, sigma: float) -> NDArray[np.float64]:
    """``(n, n)`` Gaussian low-pass (truncated at 4 sigma, edges repeated), rows summing to 1."""
    reach = math.ceil(4.0 * sigma)
    offsets = np.arange(-reach, reach + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    matrix = np.zeros((n, n), dtype=np.float64)
    rows = np.repeat(np.arange(n), len(offsets))
    cols = np.clip(np.add.outer(np.arange(n), offsets), 0, n - 1).ravel()
    np.add.at(matrix, (rows, cols), np.tile(weights, n))
    return matrix


def interpolation_matrix(n_in: int, n_out: int, factor: float, kernel: str) -> NDArray[np.float32]:
    """Return the ``(n_out, n_in)`` weights taking ``n_in`` samples to ``n_out``.

    Output ``j`` sits at input position ``j * factor`` (``factor`` = input voxels per
    output voxel). Rows sum to 1; taps beyond the edges fall on the edge voxel. Onto
    coarser voxels (``factor > 1``) a Gaussian low-pass of sigma ``(factor - 1) / 2``
    input voxels comes first, against aliasing.
    """
    weight, half_width = KERNELS[kernel]
    positions = np.arange(n_out, dtype=np.float64) * factor
    nearest = np.floor(positions).astype(np.int64)
    taps = nearest[:, None] + np.arange(-half_width + 1, half_width + 1)[None, :]
    weights = weight(positions[:, None] - taps)
    weights /= weights.sum(axis=1, keepdims=True)
    matrix = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.broadcast_to(np.arange(n_out)[:, None], taps.shape)
    np.add.at(matrix, (rows, np.clip(taps, 0, n_in - 1)), weights)
    if factor > 1.0:
        matrix = matrix @ _gaussian_matrix(n_in, (factor - 1.0) / 2.0)
    return matrix.astype(np.float32)


def resample_separable(
    volume: Any,
    out_shape: tuple[int, int, int],
    factor: float,
    *,
    kernel: str | None = None,
    block_slices: int = 16,
) -> NDArray[np.float32]:
    """Resample a (Z, Y, X) volume to ``out_shape`` by ``factor`` input voxels per output voxel.

    Reads the input once, ``block_slices`` z slices at a time (whole z chunks of a chunked
    source: :func:`align_z_step`), resampling each block in
    y and x; then resamples z in column chunks. Holds the y/x-resampled input and the
    output (float32), never the whole input. ``kernel``: one of :data:`KERNELS`, default
    :func:`choose_kernel`.
    """
    kernel = kernel or choose_kernel(factor)
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {sorted(KERNELS)}")
    n_z, n_y, n_x = (int(s) for s in volume.shape)
    m_y = interpolation_matrix(n_y, out_shape[1], factor, kernel)
    m_x_t = np.ascontiguousarray(interpolation_matrix(n_x, out_shape[2], factor, kernel).T)
    in_plane = np.empty((n_z, out_shape[1] * out_shape[2]), dtype=np.float32)
    step = align_z_step(volume, block_slices)
    for z0 in range(0, n_z, step):
        block = np.asarray(volume[z0 : z0 + step], dtype=np.float32)
        for k, plane in enumerate(block):
            in_plane[z0 + k] = (m_y @ (plane @ m_x_t)).ravel()
    m_z = interpolation_matrix(n_z, out_shape[0], factor, kernel)
    out = np.empty((out_shape[0], in_plane.shape[1]), dtype=np.float32)
    for c0 in range(0, in_plane.shape[1], _COLUMNS):
        np.matmul(m_z, in_plane[:, c0 : c0 + _COLUMNS], out=out[:, c0 : c0 + _COLUMNS])
    return out.reshape(out_shape)
