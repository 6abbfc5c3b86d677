"""Gaussian-weighted blending of overlapping windows, on the network's output grid.

:func:`blend_windows` runs a predictor over every window of a volume and averages the
windows' outputs where they overlap, each weighted by a Gaussian centred on its window
(edges of a window, where the network sees less context, count less). The sums are kept
in float32 torch tensors, so the weighted additions run multithreaded; the volume is
never copied or padded as a whole: a window that reaches past the volume's end (the
volume is virtually zero-padded to ``padded_shape_zyx``) is filled with zeros there.

Measured against MONAI's ``sliding_window_inference`` doing the same (same windows,
weights and prepared network): ``benchmarks/window_vs_monai.py``, docs/benchmarks.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence

import torch

Predictor = Callable[[torch.Tensor], torch.Tensor]
BLEND_SIGMA_FRACTION = 0.125  # sigma of the Gaussian weights, fraction of the window


def window_starts_along(length: int, side: int, step: int) -> list[int]:
    """Return the starts of the windows of ``side`` along one axis of ``length``.

    ``0, step, 2*step, ...``, the last one ending at ``length`` (flush); a length no longer
    than the window gets one window at 0.
    """
    if length <= side:
        return [0]
    count = -(-(length - side) // step) + 1
    return [min(i * step, length - side) for i in range(count)]


def window_starts_per_axis(
    shape_zyx: Sequence[int], patch_zyx: Sequence[int], steps_zyx: Sequence[int]
) -> list[list[int]]:
    """Return the window starts along each axis (:func:`window_starts_along`)."""
    return [
        window_starts_along(int(n), int(p), int(step))
        for n, p, step in zip(shape_zyx, patch_zyx, steps_zyx, strict=True)
    ]


def window_starts(
    shape_zyx: Sequence[int], patch_zyx: Sequence[int], steps_zyx: Sequence[int]
) -> list[tuple[int, ...]]:
    """Return the (z, y, x) start of every window, z slowest: the grid of the axes' starts."""
    return list(itertools.product(*window_starts_per_axis(shape_zyx, patch_zyx, steps_zyx)))


def gaussian_weights(side: int, sigma_fraction: float) -> torch.Tensor:
    """Return Gaussian weights (float32) along one side of a window, peak 1 at its centre.

    ``sigma = sigma_fraction * side``, the centre at ``(side - 1) / 2``; floored at the
    smallest positive weight, so no voxel of a window is ignored entirely. A window's
    weights are the outer product of its three sides' (separable).
    """
    position = torch.arange(side, dtype=torch.float64) - (side - 1) / 2.0
    weights = torch.exp(-0.5 * (position / (sigma_fraction * side)) ** 2)
    return weights.clamp_min(float(weights[weights > 0].min())).to(torch.float32)


def _outer(z: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return z[:, None, None] * y[None, :, None] * x[None, None, :]


def _axis_weight_sums(
    starts: list[int], side: int, length: int, weights: torch.Tensor
) -> torch.Tensor:
    """Return the sum over the windows along one axis of their weights, per output voxel."""
    total = torch.zeros(length, dtype=torch.float32)
    for start in starts:
        total[start : start + side] += weights
    return total


def read_windows(
    volume: torch.Tensor, starts_zyx: Sequence[Sequence[int]], patch_zyx: Sequence[int]
) -> torch.Tensor:
    """Return the windows (B, 1, Z, Y, X) at ``starts_zyx`` of a (Z, Y, X) volume.

    Where a window reaches past the volume's end it holds zeros.
    """
    batch = volume.new_empty((len(starts_zyx), 1, *patch_zyx))
    for i, start in enumerate(starts_zyx):
        stop = [min(s + p, n) for s, p, n in zip(start, patch_zyx, volume.shape, strict=True)]
        inside = volume[tuple(slice(s, e) for s, e in zip(start, stop, strict=True))]
        nz, ny, nx = inside.shape
        window = batch[i, 0]
        window[:nz, :ny, :nx] = inside
        window[nz:] = 0.0  # past the volume's end
        window[:nz, ny:] = 0.0
        window[:nz, :ny, nx:] = 0.0
    return batch


def _batches(items: list, size: int) -> Iterator[list]:
    for first in range(0, len(items), size):
        yield items[first : first + size]


def blend_windows(
    volume: torch.Tensor,
    padded_shape_zyx: Sequence[int],
    patch_zyx: Sequence[int],
    steps_zyx: Sequence[int],
    predictor: Predictor,
    batch_size: int = 2,
    stride: int = 1,
    *,
    sigma_fraction: float = BLEND_SIGMA_FRACTION,
) -> torch.Tensor:
    """Return the Gaussian-blended predictions (C, Z/s, Y/s, X/s) of every window, float32.

    Parameters
    ----------
    volume : torch.Tensor, shape (Z, Y, X)
        The input, on the CPU; read window by window.
    padded_shape_zyx : sequence of 3 int
        The side the windows cover, at least the volume's, multiples of ``stride``.
    patch_zyx, steps_zyx : sequence of 3 int
        Window size and step, multiples of ``stride``.
    predictor : callable
        Maps windows (B, 1, Z, Y, X) to outputs (B, C, Z/s, Y/s, X/s) on any device.
    batch_size : int
        Windows per predictor call.
    stride : int
        The predictor's output stride (output voxel ``j`` covers input ``j*s .. j*s+s-1``).
    sigma_fraction : float
        Sigma of the Gaussian weights, as a fraction of the window.

    Returns
    -------
    torch.Tensor
        float32, on the CPU, over the padded shape divided by ``stride``.
    """
    per_axis = window_starts_per_axis(padded_shape_zyx, patch_zyx, steps_zyx)
    starts = window_starts(padded_shape_zyx, patch_zyx, steps_zyx)
    out_patch = [p // stride for p in patch_zyx]
    out_shape = [n // stride for n in padded_shape_zyx]
    axis_weights = [gaussian_weights(p, sigma_fraction) for p in out_patch]
    weights = _outer(*axis_weights)
    # the windows form a grid, so the sum of their (separable) weights is separable too
    axes = zip(per_axis, out_patch, out_shape, axis_weights, strict=True)
    weight_sum = _outer(
        *(_axis_weight_sums([a // stride for a in along], p, n, w) for along, p, n, w in axes)
    )
    total: torch.Tensor | None = None
    for batch in _batches(starts, batch_size):
        outputs = predictor(read_windows(volume, batch, patch_zyx)).float().cpu()
        if total is None:
            total = torch.zeros((outputs.shape[1], *out_shape), dtype=torch.float32)
        for start, output in zip(batch, outputs, strict=True):
            region = tuple(
                slice(s // stride, s // stride + p) for s, p in zip(start, out_patch, strict=True)
            )
            total[(slice(None), *region)].addcmul_(output, weights)
    assert total is not None  # there is always at least one window
    return total.div_(weight_sum)
