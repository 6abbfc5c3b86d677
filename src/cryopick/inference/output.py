"""Where ``cryopick predict`` writes its picks, checked before any work is done.

:func:`check_output_target` runs first, so a wrong output (an existing folder given as a
CSV file, a copick output into a plain folder of MRC files) fails in a second instead of
after an hour of prediction; :func:`write_predictions` writes the picks at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from cryopick.core.errors import InputError
from cryopick.io.atomic import check_output_file

PICKS_USER_ID = "cryopick"
PICKS_SESSION_ID = "0"
OUTPUT_FORMATS = ("csv", "kaggle", "copick", "star")


class RunShape(Protocol):
    """What the writers need of a tomogram: its run name, shape and voxel size."""

    @property
    def name(self) -> str: ...  # noqa: D102

    @property
    def shape(self) -> tuple[int, int, int]: ...  # noqa: D102

    @property
    def spacing_A(self) -> float: ...  # noqa: D102


def check_output_target(
    output: str | Path | None, format: str, input_path: str | Path
) -> Path | None:
    """Check that ``output`` can receive picks in ``format``; return where they will go.

    Raises
    ------
    InputError
        If the format is unknown, a file format has no output or its output is an
        existing folder, or the copick target is not a copick project.
    """
    from cryopick.io.picks.copick_write import resolve_copick_target

    if format not in OUTPUT_FORMATS:
        raise InputError(None, f"unknown output format {format!r}; choose from {OUTPUT_FORMATS}")
    if format == "copick":
        target = Path(output or input_path)
        resolve_copick_target(target)
        return target
    if output is None:
        return None
    suffixes = (".star",) if format == "star" else (".csv",)
    return check_output_file(output, [input_path], suffixes)


def write_predictions(
    picks: pd.DataFrame,
    tomograms: Sequence[RunShape],
    output: str | Path | None,
    format: str,
    input_path: str | Path,
    model_spacing_A: float | None = None,
) -> Any:
    """Write picks in ``format``; copick output goes into the input project's overlay.

    ``star`` needs the tomogram shapes, taken from ``tomograms``; ``copick`` writes files of
    user ``cryopick`` (session 0) only, for every run of ``tomograms`` (empty files where
    nothing was found), into ``output`` if given, else into the project ``input_path``
    names.
    """
    from cryopick.io.picks import write_picks

    check_output_target(output, format, input_path)
    if format == "copick":
        return write_picks(
            picks,
            output or input_path,
            format="copick",
            user_id=PICKS_USER_ID,
            session_id=PICKS_SESSION_ID,
            voxel_spacing=model_spacing_A,
            runs=[t.name for t in tomograms],
        )
    if output is None:
        raise InputError(None, f"--output is needed for the {format} format")
    if format == "star":
        shapes = {t.name: (t.shape, t.spacing_A) for t in tomograms}
        return write_picks(picks, output, format="star", tomogram_shapes=shapes)
    return write_picks(picks, output, format=format)
