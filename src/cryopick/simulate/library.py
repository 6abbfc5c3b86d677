"""The densities one simulation places: its target types and its distractors.

:func:`prepare_library` builds them once per simulation (a project's runs share them):

* a built-in CZII type (a spec without ``map``/``model``) uses the packaged template at
  10 Å and its alternate model (:mod:`cryopick.simulate.templates`), zoomed to the grid
  when placed;
* any other type gets its density from its map or model at the simulation voxel size
  (:func:`cryopick.simulate.user_maps.density_for`); a spec without ``radius_A`` takes
  the measured radius, a given one must be within a factor 2 of it
  (:func:`cryopick.core.particles_file.check_radius`);
* the distractors (:func:`cryopick.simulate.distractors.load_distractors`) leave out
  every map that is one of the targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from cryopick.core.errors import InputError
from cryopick.core.particles import (
    ParticleSet,
    ParticleSpec,
    default_particle_set,
    resolve_particle_set,
)
from cryopick.simulate.distractors import DistractorLibrary, load_distractors
from cryopick.simulate.templates import (
    TEMPLATE_SPACING_A,
    Template,
    load_templates,
    rotate_template,
    support_radius_vox,
)


@dataclass(frozen=True)
class TargetTemplate:
    """A target type's density maps.

    Attributes
    ----------
    name : str
        Particle name (of the simulated set).
    label : int
        Its segmentation label.
    maps : tuple of Template
        The main map, then an alternate model if the type has one (built-in types).
    zoom : float
        Simulation voxels per template voxel (1 for a user's map or model).
    builtin : bool
        A packaged CZII template (False: the user's map or model).
    """

    name: str
    label: int
    maps: tuple[Template, ...]
    zoom: float
    builtin: bool

    @property
    def radius_out_vox(self) -> float:
        """Radius of the main map's support in simulation voxels."""
        return self.maps[0].radius_vox * self.zoom

    def on_grid(self) -> list[NDArray[np.float32]]:
        """Return the maps resampled to the simulation grid, unrotated."""
        if self.zoom == 1:
            return [m.density for m in self.maps]
        return [rotate_template(m.density, np.eye(3), zoom=self.zoom) for m in self.maps]


@dataclass(frozen=True)
class SpecimenLibrary:
    """Everything a simulation places, at one voxel size.

    Attributes
    ----------
    particles : ParticleSet
        The simulated types, every radius known (measured where not given).
    targets : tuple of TargetTemplate
        One per type, in label order.
    distractors : DistractorLibrary
        The crowding proteins (none of them a target).
    spacing_A : float
        Voxel size in Å the library was built for.
    """

    particles: ParticleSet
    targets: tuple[TargetTemplate, ...]
    distractors: DistractorLibrary
    spacing_A: float


def prepare_library(
    particles: ParticleSet | None = None,
    spacing_A: float = 10.0,
    distractors: str | Path = "default",
) -> SpecimenLibrary:
    """Build the target and distractor densities of a simulation.

    Parameters
    ----------
    particles : ParticleSet, optional
        The types to simulate (default: the CZII six).
    spacing_A : float
        Voxel size of the simulation in Å.
    distractors : str or Path
        ``"default"``, ``"none"`` or a particles file
        (:func:`cryopick.simulate.distractors.load_distractors`).

    Returns
    -------
    SpecimenLibrary

    Raises
    ------
    InputError
        If a map or model cannot be read or is empty, a given radius is more than 2x off
        the measured one, a type without map or model is not a built-in CZII type, or the
        distractors are invalid.
    """
    from cryopick.core.particles_file import check_radius

    particle_set = resolve_particle_set(particles)
    targets, measured = [], {}
    for spec in particle_set:
        if spec.source is None:
            targets.append(_builtin_target(spec, spacing_A))
            continue
        target, radius_A = _user_target(spec, spacing_A)
        check_radius(spec.source, spec, radius_A)
        targets.append(target)
        measured[spec.name] = radius_A
    if any(spec.radius_A is None for spec in particle_set):
        particle_set = particle_set.with_radii(measured)
    on_grid = {t.name: t.on_grid for t in targets}
    distractor_library = load_distractors(distractors, particle_set, on_grid, spacing_A)
    return SpecimenLibrary(particle_set, tuple(targets), distractor_library, float(spacing_A))


def _builtin_target(spec: ParticleSpec, spacing_A: float) -> TargetTemplate:
    """Return a CZII type's packaged template (and alternate model)."""
    if spec.name not in default_particle_set():
        raise InputError(
            None,
            f"particle '{spec.name}' has no map or model file and is not a built-in CZII type",
        )
    czii_name = default_particle_set().resolve(spec.name)
    templates = load_templates()
    maps = tuple(
        templates[key]
        for key in (f"target/{czii_name}", f"alternate/{czii_name}")
        if key in templates
    )
    return TargetTemplate(
        spec.name, int(spec.label or 0), maps, TEMPLATE_SPACING_A / spacing_A, builtin=True
    )


def _user_target(spec: ParticleSpec, spacing_A: float) -> tuple[TargetTemplate, float]:
    """Return a user's map or model on the simulation grid, and its measured radius in Å."""
    from cryopick.simulate.user_maps import density_for

    density, radius_A = density_for(spec, spacing_A)
    template = Template(
        f"user/{spec.name}",
        density,
        spec.name,
        support_radius_vox(density),
        spec.source.name if spec.source is not None else None,
    )
    return TargetTemplate(spec.name, int(spec.label or 0), (template,), 1.0, False), radius_A


def check_fits(library: SpecimenLibrary, shape: tuple[int, int, int]) -> None:
    """Raise if a user's particle is wider than the tomogram's smallest side.

    Raises
    ------
    InputError
        One line naming the particle, its diameter and the tomogram's size.
    """
    side = min(shape)
    for target in library.targets:
        diameter = 2 * target.radius_out_vox
        if not target.builtin and diameter > side:
            spacing = library.spacing_A
            raise InputError(
                library.particles.get(target.name).source,
                f"particle '{target.name}' is {diameter * spacing:.0f} Å across, larger than "
                f"the tomogram ({'x'.join(map(str, shape))} voxels of {spacing:g} Å, smallest "
                f"side {side * spacing:.0f} Å)",
            )


SIMULATION_BYTES_PER_VOXEL = 36
"""Peak resident memory of simulating one run, per voxel (measured 33: 0.49 GB for
92 x 315 x 315 voxels, 2.61 GB for 184 x 630 x 630, one run of the czii preset)."""
SIMULATION_BASE_BYTES = 300 * 1024**2


def check_simulation_memory(
    shape: tuple[int, int, int], available_bytes: int | None = None
) -> None:
    """Raise if simulating one run of ``shape`` needs more memory than is available.

    ``available_bytes`` defaults to :func:`cryopick.core.memory.measure_available_bytes`;
    nothing is checked where that is unknown.

    Raises
    ------
    InputError
        One line with the shape, the memory it needs and the memory available.
    """
    from cryopick.core.memory import format_gb, measure_available_bytes

    available = measure_available_bytes() if available_bytes is None else available_bytes
    needed = SIMULATION_BASE_BYTES + SIMULATION_BYTES_PER_VOXEL * math.prod(shape)
    if available is not None and needed > available:
        raise InputError(
            None,
            f"--shape {' '.join(map(str, shape))}: simulating a run of this size needs about "
            f"{format_gb(needed)} of memory, more than the {format_gb(available)} available; "
            "simulate a smaller volume",
        )
