"""Where a training run's data come from: its sources, simulated projects and particle set.

:func:`gather_runs` reads ``TrainConfig.data`` / ``val`` (and, with ``simulate``, first
simulates fresh projects into the output folder) as :class:`~cryopick.training.sampling.TrainRun`
objects, all with the particle set the run learns
(:mod:`cryopick.training.particle_sets`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet, default_particle_set
from cryopick.training.particle_sets import (
    check_simulatable,
    source_particle_set,
    training_particle_set,
)
from cryopick.training.prefetch import fork_pool
from cryopick.training.sampling import TrainRun, load_runs

if TYPE_CHECKING:
    from cryopick.training.config import TrainConfig

log = logging.getLogger(__name__)


class TrainingData(NamedTuple):
    """The runs of a training run and the particle set they are learnt as."""

    train_runs: list[TrainRun]
    val_runs: list[TrainRun]
    particles: ParticleSet


def map_sources(
    read: Callable[[str | Path], list[TrainRun]], sources: list[str | Path], workers: int
) -> list[list[TrainRun]]:
    """Return ``read(source)`` for each source, in order; in forked processes if ``workers`` > 1.

    Reading and normalising a 184 x 630 x 630 tomogram takes seconds of one CPU core, so
    a GPU run over tens of projects would wait minutes for its data in one process.
    """
    pool = fork_pool(min(workers, len(sources))) if workers > 1 and len(sources) > 1 else None
    if pool is None:
        return [read(source) for source in sources]
    with pool:
        return list(pool.map(read, sources))


def gather_runs(config: TrainConfig, out_dir: Path, workers: int = 0) -> TrainingData:
    """Load (and, with ``simulate``, first make) the training and validation runs.

    The particle set is ``config.particles``'s (a particles file) or the one the sources
    declare; every source must declare it
    (:func:`cryopick.training.particle_sets.training_particle_set`), checked before
    anything is simulated. Simulated projects are simulated with it, written under
    ``out_dir/simulated/`` and reused on resume. Without validation sources,
    ``simulate_val`` runs are simulated when simulating, otherwise the last fifth of the
    training runs (at least one) is held out. With ``workers`` > 1 the sources are read
    in that many forked processes.

    Raises
    ------
    InputError
        If the sources declare different sets, or a custom set is to be simulated without
        a particles file.
    """
    from cryopick.core.particles_file import load_particles_file

    given = load_particles_file(config.particles) if config.particles else None
    what = f"particles file {config.particles}"
    declared = [(str(s), source_particle_set(s)) for s in [*config.data, *config.val]]
    particles = given  # radii may be missing: a simulated project's config gives them
    if declared or given is None:  # the data's sets are checked before simulating
        particles = training_particle_set(declared, given, what, config.spacing_A)
    assert particles is not None
    projects = _simulated_projects(config, out_dir, particles, given is not None)
    if projects:
        declared += [(str(p), source_particle_set(p)) for p in projects.values()]
        particles = training_particle_set(declared, given, what, config.spacing_A)

    def load(sources: list[str | Path], tomo_types: list[str]) -> list[TrainRun]:
        read = partial(
            load_runs, tomo_types=tomo_types, spacing_A=config.spacing_A, particles=particles
        )
        return [run for runs in map_sources(read, sources, workers) for run in runs]

    simulated = {kind: [path] for kind, path in projects.items()}
    train_sources: list[str | Path] = [*config.data, *simulated.get("train", [])]
    train_runs = load(train_sources, config.tomo_types)
    if config.hard_negative_fraction > 0:
        attach_hard_negatives(train_runs, train_sources, config.hard_negative_kinds)
    val_runs = load([*config.val, *simulated.get("val", [])], [config.val_tomo_type])
    if not config.val and not val_runs and len(train_runs) >= 2:
        n_val = max(1, len(train_runs) // 5)
        val_runs, train_runs = train_runs[-n_val:], train_runs[:-n_val]
        log.info("no validation data given: holding out %s", ", ".join(r.name for r in val_runs))
    if not train_runs:
        raise ValueError("no training data: give --data and/or --simulate")
    return TrainingData(train_runs, val_runs, particles)


def _simulated_projects(
    config: TrainConfig, out_dir: Path, particles: ParticleSet, has_file: bool
) -> dict[str, Path]:
    """Simulate (or reuse) the ``train`` and ``val`` projects ``config`` asks for."""
    projects: dict[str, Path] = {}
    if not config.simulate:
        return projects
    check_simulatable(particles, has_file)
    train_dir = out_dir / "simulated" / "train"
    projects["train"] = _simulated(train_dir, config.simulate, config.seed, config, particles)
    if not config.val and config.simulate_val:
        val_dir, seed = out_dir / "simulated" / "val", config.seed + 1_000_003
        projects["val"] = _simulated(val_dir, config.simulate_val, seed, config, particles)
    return projects


def _simulated(
    path: Path, n_runs: int, seed: int, config: TrainConfig, particles: ParticleSet
) -> Path:
    from cryopick.simulate import simulate_project
    from cryopick.simulate.project import is_complete_simulation

    config_path = path / "copick_config.json"
    legacy_marker = (path / ".complete").exists() and config_path.exists()  # older runs
    if is_complete_simulation(path) or legacy_marker:
        return config_path
    log.info("simulating %d runs (%s) into %s", n_runs, config.simulate_preset, path)
    # the project config holds absolute paths, so it is written in place (not renamed);
    # simulation.json is marked complete last; an interrupted simulation is replaced
    return simulate_project(
        path,
        n_runs,
        seed=seed,
        shape=config.simulate_shape,
        spacing_A=config.spacing_A,
        preset=config.simulate_preset,
        overwrite=True,
        # the CZII set as None: its project is written exactly as before sets existed
        particles=None if particles == default_particle_set() else particles,
    )


def attach_hard_negatives(
    runs: list[TrainRun], sources: list[str | Path], kinds: list[str]
) -> None:
    """Set each run's hard negatives: its recorded distractors of ``kinds``.

    A kind is ``small``, ``large``, ``procedural`` or ``hard``; ``kind/name`` selects one
    map. Read from the sources that are simulated copick projects
    (:func:`cryopick.simulate.read_simulated_distractors`); a run has no negatives when its
    project has no record.

    Raises
    ------
    InputError
        If no run gets any (projects simulated before cryopick recorded distractors, or
        no distractor of those kinds).
    """
    from cryopick.io.layout import is_copick_config
    from cryopick.simulate import read_simulated_distractors

    for run in runs:
        run.negatives_zyx_A = np.zeros((0, 3))
    for source in sources:
        if not (is_copick_config(source) or (Path(source) / "copick_config.json").is_file()):
            continue
        table = read_simulated_distractors(source)
        full_names = table["kind"] + "/" + table["name"]
        table = table[table["kind"].isin(kinds) | full_names.isin(kinds)]
        by_run = dict(list(table.groupby("experiment")))
        for run in runs:
            if run.source == str(source) and run.name in by_run:
                run.negatives_zyx_A = by_run[run.name][["z", "y", "x"]].to_numpy(np.float64)
    if not any(len(run.negatives_zyx_A) for run in runs):
        where = ", ".join(str(s) for s in sources)
        raise InputError(
            where,
            f"hard_negative_fraction needs recorded distractors of kinds {kinds}; none found "
            "(simulate the projects again with this cryopick: the same seed gives the same "
            "tomograms and writes simulation_distractors.csv)",
        )
