"""Simulate whole runs and write them as a copick filesystem project.

:func:`simulate_run` chains the stages (sample -> tilt series -> reconstruction) for one
run; :func:`simulate_project` writes ``n_runs`` of them::

    <out>/copick_config.json
    <out>/simulation.json                          config, seed and per-run drawn values
    <out>/ExperimentRuns/sim_0000/VoxelSpacing10.000/{wbp,ctfdeconvolved,denoised}.zarr
    <out>/ExperimentRuns/sim_0000/Picks/simulation_0_<particle>.json
    <out>/ExperimentRuns/sim_0000/Segmentations/10.000_simulation_0_particles-multilabel.zarr

Run ``i`` of a project with seed ``s`` uses the generator seeded with ``(s, i)``, so
runs are reproducible on their own and a project is identical for the same seed.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cryopick.core.coords import voxels_to_angstrom
from cryopick.core.particles import ParticleSet, default_particle_set
from cryopick.simulate.imaging import simulate_tilt_series
from cryopick.simulate.library import SpecimenLibrary, check_fits, prepare_library
from cryopick.simulate.presets import SimulationConfig, draw_run_params, get_preset
from cryopick.simulate.reconstruct import make_tomogram_types, reconstruct_wbp
from cryopick.simulate.sample import build_sample

if TYPE_CHECKING:
    from cryopick.io.layout import ProjectLayout

logger = logging.getLogger(__name__)

USER_ID = "simulation"
SESSION_ID = "0"
SEGMENTATION_NAME = "particles"
TOMO_TYPES = ("wbp", "ctfdeconvolved", "denoised")


@dataclass
class SimulatedRun:
    """One simulated run.

    Attributes
    ----------
    name : str
        Run name (``experiment`` of the picks).
    tomograms : dict of str to numpy.ndarray
        ``wbp``, ``ctfdeconvolved``, ``denoised``: float32 (Z, Y, X), standardised,
        protein darker than solvent.
    picks : pandas.DataFrame
        True particle centres (Å) with a ``transformation`` column (4x4, x/y/z order:
        the rotation taking the template frame to the tomogram frame).
    labels : numpy.ndarray, shape (Z, Y, X), uint8
        Multi-label segmentation (the labels of ``particles``, 0 = background).
    spacing_A : float
        Voxel size in Å.
    params : dict
        The run's drawn settings and summary numbers.
    timings_s : dict
        Seconds spent per stage.
    particles : ParticleSet
        The simulated types (names of the picks, labels of the segmentation), with radii.
    """

    name: str
    tomograms: dict[str, NDArray[np.float32]]
    picks: pd.DataFrame
    labels: NDArray[np.uint8]
    spacing_A: float
    params: dict[str, float | str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    particles: ParticleSet = field(default_factory=default_particle_set)


def run_name(index: int) -> str:
    """Name of run ``index`` of a simulated project, e.g. ``sim_0003``."""
    return f"sim_{index:04d}"


def simulate_run(
    preset: str | SimulationConfig = "easy",
    shape: tuple[int, int, int] = (64, 128, 128),
    spacing_A: float = 10.0,
    seed: int | np.random.SeedSequence | None = 0,
    name: str = "sim_0000",
    particles: ParticleSet | None = None,
    distractors: str | Path = "default",
    library: SpecimenLibrary | None = None,
) -> SimulatedRun:
    """Simulate one tomogram with its ground truth.

    Parameters
    ----------
    preset : str or SimulationConfig
        ``"czii"`` (realistic), ``"easy"`` (high SNR, few crowders) or a config.
    shape : tuple of int
        Tomogram shape (Z, Y, X) in voxels.
    spacing_A : float
        Voxel size in Å (the template library is at 10 Å).
    seed : int or numpy.random.SeedSequence
        Seed of the run's random generator; the same seed gives the same run.
    name : str
        Run name.
    particles : ParticleSet, optional
        The types to simulate (default: the CZII six); see
        :func:`cryopick.simulate.library.prepare_library`.
    distractors : str or Path
        ``"default"``, ``"none"`` or a particles file of distractor maps
        (:mod:`cryopick.simulate.distractors`).
    library : SpecimenLibrary, optional
        Densities already prepared for ``spacing_A`` (as :func:`simulate_project` does once
        for all its runs); replaces ``particles`` and ``distractors``, which must then be
        left at their defaults.

    Returns
    -------
    SimulatedRun

    Raises
    ------
    InputError
        If a particle's or distractor's map/model is invalid, or a particle is wider than
        the tomogram.
    """
    config = get_preset(preset)
    sizes = tuple(int(s) for s in shape)
    if len(sizes) != 3 or min(sizes) < 16:
        raise ValueError(f"shape must be 3 sizes >= 16 (Z, Y, X), got {sizes}")
    shape = (sizes[0], sizes[1], sizes[2])
    if library is None:
        library = prepare_library(particles, spacing_A, distractors)
    elif particles is not None or str(distractors) != "default":
        raise ValueError("give either a library or particles/distractors, not both")
    check_fits(library, shape)
    rng = np.random.default_rng(seed)
    params = draw_run_params(config, rng)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    sample = build_sample(config, params, shape, spacing_A, rng, library)
    timings["sample"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    series = simulate_tilt_series(
        sample.potential, config, params, spacing_A, sample.thickness_A, rng
    )
    timings["tilt_series"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    wbp = reconstruct_wbp(series.images, series.angles_deg, shape[0])
    tomograms = make_tomogram_types(wbp, config, params, spacing_A)
    timings["reconstruction"] = time.perf_counter() - t0

    from cryopick.core.picks import make_picks

    transforms = np.tile(np.eye(4), (len(sample.particle_types), 1, 1))
    transforms[:, :3, :3] = sample.rotations_xyz
    picks = make_picks(
        name,
        sample.particle_types,
        voxels_to_angstrom(sample.centres_zyx, spacing_A),
        transformation=transforms,
        particles=library.particles,
    )
    summary: dict[str, float | str] = {
        **params,
        "ice_thickness_A": sample.thickness_A,
        "n_targets": len(sample.particle_types),
        "n_distractors": sample.n_distractors,
        "n_vesicles": sample.n_vesicles,
        "seed": str(seed),
    }
    logger.debug("simulated %s in %s", name, timings)
    return SimulatedRun(
        name,
        tomograms,
        picks,
        sample.labels,
        float(spacing_A),
        summary,
        timings,
        library.particles,
    )


def write_run(run: SimulatedRun, layout: ProjectLayout, n_levels: int = 3) -> None:
    """Write a simulated run's tomograms, picks and segmentation into a copick project.

    Parameters
    ----------
    run : SimulatedRun
        The run.
    layout : cryopick.io.layout.ProjectLayout
        Project to write into (tomograms under its static root if any, else overlay).
    n_levels : int
        OME-Zarr pyramid levels of the tomograms.
    """
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
    shape : tuple of int
        Tomogram shape (Z, Y, X).
    spacing_A : float
        Voxel size in Å.
    preset : str or SimulationConfig
        Simulator settings (``czii`` or ``easy``).
    progress : bool
        Show a rich progress bar.
    overwrite : bool
        Replace an earlier cryopick simulation in ``out_dir`` (see
        :func:`prepare_project_folder`); without it a non-empty ``out_dir`` is an error.
    particles : ParticleSet, optional
        The types to simulate (default: the CZII six), e.g. from
        :func:`cryopick.core.particles_file.load_particles_file`. The project's
        ``copick_config.json`` declares exactly these (radii measured where not given),
        its truth picks and segmentation labels are theirs, and ``simulation.json``
        records them.
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
        If a particle or distractor density is invalid or a particle does not fit the
        tomogram (checked before ``out_dir`` is touched), or ``out_dir`` may not be used.
    """
    from cryopick.console import step_progress_bar
    from cryopick.io.atomic import write_text_atomic
    from cryopick.io.layout import make_copick_config, read_copick_config
    from cryopick.simulate.presets import cluster_fractions

    if n_runs < 1:
        raise ValueError(f"n_runs must be >= 1, got {n_runs}")
    config = get_preset(preset)
    library = prepare_library(particles, spacing_A, distractors)
    check_fits(library, shape)
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
    with step_progress_bar(progress, n_runs, "simulating") as advance:
        for i in range(n_runs):
            name = run_name(i)
            advance(0, f"simulating {name}")
            run = simulate_run(
                config, shape, spacing_A, np.random.SeedSequence([seed, i]), name, library=library
            )
            advance(0, f"writing {name}")
            write_run(run, layout)
            record["runs"][name] = {**run.params, "timings_s": run.timings_s}
            advance(1, f"wrote {name}")
    record["complete"] = True
    write_text_atomic(out_dir / "simulation.json", json.dumps(record, indent=2))
    return config_path


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
