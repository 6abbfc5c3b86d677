"""Open the tomograms of an input run by run, so one unreadable run spoils no other."""

from __future__ import annotations

import logging
from pathlib import Path

from cryopick.core.errors import InputError, one_line_error
from cryopick.io.tomograms import DEFAULT_TOMO_TYPE, Tomogram, read_tomograms

log = logging.getLogger(__name__)


def read_inputs(
    input_path: str | Path,
    tomo_type: str,
    runs: list[str] | None,
    spacing_A: float | None = None,
) -> list[Tomogram]:
    """Open the tomograms at ``input_path``; an InputError when there are none.

    ``spacing_A`` overrides the voxel size of MRC files whose header has none.
    """
    tomograms = read_tomograms(input_path, tomo_type=tomo_type, runs=runs, spacing_A=spacing_A)
    if not tomograms:
        raise InputError(input_path, "no tomograms found")
    return tomograms


def open_tomograms(
    input_path: str | Path,
    tomo_type: str = DEFAULT_TOMO_TYPE,
    runs: list[str] | None = None,
    spacing_A: float | None = None,
    failures: dict[str, BaseException] | None = None,
) -> list[Tomogram]:
    """Open each run at ``input_path`` on its own, so one unreadable run spoils no other.

    Runs are listed by name first (runs of a project without a ``tomo_type`` tomogram are
    skipped with a warning); a run that cannot be opened is recorded in ``failures``
    (run -> error) when given, else its error is raised.

    Raises
    ------
    InputError
        If ``input_path`` holds no runs or a requested run does not exist.
    """
    from cryopick.io.tomograms import read_tomogram
    from cryopick.scale.parts import list_run_refs

    names = [ref.run for ref in list_run_refs([input_path], tomo_type=tomo_type)]
    if runs is not None:
        if missing := [r for r in runs if r not in names]:
            shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
            raise InputError(input_path, f"run(s) {missing} not found; available: {shown}")
        names = list(dict.fromkeys(runs))
    if not names:
        raise InputError(input_path, "no tomograms found")
    tomograms = []
    for name in names:
        try:
            tomograms.append(read_tomogram(input_path, tomo_type, spacing_A=spacing_A, run=name))
        except Exception as err:
            if failures is None:
                raise
            failures[name] = err
            log.error("%s: cannot open: %s", name, one_line_error(err))
    return tomograms
