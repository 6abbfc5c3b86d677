"""The model shipped with cryopick (``cryopick/data/model``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from cryopick.core.errors import InputError
from cryopick.model.store import CARD_FILENAME, WEIGHTS_FILENAME


def bundled_model_dir() -> Path:
    """Folder of the model shipped with cryopick (``cryopick/data/model``).

    Raises
    ------
    InputError
        If this installation has no bundled model.
    """
    path = Path(str(resources.files("cryopick") / "data" / "model"))
    if not (path / CARD_FILENAME).is_file() or not (path / WEIGHTS_FILENAME).is_file():
        raise InputError(
            path,
            "no bundled model in this installation (model.json and model.pt missing); "
            "pass --model DIR with a model trained by `cryopick train`",
        )
    return path
