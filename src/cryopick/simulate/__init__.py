"""Physics-based simulation of cryo-ET tomograms with ground truth.

Stages, one module each: :mod:`~cryopick.simulate.templates` (density maps),
:mod:`~cryopick.simulate.user_maps` (densities of a user's maps and models),
:mod:`~cryopick.simulate.library` (the targets of a particle set),
:mod:`~cryopick.simulate.distractors` (the crowding proteins),
:mod:`~cryopick.simulate.artefacts` (gold fiducials, carbon film, ice contamination),
:mod:`~cryopick.simulate.crowders` (procedural crowders and hard negatives),
:mod:`~cryopick.simulate.placement` (free space, crowding distractors and where they went),
:mod:`~cryopick.simulate.sample` (ice, vesicles, targets),
:mod:`~cryopick.simulate.imaging` (tilt series, CTF, dose, noise),
:mod:`~cryopick.simulate.reconstruct` (WBP and the portal's tomogram types),
:mod:`~cryopick.simulate.project` (runs and copick projects), configured by
:mod:`~cryopick.simulate.presets`.
"""

from cryopick.simulate.artefacts import SpecimenExtras
from cryopick.simulate.presets import PRESETS, SimulationConfig, get_preset
from cryopick.simulate.project import (
    SimulatedRun,
    read_simulated_distractors,
    simulate_project,
    simulate_run,
)

__all__ = [
    "PRESETS",
    "SimulatedRun",
    "SimulationConfig",
    "SpecimenExtras",
    "get_preset",
    "read_simulated_distractors",
    "simulate_project",
    "simulate_run",
]
