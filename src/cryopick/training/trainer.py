"""Train the 3D U-Net: loop, checkpoints, exact resume, validation, best-model keeping.

:func:`train` writes into its output folder:

* ``checkpoint.pt``: everything needed to continue exactly (step, weights, optimiser,
  schedule, torch / numpy / python RNG states, learning curve, best score), replaced
  atomically every ``checkpoint_every`` steps, so a killed run loses at most that many
  steps and a reader never sees a half-written file; it holds tensors and plain values
  only and is read with ``weights_only=True`` (see :mod:`cryopick.training.config`);
* ``model.pt`` + ``model.json``: the best model so far by validation score (or the last
  one when there is nothing to validate on), see :mod:`cryopick.model`.

A :class:`Trainer` holds one run and is split as torch-em's trainer is: :meth:`Trainer.restore`
(from a checkpoint), :meth:`Trainer.train_step`, :meth:`Trainer.validate_and_keep_best`,
:meth:`Trainer.save_checkpoint`, and :meth:`Trainer.fit` looping over them with a progress
callback (:class:`TrainProgress`).

Validation runs the real pipeline on held-out runs: full-volume inference
(:func:`cryopick.inference.window.predict_probability_map`), picks
(:func:`cryopick.inference.picking.pick_particles`, every peak above ``val_min_score``),
per-class thresholds tuned for F-beta and the weighted score at them
(:func:`cryopick.evaluation.thresholds.tune_and_score`).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryopick.console import training_progress_bar
from cryopick.core.errors import InputError, squeeze_error
from cryopick.core.particles import ParticleSet, resolve_particle_set
from cryopick.model import CHECKPOINT_FILENAME, ModelCard, build_model, check_model_folder
from cryopick.training.config import TrainConfig, load_checkpoint
from cryopick.training.loop import (
    Trainer,
    TrainProgress,
    check_checkpoint_particles,
    checkpoint_card,
)
from cryopick.training.particle_sets import fit_output_layer, run_sets, training_particle_set
from cryopick.training.sampling import TrainRun
from cryopick.training.sources import gather_runs
from cryopick.training.validation import validate

__all__ = [
    "CHECKPOINT_FILENAME",
    "TrainProgress",
    "Trainer",
    "initialise_model",
    "load_checkpoint",
    "open_trainer",
    "train",
    "validate",
]

log = logging.getLogger(__name__)


def initialise_model(
    config: TrainConfig, particles: ParticleSet | None = None
) -> tuple[TrainConfig, torch.nn.Module]:
    """Build the network to train: fresh, or with ``config.init_from``'s weights (fine-tuning).

    A fresh network gets one output channel per type of ``particles`` (default the CZII
    set) besides the background. When starting from a trained model, its architecture
    replaces ``config.architecture`` (the returned config says so) and its voxel size must
    equal ``config.spacing_A``; when it was trained on another set, its output layer is
    re-initialised for ``particles``, every other weight kept
    (:func:`cryopick.training.particle_sets.fit_output_layer`).
    """
    particle_set = resolve_particle_set(particles)
    if not config.init_from:
        architecture = config.architecture.model_copy(update={"n_classes": particle_set.n_classes})
        config = config.model_copy(update={"architecture": architecture})
        return config, build_model(architecture)
    from cryopick.model import bundled_model_dir, load_model

    source = bundled_model_dir() if config.init_from == "bundled" else Path(config.init_from)
    model, card = load_model(source)
    if not math.isclose(card.spacing_A, config.spacing_A, rel_tol=1e-3):
        raise InputError(
            source,
            f"model voxel size {card.spacing_A} Å differs from spacing_A {config.spacing_A} Å "
            "of this training run; set spacing_A to match",
        )
    log.info("starting from the weights of %s", source)
    model = fit_output_layer(model, card.particle_set, particle_set)
    config = config.model_copy(update={"architecture": model.config})
    return config, model.train()


def _resumed_config(config: TrainConfig, checkpoint: dict[str, Any], path: Path) -> TrainConfig:
    """Return the checkpoint's configuration, updated with the caller's explicit settings.

    Only ``steps``, ``time_limit_min`` and ``validate_every`` are taken from ``config``,
    when set explicitly (e.g. to extend a finished run).
    """
    given = config.model_fields_set  # only what the caller set explicitly
    keep = {
        k: getattr(config, k) for k in ("steps", "time_limit_min", "validate_every") if k in given
    }
    try:
        return TrainConfig.model_validate({**checkpoint["config"], **keep})
    except ValueError as err:
        raise InputError(
            path, f"invalid settings in the checkpoint: {squeeze_error(err)}"
        ) from None


def _read_checkpoint(out_dir: Path, resume: bool) -> dict[str, Any] | None:
    """Return the checkpoint to resume from, if resuming and there is one."""
    path = out_dir / CHECKPOINT_FILENAME
    checkpoint = load_checkpoint(path) if resume and path.exists() else None
    if resume and checkpoint is None:
        log.warning("%s: no checkpoint to resume from; starting afresh", path)
    return checkpoint


def open_trainer(
    config: TrainConfig,
    out_dir: Path,
    train_runs: Sequence[TrainRun] | None,
    val_runs: Sequence[TrainRun] | None,
    resumed: ModelCard | None,
) -> Trainer:
    """Set up a run: device, data, particle set, seeded RNGs, the network.

    The network is fresh, fine-tuned (``init_from``) or to be restored. The particle set
    learnt is that of the data (:func:`cryopick.training.sources.gather_runs`) or, for
    in-memory runs, the runs' common set (``config.particles``'s when given; every run
    must hold it).

    Parameters
    ----------
    config : TrainConfig
        The run's configuration (the checkpoint's, when resuming).
    out_dir : Path
        Output folder (simulated training data go there).
    train_runs, val_runs : sequence of TrainRun, optional
        In-memory runs instead of ``config.data`` / ``config.val``.
    resumed : ModelCard or None
        The card of a checkpoint to be restored: the bare architecture is built (no
        ``init_from``) and the run's set must be the card's. None: a new run.

    Returns
    -------
    Trainer
        Ready to :meth:`Trainer.restore` or :meth:`Trainer.fit`.
    """
    from cryopick.core.particles_file import load_particles_file
    from cryopick.inference.runtime import resolve_device, resolve_precision

    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    amp_dtype = resolve_precision(config.precision, device)  # a bad setting fails before data
    reference: ParticleSet | None = None
    name = f"particles file {config.particles}"
    if train_runs is None:
        data = gather_runs(config, out_dir, config.sampling_worker_count(device.type))
        train_runs, reference, name = data.train_runs, data.particles, "the training data"
        val_runs = data.val_runs if val_runs is None else val_runs
    elif config.particles:
        reference = load_particles_file(config.particles)
    declared = run_sets([*train_runs, *(val_runs or [])])
    particles = training_particle_set(declared, reference, name, config.spacing_A)
    log.info("learning %d particle types: %s", len(particles), ", ".join(particles.names))
    try:
        config.class_weights(particles)  # type_weights naming a type the data lack
    except ValueError as err:
        raise InputError(None, str(err)) from None
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model: torch.nn.Module
    if resumed is not None:  # the checkpoint holds the weights (and any init_from's architecture)
        check_checkpoint_particles(resumed, particles, out_dir / CHECKPOINT_FILENAME)
        model = build_model(config.architecture)
    else:
        config, model = initialise_model(config, particles)
    runs = (list(train_runs), list(val_runs or []))
    return Trainer(config, out_dir, model, *runs, device, amp_dtype, rng, particles)


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    train_runs: Sequence[TrainRun] | None = None,
    val_runs: Sequence[TrainRun] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> ModelCard:
    """Train a model and write it (and its checkpoint) into ``out_dir``.

    Parameters
    ----------
    config : TrainConfig
        The run's configuration. On ``resume`` the checkpoint's configuration is used,
        except ``steps``, ``time_limit_min`` and ``validate_every`` when set explicitly
        in ``config`` (e.g. to extend a finished run).
    out_dir : str or Path
        Output folder: ``checkpoint.pt``, ``model.pt``, ``model.json``.
    resume : bool
        Continue exactly where the last checkpoint in ``out_dir`` left off (it must have
        learnt the particle set this run's data declare).
    train_runs, val_runs : sequence of TrainRun, optional
        In-memory runs instead of ``config.data`` / ``config.val`` (tests, notebooks).
    progress : bool
        Show a progress bar.
    overwrite : bool
        Replace a model or checkpoint already in ``out_dir`` (else an error, see
        :func:`cryopick.model.check_model_folder`).

    Returns
    -------
    ModelCard
        Card of the kept model.
    """
    out_dir = Path(out_dir)
    check_model_folder(out_dir, resume, overwrite)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = _read_checkpoint(out_dir, resume)
    path = out_dir / CHECKPOINT_FILENAME
    resumed = None if checkpoint is None else checkpoint_card(checkpoint, path)
    if checkpoint is not None:
        config = _resumed_config(config, checkpoint, path)
    try:
        trainer = open_trainer(config, out_dir, train_runs, val_runs, resumed)
    except BaseException:
        if created and not any(out_dir.iterdir()):  # bad data: leave no empty folder behind
            out_dir.rmdir()
        raise
    if checkpoint is not None:
        trainer.restore(checkpoint, path)
    with training_progress_bar(progress, trainer.config.steps, trainer.state) as report:
        trainer.fit(report)
    return trainer.finish()
