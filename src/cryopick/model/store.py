"""Model files: a trained model is a folder with its weights and its card.

* ``model.pt``: the network weights (a ``state_dict``), read with ``weights_only=True``
  (tensors and plain values only: a crafted file cannot run code), and
* ``model.json``: the :class:`~cryopick.model.card.ModelCard`; the card alone rebuilds the
  network. It is validated on load; a bad one is an
  :class:`~cryopick.core.errors.InputError` naming it.

Training also keeps ``checkpoint.pt`` there (:mod:`cryopick.training.config`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import ValidationError
from torch import nn

from cryopick.core.errors import InputError, squeeze_error
from cryopick.io.atomic import atomic_path, write_text_atomic
from cryopick.io.torch_files import load_tensor_file
from cryopick.model.card import ModelCard
from cryopick.model.network import PickingNetwork, build_model

WEIGHTS_FILENAME = "model.pt"
CARD_FILENAME = "model.json"
CHECKPOINT_FILENAME = "checkpoint.pt"


def save_model(model_dir: str | Path, model: nn.Module, card: ModelCard) -> Path:
    """Write ``model.pt`` (weights) and ``model.json`` (card) into ``model_dir``, atomically.

    Each file is replaced in one rename; the weights are written first so a card
    never describes weights that are not there yet.

    Returns
    -------
    Path
        ``model_dir``.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    if not card.cryopick_version:
        from cryopick import __version__

        card = card.model_copy(update={"cryopick_version": __version__})
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(model_dir / WEIGHTS_FILENAME) as tmp:
        torch.save(state, tmp)
    write_text_atomic(model_dir / CARD_FILENAME, card.to_json())
    return model_dir


def check_model_folder(out_dir: Path, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse to train over an earlier model, unless resuming its checkpoint or overwriting.

    Raises
    ------
    InputError
        If ``out_dir`` holds a model or checkpoint that this run would replace.
    """
    names = (CHECKPOINT_FILENAME, WEIGHTS_FILENAME, CARD_FILENAME)  # the files cryopick writes
    existing = [name for name in names if (out_dir / name).exists()]
    resumable = resume and (out_dir / CHECKPOINT_FILENAME).exists()
    if existing and not (resumable or overwrite):
        raise InputError(
            out_dir,
            f"holds a trained model ({', '.join(existing)}): write to a new folder"
            + ("" if resume else ", continue it with --resume")
            + ", or pass --overwrite to replace it",
        )


def read_model_card(model_dir: str | Path) -> ModelCard:
    """Read and validate ``model.json`` from a model folder (or the JSON file itself).

    Raises
    ------
    InputError
        Naming the file, if it is missing, unreadable or not a valid card (e.g. a NaN or
        out-of-range threshold, an unknown particle type, a voxel size that is not > 0).
    """
    path = Path(model_dir)
    if path.is_dir():
        path = path / CARD_FILENAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(path, "no model card here (expected a folder with model.json)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot read the model card: {squeeze_error(err)}") from None
    try:
        return ModelCard.from_json(text)
    except ValidationError as err:
        raise InputError(path, f"not a valid model card: {squeeze_error(err)}") from None


def load_model(
    model_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[PickingNetwork, ModelCard]:
    """Load a trained model folder written by :func:`save_model`.

    Parameters
    ----------
    model_dir : str or Path
        Folder holding ``model.pt`` and ``model.json``.
    device : str or torch.device
        Where to put the network.

    Returns
    -------
    (UNet3D or UNetEnsemble, ModelCard)
        The network (an ensemble when the card's ``architecture.members`` > 1) in eval
        mode, and its card.
    """
    from cryopick.inference.runtime import resolve_device

    model_dir = Path(model_dir)
    card = read_model_card(model_dir)
    weights = model_dir / WEIGHTS_FILENAME
    if not weights.is_file():
        raise InputError(weights, "model weights missing (expected model.pt beside model.json)")
    device = resolve_device(device)
    model = build_model(card.architecture)
    state = load_tensor_file(weights, "model weights file")
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise InputError(
            weights, f"weights do not match the model card {CARD_FILENAME}: {squeeze_error(err)}"
        ) from None
    return model.to(device).eval(), card
