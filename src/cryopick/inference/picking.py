"""Probability maps to picks, the one way prediction and training validation both do it.

:func:`pick_particles` takes a network's probability map (on its native, possibly strided,
grid) and :class:`PickSettings`: which thresholds apply (the model card's, its TTA ones, a
user's overrides, or a low floor for tuning candidates), the expected blob size (from the
training target, :class:`cryopick.model.TargetSpec`), the peak-finding options and the
card's score calibration. It places the strided grid with
:func:`cryopick.core.coords.strided_origin_A` and finds peaks with
:func:`cryopick.inference.peaks.find_peaks`; thresholds apply to the raw peak value, or, for
a card with a rescorer (not with TTA), to the re-scored value of every peak above its
candidate floor (:mod:`cryopick.inference.rescoring`); then scores are calibrated
(:func:`cryopick.model.calibration.apply_calibration`) when the card has a calibration, so
a calibrated model picks the same set as before, scored as
probabilities. With ``min_precision``, the card's thresholds are replaced by a selection of
the candidates above :data:`CANDIDATE_MIN_SCORE` per class for that expected precision
(:func:`cryopick.model.calibration.select_for_min_precision`). Callers:
:func:`cryopick.inference.pipeline.predict_tomogram` (``cryopick predict`` and ``tune``) and
:func:`cryopick.training.trainer.validate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
from numpy.typing import NDArray

from cryopick.core.coords import strided_origin_A
from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet, resolve_particle_set
from cryopick.inference.output import OutputFormat, check_format_for_set
from cryopick.inference.peaks import (
    DEFAULT_BLOB_RATIO_RANGE,
    DEFAULT_NMS_FRACTION,
    DEFAULT_THRESHOLD,
    find_peaks,
)
from cryopick.inference.rescoring import rescore_picks
from cryopick.model.calibration import (
    ScoreCalibration,
    apply_calibration,
    select_for_min_precision,
)
from cryopick.model.card import ModelCard, TargetSpec, canonical_thresholds
from cryopick.model.rescorer import Rescorer

if TYPE_CHECKING:
    from cryopick.inference.pipeline import PredictConfig

CANDIDATE_MIN_SCORE = 0.02
"""Raw floor of candidate picks: tuning and calibration fits, ``--min-precision``."""


@dataclass(frozen=True)
class PickSettings:
    """How to turn a probability map into picks.

    Attributes
    ----------
    target : TargetSpec
        The model's training target; sets the expected blob radius
        (:attr:`TargetSpec.blob_radius_fraction`) that peaks are validated against.
    thresholds : mapping of str to float
        Per-class minimum peak probability, by particle name of ``particles``.
    default_threshold : float
        For classes missing from ``thresholds``.
    min_score : float
        Floor on every threshold.
    nms_fraction : float
        Suppression distance as a fraction of the class radius.
    blob_ratio_range : (float, float) or None
        Accepted measured / expected blob radius; None disables blob validation.
    cross_class_fraction, cross_class_ratio : float
        Cross-class resolution (see :func:`cryopick.inference.peaks.resolve_cross_class`).
    particles : ParticleSet or None
        The types of the map's channels (names, radii): the model's set; None: the CZII set.
    calibration : mapping of str to ScoreCalibration
        Per class, the map from raw peak value to calibrated score (empty: raw scores).
    min_precision : float or None
        Keep, per class, the strongest picks of this expected precision (needs
        ``calibration``; ``thresholds`` are then only a floor).
    rescorer : Rescorer or None
        Re-score the peaks above its candidate floor first
        (:func:`cryopick.inference.rescoring.rescore_picks`); thresholds and calibration
        then apply to the re-scored values.
    """

    target: TargetSpec = field(default_factory=TargetSpec)
    thresholds: Mapping[str, float] = field(default_factory=dict)
    default_threshold: float = DEFAULT_THRESHOLD
    min_score: float = 0.0
    nms_fraction: float = DEFAULT_NMS_FRACTION
    blob_ratio_range: tuple[float, float] | None = DEFAULT_BLOB_RATIO_RANGE
    cross_class_fraction: float = 0.0
    cross_class_ratio: float = 1.0
    particles: ParticleSet | None = None
    calibration: Mapping[str, ScoreCalibration] = field(default_factory=dict)
    min_precision: float | None = None
    rescorer: Rescorer | None = None

    @classmethod
    def for_model(cls, card: ModelCard, config: PredictConfig) -> PickSettings:
        """Return a prediction's settings: the model's target and thresholds, the config's options.

        Thresholds: the card's ``thresholds_tta`` for a TTA prediction when the card has them
        (and they fit its scores: :attr:`ModelCard.uses_tta_tables`), else its
        ``thresholds``; ``config.thresholds`` override single classes (names or aliases of
        the card's particle set). Calibration: the card's, chosen the same way
        (:func:`choose_calibration`). The card's rescorer, if any, re-scores TTA
        predictions too. With ``config.min_precision`` the card's thresholds
        give way to :data:`CANDIDATE_MIN_SCORE` (overrides stay, as raw floors).

        Raises
        ------
        InputError
            If an override names no type of the model (see :func:`check_threshold_names`),
            or ``min_precision`` is asked of a card without calibration.
        """
        particles = card.particle_set
        check_min_precision(config, card)
        if config.min_precision is None:
            thresholds = choose_thresholds(card, config.tta, config.thresholds, particles)
        else:
            thresholds = candidate_thresholds(particles)
            thresholds.update(check_threshold_names(config.thresholds or {}, particles))
        return cls(
            target=card.target,
            thresholds=thresholds,
            calibration=choose_calibration(card, config.tta),
            min_precision=config.min_precision,
            min_score=config.min_score,
            nms_fraction=config.nms_fraction,
            blob_ratio_range=config.blob_ratio_range,
            cross_class_fraction=config.cross_class_fraction,
            cross_class_ratio=config.cross_class_ratio,
            particles=particles,
            rescorer=card.rescorer,
        )

    @classmethod
    def for_candidates(
        cls, target: TargetSpec, floor: float, particles: ParticleSet | None = None
    ) -> PickSettings:
        """Return settings that keep every peak scoring at least ``floor`` (tuning candidates).

        ``particles`` is the model's set (the types of the map's channels; default CZII).
        """
        return cls(target=target, default_threshold=floor, min_score=floor, particles=particles)


def check_threshold_names(
    thresholds: Mapping[str, float], particles: ParticleSet | None = None
) -> dict[str, float]:
    """Key user thresholds by the model's particle names (aliases resolved).

    Parameters
    ----------
    thresholds : mapping of str to float
        Name or alias -> threshold, e.g. from ``--threshold NAME=VALUE``.
    particles : ParticleSet, optional
        The model's set (:attr:`ModelCard.particle_set`); default the CZII set.

    Returns
    -------
    dict of str to float
        Particle name -> threshold.

    Raises
    ------
    InputError
        One line: a name that is no type of the model (listing the model's types), or one
        type given twice under two names.
    """
    particle_set = resolve_particle_set(particles)
    unknown = [str(name) for name in thresholds if name not in particle_set]
    if unknown:
        raise InputError(
            None,
            f"threshold for {', '.join(map(repr, unknown))}: not a particle type of the model; "
            f"its types are {', '.join(particle_set.names)}",
        )
    try:
        return canonical_thresholds(thresholds, particle_set)
    except ValueError as err:  # one type under two names
        raise InputError(None, f"thresholds: {err}") from None


def choose_thresholds(
    card: ModelCard,
    tta: bool = False,
    overrides: Mapping[str, float] | None = None,
    particles: ParticleSet | None = None,
) -> dict[str, float]:
    """Return the per-class thresholds a prediction uses.

    Parameters
    ----------
    card : ModelCard
        The model's card.
    tta : bool
        A flip-TTA prediction: the card's ``thresholds_tta`` when it has them and they fit
        its scores (:attr:`ModelCard.uses_tta_tables`; TTA maps score differently), else its
        ``thresholds``.
    overrides : mapping, optional
        Thresholds replacing the card's for these classes, by name or alias of the card's
        particle set.
    particles : ParticleSet, optional
        ``card.particle_set`` when the caller has it already.

    Returns
    -------
    dict of str to float
        Particle name -> threshold.

    Raises
    ------
    InputError
        If an override names no type of the model (see :func:`check_threshold_names`).
    """
    chosen = dict(
        (card.thresholds_tta if tta and card.uses_tta_tables else None) or card.thresholds
    )
    if overrides:
        chosen.update(check_threshold_names(overrides, particles or card.particle_set))
    return chosen


def candidate_thresholds(particles: ParticleSet) -> dict[str, float]:
    """Return :data:`CANDIDATE_MIN_SCORE` for every type of the set: keep every candidate."""
    return dict.fromkeys(particles.names, CANDIDATE_MIN_SCORE)


def choose_calibration(card: ModelCard, tta: bool = False) -> dict[str, ScoreCalibration]:
    """Return the score calibration a prediction uses (empty: scores stay raw).

    The card's ``calibration_tta`` for a flip-TTA prediction when it has one, else its
    ``calibration`` (as :func:`choose_thresholds` falls back for thresholds).
    """
    tta_table = card.calibration_tta if tta and card.uses_tta_tables else None
    return dict(tta_table or card.calibration)


def check_min_precision(config: PredictConfig | None, card: ModelCard) -> None:
    """Refuse ``min_precision`` for a model whose card has no score calibration.

    Raises
    ------
    InputError
        One line, when ``config.min_precision`` is set and the card has no calibration.
    """
    if config is None or config.min_precision is None or choose_calibration(card, config.tta):
        return
    raise InputError(
        None,
        "--min-precision needs calibrated scores, but this model's card has no calibration "
        "(fit one on annotated runs with cryopick tune)",
    )


def check_config_for_model(
    config: PredictConfig | None, card: ModelCard, format: OutputFormat | str | None = None
) -> ParticleSet:
    """Check a prediction's settings and output format against the model; return its set.

    Raises
    ------
    InputError
        One line: a threshold override of a type the model does not have (listing its
        types), ``min_precision`` without a calibration in the card, or the ``kaggle``
        format for a set other than the CZII one.
    """
    particles = card.particle_set
    if format is not None:
        check_format_for_set(format, particles)
    if config is not None and config.thresholds:
        check_threshold_names(config.thresholds, particles)
    check_min_precision(config, card)
    return particles


def pick_particles(
    probs: NDArray,
    settings: PickSettings,
    *,
    spacing_A: float,
    stride: int,
    experiment: str,
    volume: NDArray | None = None,
) -> pd.DataFrame:
    """Find the picks in a probability map.

    Parameters
    ----------
    probs : numpy.ndarray, shape (C, Z', Y', X')
        Per-class probabilities on the network's output grid (float16 is fine).
    settings : PickSettings
        Thresholds, target, peak-finding options, calibration and rescorer.
    spacing_A : float
        Voxel size in Å of the grid the network ran on (the model's).
    stride : int
        Grid step of ``probs`` in those voxels (its voxel ``j`` is centred at input voxel
        ``j*stride + (stride-1)/2``).
    experiment : str
        Run name written into the picks.
    volume : numpy.ndarray, optional
        The normalised tomogram the network saw; needed by a rescorer with density
        features.

    Returns
    -------
    pandas.DataFrame
        Picks table, positions in Å; scores re-scored and calibrated as ``settings`` say.
    """
    rescorer = settings.rescorer
    thresholds, default_threshold, min_score = (
        (settings.thresholds, settings.default_threshold, settings.min_score)
        if rescorer is None  # else every candidate first; thresholds apply to the new scores
        else ({}, rescorer.candidate_floor, 0.0)
    )
    picks = find_peaks(
        probs,
        spacing_A=spacing_A * stride,
        experiment=experiment,
        thresholds=thresholds,
        default_threshold=default_threshold,
        min_score=min_score,
        nms_fraction=settings.nms_fraction,
        blob_radius_fraction=settings.target.blob_radius_fraction,
        blob_ratio_range=settings.blob_ratio_range,
        cross_class_fraction=settings.cross_class_fraction,
        cross_class_ratio=settings.cross_class_ratio,
        origin_A=strided_origin_A(stride, spacing_A),
        particles=settings.particles,
    )
    if rescorer is not None:
        picks = rescore_picks(
            picks,
            rescorer,
            probs,
            volume,
            spacing_A=spacing_A,
            stride=stride,
            particles=settings.particles,
        )
        picks = keep_above_thresholds(picks, settings)
    if settings.calibration:
        picks = apply_calibration(picks, settings.calibration)
    if settings.min_precision is not None:
        picks = select_for_min_precision(picks, settings.min_precision)
    return picks


def keep_above_thresholds(picks: pd.DataFrame, settings: PickSettings) -> pd.DataFrame:
    """Keep the picks scoring at least their class's threshold (and ``min_score``).

    The threshold of a class missing from ``settings.thresholds`` is its
    ``default_threshold``; picks come back by class in their order, strongest first.
    """
    if len(picks) == 0:
        return picks
    limits = picks["particle_type"].map(dict(settings.thresholds))
    limits = limits.fillna(settings.default_threshold).clip(lower=settings.min_score)
    kept = picks[picks["score"] >= limits]
    class_order = {name: i for i, name in enumerate(pd.unique(kept["particle_type"]))}
    kept = kept.assign(_class=kept["particle_type"].map(class_order)).sort_values(
        ["_class", "score"], ascending=[True, False], kind="stable"
    )
    return kept.drop(columns="_class").reset_index(drop=True)
