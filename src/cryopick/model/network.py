"""The multi-class 3D U-Net, its configuration and its model card.

A trained model is a folder with two files:

* ``model.pt``: the network weights (a ``state_dict``), read with ``weights_only=True``
  (tensors and plain values only: a crafted file cannot run code), and
* ``model.json``: the :class:`ModelCard`: architecture, voxel size, input normalisation,
  patch size, training data and steps, per-class tuned thresholds, validation metrics,
  learning curve, wall time and hardware. The card alone rebuilds the network. It is
  validated on load; a bad one is an :class:`~cryopick.core.errors.InputError` naming it.

The network maps one normalised tomogram channel ``(N, 1, Z, Y, X)`` to logits for
:data:`cryopick.core.particles.N_CLASSES` classes (background + one per particle type).
With ``output_stride=2`` the decoder stops one level short of full resolution (saves
most of the compute: particles are 6-15 voxels in radius at 10 Å) and
:meth:`UNet3D.forward` upsamples the logits back to the input grid, so callers
(inference) always get full-resolution logits; training uses
:meth:`UNet3D.forward_native` and computes the loss on the coarse grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from torch import nn

from cryopick.core.errors import InputError, squeeze_error
from cryopick.core.particles import N_CLASSES, resolve_particle_name
from cryopick.inference.runtime import describe_hardware
from cryopick.io.atomic import atomic_path, write_text_atomic
from cryopick.io.torch_files import load_tensor_file

WEIGHTS_FILENAME = "model.pt"
CARD_FILENAME = "model.json"
CHECKPOINT_FILENAME = "checkpoint.pt"
# tuning gives a class without a useful threshold one just above its best score
# (np.nextafter), a hair above 1 when that score is 1 ("keep nothing"): tolerated
MAX_THRESHOLD = 1.0 + 1e-6
Threshold = Annotated[float, Field(ge=0.0, le=MAX_THRESHOLD, allow_inf_nan=False)]
Positive = Annotated[int, Field(gt=0)]


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
        Input channels (1) and output classes (background + 6 particle types).
    """

    widths: tuple[int, ...] = (8, 16, 32, 64)
    input_stride: Literal[1, 2] = 2
    output_stride: Literal[1, 2] = 2
    convs_per_block: int = Field(2, ge=1, le=4)
    norm: Literal["batch", "instance"] = "batch"
    in_channels: int = Field(1, ge=1)
    n_classes: int = Field(N_CLASSES, ge=2)

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
        return self

    @property
    def input_multiple(self) -> int:
        """Input sides must be multiples of this (``forward`` pads otherwise)."""
        return self.input_stride * 2 ** (len(self.widths) - 1)


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


class UNet3D(nn.Module):
    """3D U-Net: max-pool encoder, transposed-convolution decoder, skip connections.

    Parameters
    ----------
    config : ModelConfig
        Architecture.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
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
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits on the input grid, ``(N, C, Z, Y, X)`` for input ``(N, 1, Z, Y, X)``.

        Pads odd-sized inputs up to :attr:`input_multiple` (reflect) and crops back;
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


def build_model(config: ModelConfig | None = None) -> UNet3D:
    """Build an untrained network from ``config`` (default :class:`ModelConfig`)."""
    return UNet3D(config or ModelConfig())


def count_parameters(model: nn.Module) -> int:
    """Count the trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class ClassMetrics(BaseModel):
    """Validation metrics of one particle type."""

    particle_type: str
    precision: float
    recall: float
    fbeta: float
    tp: int = 0
    fp: int = 0
    fn: int = 0


def canonical_thresholds(thresholds: dict[str, float]) -> dict[str, float]:
    """Key thresholds by canonical particle name (aliases resolved, unknown names refused).

    Raises
    ------
    ValueError
        For an unknown particle name, or one type given twice (under two aliases).
    """
    canonical: dict[str, float] = {}
    given: dict[str, str] = {}
    for name, value in thresholds.items():
        key = resolve_particle_name(name)  # UnknownParticleError is a ValueError
        if key in canonical:
            raise ValueError(f"{key} has two thresholds ({given[key]!r} and {name!r})")
        canonical[key], given[key] = value, name
    return canonical


class ModelCard(BaseModel):
    """Everything needed to use, judge and reproduce a trained model (``model.json``).

    Attributes
    ----------
    architecture : ModelConfig
        Network configuration; rebuilds the network.
    spacing_A : float
        Voxel size the network was trained at; inputs are resampled to it.
    normalisation : str
        Name of the input normalisation (:func:`cryopick.inference.preprocess.normalise_volume`).
    patch_size : tuple of int
        Training patch (z, y, x) in voxels; a good inference tile.
    target : str
        Training target ("sphere" or "gaussian") with its radius fraction.
    training_data : list of str
        Sources (paths, simulated presets) and tomogram types used for training.
    validation_data : list of str
        Held-out runs the metrics below were measured on.
    steps : int
        Optimiser steps of the kept (best) model.
    thresholds : dict
        Per-class probability thresholds (in [0, 1]) tuned for F-beta on the validation
        runs, keyed by canonical particle name (aliases are resolved on load).
    thresholds_tta : dict
        The same, tuned on flip-TTA maps (used by ``predict --tta``; empty: use
        ``thresholds``).
    validation : list of ClassMetrics
        Per-class precision, recall and F-beta at the tuned thresholds.
    score : float or None
        Weighted F-beta (beta=4) on the validation runs.
    learning_curve : list of (wall_s, step, score)
        Validation score against training wall-clock seconds and step.
    wall_time_s : float
        Training wall time (validation excluded) up to the kept model.
    hardware : str
        Where it was trained.
    train_config : dict
        The full :class:`cryopick.training.trainer.TrainConfig` used.
    provenance : str
        Free text: how the training data were made (e.g. the exact commands).
    """

    architecture: ModelConfig = Field(default_factory=ModelConfig)
    spacing_A: float = Field(10.0, gt=0.0, allow_inf_nan=False)
    normalisation: str = "robust-zscore"
    patch_size: tuple[Positive, Positive, Positive] = (64, 64, 64)
    target: str = "sphere"
    training_data: list[str] = Field(default_factory=list)
    validation_data: list[str] = Field(default_factory=list)
    steps: int = 0
    thresholds: dict[str, Threshold] = Field(default_factory=dict)
    thresholds_tta: dict[str, Threshold] = Field(default_factory=dict)
    validation: list[ClassMetrics] = Field(default_factory=list)
    score: float | None = None
    learning_curve: list[tuple[float, int, float]] = Field(default_factory=list)
    wall_time_s: float = 0.0
    hardware: str = Field(default_factory=lambda: describe_hardware("cpu"))
    train_config: dict = Field(default_factory=dict)
    cryopick_version: str = ""
    provenance: str = ""

    @field_validator("thresholds", "thresholds_tta")
    @classmethod
    def _canonical_names(cls, thresholds: dict[str, float]) -> dict[str, float]:
        return canonical_thresholds(thresholds)

    def to_json(self) -> str:
        """Serialise to indented JSON."""
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        """Parse a card written by :meth:`to_json`."""
        return cls.model_validate_json(text)


def save_model(model_dir: str | Path, model: nn.Module, card: ModelCard) -> Path:
    """Write ``model.pt`` (weights) and ``model.json`` (card) into ``model_dir``, atomically.

    Each file is replaced in one rename; the weights are written first so a card
    never describes weights that are not there yet.

    Returns
    -------
    Path
        ``model_dir``.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    if not card.cryopick_version:
        from cryopick import __version__

        card = card.model_copy(update={"cryopick_version": __version__})
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(model_dir / WEIGHTS_FILENAME) as tmp:
        torch.save(state, tmp)
    write_text_atomic(model_dir / CARD_FILENAME, card.to_json())
    return model_dir


def check_model_folder(out_dir: Path, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse to train over an earlier model, unless resuming its checkpoint or overwriting.

    Raises
    ------
    InputError
        If ``out_dir`` holds a model or checkpoint that this run would replace.
    """
    names = (CHECKPOINT_FILENAME, WEIGHTS_FILENAME, CARD_FILENAME)  # the files cryopick writes
    existing = [name for name in names if (out_dir / name).exists()]
    resumable = resume and (out_dir / CHECKPOINT_FILENAME).exists()
    if existing and not (resumable or overwrite):
        raise InputError(
            out_dir,
            f"holds a trained model ({', '.join(existing)}): write to a new folder"
            + ("" if resume else ", continue it with --resume")
            + ", or pass --overwrite to replace it",
        )


def read_model_card(model_dir: str | Path) -> ModelCard:
    """Read and validate ``model.json`` from a model folder (or the JSON file itself).

    Raises
    ------
    InputError
        Naming the file, if it is missing, unreadable or not a valid card (e.g. a NaN or
        out-of-range threshold, an unknown particle type, a voxel size that is not > 0).
    """
    path = Path(model_dir)
    if path.is_dir():
        path = path / CARD_FILENAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(path, "no model card here (expected a folder with model.json)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot read the model card: {squeeze_error(err)}") from None
    try:
        return ModelCard.from_json(text)
    except ValidationError as err:
        raise InputError(path, f"not a valid model card: {squeeze_error(err)}") from None


def load_model(
    model_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[UNet3D, ModelCard]:
    """Load a trained model folder written by :func:`save_model`.

    Parameters
    ----------
    model_dir : str or Path
        Folder holding ``model.pt`` and ``model.json``.
    device : str or torch.device
        Where to put the network.

    Returns
    -------
    (UNet3D, ModelCard)
        The network in eval mode, and its card.
    """
    from cryopick.inference.runtime import resolve_device

    model_dir = Path(model_dir)
    card = read_model_card(model_dir)
    weights = model_dir / WEIGHTS_FILENAME
    if not weights.is_file():
        raise InputError(weights, "model weights missing (expected model.pt beside model.json)")
    device = resolve_device(device)
    model = build_model(card.architecture)
    state = load_tensor_file(weights, "model weights file")
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise InputError(
            weights, f"weights do not match the model card {CARD_FILENAME}: {squeeze_error(err)}"
        ) from None
    return model.to(device).eval(), card
