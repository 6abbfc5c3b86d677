"""The network, its typed model card, the model files and the bundled model.

Modules: :mod:`.network` (the U-Net), :mod:`.card` (:class:`ModelCard`, :class:`TargetSpec`),
:mod:`.calibration` (:class:`ScoreCalibration`: a card's map from raw peak value to
calibrated score), :mod:`.rescorer` (:class:`Rescorer`: a second look at candidates),
:mod:`.store` (save / read / load a model folder), :mod:`.ensemble` (combine trained
models into one whose logits are averaged), :mod:`.bundled` (the shipped model).

Callers import from here (``from cryopick.model import load_model``), at call time where a
test may replace the function (``monkeypatch.setattr(cryopick.model, "load_model", ...)``).
"""

from cryopick.inference.runtime import describe_hardware
from cryopick.model.bundled import bundled_model_dir
from cryopick.model.calibration import Calibration, ScoreCalibration
from cryopick.model.card import (
    MAX_THRESHOLD,
    ClassMetrics,
    ModelCard,
    Positive,
    TargetKind,
    TargetSpec,
    Threshold,
    canonical_thresholds,
)
from cryopick.model.ensemble import average_model_weights, combine_models, member_networks
from cryopick.model.network import (
    ModelConfig,
    PickingNetwork,
    UNet3D,
    UNetEnsemble,
    build_model,
    count_parameters,
)
from cryopick.model.rescorer import Rescorer
from cryopick.model.store import (
    CARD_FILENAME,
    CHECKPOINT_FILENAME,
    WEIGHTS_FILENAME,
    check_model_folder,
    load_model,
    read_model_card,
    save_model,
)

__all__ = [
    "CARD_FILENAME",
    "CHECKPOINT_FILENAME",
    "MAX_THRESHOLD",
    "WEIGHTS_FILENAME",
    "Calibration",
    "ClassMetrics",
    "ModelCard",
    "ModelConfig",
    "PickingNetwork",
    "Positive",
    "Rescorer",
    "ScoreCalibration",
    "TargetKind",
    "TargetSpec",
    "Threshold",
    "UNet3D",
    "UNetEnsemble",
    "average_model_weights",
    "build_model",
    "bundled_model_dir",
    "canonical_thresholds",
    "check_model_folder",
    "combine_models",
    "count_parameters",
    "describe_hardware",
    "load_model",
    "member_networks",
    "read_model_card",
    "save_model",
]
