"""Fit a model's rescorer on annotated runs (``cryopick tune --rescorer-data``).

:func:`collect_candidates` runs the network over annotated tomograms and keeps, per run,
every peak above the candidate floor with its feature row
(:func:`cryopick.inference.rescoring.candidate_features`) and whether a true particle of
its type lies within half its radius (the metric's match distance).
:func:`fit_rescorer` trains a few small multilayer perceptrons on them (binary
cross-entropy, AdamW, fixed seeds) and returns a :class:`cryopick.model.Rescorer` holding
their weights. The runs must not be the ones thresholds are tuned on, nor the held-out
ones a model is measured on.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet
from cryopick.evaluation.metric import match_radius_A
from cryopick.inference.config import PredictConfig
from cryopick.inference.picking import PickSettings, pick_particles
from cryopick.inference.pipeline import LoadedModel, compute_probability_map
from cryopick.inference.rescoring import candidate_features, count_features
from cryopick.io.picks import read_truth
from cryopick.io.runs import read_inputs
from cryopick.io.tomo_types import MissingTomoTypeError
from cryopick.io.tomograms import DEFAULT_TOMO_TYPE, Tomogram
from cryopick.model.rescorer import DenseLayer, FeatureSet, Rescorer

log = logging.getLogger(__name__)

MIN_STEPS = 500
"""Optimiser steps each network takes at least (more epochs on few candidates)."""

BATCH_SIZE = 512

DEFAULT_MEMBERS = 9
"""Networks a rescorer averages (each a few hundred kB of the card's JSON)."""

DEFAULT_CANDIDATE_FLOOR = 0.05
"""Raw peak value a candidate needs to be re-scored (lower: more candidates, slower)."""


@dataclass
class Candidates:
    """Candidate picks of annotated runs, their feature rows and labels.

    ``sources`` names the runs they come from: (project, run, reconstruction) each.
    """

    picks: pd.DataFrame
    features: NDArray[np.float32]
    labels: NDArray[np.bool_]
    sources: list[tuple[str, str, str]] = field(default_factory=list)

    @classmethod
    def concat(cls, parts: Sequence[Candidates]) -> Candidates:
        """Join several runs' candidates."""
        return cls(
            pd.concat([p.picks for p in parts], ignore_index=True),
            np.concatenate([p.features for p in parts]),
            np.concatenate([p.labels for p in parts]),
            [source for p in parts for source in p.sources],
        )


def label_candidates(
    picks: pd.DataFrame, truth: pd.DataFrame, particles: ParticleSet
) -> NDArray[np.bool_]:
    """Return, per pick, whether a truth centre of its type lies within its match radius.

    Both tables hold one run; positions in Å; the match radius is the metric's
    (:func:`cryopick.evaluation.metric.match_radius_A`).
    """
    labels = np.zeros(len(picks), dtype=bool)
    for name, index in picks.groupby("particle_type").indices.items():
        centres = truth.loc[truth["particle_type"] == name, ["z", "y", "x"]].to_numpy(float)
        if len(centres) == 0:
            continue
        found = picks.iloc[index][["z", "y", "x"]].to_numpy(float)
        nearest = np.sqrt(((found[:, None] - centres[None]) ** 2).sum(-1)).min(axis=1)
        labels[index] = nearest <= match_radius_A(particles, str(name))
    return labels


def collect_candidates(
    tomogram: Tomogram,
    truth: pd.DataFrame,
    model: LoadedModel,
    config: PredictConfig,
    floor: float,
    features: FeatureSet = "map+density+shape",
) -> Candidates:
    """Run the network over one annotated tomogram; return its candidates above ``floor``.

    Parameters
    ----------
    tomogram : Tomogram
        The input.
    truth : pandas.DataFrame
        Its annotations (one run, Å).
    model : (torch.nn.Module, ModelCard)
        The network and its card.
    config : PredictConfig
        Prediction settings (window, device, precision, polarity).
    floor : float
        Raw peak value a candidate needs.
    features : {"map", "map+density", "map+density+shape"}
        The feature rows to compute (a fit may use their first columns: every set
        starts with the smaller ones).
    """
    network, card = model
    particles = card.particle_set
    prob_map, volume, _, spacing_A = compute_probability_map(tomogram, network, card, config)
    settings = PickSettings.for_candidates(card.target, floor, particles)
    picks = pick_particles(
        prob_map.probs,
        settings,
        spacing_A=spacing_A,
        stride=prob_map.stride,
        experiment=tomogram.name,
    )
    rows = candidate_features(
        picks,
        prob_map.probs,
        volume,
        spacing_A=spacing_A,
        stride=prob_map.stride,
        particles=particles,
        features=features,
    )
    return Candidates(picks, rows, label_candidates(picks, truth, particles))


def fit_rescorer(
    candidates: Candidates,
    particles: ParticleSet,
    *,
    features: FeatureSet = "map+density+shape",
    floor: float = DEFAULT_CANDIDATE_FLOOR,
    hidden: int = 64,
    epochs: int = 20,
    members: int = DEFAULT_MEMBERS,
    training_data: Sequence[str] = (),
    seed: int = 0,
) -> Rescorer:
    """Train the rescorer's networks on labelled candidates.

    Parameters
    ----------
    candidates : Candidates
        From :func:`collect_candidates` (full feature rows).
    particles : ParticleSet
        The model's set (output order).
    features : {"map", "map+density", "map+density+shape"}
        Which feature columns to use.
    floor : float
        The candidate floor the candidates were collected with (stored).
    hidden, epochs, members : int
        Width of the two hidden layers; passes over the data (at least :data:`MIN_STEPS`
        batches); networks averaged (seeds ``seed .. seed + members - 1``).
    training_data : sequence of str
        Description stored in the rescorer.
    seed : int
        First network's seed (0 for every bundled rescorer; others measure how much the
        fit's randomness moves the figures).

    Raises
    ------
    ValueError
        Without both true and false candidates.
    """
    labels = candidates.labels
    if labels.all() or not labels.any():
        raise ValueError("the rescorer needs both true and false candidates to learn from")
    n_features = count_features(particles.n_classes, features)
    x = candidates.features[:, :n_features].astype(np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    names = list(particles.names)
    index = np.array([names.index(n) for n in candidates.picks["particle_type"]], np.int64)
    inputs = np.concatenate([(x - mean) / scale, np.eye(len(names))[index]], axis=1)
    networks = [
        _train_network(inputs, labels, index, len(names), (hidden, epochs, member_seed))
        for member_seed in range(seed, seed + members)
    ]
    log.info("rescorer fitted on %d candidates (%d true)", len(labels), int(labels.sum()))
    return Rescorer(
        features=features,
        n_features=n_features,
        candidate_floor=floor,
        class_names=names,
        mean=mean.tolist(),
        scale=scale.tolist(),
        members=networks,
        n_candidates=len(labels),
        training_data=list(training_data),
    )


def _train_network(
    inputs: NDArray,
    labels: NDArray,
    index: NDArray,
    n_types: int,
    settings: tuple[int, int, int],
) -> list[DenseLayer]:
    """Train one perceptron (two ReLU hidden layers, one output per type); return its layers.

    ``settings`` is (hidden width, epochs, seed); a candidate's loss reads its type's output.
    """
    hidden, epochs, seed = settings
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layers = torch.nn.Sequential(
        torch.nn.Linear(inputs.shape[1], hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, n_types),
    )
    x = torch.tensor(inputs, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.float32)
    k = torch.tensor(index)
    optimiser = torch.optim.AdamW(layers.parameters(), lr=3e-3, weight_decay=1e-4)
    epochs = max(epochs, -(-MIN_STEPS // -(-len(x) // BATCH_SIZE)))
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(BATCH_SIZE):
            logits = layers(x[batch]).gather(1, k[batch, None])[:, 0]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return [
        DenseLayer(weight=m.weight.detach().double().tolist(), bias=m.bias.detach().tolist())
        for m in layers
        if isinstance(m, torch.nn.Linear)
    ]


def fit_rescorer_on_projects(
    model: LoadedModel,
    projects: Sequence[str | Path],
    config: PredictConfig | None = None,
    *,
    tomo_types: Sequence[str] = (DEFAULT_TOMO_TYPE,),
    truth_user: str | None = None,
    truth_session: str | None = None,
    features: FeatureSet = "map+density+shape",
    floor: float = DEFAULT_CANDIDATE_FLOOR,
    members: int = DEFAULT_MEMBERS,
) -> Rescorer:
    """Collect candidates on every run of annotated projects and fit a rescorer on them.

    Parameters
    ----------
    model : (torch.nn.Module, ModelCard)
        The network and card to fit it for.
    projects : sequence of str or Path
        Annotated copick projects (configs) or Kaggle roots: simulations with exact truth
        for the bundled model (truth user ``simulation``), never its held-out runs.
    config : PredictConfig, optional
        Prediction settings (device, precision, windows, polarity); ``tta`` is ignored.
    tomo_types : sequence of str
        Reconstruction types, taken in turn from one run to the next over all projects
        (:func:`collect_project_candidates`): a rescorer for several reconstructions.
    truth_user, truth_session : str
        Whose annotations are the truth.
    features, floor, members
        As for :func:`fit_rescorer`.

    Raises
    ------
    InputError
        If a project has no tomograms or no annotations of the runs.
    """
    candidates = collect_project_candidates(
        model,
        projects,
        config,
        tomo_types=tomo_types,
        truth=(truth_user, truth_session),
        floor=floor,
        features=features,
    )
    particles = model[1].particle_set
    return fit_rescorer(
        candidates,
        particles,
        features=features,
        floor=floor,
        members=members,
        training_data=describe_sources(candidates.sources),
    )


def collect_project_candidates(
    model: LoadedModel,
    projects: Sequence[str | Path],
    config: PredictConfig | None = None,
    *,
    tomo_types: Sequence[str] = (DEFAULT_TOMO_TYPE,),
    truth: tuple[str | None, str | None] = (None, None),
    floor: float = DEFAULT_CANDIDATE_FLOOR,
    features: FeatureSet = "map+density+shape",
) -> Candidates:
    """Labelled candidates of every run of annotated projects (:func:`collect_candidates`).

    Run ``i`` (counted over all projects, in order) is read as reconstruction
    ``tomo_types[i % len(tomo_types)]``: each run once, the types in turn (repeat a type
    to give it more runs). ``truth`` is the annotations' (user, session); the rest as for
    :func:`fit_rescorer_on_projects`, which fits a rescorer on what this returns.
    """
    if not tomo_types:
        raise ValueError("give at least one reconstruction type")
    config = (config or PredictConfig()).model_copy(update={"tta": False})
    particles = model[1].particle_set
    parts: list[Candidates] = []
    for project in projects:
        annotations = read_truth(
            project, user_id=truth[0], session_id=truth[1], particles=particles
        )
        spacing_A = float(model[1].spacing_A)  # a project's voxel spacing nearest the model's
        for tomogram in _runs_in_turn(project, tomo_types, len(parts), spacing_A):
            run_truth = annotations[annotations["experiment"] == tomogram.name]
            if run_truth.empty:
                raise InputError(project, f"run {tomogram.name} has no annotated picks")
            part = collect_candidates(tomogram, run_truth, model, config, floor, features)
            part.sources = [(str(project), tomogram.name, tomogram.tomo_type or "?")]
            parts.append(part)
            log.info("%s: %d candidates", tomogram.name, len(parts[-1].labels))
    return Candidates.concat(parts)


def _runs_in_turn(
    project: str | Path,
    tomo_types: Sequence[str],
    first: int,
    prefer_spacing_A: float | None = None,
) -> list[Tomogram]:
    """Return the project's runs, run ``j`` read as ``tomo_types[(first + j) % n_types]``.

    A type the project lacks altogether is an error only when one of its runs is to be read
    as it: a project of denoised tomograms can share a tune with one read as wbp.
    """
    by_type: dict[str, list[Tomogram]] = {}
    missing: dict[str, MissingTomoTypeError] = {}
    for kind in dict.fromkeys(tomo_types):
        try:
            by_type[kind] = read_inputs(project, kind, None, prefer_spacing_A=prefer_spacing_A)
        except MissingTomoTypeError as error:
            by_type[kind], missing[kind] = [], error
    names = list(dict.fromkeys(t.name for kind in by_type for t in by_type[kind]))
    chosen = []
    for j, name in enumerate(names):
        kind = tomo_types[(first + j) % len(tomo_types)]
        found = [t for t in by_type[kind] if t.name == name]
        if not found:
            raise missing.get(kind) or InputError(project, f"run {name} has no {kind} tomogram")
        chosen.append(found[0])
    return chosen


def describe_sources(sources: Sequence[tuple[str, str, str]]) -> list[str]:
    """Name each project once, with how many of its runs were read as each reconstruction.

    ``sources`` are (project, run, reconstruction) in the order read; a project given twice
    (its runs read again as another reconstruction) is named once, its counts added:
    ``sim_r2/copick_config.json (16 runs: denoised x16, wbp x8, ctfdeconvolved x8)``.
    """
    by_project: dict[str, Counter[str]] = {}
    runs: dict[str, set[str]] = {}
    for project, run, kind in sources:
        by_project.setdefault(project, Counter())[kind] += 1
        runs.setdefault(project, set()).add(run)
    described = []
    for project, counts in by_project.items():
        n_runs = len(runs[project])
        kinds = ", ".join(f"{kind} x{n}" for kind, n in counts.items())
        described.append(f"{project} ({n_runs} run{'' if n_runs == 1 else 's'}: {kinds})")
    return described
