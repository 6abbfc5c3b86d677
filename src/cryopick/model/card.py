"""The model card (``model.json``): a trained model's typed description.

:class:`ModelCard` is the one type every stage reads a model's settings from: architecture,
voxel size, input normalisation, patch size, the training target (:class:`TargetSpec`),
training data and steps, per-class tuned thresholds and score calibrations (plain and
for flip-TTA maps), validation metrics (:class:`ClassMetrics`), learning curve, wall time
and hardware. It is validated on load (:func:`cryopick.model.store.read_model_card`):
thresholds in [0, 1] and calibration tables
(:class:`cryopick.model.calibration.ScoreCalibration`) keyed by canonical particle name, a
voxel size > 0, a known target. Cards without a calibration (all cards written before it
existed) give raw peak values as pick scores.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cryopick.core.particles import (
    ParticleSet,
    ParticleSetError,
    default_particle_set,
    resolve_particle_set,
)
from cryopick.inference.runtime import describe_hardware
from cryopick.model.calibration import ScoreCalibration
from cryopick.model.network import ModelConfig
from cryopick.model.rescorer import Rescorer

V = TypeVar("V")

# tuning gives a class without a useful threshold one just above its best score
# (np.nextafter), a hair above 1 when that score is 1 ("keep nothing"): tolerated
MAX_THRESHOLD = 1.0 + 1e-6
Threshold = Annotated[float, Field(ge=0.0, le=MAX_THRESHOLD, allow_inf_nan=False)]
Positive = Annotated[int, Field(gt=0)]
TargetKind = Literal["sphere", "gaussian"]
# the string form cards were written in before TargetSpec: "sphere", "sphere r=0.5",
# "gaussian sigma=0.3" (the number is the fraction; 0.5 when absent)
_TARGET_TEXT = re.compile(
    r"^\s*(sphere|gaussian)(?:\s+(?:r|sigma)\s*=\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?))?\s*$",
    re.IGNORECASE,
)


class TargetSpec(BaseModel):
    """The training target a model learnt: its kind and radius (sigma) fraction.

    Attributes
    ----------
    kind : {"sphere", "gaussian"}
        ``"sphere"``: class labels within ``fraction * radius`` of each particle centre;
        ``"gaussian"``: soft class maps ``exp(-d^2 / 2 sigma^2)``, ``sigma = fraction * radius``
        (see :func:`cryopick.training.targets.render_targets`).
    fraction : float
        Sphere radius or Gaussian sigma as a fraction of the particle radius.

    Cards written before this type held the target as text (``"sphere r=0.5"``,
    ``"gaussian sigma=0.3"``, ``"sphere"`` for 0.5); that form is still read.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: TargetKind = "sphere"
    fraction: float = Field(0.5, gt=0.0, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _parse_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        match = _TARGET_TEXT.match(value)
        if match is None:
            raise ValueError(
                f"unknown target {value!r}: expected e.g. 'sphere r=0.5' or 'gaussian sigma=0.3'"
            )
        kind, fraction = match.group(1).lower(), match.group(2)
        return {"kind": kind, "fraction": 0.5 if fraction is None else float(fraction)}

    @property
    def blob_radius_fraction(self) -> float:
        """Radius of a predicted blob at half its peak, as a fraction of the particle radius.

        A sphere target gives blobs of its own radius; a Gaussian of sigma ``s`` is at half
        its peak at ``s * sqrt(2 ln 2)``.
        """
        if self.kind == "gaussian":
            return self.fraction * math.sqrt(2.0 * math.log(2.0))
        return self.fraction

    def __str__(self) -> str:
        """Short text form, e.g. ``sphere r=0.5`` or ``gaussian sigma=0.3``."""
        name = "r" if self.kind == "sphere" else "sigma"
        return f"{self.kind} {name}={self.fraction:g}"


class ClassMetrics(BaseModel):
    """Validation metrics of one particle type."""

    particle_type: str
    precision: float
    recall: float
    fbeta: float
    tp: int = 0
    fp: int = 0
    fn: int = 0


def canonical_thresholds(
    thresholds: Mapping[str, V], particles: ParticleSet | None = None
) -> dict[str, V]:
    """Key thresholds by the set's particle names (aliases resolved, unknown names refused).

    ``particles`` is the set the names belong to (default: the CZII set). Any per-class
    values (e.g. calibration tables) are keyed the same way.

    Raises
    ------
    ValueError
        For an unknown particle name, or one type given twice (under two aliases).
    """
    particle_set = resolve_particle_set(particles)
    canonical: dict[str, V] = {}
    given: dict[str, str] = {}
    for name, value in thresholds.items():
        key = particle_set.resolve(name)  # UnknownParticleError is a ValueError
        if key in canonical:
            raise ValueError(f"{key} is given twice ({given[key]!r} and {name!r})")
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
    target : TargetSpec
        Training target (kind and radius fraction); sets the expected blob size of
        predictions (:attr:`TargetSpec.blob_radius_fraction`).
    training_data : list of str
        Sources (paths, simulated presets) and tomogram types used for training.
    validation_data : list of str
        Held-out runs the metrics below were measured on.
    steps : int
        Optimiser steps of the kept (best) model.
    particles : list of dict
        The particle set the model was trained on, in label order (network channel
        ``label``): name, label, radius, score weight, colour, aliases
        (:meth:`cryopick.core.particles.ParticleSet.to_records`). Cards written before
        sets existed get the CZII six.
    thresholds : dict
        Per-class probability thresholds (in [0, 1]) tuned for F-beta on the validation
        runs, keyed by particle name of ``particles`` (aliases are resolved on load).
    thresholds_tta : dict
        The same, tuned on flip-TTA maps (used by ``predict --tta``; empty: use
        ``thresholds``).
    calibration : dict of str to ScoreCalibration
        Per class, the map from raw peak value to the probability that a pick is right,
        fitted on annotated validation runs (:mod:`cryopick.evaluation.calibration`); with
        it, a pick's ``score`` is that probability (thresholds still apply to the raw
        value). Empty (cards before it existed): scores stay raw peak values.
    calibration_tta : dict of str to ScoreCalibration
        The same, fitted on flip-TTA maps (used by ``predict --tta``; empty: use
        ``calibration``).
    rescorer : Rescorer or None
        A second look at each candidate (:mod:`cryopick.model.rescorer`): when present,
        predictions (flip-TTA ones too) re-score the peaks above its ``candidate_floor``
        and the thresholds and calibration apply to the re-scored values. None: raw peaks.
    tta_rescored : bool
        ``thresholds_tta`` and ``calibration_tta`` were tuned on re-scored TTA candidates.
        A card with a rescorer uses its TTA tables only then (:attr:`uses_tta_tables`):
        tables tuned on raw TTA peaks do not fit re-scored values.
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
        The full :class:`cryopick.training.config.TrainConfig` used.
    provenance : str
        Free text: how the training data were made (e.g. the exact commands).
    """

    architecture: ModelConfig = Field(default_factory=ModelConfig)
    spacing_A: float = Field(10.0, gt=0.0, allow_inf_nan=False)
    normalisation: str = "robust-zscore"
    patch_size: tuple[Positive, Positive, Positive] = (64, 64, 64)
    target: TargetSpec = Field(default_factory=TargetSpec)
    training_data: list[str] = Field(default_factory=list)
    validation_data: list[str] = Field(default_factory=list)
    steps: int = 0
    particles: list[dict[str, Any]] = Field(
        default_factory=lambda: default_particle_set().to_records()
    )
    thresholds: dict[str, Threshold] = Field(default_factory=dict)
    thresholds_tta: dict[str, Threshold] = Field(default_factory=dict)
    calibration: dict[str, ScoreCalibration] = Field(default_factory=dict)
    calibration_tta: dict[str, ScoreCalibration] = Field(default_factory=dict)
    rescorer: Rescorer | None = None
    tta_rescored: bool = False
    validation: list[ClassMetrics] = Field(default_factory=list)
    score: float | None = None
    learning_curve: list[tuple[float, int, float]] = Field(default_factory=list)
    wall_time_s: float = 0.0
    hardware: str = Field(default_factory=lambda: describe_hardware("cpu"))
    train_config: dict = Field(default_factory=dict)
    cryopick_version: str = ""
    provenance: str = ""

    @model_validator(mode="after")
    def _check_particles(self) -> ModelCard:
        try:
            particle_set = ParticleSet.from_records(self.particles)
            particle_set.max_radius_A  # noqa: B018 - every radius must be known
        except (ParticleSetError, ValueError) as err:
            raise ValueError(f"particles: {err}") from None
        if particle_set.n_classes != self.architecture.n_classes:
            raise ValueError(
                f"particles: {len(particle_set)} types but the network has "
                f"{self.architecture.n_classes - 1} particle channels"
            )
        self.particles = particle_set.to_records()
        for field_name in ("thresholds", "thresholds_tta", "calibration", "calibration_tta"):
            try:
                named = canonical_thresholds(getattr(self, field_name), particle_set)
            except ValueError as err:
                raise ValueError(f"{field_name}: {err}") from None
            setattr(self, field_name, named)
        rescorer = self.rescorer
        if rescorer is not None and list(rescorer.class_names) != list(particle_set.names):
            raise ValueError(
                f"rescorer: its types {rescorer.class_names} are not the model's "
                f"{particle_set.names}"
            )
        return self

    @property
    def particle_set(self) -> ParticleSet:
        """The particle set the model was trained on (network channel = label)."""
        return ParticleSet.from_records(self.particles)

    @property
    def uses_tta_tables(self) -> bool:
        """Whether ``predict --tta`` takes ``thresholds_tta`` / ``calibration_tta`` (if any)."""
        return self.rescorer is None or self.tta_rescored

    def without_calibration(self) -> ModelCard:
        """Return a copy whose predictions keep raw scores (tuning, calibration fits)."""
        return self.model_copy(update={"calibration": {}, "calibration_tta": {}})

    def to_json(self) -> str:
        """Serialise to indented JSON."""
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        """Parse a card written by :meth:`to_json`."""
        return cls.model_validate_json(text)
