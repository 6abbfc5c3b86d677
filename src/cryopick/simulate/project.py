"""Simulate whole runs and write them as a copick filesystem project.

:func:`simulate_project` writes ``n_runs`` runs of
:func:`cryopick.simulate.run.simulate_run` (sample -> tilt series -> reconstruction)::

    <out>/copick_config.json
    <out>/simulation.json                          config, seed and per-run drawn values
    <out>/ExperimentRuns/sim_0000/VoxelSpacing10.000/{wbp,ctfdeconvolved,denoised}.zarr
    <out>/ExperimentRuns/sim_0000/Picks/simulation_0_<particle>.json
    <out>/ExperimentRuns/sim_0000/Segmentations/10.000_simulation_0_particles-multilabel.zarr
    <out>/ExperimentRuns/sim_0000/simulation_distractors.csv   where the distractors went

Run ``i`` of a project with seed ``s`` uses the generator seeded with ``(s, i)``, so
runs are reproducible on their own and a project is identical for the same seed.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cryopick.core.particles import ParticleSet
from cryopick.simulate.library import (
    SpecimenLibrary,
    check_fits,
    check_simulation_memory,
    prepare_library,
)
from cryopick.simulate.presets import SimulationConfig, get_preset
from cryopick.simulate.run import DISTRACTOR_COLUMNS, SimulatedRun, run_name, simulate_run

if TYPE_CHECKING:
    from cryopick.io.layout import ProjectLayout

logger = logging.getLogger(__name__)

USER_ID = "simulation"
SESSION_ID = "0"
SEGMENTATION_NAME = "particles"
TOMO_TYPES = ("wbp", "ctfdeconvolved", "denoised")
DISTRACTORS_FILENAME = "simulation_distractors.csv"
"""Per run: kind, name and centre (Å) of every distractor placed (not truth; Å like picks)."""


def write_run(run: SimulatedRun, layout: ProjectLayout, n_levels: int = 3) -> None:
    """Write a simulated run's tomograms, picks, segmentation and distractors into a project.

    Parameters
    ----------
    run : SimulatedRun
        The run.
    layout : cryopick.io.layout.ProjectLayout
        Project to write into (tomograms under its static root if any, else overlay).
    n_levels : int
        OME-Zarr pyramid levels of the tomograms.
    """
    from cryopick.io.atomic import write_text_atomic
    from cryopick.io.omezarr import write_label_zarr
    from cryopick.io.picks import write_copick_picks
    from cryopick.io.tomograms import write_ome_zarr

    for tomo_type, volume in run.tomograms.items():
        path = layout.tomogram_write_path(run.name, run.spacing_A, tomo_type)
        write_ome_zarr(path, volume, run.spacing_A, n_levels=n_levels)
    write_copick_picks(
        run.picks,
        layout,
        USER_ID,
        SESSION_ID,
        voxel_spacing=run.spacing_A,
        runs=[run.name],
        particles=run.particles,
    )
    seg = layout.segmentations_dir(run.name) / (
        f"{run.spacing_A:.3f}_{USER_ID}_{SESSION_ID}_{SEGMENTATION_NAME}-multilabel.zarr"
    )
    write_label_zarr(seg, run.labels, run.spacing_A)
    distractors_csv = layout.picks_dir(run.name).parent / DISTRACTORS_FILENAME
    write_text_atomic(distractors_csv, run.distractors.to_csv(index=False))


def write_run_whole(run: SimulatedRun, layout: ProjectLayout) -> None:
    """:func:`write_run`, leaving no part of the run behind if writing it fails.

    A failure part-way (a full disk, an interrupt) would leave a run with some tomogram
    types and no picks, which training and tuning would read as a run without particles.
    The run's folders that did not exist before are removed and the error raised again.
    """
    from cryopick.io.layout import RUNS_DIR

    new_dirs = [
        r / RUNS_DIR / run.name for r in layout.roots if not (r / RUNS_DIR / run.name).exists()
    ]
    try:
        write_run(run, layout)
    except BaseException:
        for run_dir in new_dirs:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def prepare_project_folder(out_dir: Path, overwrite: bool) -> list[str]:
    """Check that ``out_dir`` may receive a new simulation; clear an old one on ``overwrite``.

    A missing or empty folder is fine. A non-empty one is refused unless ``overwrite`` is
    given and it holds an earlier cryopick simulation (its ``simulation.json``); then the
    runs that simulation wrote are removed (so runs of two seeds never mix) and the config
    and record are replaced. Nothing that cryopick did not simulate is removed.

    Returns
    -------
    list of str
        Names of the runs removed.

    Raises
    ------
    InputError
        If ``out_dir`` is a file, or is not empty and may not be replaced.
    """
    from cryopick.core.errors import InputError
    from cryopick.io.layout import RUNS_DIR

    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "is a file: give a folder for the simulated project")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return []
    record_path = out_dir / "simulation.json"
    if not overwrite:
        raise InputError(
            out_dir,
            "is not empty: simulate writes a new project; choose a new or empty folder, or "
            "pass --overwrite to replace an earlier cryopick simulation there",
        )
    try:
        old_runs = list(json.loads(record_path.read_text())["runs"])
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(
            out_dir,
            "is not a cryopick simulation (no readable simulation.json): --overwrite replaces "
            "only simulated projects; choose a new or empty folder",
        ) from None
    runs_dir = (out_dir / RUNS_DIR).resolve()
    removed = []
    for name in old_runs:
        run_dir = out_dir / RUNS_DIR / str(name)
        inside = run_dir.resolve().parent == runs_dir and not run_dir.is_symlink()
        if inside and run_dir.is_dir():
            shutil.rmtree(run_dir)
            removed.append(str(name))
    logger.warning(
        "%s: --overwrite: replacing the earlier simulation (copick_config.json, "
        "simulation.json and its %d run(s) %s)",
        out_dir,
        len(removed),
        ", ".join(removed[:5]) + (" ..." if len(removed) > 5 else ""),
    )
    return removed


def simulate_project(
    out_dir: str | Path,
    n_runs: int,
    seed: int = 0,
    shape: tuple[int, int, int] = (184, 630, 630),
    spacing_A: float = 10.0,
    preset: str | SimulationConfig = "czii",
    progress: bool = True,
    overwrite: bool = False,
    particles: ParticleSet | None = None,
    distractors: str | Path = "default",
) -> Path:
    """Simulate ``n_runs`` tomograms and write them as a copick filesystem project.

    Parameters
    ----------
    out_dir : str or Path
        Project folder: new, empty, or (with ``overwrite``) an earlier simulation.
    n_runs : int
        Number of runs, named ``sim_0000``, ``sim_0001``, ...
    seed : int
        Project seed; run ``i`` uses ``SeedSequence([seed, i])``.
    shape, spacing_A, preset
        Tomogram shape (Z, Y, X), voxel size in Å, simulator settings (``czii``, ``easy``).
    progress : bool
        Show a rich progress bar.
    overwrite : bool
        Replace an earlier cryopick simulation in ``out_dir`` (see
        :func:`prepare_project_folder`); without it a non-empty ``out_dir`` is an error.
    particles : ParticleSet, optional
        The types to simulate (default: the CZII six), e.g. from
        :func:`cryopick.core.particles_file.load_particles_file`; the config declares
        exactly these (radii measured where not given), truth and labels are theirs.
    distractors : str or Path
        ``"default"``, ``"none"`` or a particles file of distractor maps/models
        (:mod:`cryopick.simulate.distractors`).

    Returns
    -------
    Path
        The copick config JSON (``<out_dir>/copick_config.json``).

    Raises
    ------
    InputError
        If a particle or distractor density is invalid, a particle does not fit the
        tomogram, a run would not fit in memory (all checked before ``out_dir`` is
        touched), or ``out_dir`` may not be used.
    """
    from cryopick.io.atomic import write_text_atomic
    from cryopick.io.layout import make_copick_config, read_copick_config
    from cryopick.simulate.presets import cluster_fractions

    if n_runs < 1:
        raise ValueError(f"n_runs must be >= 1, got {n_runs}")
    config = get_preset(preset)
    library = prepare_library(particles, spacing_A, distractors)
    check_fits(library, shape)
    check_simulation_memory(shape)
    cluster_fractions(config, library.particles)
    out_dir = Path(out_dir)
    prepare_project_folder(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = make_copick_config(
        f"cryopick simulation ({config.name})",
        out_dir,
        description=f"simulated by cryopick, preset {config.name}, seed {seed}",
        particles=library.particles,
    )
    config_path = write_text_atomic(out_dir / "copick_config.json", json.dumps(cfg, indent=2))
    layout = read_copick_config(config_path)
    record = _new_record(seed, shape, spacing_A, config, n_runs)
    if particles is not None or str(distractors) != "default":
        record["particles"] = library.particles.to_records()
        record["distractors"] = library.distractors.record()
    write_text_atomic(out_dir / "simulation.json", json.dumps(record, indent=2))
    _simulate_runs(config, shape, spacing_A, seed, library, layout, record, progress)
    record["complete"] = True
    write_text_atomic(out_dir / "simulation.json", json.dumps(record, indent=2))
    return config_path


def _simulate_runs(
    config: SimulationConfig,
    shape: tuple[int, int, int],
    spacing_A: float,
    seed: int,
    library: SpecimenLibrary,
    layout: ProjectLayout,
    record: dict,
    progress: bool,
) -> None:
    """Simulate and write the planned runs of ``record``, noting each one in it."""
    from cryopick.console import step_progress_bar

    with step_progress_bar(progress, len(record["runs"]), "simulating") as advance:
        for i, name in enumerate(list(record["runs"])):
            advance(0, f"simulating {name}")
            run = simulate_run(
                config, shape, spacing_A, np.random.SeedSequence([seed, i]), name, library=library
            )
            advance(0, f"writing {name}")
            write_run_whole(run, layout)
            record["runs"][name] = {**run.params, "timings_s": run.timings_s}
            advance(1, f"wrote {name}")


def _new_record(
    seed: int, shape: tuple[int, int, int], spacing_A: float, config: SimulationConfig, n_runs: int
) -> dict:
    """Return the ``simulation.json`` of a project about to be simulated."""
    return {
        "seed": seed,
        "shape_zyx": list(shape),
        "spacing_A": spacing_A,
        "config": config.model_dump(),
        "complete": False,
        # the planned runs first: an interrupted simulation can still be replaced whole
        "runs": {run_name(i): {} for i in range(n_runs)},
    }


def is_complete_simulation(folder: str | Path) -> bool:
    """Tell whether ``folder`` holds a finished cryopick simulation (to reuse it as it is).

    ``simulate_project`` marks ``simulation.json`` complete after its last run is written.
    """
    folder = Path(folder)
    try:
        record = json.loads((folder / "simulation.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and record.get("complete") is True
        and (folder / "copick_config.json").is_file()
    )


def read_simulated_distractors(project: str | Path) -> pd.DataFrame:
    """Read where a simulated project's distractors went, all runs in one table.

    Parameters
    ----------
    project : str or Path
        The project's ``copick_config.json`` (or its folder).

    Returns
    -------
    pandas.DataFrame
        ``experiment`` (the run), ``kind``, ``name``, ``x``, ``y``, ``z`` (Å); runs
        simulated before cryopick recorded distractors have no rows.
    """
    from cryopick.io.layout import read_copick_config
    from cryopick.io.picks.csv_io import read_csv_exactly

    path = Path(project)
    layout = read_copick_config(path / "copick_config.json" if path.is_dir() else path)
    frames = []
    for run in layout.run_names():
        csv = layout.picks_dir(run).parent / DISTRACTORS_FILENAME
        if csv.is_file():
            frames.append(read_csv_exactly(csv).assign(experiment=run))
    if not frames:
        columns = ["experiment", *DISTRACTOR_COLUMNS]
        return pd.DataFrame({c: pd.Series(dtype=float if c in "xyz" else str) for c in columns})
    return pd.concat(frames, ignore_index=True)[["experiment", *DISTRACTOR_COLUMNS]]
