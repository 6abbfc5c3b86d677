"""The settings of one prediction (:class:`PredictConfig`), saved with batch outputs.

Re-exported by :mod:`cryopick.inference.pipeline`, where callers import it from.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cryopick.model import Threshold


class PredictConfig(BaseModel):
    """Settings of one prediction; saved with batch outputs so results can be reproduced.

    Attributes
    ----------
    overlap : float
        Minimum overlap between sliding windows (fraction of the patch).
    batch_size : int or None
        Windows per forward pass; None (default): 1 on a CPU running bf16, else 2
        (:func:`cryopick.inference.runtime.choose_batch_size`).
    device : str
        ``auto``, ``cpu`` or ``cuda`` (``cuda:N``).
    precision : str
        ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see
        :func:`cryopick.inference.runtime.resolve_precision`).
    tta : bool
        Flip test-time augmentation (x, y, xy flips; 4x the network time).
    fiducial_max_score : float or None
        Picks in the streaks of gold fiducials (found by their density) scoring below this
        are dropped (:mod:`cryopick.inference.fiducials`); None keeps them all.
    invert : bool or None
        Contrast polarity: True inverts (particles bright in the input), False keeps it,
        None (default) detects it (:func:`cryopick.inference.polarity.choose_inversion`:
        the grey-value skewness, with a veto by the network's confidence both ways).
    flatten_background : {"auto", "on", "off"}
        Subtract a grey level that drifts across x/y (a carbon film in view) from every
        z slice: ``auto`` (default) only when it drifts by more than 1.25 robust spreads
        (:mod:`cryopick.inference.background`), ``on`` always, ``off`` never.
    patch_size : tuple of int, optional
        Inference window (z, y, x); default
        :func:`cryopick.inference.window.choose_patch_size` (up to 192³, larger than the
        training patch: faster, fewer overlaps).
    thresholds : dict, optional
        Per-class thresholds overriding the model card's, by name or alias of the model's
        particle set (checked against it when predicting: :func:`check_config_for_model`).
    min_precision : float or None
        Instead of the card's thresholds, keep per class the strongest picks whose mean
        calibrated score (expected precision) is at least this, in (0, 1]; needs a card
        with a calibration (:class:`cryopick.inference.picking.PickSettings`).
    min_score : float
        Floor on every threshold.
    nms_fraction, cross_class_fraction : float
        Suppression distances as fractions of the class radius (see :func:`find_peaks`);
        ``cross_class_fraction=0`` (default) keeps detections of different classes at one
        place, which measured better under F4 (docs/predict.md).
    cross_class_ratio : float
        With cross-class resolution on, drop only picks scoring at most this fraction of
        the stronger one.
    blob_ratio_range : (float, float) or None
        Accepted measured / expected blob radius; None disables blob validation.
    """

    model_config = ConfigDict(extra="forbid")

    overlap: float = Field(0.25, ge=0.0, lt=1.0)
    batch_size: int | None = Field(None, ge=1)
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    tta: bool = False
    patch_size: tuple[int, int, int] | None = None
    thresholds: dict[str, Threshold] | None = None
    min_precision: float | None = Field(None, gt=0.0, le=1.0)
    min_score: float = Field(0.0, ge=0.0, le=1.0)
    nms_fraction: float = Field(0.6, gt=0.0)
    cross_class_fraction: float = Field(0.0, ge=0.0)
    cross_class_ratio: float = Field(1.0, ge=0.0, le=1.0)
    blob_ratio_range: tuple[float, float] | None = (0.35, 1.8)
    invert: bool | None = None
    fiducial_max_score: float | None = Field(0.5, ge=0.0, le=1.0)
    flatten_background: Literal["auto", "on", "off"] = "auto"
