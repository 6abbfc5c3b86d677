"""The runs of an input: listed by name, opened one by one, and the outcome of each.

Runs are listed by name only (run folders, file stems; never opening a tomogram) and
referred to by :class:`RunRef` (input path + run name), so a corrupt tomogram fails its
own run, not the listing, and tasks can carry references instead of arrays.
:func:`open_tomograms` opens them one by one, so one unreadable run spoils no other.
:class:`RunResult` is what a multi-run command reports about each run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn

from cryopick.core.errors import InputError, RunsFailedError, one_line_error
from cryopick.io.tomograms import DEFAULT_TOMO_TYPE, Tomogram, read_tomograms

log = logging.getLogger(__name__)

RunStatus = Literal["done", "skipped", "failed"]
"""``done``: predicted now; ``skipped``: its result was already up to date; ``failed``."""


@dataclass(frozen=True)
class RunRef:
    """A run by reference: where its tomogram is and its name (never the array)."""

    source: str
    run: str


@dataclass(frozen=True)
class RunResult:
    """The outcome of one run of a multi-run command.

    Attributes
    ----------
    run : str
        Run name.
    status : {"done", "skipped", "failed"}
        What happened to it.
    n_picks : int, optional
        Picks found (None when unknown, e.g. a skipped run of an older version).
    seconds : float, optional
        Wall time of the run (None when unknown, NaN for a task lost by its worker).
    error : str
        One-line reason of a failure ("" otherwise).
    pid : int, optional
        Process that ran it (tasks only).
    model_loaded : bool
        True when this run's task loaded the model from disk (tasks only).
    traceback : str
        Python traceback of a failure, for debugging (not shown to users).
    """

    run: str
    status: RunStatus
    n_picks: int | None = None
    seconds: float | None = None
    error: str = ""
    pid: int | None = None
    model_loaded: bool = False
    traceback: str = field(default="", repr=False)


def list_run_refs(sources: Sequence[str | Path], tomo_type: str | None = None) -> list[RunRef]:
    """List the runs of every input, sorted by name, without opening any tomogram.

    A corrupt tomogram must fail its own task, not the listing, so only names are read
    here (project layouts: run folders; folders of volumes: file stems).

    Parameters
    ----------
    sources : sequence of str or Path
        Inputs as accepted by :func:`cryopick.io.tomograms.read_tomograms`.
    tomo_type : str, optional
        For project layouts: keep only runs that have this reconstruction type, warning
        about the others (:func:`cryopick.io.tomo_types.select_runs_with_tomo_type`).
        Default: every run.

    Raises
    ------
    InputError
        If an input does not exist, holds no volumes, or two inputs share a run name.
    MissingTomoTypeError
        If no run of a project input has ``tomo_type``.
    """
    refs: dict[str, RunRef] = {}
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise InputError(path, "does not exist")
        names = _list_run_names(path, tomo_type)
        if not names:
            raise InputError(path, "no runs found (copick config, Kaggle root, MRC/zarr files)")
        for name in names:
            if name in refs:
                raise InputError(path, f"run {name!r} is also in {refs[name].source}")
            refs[name] = RunRef(str(path), name)
    return [refs[name] for name in sorted(refs)]


def _list_run_names(path: Path, tomo_type: str | None) -> list[str]:
    """Run names of one existing input: a project's runs, a volume file, a folder's volumes."""
    from cryopick.io.layout import resolve_layout
    from cryopick.io.mrc import MRC_SUFFIXES, split_volume_name
    from cryopick.io.tomo_types import select_runs_with_tomo_type

    suffixes = (*MRC_SUFFIXES, ".zarr")
    stem, suffix = split_volume_name(path)
    if suffix in suffixes:
        return [stem]
    layout = resolve_layout(path)
    if layout is not None:
        names = layout.run_names()
        if names and tomo_type is not None:
            names = select_runs_with_tomo_type(path, layout, names, tomo_type)
        return names
    if path.is_dir():
        named = (split_volume_name(p) for p in path.iterdir() if not p.name.startswith("."))
        return sorted(stem for stem, suffix in named if suffix in suffixes)
    return []


def read_inputs(
    input_path: str | Path,
    tomo_type: str,
    runs: list[str] | None,
    spacing_A: float | None = None,
    prefer_spacing_A: float | None = None,
) -> list[Tomogram]:
    """Open the tomograms at ``input_path``; an InputError when there are none.

    ``spacing_A`` overrides the voxel size of MRC files whose header has none;
    ``prefer_spacing_A`` chooses among a project's voxel spacings (the model's).
    """
    tomograms = read_tomograms(
        input_path, tomo_type, spacing_A=spacing_A, runs=runs, prefer_spacing_A=prefer_spacing_A
    )
    if not tomograms:
        raise InputError(input_path, "no tomograms found")
    return tomograms


def open_tomograms(
    input_path: str | Path,
    tomo_type: str = DEFAULT_TOMO_TYPE,
    runs: list[str] | None = None,
    spacing_A: float | None = None,
    failures: dict[str, BaseException] | None = None,
    on_run_done: Callable[[RunResult], None] | None = None,
    prefer_spacing_A: float | None = None,
) -> list[Tomogram]:
    """Open each run at ``input_path`` on its own, so one unreadable run spoils no other.

    Runs are listed by name first (runs of a project without a ``tomo_type`` tomogram are
    skipped with a warning); a run that cannot be opened is recorded in ``failures``
    (run -> error) when given, and reported to ``on_run_done`` as a failed
    :class:`RunResult`; without ``failures`` its error is raised. ``prefer_spacing_A``
    chooses among a project's voxel spacings (:func:`cryopick.io.tomograms.read_tomograms`).

    Raises
    ------
    InputError
        If ``input_path`` holds no runs or a requested run does not exist.
    """
    from cryopick.io.tomograms import read_tomogram

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
            found = read_tomogram(
                input_path,
                tomo_type,
                spacing_A=spacing_A,
                run=name,
                prefer_spacing_A=prefer_spacing_A,
            )
            tomograms.append(found)
        except Exception as err:
            if failures is None:
                raise
            failures[name] = err
            if len(names) > 1:  # one run: the command's own error line says it
                log.error("%s: cannot open: %s", name, one_line_error(err))
            if on_run_done is not None:
                on_run_done(RunResult(name, "failed", 0, error=one_line_error(err)))
    return tomograms


def raise_all_failed(
    failures: dict[str, BaseException], input_path: str | Path, n_runs: int
) -> NoReturn:
    """Raise for a prediction whose every run failed (nothing was written).

    One run: its own error (an InputError naming the file); several: RunsFailedError
    listing them.
    """
    reasons = {run: one_line_error(err) for run, err in failures.items()}
    if len(failures) == 1:  # one run: its own error says it all
        err = next(iter(failures.values()))
        raise err if isinstance(err, InputError) else InputError(input_path, reasons.popitem()[1])
    raise RunsFailedError(reasons, None, n_runs)
