"""Train the 3D U-Net: loop, checkpoints, exact resume, validation, best-model keeping.

:func:`train` writes into its output folder:

* ``checkpoint.pt``: everything needed to continue exactly (step, weights, optimiser,
  schedule, torch / numpy / python RNG states, learning curve, best score), replaced
  atomically every ``checkpoint_every`` steps, so a killed run loses at most that many
  steps and a reader never sees a half-written file; it holds tensors and plain values
  only and is read with ``weights_only=True`` (see :mod:`cryopick.training.config`);
* ``model.pt`` + ``model.json``: the best model so far by validation score (or the last
  one when there is nothing to validate on), see :mod:`cryopick.model`.

Validation runs the real pipeline on held-out runs: full-volume inference
(:func:`cryopick.inference.window.predict_probabilities`), peaks
(:func:`cryopick.inference.peaks.find_peaks`), per-class thresholds tuned for F-beta
(:func:`cryopick.evaluation.metric.tune_thresholds`) and the weighted score
(:func:`cryopick.evaluation.metric.score_picks`).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cryopick.core.errors import InputError, squeeze_error
from cryopick.inference.runtime import describe_hardware
from cryopick.model import (
    CHECKPOINT_FILENAME,
    ClassMetrics,
    ModelCard,
    UNet3D,
    build_model,
    check_model_folder,
    save_model,
)
from cryopick.training.config import (
    TrainConfig,
    compute_loss,
    load_checkpoint,
    lr_factor,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from cryopick.training.sampling import PatchSampler, TrainRun, gather_runs
from cryopick.training.targets import describe_target

log = logging.getLogger(__name__)


def validate(
    model: UNet3D,
    runs: Sequence[TrainRun],
    config: TrainConfig,
    device: torch.device,
) -> tuple[float, dict[str, float], list[ClassMetrics]]:
    """Score the model on held-out runs with per-class thresholds tuned for F-beta (beta=4).

    Returns
    -------
    (float, dict, list of ClassMetrics)
        Weighted F-beta, tuned thresholds, per-class metrics at those thresholds.
    """
    from cryopick.evaluation.metric import score_picks, tune_thresholds
    from cryopick.inference.peaks import find_peaks
    from cryopick.inference.pipeline import expected_blob_fraction
    from cryopick.inference.window import predict_probabilities

    stride = model.output_stride
    candidates, truths = [], []
    for i, run in enumerate(runs):
        # runs from different sources may share names: key them by position for scoring
        key = f"{i}:{run.name}"
        truths.append(run.picks.assign(experiment=key))
        volume = run.volumes.get(config.val_tomo_type, next(iter(run.volumes.values())))
        probs = predict_probabilities(
            model, volume, patch_size=config.patch_size, overlap=config.val_overlap,
            device=device, precision=config.precision, channels_last=config.channels_last,
            upsample=False,
        )  # fmt: skip
        candidates.append(
            find_peaks(
                probs,
                spacing_A=run.spacing_A * stride,
                experiment=key,
                default_threshold=config.val_min_score,
                min_score=config.val_min_score,
                blob_radius_fraction=expected_blob_fraction(
                    describe_target(config.target, config.target_fraction)
                ),
                origin_A=(stride - 1) / 2.0 * run.spacing_A,
            )  # fmt: skip
        )
    picks = pd.concat(candidates, ignore_index=True)
    truth = pd.concat(truths, ignore_index=True)
    thresholds = tune_thresholds(truth, picks)
    keep = picks["score"].to_numpy() >= picks["particle_type"].map(thresholds).to_numpy()
    result = score_picks(truth, picks[keep])
    metrics = [
        ClassMetrics(**{k: row[k] for k in ClassMetrics.model_fields})
        for row in result.per_class.to_dict("records")
    ]
    return float(result.score), thresholds, metrics


def initialise_model(config: TrainConfig) -> tuple[TrainConfig, torch.nn.Module]:
    """Build the network to train: fresh, or with ``config.init_from``'s weights (fine-tuning).

    When starting from a trained model, its architecture replaces ``config.architecture``
    (the returned config says so); its voxel size must equal ``config.spacing_A``.
    """
    if not config.init_from:
        return config, build_model(config.architecture)
    from cryopick.inference.pipeline import bundled_model_dir
    from cryopick.model import load_model

    source = bundled_model_dir() if config.init_from == "bundled" else Path(config.init_from)
    model, card = load_model(source)
    if not math.isclose(card.spacing_A, config.spacing_A, rel_tol=1e-3):
        raise InputError(
            source,
            f"model voxel size {card.spacing_A} Å differs from spacing_A {config.spacing_A} Å "
            "of this training run; set spacing_A to match",
        )
    config = config.model_copy(update={"architecture": card.architecture})
    log.info("starting from the weights of %s", source)
    return config, model.train()


def _resumed_config(config: TrainConfig, checkpoint: dict[str, Any], path: Path) -> TrainConfig:
    """Return the checkpoint's configuration, updated with the caller's explicit settings.

    Only ``steps``, ``time_limit_min`` and ``validate_every`` are taken from ``config``,
    when set explicitly (e.g. to extend a finished run).
    """
    given = config.model_fields_set  # only what the caller set explicitly
    keep = {k: getattr(config, k) for k in ("steps", "time_limit_min", "validate_every")
            if k in given}  # fmt: skip
    try:
        return TrainConfig.model_validate({**checkpoint["config"], **keep})
    except ValueError as err:
        raise InputError(
            path, f"invalid settings in the checkpoint: {squeeze_error(err)}"
        ) from None


def _restore(
    checkpoint: dict[str, Any], path: Path, model: torch.nn.Module, optimizer: Any, scaler: Any,
    rng: np.random.Generator,
) -> tuple[int, float, ModelCard, float | None]:  # fmt: skip
    """Load the checkpoint's weights, optimiser, scaler and RNG states; its step and card."""
    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        set_rng_states(rng, checkpoint["rng"])
        card = ModelCard.model_validate_json(checkpoint["card"])
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError, IndexError) as err:
        raise InputError(path, f"checkpoint does not fit this run: {squeeze_error(err)}") from None
    return checkpoint["step"], checkpoint["wall_s"], card, checkpoint["best_score"]


def _progress(enabled: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:.2f} steps/s"),
        TextColumn("val {task.fields[score]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        disable=not enabled,
    )  # fmt: skip


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
        Continue exactly where the last checkpoint in ``out_dir`` left off.
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
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT_FILENAME
    checkpoint = load_checkpoint(ckpt_path) if resume and ckpt_path.exists() else None
    if resume and checkpoint is None:
        log.warning("%s: no checkpoint to resume from; starting afresh", ckpt_path)
    if checkpoint is not None:
        config = _resumed_config(config, checkpoint, ckpt_path)
    if config.threads:
        torch.set_num_threads(config.threads)
    from cryopick.inference.runtime import (
        resolve_device,
        resolve_precision,
        resolve_training_channels_last,
    )

    device = resolve_device(config.device)
    amp_dtype = resolve_precision(config.precision, device)
    if train_runs is None:
        train_runs, loaded_val = gather_runs(config, out_dir)
        val_runs = loaded_val if val_runs is None else val_runs
    val_runs = list(val_runs or [])

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if checkpoint is None:
        config, model = initialise_model(config)
    else:  # the checkpoint holds the weights (and the architecture of any init_from)
        model = build_model(config.architecture)
    channels_last = resolve_training_channels_last(config.channels_last, device)
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    sampler = PatchSampler(
        train_runs, config.patch_size, config.architecture.output_stride, config.target,
        config.target_fraction, config.particle_fraction, config.augment, rng,
    )  # fmt: skip
    weights = config.class_weights().to(device)
    card = ModelCard(
        architecture=config.architecture, spacing_A=config.spacing_A,
        patch_size=config.patch_size, target=describe_target(config.target, config.target_fraction),
        training_data=[f"{r.source}:{r.name}:{'+'.join(sorted(r.volumes))}" for r in train_runs],
        validation_data=[f"{r.source}:{r.name}:{config.val_tomo_type}" for r in val_runs],
        hardware=describe_hardware(device), train_config=config.model_dump(mode="json"),
    )  # fmt: skip
    step, wall_s, best = 0, 0.0, None
    if checkpoint is not None:
        step, wall_s, card, best = _restore(checkpoint, ckpt_path, model, optimizer, scaler, rng)
        card = card.model_copy(update={"train_config": config.model_dump(mode="json")})
        log.info("resumed from %s at step %d", ckpt_path, step)

    def checkpoint_state() -> dict[str, Any]:
        return {
            "config": config.model_dump(mode="json"), "step": step, "wall_s": wall_s,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng_states(rng), "card": card.to_json(), "best_score": best,
        }  # fmt: skip

    autocast = (
        torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    )
    deadline = None if config.time_limit_min is None else config.time_limit_min * 60.0
    score_text = "-" if best is None else f"{best:.3f}"
    rate = 0.0  # steps/s, exponential moving average
    model.train()
    with _progress(progress) as bar:
        task = bar.add_task("train", total=config.steps, completed=step, loss=0.0, rate=0.0,
                            score=score_text)  # fmt: skip
        while step < config.steps and (deadline is None or wall_s < deadline):
            t0 = time.perf_counter()
            x, y = sampler.sample_batch(config.batch_size)
            xt = torch.from_numpy(x).to(device).contiguous(memory_format=memory_format)
            yt = torch.from_numpy(y).to(device)
            yt = yt.long() if yt.dtype == torch.uint8 else yt
            for group in optimizer.param_groups:
                group["lr"] = config.lr * lr_factor(step, config, wall_s)
            with autocast:
                logits = model.forward_native(xt)
            loss = compute_loss(logits, yt, config, weights)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            dt = time.perf_counter() - t0
            wall_s += dt
            rate = 1.0 / dt if rate == 0.0 else 0.9 * rate + 0.1 / dt
            stop = step >= config.steps or (deadline is not None and wall_s >= deadline)
            due = config.validate_every and step % config.validate_every == 0
            if val_runs and (due or stop):
                score, thresholds, metrics = validate(model, val_runs, config, device)
                model.train()
                curve = [*card.learning_curve, (round(wall_s, 2), step, round(score, 5))]
                card = card.model_copy(update={"learning_curve": curve})
                log.info("step %d: validation score %.4f", step, score)
                if best is None or score > best:
                    best = score
                    card = card.model_copy(update=dict(
                        steps=step, wall_time_s=round(wall_s, 2), score=score,
                        thresholds=thresholds, validation=metrics,
                    ))  # fmt: skip
                    save_model(out_dir, model, card)
                score_text = f"{best:.3f}"
            elif not val_runs and (step % config.checkpoint_every == 0 or stop):
                card = card.model_copy(update={"steps": step, "wall_time_s": round(wall_s, 2)})
                save_model(out_dir, model, card)
            if step % config.checkpoint_every == 0 or stop:
                save_checkpoint(ckpt_path, checkpoint_state())
            bar.update(task, completed=step, loss=float(loss.detach()), rate=rate,
                       score=score_text)  # fmt: skip
    # the kept model's card gets the whole learning curve
    if (out_dir / "model.json").exists():
        from cryopick.io.atomic import write_text_atomic
        from cryopick.model import read_model_card

        kept = read_model_card(out_dir)
        kept = kept.model_copy(update={"learning_curve": card.learning_curve})
        write_text_atomic(out_dir / "model.json", kept.to_json())
        return kept
    return card
