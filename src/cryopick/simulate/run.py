"""Simulate one run: sample -> tilt series -> reconstruction, with its exact truth.

:func:`simulate_run` chains the stages for one tomogram and returns a
:class:`SimulatedRun` (tomograms by reconstruction type, truth picks in Å, label volume);
:mod:`cryopick.simulate.project` writes runs as a copick project.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cryopick.core.coords import voxels_to_angstrom
from cryopick.core.particles import ParticleSet, default_particle_set
from cryopick.simulate.imaging import simulate_tilt_series
from cryopick.simulate.library import SpecimenLibrary, check_fits, prepare_library
from cryopick.simulate.presets import SimulationConfig, draw_run_params, get_preset
from cryopick.simulate.reconstruct import make_tomogram_types, reconstruct_wbp
from cryopick.simulate.sample import Sample, build_sample

logger = logging.getLogger(__name__)

DISTRACTOR_COLUMNS = ("kind", "name", "x", "y", "z")


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
    distractors : pandas.DataFrame
        Where the crowding distractors went (not particles of the set): ``kind`` (small,
        large, procedural, hard), ``name`` (map key, blob, crowder, hard-negative) and box
        centre ``x``, ``y``, ``z`` in Å.
    """

    name: str
    tomograms: dict[str, NDArray[np.float32]]
    picks: pd.DataFrame
    labels: NDArray[np.uint8]
    spacing_A: float
    params: dict[str, float | str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    particles: ParticleSet = field(default_factory=default_particle_set)
    distractors: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(DISTRACTOR_COLUMNS))
    )


def run_name(index: int) -> str:
    """Name of run ``index`` of a simulated project, e.g. ``sim_0003``."""
    return f"sim_{index:04d}"


def _check_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Return ``shape`` as three ints, each at least 16."""
    sizes = tuple(int(s) for s in shape)
    if len(sizes) != 3 or min(sizes) < 16:
        raise ValueError(f"shape must be 3 sizes >= 16 (Z, Y, X), got {sizes}")
    return (sizes[0], sizes[1], sizes[2])


def _truth_picks(
    name: str, sample: Sample, spacing_A: float, particles: ParticleSet
) -> pd.DataFrame:
    """Return the simulated particles as a picks table, in Å, with their orientations."""
    from cryopick.core.picks import make_picks

    transforms = np.tile(np.eye(4), (len(sample.particle_types), 1, 1))
    transforms[:, :3, :3] = sample.rotations_xyz
    return make_picks(
        name,
        sample.particle_types,
        voxels_to_angstrom(sample.centres_zyx, spacing_A),
        transformation=transforms,
        particles=particles,
    )


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
    shape, spacing_A : tuple of int, float
        Tomogram shape (Z, Y, X) in voxels and voxel size in Å.
    seed : int or numpy.random.SeedSequence
        Seed of the run's random generator; the same seed gives the same run.
    name : str
        Run name.
    particles, distractors : ParticleSet or None, str or Path
        The types to simulate (default: the CZII six) and ``"default"``, ``"none"`` or a
        particles file of distractor maps (:func:`cryopick.simulate.library.prepare_library`).
    library : SpecimenLibrary, optional
        Densities already prepared for ``spacing_A`` (``simulate_project`` makes them once
        for all its runs); replaces ``particles`` and ``distractors``.

    Raises
    ------
    InputError
        If a particle's or distractor's map/model is invalid, or a particle is wider than
        the tomogram.
    """
    config = get_preset(preset)
    shape = _check_shape(shape)
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
    picks = _truth_picks(name, sample, spacing_A, library.particles)
    summary: dict[str, float | str] = {
        **params,
        "ice_thickness_A": sample.thickness_A,
        "n_targets": len(sample.particle_types),
        "n_distractors": sample.n_distractors,
        "n_vesicles": sample.n_vesicles,
        **sample.info.get("extras", {}),
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
        distractors=_distractor_table(sample, spacing_A),
    )


def _distractor_table(sample: Sample, spacing_A: float) -> pd.DataFrame:
    """Where the sample's distractors went: kind, name and box centre in Å."""
    z, y, x = voxels_to_angstrom(sample.distractor_centres_zyx, spacing_A).reshape(-1, 3).T
    names = {"kind": sample.distractor_kinds, "name": sample.distractor_names}
    return pd.DataFrame({**names, "x": x, "y": y, "z": z})
