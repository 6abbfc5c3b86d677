"""Read files written by ``torch.save`` safely: tensors and plain values only.

``torch.load(weights_only=True)`` refuses any pickle that names other Python objects, so a
crafted ``model.pt`` or ``checkpoint.pt`` cannot run code; every way such a file can be
wrong (crafted, foreign, damaged, truncated) becomes one :class:`~cryopick.core.errors.InputError`
line naming it.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from cryopick.core.errors import InputError, squeeze_error


def load_tensor_file(path: str | Path, what: str) -> Any:
    """Read a ``torch.save`` file with ``weights_only=True``: tensors and plain values only.

    A pickle naming any other Python object (which could run code) is refused, not run.
    Anything unreadable (foreign, damaged, truncated) is an InputError naming ``path``.
    """
    try:
        with warnings.catch_warnings():  # torch warns about pickles it did not write itself
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
        problem = (
            f"not a {what} cryopick can load safely: only tensors and plain values are read, and "
            f"this file holds other things ({squeeze_error(reason.split('. ')[0], 120)}); "
            "nothing in it was run"
        )
    except (RuntimeError, EOFError, KeyError, ValueError, TypeError, AttributeError, OSError) as e:
        detail = squeeze_error(e, 160)  # torch reports a truncated zip as RuntimeError or OSError
        detail = detail if detail == type(e).__name__ else f"{type(e).__name__}: {detail}"
        problem = (
            f"not a readable {what} (damaged, truncated or not written by torch.save): {detail}"
        )
    raise InputError(path, problem)
