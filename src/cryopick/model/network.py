"""The multi-class 3D U-Net and its configuration.

The network maps one normalised tomogram channel ``(N, 1, Z, Y, X)`` to logits for
 ``n_classes`` classes: background (channel 0) and one per type of the model's particle set
(channel ``c`` is the type with label ``c``, see :attr:`cryopick.model.card.ModelCard.particles`).
With ``output_stride=2`` the decoder stops one level short of full resolution (saves
most of the compute: particles are 6-15 voxels in radius at 10 Å) and
:meth:`UNet3D.forward` upsamples the logits back to the input grid, so callers
(inference) always get full-resolution logits; training uses
:meth:`UNet3D.forward_native` and computes the loss on the coarse grid. Its card and
files: :mod:`cryopick.model.card`, :mod:`cryopick.model.store`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, cast

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, field_validator, model_validator
from torch import nn

from cryopick.core.particles import default_particle_set

YX_DIMS = (-2, -1)  # the y and x axes of (N, C, Z, Y, X)


class ModelConfig(BaseModel):
    """Architecture of the 3D U-Net.

    Attributes
    ----------
    widths : tuple of int
        Channels per resolution level, finest first; ``len(widths)`` levels, each
        level halves the grid. Defaults chosen by measurement (docs/training.md).
    input_stride : {1, 2}
        2: a learned 2x2x2 stride-2 convolution ("patchify" stem) feeds the U-Net, whose
        finest level then runs at half resolution (8x less compute); 1: the finest level
        runs at full resolution.
    output_stride : {1, 2}
        Grid step of the network's native output, in input voxels (>= ``input_stride``).
    convs_per_block : int
        3x3x3 convolutions per encoder/decoder block.
    norm : {"batch", "instance"}
        Normalisation layer after each convolution.
    in_channels, n_classes : int
        Input channels (1) and output classes: background + one per particle type of the
        model's set (default 7: the CZII six; training sets it from the set it learns).
    members : int
        Networks of this architecture run side by side on the same input, their logits
        averaged (:class:`UNetEnsemble`); 1: a single :class:`UNet3D`.
    flip_odd_members : bool
        Members 1, 3, ... of an ensemble see the input flipped in y and x (a half turn
        about z, which keeps the missing wedge) and their logits are flipped back: the
        average then covers two views of every window, flip test-time augmentation at no
        extra cost. Needs ``members`` >= 2.
    """

    widths: tuple[int, ...] = (8, 16, 32, 64)
    input_stride: Literal[1, 2] = 2
    output_stride: Literal[1, 2] = 2
    convs_per_block: int = Field(2, ge=1, le=4)
    norm: Literal["batch", "instance"] = "batch"
    in_channels: int = Field(1, ge=1)
    n_classes: int = Field(default_factory=lambda: default_particle_set().n_classes, ge=2)
    members: int = Field(1, ge=1, le=8)
    flip_odd_members: bool = False

    @field_validator("widths")
    @classmethod
    def _check_widths(cls, widths: tuple[int, ...]) -> tuple[int, ...]:
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError("widths needs at least two positive channel counts")
        return widths

    @model_validator(mode="after")
    def _check_strides(self) -> ModelConfig:
        if self.output_stride < self.input_stride:
            raise ValueError("output_stride must be >= input_stride")
        if self.flip_odd_members and self.members < 2:
            raise ValueError("flip_odd_members needs an ensemble (members >= 2)")
        return self

    @property
    def input_multiple(self) -> int:
        """Input sides must be multiples of this (``forward`` pads otherwise)."""
        return self.input_stride << (len(self.widths) - 1)  # stride * 2 ** (levels - 1)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    return nn.InstanceNorm3d(channels, affine=True)


class _ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, n_convs: int, norm: str) -> None:
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers += [
                nn.Conv3d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
                _norm(norm, c_out),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


class _GridNetwork(nn.Module):
    """Shared by the U-Net and the ensemble: full-grid logits from ``forward_native``."""

    config: ModelConfig
    output_stride: int
    input_multiple: int

    def forward_native(self, x: torch.Tensor) -> torch.Tensor:
        """Logits on the native output grid (see :meth:`UNet3D.forward_native`)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits on the input grid, ``(N, C, Z, Y, X)`` for input ``(N, 1, Z, Y, X)``.

        Pads odd-sized inputs up to :attr:`input_multiple` (replicate) and crops back;
        upsamples stride-2 logits trilinearly.
        """
        shape = x.shape[-3:]
        m = self.input_multiple
        pad = [(-s) % m for s in shape]
        if any(pad):
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")
        logits = self.forward_native(x)
        if self.output_stride != 1:
            logits = F.interpolate(
                logits, scale_factor=self.output_stride, mode="trilinear", align_corners=False
            )
        return logits[..., : shape[0], : shape[1], : shape[2]]


class UNet3D(_GridNetwork):
    """3D U-Net: max-pool encoder, transposed-convolution decoder, skip connections.

    Parameters
    ----------
    config : ModelConfig
        Architecture.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.members != 1:
            raise ValueError("UNet3D is one network: build an ensemble with build_model")
        self.config = config
        self.output_stride = config.output_stride
        self.input_multiple = config.input_multiple
        w, k, norm = config.widths, config.convs_per_block, config.norm
        c_in = config.in_channels
        if config.input_stride == 2:
            self.stem: nn.Module = nn.Sequential(
                nn.Conv3d(c_in, w[0], 2, stride=2, bias=False),
                _norm(norm, w[0]),
                nn.ReLU(inplace=True),
            )
            c_in = w[0]
        else:
            self.stem = nn.Identity()
        self.encoders = nn.ModuleList(
            _ConvBlock(c_in if i == 0 else w[i - 1], w[i], k, norm) for i in range(len(w))
        )
        # decoder levels run from the coarsest-but-one up to the level at output_stride
        top = 0 if config.output_stride == config.input_stride else 1
        self.levels = list(range(len(w) - 2, top - 1, -1))
        self.ups = nn.ModuleList(
            nn.ConvTranspose3d(w[i + 1], w[i], 2, stride=2) for i in self.levels
        )
        self.decoders = nn.ModuleList(_ConvBlock(2 * w[i], w[i], k, norm) for i in self.levels)
        self.head = nn.Conv3d(w[top], config.n_classes, 1)

    def forward_native(self, x: torch.Tensor) -> torch.Tensor:
        """Logits on the native output grid, ``(N, C, Z/s, Y/s, X/s)`` with ``s = output_stride``.

        Input sides must be multiples of :attr:`input_multiple`.
        """
        skips = []
        x = self.stem(x)
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else F.max_pool3d(x, 2))
            skips.append(x)
        for level, up, dec in zip(self.levels, self.ups, self.decoders, strict=True):
            x = dec(torch.cat([up(x), skips[level]], dim=1))
        logits: torch.Tensor = self.head(x)
        return logits


class UNetEnsemble(_GridNetwork):
    """``config.members`` U-Nets of one architecture whose logits are averaged.

    Each member sees the same input; the ensemble's logits are the mean of theirs (on
    the native grid, before any softmax), so every stage after the network (blending,
    peaks, rescorer, thresholds) treats it as one network. Its weights are the members'
    under ``nets.<i>.`` (one ``model.pt``).

    Parameters
    ----------
    config : ModelConfig
        Architecture of every member; ``members`` >= 2.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.members < 2:
            raise ValueError("an ensemble needs members >= 2 (use UNet3D for one network)")
        self.config = config
        self.output_stride = config.output_stride
        self.input_multiple = config.input_multiple
        single = config.model_copy(update={"members": 1, "flip_odd_members": False})
        self.nets = nn.ModuleList(UNet3D(single) for _ in range(config.members))

    def forward_native(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of the members' native logits, ``(N, C, Z/s, Y/s, X/s)``.

        With ``config.flip_odd_members`` the odd members run on ``x`` flipped in y and x
        and their logits are flipped back (exact on the native grid: the stem, pooling and
        up-sampling all work on aligned 2x2x2 blocks of input sides that are multiples of
        :attr:`input_multiple`).
        """
        members = [cast(UNet3D, net) for net in self.nets]
        logits = members[0].forward_native(x)
        for index, net in enumerate(members[1:], start=1):
            if self.config.flip_odd_members and index % 2 == 1:
                flipped = net.forward_native(torch.flip(x, YX_DIMS))
                logits = logits + torch.flip(flipped, YX_DIMS)
            else:
                logits = logits + net.forward_native(x)
        return logits / len(members)


PickingNetwork = UNet3D | UNetEnsemble


def build_model(config: ModelConfig | None = None) -> PickingNetwork:
    """Build an untrained network from ``config`` (default :class:`ModelConfig`).

    A :class:`UNetEnsemble` when ``config.members`` > 1, else a :class:`UNet3D`.
    """
    config = config or ModelConfig()
    return UNetEnsemble(config) if config.members > 1 else UNet3D(config)


def replace_head(
    model: PickingNetwork, n_classes: int, kept: Mapping[int, int] | None = None
) -> PickingNetwork:
    """Give the network a new output layer (the final 1x1x1 convolution) for ``n_classes``.

    Every other weight is left as it is. The new layer is initialised as a fresh network's
    (torch's default, from the global RNG), except the channels listed in ``kept``, whose
    weights and bias are copied from the old layer. An ensemble gets a new layer in
    every member, each fitted the same way.

    Parameters
    ----------
    model : UNet3D or UNetEnsemble
        The network; changed in place (``model.config.n_classes`` too).
    n_classes : int
        Output classes of the new layer (background included).
    kept : mapping of int to int, optional
        New channel -> old channel whose weights it keeps.

    Returns
    -------
    UNet3D or UNetEnsemble
        ``model``.
    """
    if isinstance(model, UNetEnsemble):
        for net in model.nets:
            replace_head(cast(UNet3D, net), n_classes, kept)
    else:
        _replace_unet_head(model, n_classes, kept)
    model.config = model.config.model_copy(update={"n_classes": n_classes})
    return model


def _replace_unet_head(model: UNet3D, n_classes: int, kept: Mapping[int, int] | None) -> None:
    old = model.head
    head = nn.Conv3d(old.in_channels, n_classes, 1).to(old.weight.device, old.weight.dtype)
    old_bias, new_bias = old.bias, head.bias
    assert old_bias is not None and new_bias is not None  # (the head has a bias)
    with torch.no_grad():
        for new_c, old_c in (kept or {}).items():
            head.weight[new_c] = old.weight[old_c]
            new_bias[new_c] = old_bias[old_c]
    model.head = head


def count_parameters(model: nn.Module) -> int:
    """Count the trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
