"""Where ``cryopick predict`` writes its picks: the output formats, checked before any work.

:class:`OutputFormat` is the one list of output formats (also the type of the CLI's
``--format``). :func:`check_output_target` runs first, so a wrong output (an existing
folder given as a CSV file, a copick output into a plain folder of MRC files) fails in a
second instead of after an hour of prediction; :func:`write_predictions` writes the picks
at the end.

This module is imported by the command line when it starts: it imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryopick.core.errors import InputError
from cryopick.io.atomic import check_output_file

if TYPE_CHECKING:
    import pandas as pd

    from cryopick.core.particles import ParticleSet

PICKS_USER_ID = "cryopick"
PICKS_SESSION_ID = "0"


class OutputFormat(str, Enum):
    """Formats ``cryopick predict`` writes; each value is a :mod:`cryopick.io.picks` format."""

    CSV = "csv"
    KAGGLE = "kaggle"
    COPICK = "copick"
    STAR = "star"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: str | OutputFormat) -> OutputFormat:
        """Return the format named ``value``.

        Raises
        ------
        InputError
            If no format has that name (the message lists them).
        """
        try:
            return cls(value)
        except ValueError:
            names = tuple(fmt.value for fmt in cls)
            problem = f"unknown output format {value!r}; choose from {names}"
            raise InputError(None, problem) from None

    @property
    def suffixes(self) -> tuple[str, ...]:
        """File name endings an output file of this format may have (none for copick)."""
        if self is OutputFormat.COPICK:
            return ()
        return (".star",) if self is OutputFormat.STAR else (".csv",)


@dataclass(frozen=True)
class RunShape:
    """What the writers need of a run: its name, shape and voxel size.

    Attributes
    ----------
    name : str
        Run name (the picks' ``experiment``).
    shape : tuple of int
        Tomogram shape (z, y, x) in voxels (STAR coordinates are relative to its centre).
    spacing_A : float
        Voxel size in Å.
    """

    name: str
    shape: tuple[int, int, int]
    spacing_A: float

    @classmethod
    def of(cls, tomogram: Any) -> RunShape:
        """Return the record of anything with ``name``, ``shape`` and ``spacing_A`` (a Tomogram)."""
        z, y, x = (int(n) for n in tomogram.shape)
        return cls(str(tomogram.name), (z, y, x), float(tomogram.spacing_A))


def check_output_target(
    output: str | Path | None, format: OutputFormat | str, input_path: str | Path
) -> Path | None:
    """Check that ``output`` can receive picks in ``format``; return where they will go.

    Raises
    ------
    InputError
        If the format is unknown, a file format has no output or its output is an
        existing folder, or the copick target is not a copick project.
    """
    from cryopick.io.picks.copick_write import resolve_copick_target

    fmt = OutputFormat.parse(format)
    if fmt is OutputFormat.COPICK:
        target = Path(output or input_path)
        resolve_copick_target(target)
        return target
    if output is None:
        return None
    return check_output_file(output, [input_path], fmt.suffixes)


def check_format_for_set(format: OutputFormat | str, particles: ParticleSet | None) -> None:
    """Refuse the Kaggle format for a model whose particle set is not the CZII six.

    Called once the model's set is known, before any work.

    Raises
    ------
    InputError
        If ``format`` is ``kaggle`` and ``particles`` is a set other than the CZII one.
    """
    if OutputFormat.parse(format) is OutputFormat.KAGGLE and not (
        particles is None or particles.is_czii
    ):
        raise InputError(
            None,
            "--format kaggle is the CZII challenge's submission format, but the model picks "
            f"{', '.join(particles.names)}: write csv, star or copick",
        )


def write_predictions(
    picks: pd.DataFrame,
    runs: Sequence[RunShape],
    output: str | Path | None,
    format: OutputFormat | str,
    input_path: str | Path,
    model_spacing_A: float | None = None,
    *,
    particles: ParticleSet | None = None,
) -> Any:
    """Write picks in ``format``; copick output goes into the input project's overlay.

    ``star`` needs the tomogram shapes, taken from ``runs``; ``copick`` writes files of
    user ``cryopick`` (session 0) only, for every run of ``runs`` (empty files where
    nothing was found), into ``output`` if given, else into the project ``input_path``
    names. ``particles`` is the model's set: the STAR class numbers, the copick objects
    declared where the project lacks them (default the CZII set).
    """
    from cryopick.io.picks import write_picks

    check_output_target(output, format, input_path)
    check_format_for_set(format, particles)
    fmt = OutputFormat.parse(format)
    if fmt is OutputFormat.COPICK:
        return write_picks(
            picks,
            output or input_path,
            format=fmt.value,
            particles=particles,
            user_id=PICKS_USER_ID,
            session_id=PICKS_SESSION_ID,
            voxel_spacing=model_spacing_A,
            runs=[run.name for run in runs],
        )
    if output is None:
        raise InputError(None, f"--output is needed for the {fmt} format")
    if fmt is OutputFormat.STAR:
        shapes = {run.name: (run.shape, run.spacing_A) for run in runs}
        return write_picks(
            picks, output, format=fmt.value, particles=particles, tomogram_shapes=shapes
        )
    return write_picks(picks, output, format=fmt.value, particles=particles)
