"""The training configuration (one validated object), the training loss and the checkpoint.

:class:`TrainConfig` is built by ``cryopick train``, saved in every checkpoint and in the
model card, so any model can be reproduced from its folder. Defaults were chosen by
measurement on a 2-core CPU (docs/training.md).

The checkpoint (``checkpoint.pt``) holds only tensors and plain values (numbers, strings,
lists, tuples, dicts): the configuration and model card as JSON, the RNG states as their
plain values. It is read with ``weights_only=True``, so a crafted file cannot run code.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet, resolve_particle_set
from cryopick.io.atomic import atomic_path
from cryopick.io.torch_files import load_tensor_file
from cryopick.model import ModelConfig, TargetKind, TargetSpec
from cryopick.training.augmentation import AugmentConfig

# what every checkpoint holds, with its type (best_score: float or None)
CHECKPOINT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "config": dict,
    "step": int,
    "wall_s": (int, float),
    "model": dict,
    "optimizer": dict,
    "scaler": dict,
    "rng": dict,
    "card": str,
    "best_score": (int, float, type(None)),
    "ema": (dict, type(None)),  # absent in checkpoints from before weight averaging
}


class TrainConfig(BaseModel):
    """Everything that defines a training run.

    Attributes (selection; see field descriptions)
    ----------------------------------------------
    data, val : list of str
        Training / validation sources (copick configs, Kaggle roots, simulated projects).
    simulate : int
        Fresh simulated training runs to make first (``simulate_preset``, ``simulate_shape``).
    steps : int
        Optimiser steps; the learning-rate schedule spans them.
    particles : str or None
        Particles file of the types to learn; None: the set the training data declare
        (:func:`cryopick.training.particle_sets.training_particle_set`).
    """

    model_config = ConfigDict(extra="forbid")

    data: list[str] = Field(default_factory=list, description="training sources")
    val: list[str] = Field(default_factory=list, description="held-out validation sources")
    simulate: int = Field(0, ge=0, description="simulate this many fresh training runs first")
    simulate_val: int = Field(2, ge=0, description="simulated validation runs when --val is empty")
    simulate_preset: str = Field("czii", description="simulator preset for --simulate")
    simulate_shape: tuple[int, int, int] = Field((184, 630, 630), description="simulated (Z,Y,X)")
    particles: str | None = Field(
        None,
        description="particles file (JSON) of the types to learn, and to simulate with "
        "--simulate; default: the set the training data's copick configs declare",
    )
    tomo_types: list[str] = Field(
        default_factory=lambda: ["denoised", "wbp", "ctfdeconvolved"],
        description="reconstruction types mixed in training (those a run lacks are skipped)",
    )
    val_tomo_type: str = Field("denoised", description="reconstruction type validated on")
    spacing_A: float = Field(10.0, gt=0, description="model voxel size in Å")
    architecture: ModelConfig = Field(default_factory=ModelConfig)
    init_from: str | None = Field(
        None,
        description="start from this model folder's weights ('bundled': the packaged model); "
        "its architecture replaces `architecture`",
    )
    patch_size: tuple[int, int, int] = Field((64, 64, 64), description="training patch (z,y,x)")
    batch_size: int = Field(2, ge=1, description="patches per step")
    steps: int = Field(4000, ge=1, description="optimiser steps")
    lr: float = Field(3e-3, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(100, ge=0, description="linear warm-up steps")
    min_lr_fraction: float = Field(0.02, ge=0, le=1, description="cosine floor, fraction of lr")
    target: TargetKind = Field("sphere", description="training target")
    target_fraction: float = Field(0.5, gt=0, le=1.5, description="sphere radius / sigma fraction")
    loss: Literal["ce", "ce+dice", "ce+tversky"] = Field("ce", description="loss")
    background_weight: float = Field(1.0, gt=0, description="cross-entropy weight of background")
    particle_weight: float = Field(32.0, gt=0, description="cross-entropy weight of particles")
    weight_radius_power: float = Field(
        0.0, ge=0, le=4, description="particle weights scale as radius^-power (3: equal volume)"
    )
    type_weights: dict[str, float] = Field(
        default_factory=dict,
        description="extra cross-entropy weight per particle type, name -> factor (default 1), "
        "e.g. the types that score double in the metric",
    )
    overlap_weight: float = Field(1.0, ge=0, description="weight of the Dice/Tversky term")
    tversky_alpha: float = Field(0.3, ge=0, le=1, description="Tversky false-positive weight")
    particle_fraction: float = Field(0.8, ge=0, le=1, description="patches centred on particles")
    hard_negative_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="patches centred on hard negatives: distractors a simulated project "
        "recorded (simulation_distractors.csv), of the kinds in hard_negative_kinds",
    )
    hard_negative_kinds: list[str] = Field(
        default_factory=lambda: ["large", "hard"],
        min_length=1,
        description="which recorded distractors are hard negatives: kinds (small, large, "
        "procedural, hard) or kind/name (e.g. large/3j9i)",
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="keep an exponential moving average of the weights and BatchNorm "
        "statistics with this decay per step (e.g. 0.999; 0: off); validated and saved "
        "instead of the raw weights",
    )
    seed: int = Field(0, description="seed of every random generator")
    device: str = Field("auto", description="auto, cpu or cuda")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on CUDA / CPUs with native bf16, else fp32"
    )
    channels_last: bool | None = Field(
        None, description="channels_last_3d memory format (None: on for CPUs with AVX512)"
    )
    threads: int | None = Field(None, ge=1, description="CPU threads (default: torch's)")
    sampling_workers: int | None = Field(
        None,
        ge=0,
        description="worker processes drawing batches ahead of the optimiser; 0: drawn in "
        "the training process; None: automatic (on CUDA one per CPU core but two, at most "
        "16; on the CPU 0). With workers, batches are seeded per step (the same for any "
        "number of workers)",
    )
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints")
    validate_every: int = Field(500, ge=0, description="steps between validations (0: end)")
    val_overlap: float = Field(0.125, ge=0, lt=1, description="window overlap in validation")
    val_min_score: float = Field(0.05, gt=0, lt=1, description="candidate floor for tuning")
    time_limit_min: float | None = Field(None, gt=0, description="stop after this many minutes")

    @model_validator(mode="after")
    def _check_patch(self) -> TrainConfig:
        m = self.architecture.input_multiple
        if any(p % m for p in self.patch_size):
            raise ValueError(f"patch_size {self.patch_size} must be multiples of {m}")
        if self.augment.rotate_xy and self.patch_size[1] != self.patch_size[2]:
            raise ValueError("XY rotations need patch_size y == x")
        bad = [name for name, f in self.type_weights.items() if not 0.0 < f < float("inf")]
        if bad:
            raise ValueError(f"type_weights must be positive numbers ({', '.join(bad)})")
        if self.particle_fraction + self.hard_negative_fraction > 1:
            raise ValueError("particle_fraction + hard_negative_fraction must not exceed 1")
        from cryopick.simulate.placement import DISTRACTOR_KINDS as kinds

        if bad := [k for k in self.hard_negative_kinds if k.split("/", 1)[0] not in kinds]:
            raise ValueError(f"hard_negative_kinds must be {', '.join(kinds)} or kind/name: {bad}")
        return self

    def sampling_worker_count(self, device_type: str) -> int:
        """Return how many batch-drawing processes to start on this device type (see the field)."""
        if self.sampling_workers is not None:
            return self.sampling_workers
        if device_type != "cuda":
            return 0
        return max(1, min(16, (os.cpu_count() or 1) - 2))

    @property
    def target_spec(self) -> TargetSpec:
        """The training target (``target``, ``target_fraction``) as the model card holds it."""
        return TargetSpec(kind=self.target, fraction=self.target_fraction)

    def class_weights(self, particles: ParticleSet | None = None) -> torch.Tensor:
        """Cross-entropy weight per class (background first, then the set's types by label).

        Particle weights average ``particle_weight``; with ``weight_radius_power`` > 0 the
        small types (fewer target voxels) weigh more, as ``radius ** -power``, and each type
        named in ``type_weights`` is multiplied by its factor before the average is taken
        (so the particles' share against the background stays the same).

        Parameters
        ----------
        particles : ParticleSet, optional
            The types learnt (their radii); default the CZII set.

        Raises
        ------
        ValueError
            When ``type_weights`` names a type the set does not have.
        """
        particle_set = resolve_particle_set(particles)
        unknown = sorted(set(self.type_weights) - set(particle_set.names))
        if unknown:
            raise ValueError(
                f"type_weights names {', '.join(unknown)}, not in the particle set "
                f"({', '.join(particle_set.names)})"
            )
        radii = [particle_set.radius_A(name) for name in particle_set.names]
        factors = [self.type_weights.get(name, 1.0) for name in particle_set.names]
        scale = torch.tensor(radii, dtype=torch.float64) ** -self.weight_radius_power
        scale = scale * torch.tensor(factors, dtype=torch.float64)
        scale = scale / scale.mean() * self.particle_weight
        weights = torch.cat([torch.tensor([self.background_weight], dtype=torch.float64), scale])
        return weights.float()


def compute_loss(
    logits: torch.Tensor, target: torch.Tensor, config: TrainConfig, weights: torch.Tensor
) -> torch.Tensor:
    """Class-weighted cross-entropy, plus an optional Dice / Tversky term.

    Parameters
    ----------
    logits : torch.Tensor, shape (B, C, z, y, x)
        Network output on its native grid.
    target : torch.Tensor
        Class indices ``(B, z, y, x)`` (int64) or soft probabilities ``(B, C, z, y, x)``.
    config : TrainConfig
        Loss choice and parameters.
    weights : torch.Tensor, shape (C,)
        Class weights.

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    logits = logits.float()
    if target.dtype == torch.int64:
        # weighted mean normalised by the summed weights of the voxels (torch's convention)
        loss = F.cross_entropy(logits, target, weight=weights)
    else:
        w = weights.view(1, -1, 1, 1, 1)
        loss = -(w * target * F.log_softmax(logits, dim=1)).sum(1).mean()
        loss = loss / (w * target).sum(1).mean().clamp_min(1e-6)
    if config.loss == "ce":
        return loss
    probs = torch.softmax(logits, dim=1)[:, 1:]
    if target.dtype == torch.int64:
        onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:].float()
    else:
        onehot = target[:, 1:]
    dims = (0, 2, 3, 4)
    tp = (probs * onehot).sum(dims)
    fp = (probs * (1 - onehot)).sum(dims)
    fn = ((1 - probs) * onehot).sum(dims)
    alpha = 0.5 if config.loss == "ce+dice" else config.tversky_alpha
    index = (tp + 1.0) / (tp + alpha * fp + (1 - alpha) * fn + 1.0)
    present = onehot.sum(dims) > 0
    overlap = 1.0 - index[present].mean() if present.any() else logits.new_zeros(())
    return loss + config.overlap_weight * overlap


def lr_factor(step: int, config: TrainConfig, wall_s: float = 0.0) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine down to ``min_lr_fraction``.

    Progress is ``step / steps``, or, with ``time_limit_min``, the larger of that and the
    fraction of the time budget used (so a time-limited run still anneals; such a run is
    not bit-reproducible on resume, since wall time varies).
    """
    import math

    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(config.steps - config.warmup_steps, 1)
    t = (step - config.warmup_steps) / span
    if config.time_limit_min:
        t = max(t, wall_s / (60.0 * config.time_limit_min))
    t = min(t, 1.0)
    floor = config.min_lr_fraction
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def rng_states(rng: np.random.Generator) -> dict[str, Any]:
    """Return the numpy, torch, python (and CUDA) RNG states, as tensors and plain values."""
    states: dict[str, Any] = {
        "numpy": rng.bit_generator.state,
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(rng: np.random.Generator, states: dict[str, Any]) -> None:
    """Restore the states saved by :func:`rng_states`."""
    rng.bit_generator.state = states["numpy"]
    torch.set_rng_state(states["torch"])
    random.setstate(_as_tuple(states["python"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (a crash mid-write leaves the previous one intact)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, safely (``weights_only=True``).

    Raises
    ------
    InputError
        Naming ``path``, for a file that is not a cryopick checkpoint: unreadable, holding
        Python objects other than tensors and plain values (never unpickled), or lacking
        one of :data:`CHECKPOINT_FIELDS`.
    """
    state = load_tensor_file(path, "training checkpoint")
    wrong = [
        key
        for key, kind in CHECKPOINT_FIELDS.items()
        if not isinstance(state, dict) or not isinstance(state.get(key), kind)
    ]
    if wrong or not isinstance(state, dict):  # (not a dict: every field is wrong)
        raise InputError(
            path, f"not a cryopick training checkpoint: {', '.join(wrong)} missing or malformed"
        )
    return state
