"""Picking: tomograms in, picks out (the library behind ``cryopick predict`` and ``tune``).

:func:`predict_tomogram` chains the stages for one tomogram: read lazily, resample to the
model's voxel size, normalise, run the network (:mod:`cryopick.inference.window`), find peaks
(:mod:`cryopick.inference.peaks`). Picks are in Å in the input tomogram's frame: resampling keeps Å
positions fixed (see :mod:`cryopick.inference.preprocess`), so only the grid spacing changes and no
coordinate mapping is needed. Results are deterministic for the same input and settings.

:func:`predict` runs it over everything :func:`cryopick.io.tomograms.read_tomograms`
resolves, one run after the other in this process, and writes the picks
(:func:`cryopick.evaluation.tuning.tune_model` re-tunes a model's thresholds with
:func:`predict_tomograms`). ``cryopick predict`` calls
:func:`cryopick.scale.predict.predict_runs`, which uses :func:`predict` unless scale-out
options make each run a resumable task.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from cryopick.console import window_progress_bar
from cryopick.core.errors import RunsFailedError, one_line_error
from cryopick.core.particles import ParticleSet, resolve_particle_set
from cryopick.inference.config import PredictConfig
from cryopick.inference.fiducials import Fiducials, drop_fiducial_streak_picks
from cryopick.inference.input_checks import (
    check_is_a_volume,
    warn_if_smaller_than_window,
    warn_if_thickness_not_along_z,
    warn_if_voxel_size_implausible,
)
from cryopick.inference.memory import check_memory
from cryopick.inference.output import (
    PICKS_SESSION_ID,
    PICKS_USER_ID,
    OutputFormat,
    RunShape,
    check_output_target,
    write_predictions,
)
from cryopick.inference.picking import PickSettings, check_config_for_model, pick_particles
from cryopick.inference.polarity import orient_contrast
from cryopick.inference.preprocess import (
    choose_network_spacing_A,
    prepare_volume,
    resampled_shape,
)
from cryopick.inference.runtime import resolve_device
from cryopick.inference.window import ProbabilityMap, predict_probability_map
from cryopick.io.runs import RunResult, open_tomograms, raise_all_failed
from cryopick.io.tomograms import DEFAULT_TOMO_TYPE, Tomogram
from cryopick.model import ModelCard, bundled_model_dir

log = logging.getLogger(__name__)

LoadedModel = tuple[torch.nn.Module, ModelCard]
"""A network and its card, as :func:`cryopick.model.load_model` returns them."""

__all__ = [
    "PICKS_SESSION_ID",
    "PICKS_USER_ID",
    "LoadedModel",
    "NetworkPass",
    "OutputFormat",
    "PredictConfig",
    "check_config_for_model",
    "compute_probability_map",
    "count_picks_per_run",
    "predict",
    "predict_tomogram",
    "predict_tomograms",
    "warn_if_smaller_than_window",
    "write_predictions",
]


def predict_tomogram(
    tomogram: Tomogram,
    model: torch.nn.Module,
    card: ModelCard,
    config: PredictConfig | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Pick particles in one tomogram.

    Parameters
    ----------
    tomogram : Tomogram
        The input (read lazily).
    model : torch.nn.Module
        The network (from :func:`cryopick.model.load_model`).
    card : ModelCard
        Its card: ``spacing_A``, ``patch_size``, ``target``, the thresholds and the score
        calibration are used (see :meth:`cryopick.inference.picking.PickSettings.for_model`).
    config : PredictConfig, optional
        Settings; keyword ``options`` (the fields of :class:`PredictConfig`) override it.
    progress : callable, optional
        ``progress(done, total)`` over the network's windows.

    Returns
    -------
    pandas.DataFrame
        Picks table, ``experiment = tomogram.name``, positions in Å of the input frame;
        ``score`` is the calibrated probability when the card has a calibration.
    """
    # validate the options (model_copy(update=...) would not: a JSON list left in a tuple
    # field, as batch workers pass them, made every model_dump warn)
    config = PredictConfig.model_validate({**(config or PredictConfig()).model_dump(), **options})
    settings = PickSettings.for_model(card, config)
    prob_map, network_input, fiducials, spacing_A = compute_probability_map(
        tomogram, model, card, config, progress=progress
    )
    volume: NDArray[np.float32] | None = network_input
    if settings.rescorer is None or settings.rescorer.features == "map":
        volume = None  # not needed: free it before picking
    del network_input
    picks = pick_particles(
        prob_map.probs,
        settings,
        spacing_A=spacing_A,
        stride=prob_map.stride,
        experiment=tomogram.name,
        volume=volume,
    )
    if config.fiducial_max_score is None or len(fiducials) == 0:
        return picks
    kept = drop_fiducial_streak_picks(picks, fiducials, config.fiducial_max_score)
    log.info(
        "%s: %d gold fiducials; %d weak picks in their streaks dropped",
        tomogram.name,
        len(fiducials),
        len(picks) - len(kept),
    )
    return kept


class NetworkPass(NamedTuple):
    """One network pass over a tomogram (:func:`compute_probability_map`)."""

    prob_map: ProbabilityMap
    volume: NDArray[np.float32]  # the normalised, oriented tomogram the network saw
    fiducials: Fiducials  # gold beads found in it
    spacing_A: float  # voxel size of ``volume``: convert the map's positions with it


def compute_probability_map(
    tomogram: Tomogram,
    model: torch.nn.Module,
    card: ModelCard,
    config: PredictConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> NetworkPass:
    """Run the network over one tomogram: its map, the volume it saw, the gold beads found.

    The tomogram is resampled to the card's voxel size (unless within 1 %: the voxel size
    it is read at, ``spacing_A`` of the result, is
    :func:`cryopick.inference.preprocess.choose_network_spacing_A`) and normalised
    (beads looked for unless ``config.fiducial_max_score`` is None), its contrast oriented,
    and the network run window by window (map on the network's strided grid). Used by
    :func:`predict_tomogram` and by the rescorer's fit
    (:mod:`cryopick.training.rescorer`).
    """
    device = resolve_device(config.device)  # a bad --device fails before any work
    check_is_a_volume(tomogram.source, tomogram.shape)
    model_spacing_A = float(card.spacing_A)
    warn_if_voxel_size_implausible(tomogram.name, tomogram.spacing_A, model_spacing_A)
    grid_spacing_A = choose_network_spacing_A(tomogram.spacing_A, model_spacing_A)
    grid_shape = resampled_shape(tomogram.shape, tomogram.spacing_A, grid_spacing_A)
    check_memory(tomogram.source, grid_shape, grid_spacing_A)  # before any large allocation
    volume, fiducials = prepare_volume(
        tomogram,
        model_spacing_A,
        find_beads=config.fiducial_max_score is not None,
        background=config.flatten_background,
    )
    volume = orient_contrast(
        volume, tomogram.name, config.invert, model, str(device), config.precision
    )
    warn_if_smaller_than_window(tomogram.name, volume.shape, card.patch_size, grid_spacing_A)
    warn_if_thickness_not_along_z(tomogram.name, volume.shape)
    prob_map = predict_probability_map(
        model,
        volume,
        patch_size=config.patch_size,
        overlap=config.overlap,
        batch_size=config.batch_size,
        device=device,
        tta=config.tta,
        precision=config.precision,
        upsample=False,
        progress=progress,
    )
    return NetworkPass(prob_map, volume, fiducials, grid_spacing_A)


def predict_tomograms(
    tomograms: list[Tomogram],
    model_dir: str | Path | None = None,
    config: PredictConfig | None = None,
    *,
    show_progress: bool = False,
    failures: dict[str, BaseException] | None = None,
    on_run_done: Callable[[RunResult], None] | None = None,
    model: LoadedModel | None = None,
) -> pd.DataFrame:
    """Pick particles in several tomograms with one model; picks of all runs in one table.

    Parameters
    ----------
    tomograms : list of Tomogram
        Inputs.
    model_dir : str or Path, optional
        Model folder; default :func:`bundled_model_dir` (unless ``model`` is given).
    config : PredictConfig, optional
        Settings.
    show_progress : bool
        Show a rich progress bar per tomogram (on stderr).
    failures : dict, optional
        When given, a run whose prediction fails (e.g. a corrupt chunk in its tomogram) is
        recorded here (run -> error) and the others go on; else the error is raised.
    on_run_done : callable, optional
        Called after each tomogram with its :class:`cryopick.io.runs.RunResult` (``done``
        with its pick count and seconds, or ``failed`` with the reason).
    model : (torch.nn.Module, ModelCard), optional
        An already loaded network and its card, used instead of loading ``model_dir``
        (e.g. to predict many inputs with one model); pass one or the other.
    """
    from cryopick.core.picks import empty_picks

    config = config or PredictConfig()
    resolve_device(config.device)  # a wrong device fails once, before any run
    network, card = _resolve_model(model_dir, model)
    check_config_for_model(config, card)  # a threshold of an unknown type fails once, too
    frames = []
    several_runs = len(tomograms) + len(failures or {}) > 1  # runs that failed to open too
    with window_progress_bar(show_progress) as bar:
        for tomo in tomograms:
            task = bar.add_task(tomo.name, total=None) if bar else None

            def advance(done: int, total: int, task: Any = task) -> None:
                if bar is not None:
                    bar.update(task, completed=done, total=total)

            start = time.perf_counter()
            try:
                frames.append(predict_tomogram(tomo, network, card, config, progress=advance))
            except Exception as err:
                if failures is None:
                    raise
                failures[tomo.name] = err
                reason = one_line_error(err)
                if several_runs:  # one run: the command's own error line says it
                    log.error("%s: prediction failed: %s", tomo.name, reason)
                result = RunResult(tomo.name, "failed", 0, time.perf_counter() - start, reason)
            else:
                log.info("%s: %d picks", tomo.name, len(frames[-1]))
                result = RunResult(tomo.name, "done", len(frames[-1]), time.perf_counter() - start)
            if on_run_done is not None:
                on_run_done(result)
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else empty_picks()


def _resolve_model(model_dir: str | Path | None, model: LoadedModel | None) -> LoadedModel:
    """``model`` itself, else the network and card loaded from ``model_dir`` (or bundled)."""
    if model is not None:
        if model_dir is not None:
            raise ValueError("pass model_dir or an already loaded model, not both")
        return model
    from cryopick.model import load_model

    return load_model(model_dir or bundled_model_dir(), device="cpu")


def predict(
    input_path: str | Path,
    model_dir: str | Path | None = None,
    output: str | Path | None = None,
    format: OutputFormat | str = OutputFormat.CSV,
    config: PredictConfig | None = None,
    *,
    tomo_type: str = DEFAULT_TOMO_TYPE,
    runs: list[str] | None = None,
    show_progress: bool = False,
    spacing_A: float | None = None,
    on_run_done: Callable[[RunResult], None] | None = None,
    model: LoadedModel | None = None,
) -> pd.DataFrame:
    """Pick particles in every tomogram at ``input_path``, one after the other, and write them.

    Parameters
    ----------
    input_path : str or Path
        Anything :func:`cryopick.io.tomograms.read_tomograms` resolves: a copick config,
        a Kaggle root, a folder of MRC files, one MRC or OME-Zarr.
    model_dir : str or Path, optional
        Trained model folder; default the bundled model (unless ``model`` is given).
    output : str or Path, optional
        Output file (``csv``, ``kaggle``, ``star``) or project (``copick``; default the
        input project). Nothing is written for csv/kaggle/star when None.
    format, config : OutputFormat or str, PredictConfig
        Output format (``csv``, ``kaggle``, ``copick`` or ``star``); settings.
    tomo_type, runs, spacing_A
        Reconstruction type to read from projects; only these runs (default: all); voxel
        size (Å) of MRC files whose header has none.
    show_progress, on_run_done
        Show progress bars; call ``on_run_done`` with each run's
        :class:`cryopick.io.runs.RunResult` (also runs that cannot be opened).
    model : (torch.nn.Module, ModelCard), optional
        An already loaded network and its card, instead of ``model_dir``.

    Returns
    -------
    pandas.DataFrame
        All picks (Å).

    Raises
    ------
    RunsFailedError
        If some runs failed: the picks of the others were written first (the error holds
        them as ``picks``); the failed runs' outputs are left as they were.
    InputError
        If the input, model or output is wrong, or the only run failed.
    """
    from cryopick.model import read_model_card

    destination = check_output_target(output, format, input_path)  # before any work
    if model is None:  # a bad model fails before any tomogram is read
        card = read_model_card(model_dir := Path(model_dir or bundled_model_dir()))
    else:
        card = _resolve_model(model_dir, model)[1]
    ps = check_config_for_model(config, card, format)
    failures: dict[str, BaseException] = {}
    tomograms = open_tomograms(
        input_path,
        tomo_type,
        runs,
        spacing_A,
        failures,
        on_run_done,
        prefer_spacing_A=float(card.spacing_A),  # a project's voxel spacing nearest the model's
    )
    picks = predict_tomograms(
        tomograms,
        model_dir,
        config,
        show_progress=show_progress,
        failures=failures,
        on_run_done=on_run_done,
        model=model,
    )
    done = [RunShape.of(t) for t in tomograms if t.name not in failures]
    n_runs = len({t.name for t in tomograms} | set(failures))
    if not done:
        raise_all_failed(failures, input_path, n_runs)
    if destination is not None:
        write_predictions(picks, done, output, format, input_path, card.spacing_A, particles=ps)
    if failures:
        reasons = {run: one_line_error(err) for run, err in failures.items()}
        raise RunsFailedError(reasons, destination, n_runs, picks=picks)
    return picks


def count_picks_per_run(
    picks: pd.DataFrame, runs: list[str] | None = None, particles: ParticleSet | None = None
) -> pd.DataFrame:
    """Count picks per run (rows) and particle type (columns), with a total row.

    Columns: the names of ``particles`` (the model's set), then any other type the picks
    have, by name. Without a set: the CZII six when every picked type is one of them,
    else the picked types, by name.
    """
    counts = pd.crosstab(picks["experiment"], picks["particle_type"])
    picked = {str(n) for n in counts.columns}
    particle_set = resolve_particle_set(particles)
    if particles is None and not all(n in particle_set.names for n in picked):
        names: list[str] = []
    else:
        names = list(particle_set.names)
    index = sorted(set(runs or []) | set(counts.index))
    names += sorted(picked - set(names))
    counts = counts.reindex(index=index, columns=names, fill_value=0)
    counts.loc["total"] = counts.sum()
    return counts.astype(int)
