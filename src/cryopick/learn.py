"""``cryopick learn``: a picker for a user's own particles, from their maps or models alone.

:func:`learn_particles` does the whole job of issue 13 in one call: read a particles file,
simulate a training and a validation set of those particles at the user's voxel size
(with exact truth), train the 3D U-Net within a time budget (by default fine-tuning the
bundled model's encoder, whose features are particle-agnostic), tune per-type thresholds
on the validation set and write the model folder with its card. Everything it writes is
inside ``out_dir``::

    out_dir/model.json, model.pt, checkpoint.pt   the model (cryopick.model)
    out_dir/data/train/, out_dir/data/val/         the simulated copick projects
    out_dir/learn.json                             settings and timings of the run

A stopped run continues with ``resume=True`` (complete simulations are kept, training
resumes from its checkpoint).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cryopick.core.errors import InputError
from cryopick.core.particles import SIMULATION_SPACING_RANGE_A, ParticleSet
from cryopick.model import ModelCard

log = logging.getLogger(__name__)

# the physical size of a simulated tomogram (z, y, x) in Å; in voxels it follows spacing_A
DEFAULT_BOX_A: tuple[float, float, float] = (1840.0, 3840.0, 3840.0)
SHAPE_MULTIPLE = 16  # tomogram sides are rounded to this many voxels
VALIDATION_RESERVE_MIN = 1.5  # kept from the budget for the final validation and tuning
VALIDATION_RESERVE_FRACTION = 0.1  # ... or this fraction of a smaller budget
MIN_MINUTES = 0.5  # a smaller budget is refused before anything is written


class LearnSettings(BaseModel):
    """Settings of :func:`learn_particles` (the defaults suit 2 CPU cores and ~20 minutes).

    Attributes
    ----------
    minutes : float
        Total wall-clock budget: simulation, training, validation and tuning.
    spacing_A : float
        Voxel size of the simulated data and the model, in Å (that of the user's tomograms).
    train_runs, val_runs : int
        Simulated training and validation tomograms.
    shape : tuple of int or None
        Tomogram shape (z, y, x) in voxels; None: :data:`DEFAULT_BOX_A` at ``spacing_A``.
    preset : str
        Simulator preset (``czii``: realistic; ``easy``: high SNR, for tests).
    distractors : str
        ``default``, ``none`` or a particles-format file of distractor densities.
    init_from : str or None
        ``bundled`` (default): fine-tune the bundled model; a model folder; None: fresh.
    seed : int
        Seed of the simulations (validation uses ``seed + 1``) and of training.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    """

    model_config = ConfigDict(extra="forbid")

    minutes: float = Field(20.0, gt=0)
    spacing_A: float = Field(
        10.0, ge=SIMULATION_SPACING_RANGE_A[0], le=SIMULATION_SPACING_RANGE_A[1]
    )
    train_runs: int = Field(8, ge=1)
    val_runs: int = Field(2, ge=1)
    shape: tuple[int, int, int] | None = None
    preset: str = "czii"
    distractors: str = "default"
    init_from: str | None = "bundled"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def tomogram_shape(self) -> tuple[int, int, int]:
        """Return the simulated tomogram shape in voxels."""
        if self.shape is not None:
            return self.shape
        sides = (
            max(SHAPE_MULTIPLE, round(a / self.spacing_A / SHAPE_MULTIPLE) * SHAPE_MULTIPLE)
            for a in DEFAULT_BOX_A
        )
        z, y, x = sides
        return (z, y, x)


def learn_particles(
    particles_file: str | Path,
    out_dir: str | Path,
    settings: LearnSettings | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ModelCard:
    """Simulate, train and tune a picker for the particles of ``particles_file``.

    Parameters
    ----------
    particles_file : str or Path
        The user's particles file (see ``docs/own_particles.md``).
    out_dir : str or Path
        Model folder to write (see the module docstring); refused when it holds a model,
        unless ``overwrite`` or ``resume``.
    settings : LearnSettings, optional
        Budget, voxel size, data sizes; defaults as documented there.
    resume : bool
        Keep complete simulations in ``out_dir/data`` and continue training from
        ``out_dir/checkpoint.pt``.
    overwrite : bool
        Replace a model and earlier cryopick simulations in ``out_dir``.
    progress : bool
        Show progress bars.

    Returns
    -------
    ModelCard
        The card of the trained model (its ``particles`` are the file's set, radii measured
        where not given; ``thresholds`` tuned on the validation set).
    """
    from cryopick.core.particles_file import load_particles_file
    from cryopick.model import CHECKPOINT_FILENAME, check_model_folder

    settings = settings or LearnSettings()
    if settings.minutes < MIN_MINUTES:
        raise InputError(None, f"--minutes {settings.minutes:g} is too short: give {MIN_MINUTES}+")
    out_dir = Path(out_dir)
    particles_file = Path(particles_file)
    particle_set = load_particles_file(particles_file)
    check_model_folder(out_dir, resume, overwrite)
    warn_about_sizes(particles_file, particle_set, settings.spacing_A)
    t0 = time.perf_counter()
    projects = _simulate_data(particle_set, out_dir / "data", settings, resume, overwrite, progress)
    sim_min = (time.perf_counter() - t0) / 60.0
    reserve_min = min(VALIDATION_RESERVE_MIN, VALIDATION_RESERVE_FRACTION * settings.minutes)
    train_min = settings.minutes - sim_min - reserve_min
    if train_min < 0.25 * settings.minutes:
        raise InputError(
            None,
            f"--minutes {settings.minutes:g} leaves {train_min:.1f} min for training after "
            f"{sim_min:.1f} min of simulation; give more minutes or fewer/smaller runs",
        )
    resume = resume and (out_dir / CHECKPOINT_FILENAME).is_file()  # else training starts
    card = _train(projects, particles_file, out_dir, settings, train_min, resume, progress)
    record = {
        "particles_file": str(particles_file.resolve()),
        "settings": settings.model_dump(),
        "shape_zyx": list(settings.tomogram_shape()),
        "simulation_min": round(sim_min, 2),
        "total_min": round((time.perf_counter() - t0) / 60.0, 2),
        "validation_score": card.score,
    }
    from cryopick.io.atomic import write_text_atomic

    write_text_atomic(out_dir / "learn.json", json.dumps(record, indent=2))
    return card


def warn_about_sizes(particles_file: Path, particle_set: ParticleSet, spacing_A: float) -> None:
    """Warn about each type too small or too large to pick at ``spacing_A`` (with the fix)."""
    from cryopick.core.particles_file import complete_radii, describe_size_problems

    measured = complete_radii(particle_set, spacing_A=spacing_A)
    for problem in describe_size_problems(measured, spacing_A):
        log.warning("%s: %s", particles_file, problem)


def _simulate_data(
    particle_set: ParticleSet,
    data_dir: Path,
    settings: LearnSettings,
    resume: bool,
    overwrite: bool,
    progress: bool,
) -> dict[str, Path]:
    """Simulate (or, on resume, reuse) the training and validation projects."""
    from cryopick.simulate import simulate_project
    from cryopick.simulate.project import is_complete_simulation

    projects = {}
    for split, runs, seed in (
        ("train", settings.train_runs, settings.seed),
        ("val", settings.val_runs, settings.seed + 1),
    ):
        folder = data_dir / split
        if resume and is_complete_simulation(folder):
            log.info("%s: reusing the complete simulation", folder)
            projects[split] = folder / "copick_config.json"
            continue
        projects[split] = simulate_project(
            folder,
            runs,
            seed=seed,
            shape=settings.tomogram_shape(),
            spacing_A=settings.spacing_A,
            preset=settings.preset,
            progress=progress,
            overwrite=overwrite or resume,
            particles=particle_set,
            distractors=settings.distractors,
        )
    return projects


def _train(
    projects: dict[str, Path],
    particles_file: Path,
    out_dir: Path,
    settings: LearnSettings,
    train_min: float,
    resume: bool,
    progress: bool,
) -> ModelCard:
    """Train on the simulated projects for ``train_min`` minutes; validate and tune at the end."""
    from cryopick.training.config import TrainConfig
    from cryopick.training.trainer import train

    config = TrainConfig(
        data=[str(projects["train"])],
        val=[str(projects["val"])],
        particles=str(particles_file),
        spacing_A=settings.spacing_A,
        init_from=settings.init_from,
        steps=100_000,  # the time limit ends the run; the schedule anneals by time
        time_limit_min=train_min,
        validate_every=0,
        seed=settings.seed,
        device=settings.device,
    )
    return train(config, out_dir, resume=resume, progress=progress, overwrite=True)
