"""The training loop of one run, split into restore / step / validate-and-keep-best / save.

:class:`Trainer` holds the network, optimiser, gradient scaler, patch sampler and the
run's :class:`TrainState` (step, wall time, best score, model card); it is set up by
:func:`cryopick.training.trainer.open_trainer` and driven by :meth:`Trainer.fit`, which
reports each step to a progress callback (:class:`TrainProgress`). Everything a
checkpoint holds comes from :meth:`Trainer.checkpoint_state` and goes back through
:meth:`Trainer.restore`, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cryopick.core.errors import InputError, squeeze_error
from cryopick.core.particles import ParticleSet, resolve_particle_set
from cryopick.inference.runtime import describe_hardware, resolve_training_channels_last
from cryopick.io.atomic import write_text_atomic
from cryopick.model import (
    CARD_FILENAME,
    CHECKPOINT_FILENAME,
    ModelCard,
    read_model_card,
    save_model,
)
from cryopick.training.config import (
    TrainConfig,
    compute_loss,
    lr_factor,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from cryopick.training.prefetch import BatchPrefetcher
from cryopick.training.sampling import PatchSampler, TrainRun
from cryopick.training.validation import validate_and_calibrate

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Where a run stands (saved in every checkpoint).

    Attributes
    ----------
    step : int
        Optimiser steps done.
    wall_s : float
        Training wall time in seconds (validation excluded).
    best_score : float or None
        Best validation score so far (None before the first validation).
    card : ModelCard
        The run's card: learning curve so far; thresholds and metrics of the kept model.
    """

    step: int
    wall_s: float
    best_score: float | None
    card: ModelCard


class TrainProgress(NamedTuple):
    """What :meth:`Trainer.fit` reports after each step."""

    step: int
    steps: int
    loss: float
    steps_per_s: float
    best_score: float | None


def checkpoint_card(checkpoint: dict[str, Any], path: Path) -> ModelCard:
    """Return the model card a checkpoint holds.

    Raises
    ------
    InputError
        Naming ``path``, if the card is not a valid one.
    """
    try:
        return ModelCard.model_validate_json(checkpoint["card"])
    except ValueError as err:
        raise InputError(path, f"checkpoint does not fit this run: {squeeze_error(err)}") from None


def check_checkpoint_particles(card: ModelCard, particles: ParticleSet, path: Path) -> None:
    """Refuse to resume a checkpoint (``card``) that learnt another set than ``particles``.

    Raises
    ------
    InputError
        One line naming ``path`` and how the sets differ.
    """
    diff = card.particle_set.describe_differences(particles)
    if diff:
        raise InputError(
            path,
            f"the checkpoint learnt another particle set than this run's data ({diff}); "
            "train into a new folder, or fine-tune from it with --init-from",
        )


def average_weights(model: torch.nn.Module, decay: float) -> AveragedModel | None:
    """Return an exponential moving average of ``model``'s weights and buffers (None: off).

    BatchNorm's running statistics are averaged with the weights: with two patches per
    step they follow the last few batches only.
    """
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class Trainer:
    """One training run: network, optimiser, sampler, and its state.

    Parameters
    ----------
    config : TrainConfig
        The run's configuration.
    out_dir : Path
        Where the model and checkpoint go.
    model : torch.nn.Module
        The network (seeded; fresh or from ``init_from``).
    train_runs, val_runs : list of TrainRun
        Training and held-out runs (no validation when ``val_runs`` is empty: the last
        model is kept).
    device : torch.device
        Where to train.
    amp_dtype : torch.dtype or None
        Autocast dtype (None: fp32).
    rng : numpy.random.Generator
        The sampler's generator (seeded).
    particles : ParticleSet, optional
        The types learnt (network channel = label); default the CZII set. The card
        records it.
    """

    def __init__(
        self,
        config: TrainConfig,
        out_dir: Path,
        model: torch.nn.Module,
        train_runs: list[TrainRun],
        val_runs: list[TrainRun],
        device: torch.device,
        amp_dtype: torch.dtype | None,
        rng: np.random.Generator,
        particles: ParticleSet | None = None,
    ) -> None:
        self.config, self.out_dir, self.device, self.rng = config, out_dir, device, rng
        self.particles = resolve_particle_set(particles)
        self.amp_dtype, self.val_runs = amp_dtype, val_runs
        channels_last = resolve_training_channels_last(config.channels_last, device)
        self.memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        # Module.to takes memory_format (as Tensor.to does); torch's stub omits it
        self.model = model.to(device, memory_format=self.memory_format)  # type: ignore[call-overload]
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.sampler = PatchSampler(
            train_runs,
            config.patch_size,
            config.architecture.output_stride,
            config.target,
            config.target_fraction,
            config.particle_fraction,
            config.augment,
            rng,
            self.particles,
            negative_fraction=config.hard_negative_fraction,
        )
        self.class_weights = config.class_weights(self.particles).to(device)
        self.ema = average_weights(self.model, config.ema_decay)
        self.state = TrainState(0, 0.0, None, self._new_card(train_runs))
        self.prefetcher: BatchPrefetcher | None = None  # open while fit runs, if workers

    @property
    def kept_model(self) -> torch.nn.Module:
        """The network validated and saved: the weight average when on, else the raw one."""
        return self.model if self.ema is None else self.ema.module

    def _new_card(self, train_runs: Sequence[TrainRun]) -> ModelCard:
        config = self.config
        return ModelCard(
            architecture=config.architecture,
            spacing_A=config.spacing_A,
            patch_size=config.patch_size,
            target=config.target_spec,
            particles=self.particles.to_records(),
            training_data=[
                f"{r.source}:{r.name}:{'+'.join(sorted(r.volumes))}" for r in train_runs
            ],
            validation_data=[f"{r.source}:{r.name}:{config.val_tomo_type}" for r in self.val_runs],
            hardware=describe_hardware(self.device),
            train_config=config.model_dump(mode="json"),
        )

    @property
    def finished(self) -> bool:
        """True once all steps are done or the time limit is reached."""
        limit_min = self.config.time_limit_min
        return self.state.step >= self.config.steps or (
            limit_min is not None and self.state.wall_s >= limit_min * 60.0
        )

    def restore(self, checkpoint: dict[str, Any], path: Path) -> None:
        """Load a checkpoint's weights, optimiser, scaler, RNG states, step and card.

        Raises
        ------
        InputError
            Naming ``path``, if the checkpoint does not fit this run (e.g. it learnt
            another particle set).
        """
        card = checkpoint_card(checkpoint, path)
        check_checkpoint_particles(card, self.particles, path)
        try:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scaler.load_state_dict(checkpoint["scaler"])
            if self.ema is not None and checkpoint.get("ema") is not None:
                self.ema.load_state_dict(checkpoint["ema"])
            set_rng_states(self.rng, checkpoint["rng"])
        except (RuntimeError, ValueError, TypeError, KeyError, AttributeError, IndexError) as err:
            raise InputError(
                path, f"checkpoint does not fit this run: {squeeze_error(err)}"
            ) from None
        card = card.model_copy(update={"train_config": self.config.model_dump(mode="json")})
        self.state = TrainState(
            checkpoint["step"], checkpoint["wall_s"], checkpoint["best_score"], card
        )
        log.info("resumed from %s at step %d", path, self.state.step)

    def checkpoint_state(self) -> dict[str, Any]:
        """Return everything needed to continue exactly (see ``CHECKPOINT_FIELDS``)."""
        state = self.state
        return {
            "config": self.config.model_dump(mode="json"),
            "step": state.step,
            "wall_s": state.wall_s,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_states(self.rng),
            "card": state.card.to_json(),
            "best_score": state.best_score,
            "ema": None if self.ema is None else self.ema.state_dict(),
        }

    def save_checkpoint(self) -> None:
        """Replace ``checkpoint.pt`` atomically."""
        save_checkpoint(self.out_dir / CHECKPOINT_FILENAME, self.checkpoint_state())

    def _autocast(self) -> AbstractContextManager:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self) -> tuple[torch.Tensor, float]:
        """Run one optimiser step on a fresh batch.

        Returns
        -------
        (torch.Tensor, float)
            The (detached) loss and the step's wall time in seconds.
        """
        config, state = self.config, self.state
        t0 = time.perf_counter()
        if self.prefetcher is not None:
            x, y = self.prefetcher.next_batch()
        else:
            x, y = self.sampler.sample_batch(config.batch_size)
        xt = torch.from_numpy(x).to(self.device).contiguous(memory_format=self.memory_format)
        yt = torch.from_numpy(y).to(self.device)
        yt = yt.long() if yt.dtype == torch.uint8 else yt
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(state.step, config, state.wall_s)
        with self._autocast():
            logits = self.model.forward_native(xt)
        loss = compute_loss(logits, yt, config, self.class_weights)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        state.step += 1
        dt = time.perf_counter() - t0
        state.wall_s += dt
        return loss.detach(), dt

    def validate_and_keep_best(self) -> float:
        """Validate, extend the learning curve, and save the model if it is the best so far.

        Returns
        -------
        float
            The validation score.
        """
        state = self.state
        tuned, calibration = validate_and_calibrate(
            self.kept_model, self.val_runs, self.config, self.device, self.particles
        )
        self.model.train()
        curve = [
            *state.card.learning_curve,
            (round(state.wall_s, 2), state.step, round(tuned.score, 5)),
        ]
        state.card = state.card.model_copy(update={"learning_curve": curve})
        log.info("step %d: validation score %.4f", state.step, tuned.score)
        if state.best_score is None or tuned.score > state.best_score:
            state.best_score = tuned.score
            state.card = state.card.model_copy(
                update=dict(
                    steps=state.step,
                    wall_time_s=round(state.wall_s, 2),
                    score=tuned.score,
                    thresholds=tuned.thresholds,
                    calibration=calibration,
                    validation=tuned.per_class,
                )
            )
            save_model(self.out_dir, self.kept_model, state.card)
        return tuned.score

    def keep_last(self) -> None:
        """Save the current model as the kept one (no validation runs)."""
        state = self.state
        update = {"steps": state.step, "wall_time_s": round(state.wall_s, 2)}
        state.card = state.card.model_copy(update=update)
        save_model(self.out_dir, self.kept_model, state.card)

    def fit(self, progress: Callable[[TrainProgress], None] | None = None) -> None:
        """Train until :attr:`finished`: step (batches drawn ahead by workers), validate, save.

        Parameters
        ----------
        progress : callable, optional
            Called with a :class:`TrainProgress` after every step.
        """
        config = self.config
        workers = config.sampling_worker_count(self.device.type)
        if workers and not self.finished:
            batch = config.batch_size
            self.prefetcher = BatchPrefetcher(
                self.sampler, batch, workers, config.seed, start=self.state.step
            )
        try:
            self._fit_steps(progress)
        finally:
            if self.prefetcher is not None:
                self.prefetcher.close()
                self.prefetcher = None

    def _fit_steps(self, progress: Callable[[TrainProgress], None] | None) -> None:
        config, state = self.config, self.state
        rate = 0.0  # steps/s, exponential moving average
        self.model.train()
        while not self.finished:
            loss, dt = self.train_step()
            rate = 1.0 / dt if rate == 0.0 else 0.9 * rate + 0.1 / dt
            stop = self.finished
            due = config.validate_every and state.step % config.validate_every == 0
            if self.val_runs and (due or stop):
                self.validate_and_keep_best()
            elif not self.val_runs and (state.step % config.checkpoint_every == 0 or stop):
                self.keep_last()
            if state.step % config.checkpoint_every == 0 or stop:
                self.save_checkpoint()
            if progress is not None:
                progress(
                    TrainProgress(state.step, config.steps, float(loss), rate, state.best_score)
                )

    def finish(self) -> ModelCard:
        """Give the kept model's card the whole learning curve; return it.

        Returns the run's own card when no model was kept (no step was run).
        """
        path = self.out_dir / CARD_FILENAME
        if not path.exists():
            return self.state.card
        kept = read_model_card(self.out_dir)
        kept = kept.model_copy(update={"learning_curve": self.state.card.learning_curve})
        write_text_atomic(path, kept.to_json())
        return kept
