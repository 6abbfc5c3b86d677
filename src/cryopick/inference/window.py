"""Sliding-window inference: a segmentation network over a whole tomogram.

:func:`predict_probability_map` runs the network on overlapping windows and blends their
softmax probabilities with Gaussian weights (:func:`cryopick.inference.blending.blend_windows`;
as fast as MONAI's ``sliding_window_inference`` and 2 s less to import,
``benchmarks/window_vs_monai.py``) on what cryopick prepares: the network
(:func:`prepare_network`: batch norms folded, ``channels_last_3d``), autocast, flip TTA,
the CPU batch-of-one workaround and progress (:class:`_WindowPredictor`); the volume is
virtually zero-padded at its end to at least one window; window sizes, steps and padded
sides are multiples of the output stride, so every window starts on the strided output
grid; the result is float16.

Networks that predict at a stride (output ``Z/s, Y/s, X/s`` for an input patch ``Z, Y, X``)
are supported: output voxel ``j`` is taken to cover input voxels ``j*s .. j*s+s-1`` (centre
``j*s + (s-1)/2``, :mod:`cryopick.core.coords`); the blended map is upsampled back to the
input grid (trilinear) unless ``upsample=False``. :func:`predict_probability_map` returns the
map with its stride (:class:`ProbabilityMap`), :func:`predict_probabilities` the array only.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from cryopick.inference.blending import blend_windows, window_starts_per_axis
from cryopick.inference.runtime import (
    choose_batch_size,
    resolve_device,
    resolve_precision,
    runs_lone_window_as_pair,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_PATCH_EDGE = 192
PROBE_PATCH = (32, 32, 32)  # probes the output stride of models that do not declare it
# flips that keep z as z (the missing wedge is not symmetric under z flips)
TTA_FLIP_DIMS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def choose_patch_size(
    shape_zyx: Sequence[int],
    multiple: int = 16,
    max_edge: int = DEFAULT_MAX_PATCH_EDGE,
    overlap: float | None = None,
    step_multiple: int | None = None,
) -> tuple[int, int, int]:
    """Choose the inference window: each side rounded up to ``multiple``, at most ``max_edge``.

    Windows larger than training patches waste less on overlaps and run faster on CPU
    (2-core AVX2 EPYC, default U-Net: ~410 ns per voxel in 64³ windows, 100 ns in 192³).
    With ``overlap``, each side then shrinks to the smallest multiple of ``multiple`` that
    needs no more windows at that overlap (:func:`choose_window_steps`, steps and padding
    multiples of ``step_multiple``, default ``multiple``): 630 voxels at overlap 0.25 take
    5 windows of 192 or 5 of 160, 31 % fewer voxels for the same coverage.
    """
    edge = max(multiple, max_edge // multiple * multiple)
    sides = [min(edge, -(-int(n) // multiple) * multiple) for n in shape_zyx]
    if overlap is not None:
        sides = [
            _smallest_side(int(n), side, multiple, step_multiple or multiple, overlap)
            for n, side in zip(shape_zyx, sides, strict=True)
        ]
    z, y, x = sides
    return z, y, x


def _windows_along(length: int, side: int, multiple: int, overlap: float) -> int:
    """Count the windows of ``side`` covering ``length`` (padded as the predictor pads it)."""
    padded = pad_shape_to_windows((length,), (side,), multiple)
    return count_windows(padded, (side,), choose_window_steps(padded, (side,), overlap, multiple))


def _smallest_side(length: int, side: int, multiple: int, step: int, overlap: float) -> int:
    """Return the smallest multiple of ``multiple`` covering ``length`` in as few windows."""
    needed = _windows_along(length, side, step, overlap)
    for candidate in range(multiple, side + 1, multiple):
        if _windows_along(length, candidate, step, overlap) <= needed:
            return candidate
    return side


class _Native(nn.Module):
    """Exposes a model's ``forward_native`` as ``forward`` (so it can be traced and fused)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # nn.Module types unknown attributes as Tensor | Module; this one is the method
        native = cast(Callable[[torch.Tensor], torch.Tensor], self.model.forward_native)
        return native(x)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm that directly follows a convolution in a Sequential.

    The convolution gets the normalisation's scale and shift, the BatchNorm becomes an
    Identity: same output, one pass over the activations fewer. In place; returns ``module``.
    """
    for child in module.children():
        fold_batchnorm(child)
    if isinstance(module, nn.Sequential):
        layers = list(module)
        for i in range(len(layers) - 1):
            conv, bn = layers[i], layers[i + 1]
            if (
                isinstance(conv, nn.Conv3d | nn.Conv2d)
                and isinstance(bn, nn.BatchNorm3d | nn.BatchNorm2d)
                and not conv.training
                and not bn.training
                and bn.track_running_stats
            ):
                module[i] = fuse_conv_bn_eval(conv, bn)
                module[i + 1] = nn.Identity()
    return module


def prepare_network(
    model: nn.Module,
    device: torch.device,
    channels_last: bool = True,
    probe_size: Sequence[int] = PROBE_PATCH,
) -> tuple[nn.Module, int]:
    """Return an inference copy of ``model`` to run on patches, and its output stride.

    A model with ``forward_native`` and ``output_stride`` (e.g. :class:`cryopick.model.UNet3D`)
    is run natively (blending on the coarse grid is ``stride**3`` times cheaper); otherwise
    ``model(x)`` is used and its stride measured on one patch of zeros. The copy is in eval
    mode, with batch norms folded into the preceding convolutions (:func:`fold_batchnorm`)
    and, if asked, in ``channels_last_3d`` memory format:
    together 2x faster than the plain model on a 2-core AVX2 CPU. ``model`` is not changed.
    """
    declared = getattr(model, "output_stride", None)
    native = hasattr(model, "forward_native") and declared is not None
    net = copy.deepcopy(_Native(model) if native else model).eval()
    fold_batchnorm(net)
    net = net.to(device)
    if channels_last:
        # Module.to takes memory_format (as Tensor.to does); torch's stub omits it
        net = net.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    if native and declared is not None:
        return net, int(declared)
    with torch.inference_mode():
        out = net(torch.zeros((2, 1, *probe_size), device=device))
    ratios = {p / o for p, o in zip(probe_size, out.shape[-3:], strict=True)}
    if len(ratios) != 1 or not float(next(iter(ratios))).is_integer():
        raise ValueError(f"output shape {tuple(out.shape)} is not a stride of input {probe_size}")
    return net, int(next(iter(ratios)))


@dataclass(frozen=True)
class ProbabilityMap:
    """Softmax probabilities ``probs`` (C, Z', Y', X') and their grid step ``stride``.

    ``stride`` is in input voxels: voxel ``j`` of ``probs`` is centred at input voxel
    ``j*stride + (stride-1)/2`` (:mod:`cryopick.core.coords`); 1 on the input grid.
    """

    probs: NDArray[np.float16]
    stride: int


def predict_probability_map(
    model: torch.nn.Module,
    volume: Any,
    patch_size: Sequence[int] | None = None,
    overlap: float = 0.25,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    tta: bool = False,
    *,
    precision: str = "auto",
    channels_last: bool | None = None,
    upsample: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> ProbabilityMap:
    """Softmax probabilities of a segmentation network over a whole volume, and their stride.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(B, 1, Z, Y, X)`` float32 to ``(B, C, Z/s, Y/s, X/s)`` logits (``s`` = stride).
    volume : array_like, shape (Z, Y, X)
        The normalised tomogram (float32 preferred); any sliceable array.
    patch_size : sequence of 3 int, optional
        Window size (z, y, x); default :func:`choose_patch_size` (up to 192³).
    overlap : float
        Minimum fraction of overlap between neighbouring windows, in [0, 1).
    batch_size : int, optional
        Windows per forward pass; default :func:`cryopick.inference.runtime.choose_batch_size`
        (1 on a CPU running bf16, else 2).
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``...
    tta : bool
        Average over the flips that keep z as z (x, y, and xy flips): 4x the compute.
    precision : str
        ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see :func:`resolve_precision`).
    channels_last : bool, optional
        Use ``torch.channels_last_3d``; default on CPU (1.3x faster there, also in fp32).
    upsample : bool
        For a strided network, upsample the map to the input grid (else keep it strided).
    progress : callable, optional
        Called as ``progress(done, total)`` after each batch of windows.

    Returns
    -------
    ProbabilityMap
        float16 (C, Z, Y, X) at stride 1, or (strided network, ``upsample=False``) ``ceil(L/s)``
        per axis at stride ``s``.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    shape = tuple(int(n) for n in volume.shape)
    dev = resolve_device(device)
    amp_dtype = resolve_precision(precision, dev)
    if channels_last is None:
        channels_last = dev.type == "cpu"
    net, stride = prepare_network(model, dev, channels_last, probe_size=patch_size or PROBE_PATCH)
    multiple = max(stride, int(getattr(model, "input_multiple", 1)))
    patch = _resolve_patch(shape, patch_size, multiple, overlap, stride)
    # windows start at multiples of the stride: the same output grid in every window
    padded_shape = pad_shape_to_windows(shape, patch, stride)
    steps = choose_window_steps(padded_shape, patch, overlap, stride)
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    pair = runs_lone_window_as_pair(dev, amp_dtype)
    predictor = _WindowPredictor(net, dev, tta, memory_format, progress, pair)
    predictor.total = count_windows(padded_shape, patch, steps)
    data = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    autocast = torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    with torch.inference_mode(), autocast:
        batch = batch_size or choose_batch_size(dev, amp_dtype)
        blended = blend_windows(data, padded_shape, patch, steps, predictor, batch, stride)
    crop = tuple(slice(0, math.ceil(n / stride)) for n in shape)
    result = blended[(slice(None), *crop)].to(torch.float16).numpy()  # torch: multithreaded
    del blended
    if stride > 1 and upsample:
        return ProbabilityMap(upsample_probabilities(result, stride, shape), 1)
    return ProbabilityMap(result, stride)


def predict_probabilities(model: nn.Module, volume: Any, *args: Any, **kwargs: Any) -> NDArray:
    """Return :func:`predict_probability_map`'s ``probs`` (same parameters).

    By default (``upsample=True``) on the input grid: (C, Z, Y, X), float16.
    """
    return predict_probability_map(model, volume, *args, **kwargs).probs


def _resolve_patch(
    shape_zyx: Sequence[int],
    patch_size: Sequence[int] | None,
    multiple: int,
    overlap: float,
    stride: int,
) -> tuple[int, ...]:
    """Return the window (z, y, x): ``patch_size``, checked, or :func:`choose_patch_size`'s."""
    if patch_size is None:
        return choose_patch_size(shape_zyx, multiple, overlap=overlap, step_multiple=stride)
    patch = tuple(int(p) for p in patch_size)
    if any(p % multiple for p in patch):
        raise ValueError(f"patch size {patch} must be a multiple of {multiple} for this network")
    return patch


def pad_shape_to_windows(
    shape_zyx: Sequence[int], patch: Sequence[int], multiple: int
) -> tuple[int, ...]:
    """Return the side the windows cover: each at least the window, a multiple of ``multiple``.

    ``multiple`` is the network's stride: with window sizes and steps that are multiples of
    it too, every window then starts on the strided output grid. The volume is padded with
    zeros at its end only (positions do not move); a side longer than the window gets at
    most ``multiple - 1`` zeros.
    """
    return tuple(
        max(-(-int(n) // multiple) * multiple, p) for n, p in zip(shape_zyx, patch, strict=True)
    )


def choose_window_steps(
    shape: Sequence[int], patch: Sequence[int], overlap: float, multiple: int
) -> tuple[int, ...]:
    """Window step per axis: windows spread evenly, overlapping by at least ``overlap``.

    The fewest windows whose step is at most ``(1 - overlap)`` of the window cover each
    side; their step is then spread evenly over the side (no near-duplicate last window)
    and rounded up to a multiple of ``multiple``, which keeps it within the bound.
    """
    steps = []
    for n, p in zip(shape, patch, strict=True):
        max_step = max(multiple, int(p * (1.0 - overlap)) // multiple * multiple)
        if n <= p:
            steps.append(max_step)  # one window
            continue
        count = math.ceil((n - p) / max_step) + 1
        steps.append(math.ceil((n - p) / (count - 1) / multiple) * multiple)
    return tuple(steps)


def count_windows(shape: Sequence[int], patch: Sequence[int], steps: Sequence[int]) -> int:
    """Count the windows of size ``patch`` at ``steps`` covering ``shape`` (last one flush)."""
    return math.prod(len(along) for along in window_starts_per_axis(shape, patch, steps))


class _WindowPredictor:
    """The network as the blending calls it: windows (B, 1, Z, Y, X) -> softmax (float32).

    Averages over flips with ``tta``; runs a single window as a batch of two when
    ``pair_lone_windows`` (:func:`cryopick.inference.runtime.runs_lone_window_as_pair`);
    reports ``progress(done, total)`` after each batch.
    """

    def __init__(
        self,
        net: nn.Module,
        device: torch.device,
        tta: bool,
        memory_format: torch.memory_format,
        progress: Callable[[int, int], None] | None,
        pair_lone_windows: bool = False,
    ) -> None:
        self.net, self.device, self.memory_format = net, device, memory_format
        self.pair_lone_windows = pair_lone_windows
        self.flips = TTA_FLIP_DIMS if tta else ((),)
        self.progress = progress
        self.total, self.done = 0, 0

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        windows = windows.to(self.device, non_blocking=True)
        n = windows.shape[0]
        x = torch.cat([windows, windows]) if n == 1 and self.pair_lone_windows else windows
        total = None
        for dims in self.flips:
            xi = torch.flip(x, dims) if dims else x
            logits = self.net(xi.contiguous(memory_format=self.memory_format))
            probs = torch.softmax(logits.float(), dim=1)
            probs = torch.flip(probs, dims) if dims else probs
            total = probs if total is None else total + probs
        assert total is not None
        self.done += n
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)
        if len(self.flips) > 1:
            total = total / len(self.flips)
        return total[:n].contiguous()  # no division by 1: one pass over the maps fewer


def upsample_probabilities(
    probs: NDArray[np.float16], stride: int, shape_zyx: Sequence[int]
) -> NDArray[np.float16]:
    """Upsample a strided probability map to the input grid, one channel at a time (trilinear).

    Output voxel ``j`` of the strided map is centred at input index ``j*stride + (stride-1)/2``
    (``align_corners=False`` in torch terms), matching :meth:`cryopick.model.UNet3D.forward`.
    """
    out = np.empty((probs.shape[0], *shape_zyx), dtype=np.float16)
    z, y, x = shape_zyx
    for c in range(probs.shape[0]):
        channel = torch.from_numpy(probs[c].astype(np.float32))[None, None]
        up = F.interpolate(channel, scale_factor=stride, mode="trilinear", align_corners=False)
        out[c] = up[0, 0, :z, :y, :x].numpy()
    return out
