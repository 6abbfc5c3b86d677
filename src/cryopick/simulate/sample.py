"""The specimen: an ice slab with vesicles, target particles and crowding distractors.

Builds the electrostatic potential (in volts, on the output grid) of one run, the
multi-label segmentation of the targets and their true centres and orientations.
Optional artefacts (gold, carbon, contamination: :mod:`cryopick.simulate.artefacts`) and
procedural crowders (:mod:`cryopick.simulate.crowders`) join it when the config's
``extras`` turn them on. Particles are placed by rejection sampling on an occupancy
grid: a particle's support (its binarised, rotated map, lumen filled) may not touch any
voxel already taken by another particle, a vesicle, an artefact or the vacuum outside
the slab.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from cryopick.core.particles import SIMULATION_SPACING_RANGE_A
from cryopick.simulate.artefacts import Canvas, add_artefacts
from cryopick.simulate.library import SpecimenLibrary, prepare_library
from cryopick.simulate.placement import fill_distractors, random_centre, try_place
from cryopick.simulate.presets import SimulationConfig, cluster_fractions, draw_counts
from cryopick.simulate.templates import rotate_template, rotation_xyz_to_zyx, support_mask

MEMBRANE_LEAFLET_SEP_A = 40.0
MEMBRANE_LEAFLET_SIGMA_A = 7.0
_MAX_TRIES = 60


@dataclass
class Sample:
    """One run's specimen.

    Attributes
    ----------
    potential : numpy.ndarray, shape (Z, Y, X), float32
        Potential in volts (vacuum 0).
    labels : numpy.ndarray, shape (Z, Y, X), uint8
        Multi-label segmentation of the targets (particle labels, 0 = background).
    centres_zyx : numpy.ndarray, shape (N, 3)
        True target centres in voxels.
    particle_types : list of str
        Particle name of each target.
    rotations_xyz : numpy.ndarray, shape (N, 3, 3)
        Rotation of each target (template -> tomogram frame) acting on (x, y, z) vectors.
    slab_fraction : numpy.ndarray, shape (Z, Y, X), float32
        How much of each voxel is ice (0 = vacuum).
    thickness_A : float
        Ice thickness along the beam at zero tilt.
    distractor_centres_zyx : numpy.ndarray, shape (M, 3)
        Centres of the crowding distractors' boxes in voxels (not truth: no particle of a
        target type; for finding out what false picks sit on, or sampling hard negatives).
    distractor_kinds : list of str
        Kind of each: ``small``, ``large``, ``procedural`` or ``hard`` (hard negatives).
    distractor_names : list of str
        Name of each: the map's key, ``blob``, ``crowder`` or ``hard-negative``.
    n_vesicles : int
        Number of vesicles.
    info : dict
        ``counts_drawn`` (targets per class) and ``extras`` (gold beads, carbon edge,
        contamination blobs, procedural crowders and hard negatives placed).
    """

    potential: NDArray[np.float32]
    labels: NDArray[np.uint8]
    centres_zyx: NDArray[np.float64]
    particle_types: list[str]
    rotations_xyz: NDArray[np.float64]
    slab_fraction: NDArray[np.float32]
    thickness_A: float
    n_vesicles: int = 0
    distractor_centres_zyx: NDArray[np.float64] = field(
        default_factory=lambda: np.zeros((0, 3), np.float64)
    )
    distractor_kinds: list[str] = field(default_factory=list)
    distractor_names: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def n_distractors(self) -> int:
        """Number of crowding proteins placed."""
        return len(self.distractor_names)


def _make_slab(
    shape: tuple[int, int, int], params: dict, rng: np.random.Generator
) -> tuple[NDArray[np.float32], float, NDArray[np.float64]]:
    """Fraction of each voxel inside a tilted ice slab (soft by one voxel).

    Also returns its thickness and the Z of its lower and upper surface per column,
    shape (2, Y, X).
    """
    nz, ny, nx = shape
    thickness = params["ice_thickness_fraction"] * nz
    centre = (nz - 1) / 2 + params["ice_offset_fraction"] * nz
    tilt = np.deg2rad(params["ice_tilt_deg"])
    direction = rng.uniform(0, 2 * np.pi)
    y = (np.arange(ny) - (ny - 1) / 2)[:, None]
    x = (np.arange(nx) - (nx - 1) / 2)[None, :]
    mid = centre + np.tan(tilt) * (np.cos(direction) * x + np.sin(direction) * y)
    z = np.arange(nz, dtype=np.float32)[:, None, None]
    distance = np.abs(z - mid[None].astype(np.float32)) - thickness / 2
    surfaces = np.stack([mid - thickness / 2, mid + thickness / 2])
    return np.clip(0.5 - distance, 0, 1).astype(np.float32), float(thickness), surfaces


def _add_vesicles(
    potential: NDArray[np.float32],
    occupied: NDArray[np.bool_],
    config: SimulationConfig,
    params: dict,
    spacing_A: float,
    z_range: tuple[float, float],
    rng: np.random.Generator,
) -> int:
    """Lipid-bilayer vesicles (two dense leaflets 4 nm apart); their inside is occupied."""
    area_um2 = potential.shape[1] * potential.shape[2] * (spacing_A * 1e-4) ** 2
    n = int(rng.poisson(params["vesicles_per_um2"] * area_um2))
    amplitude = config.membrane_contrast * config.protein_contrast_V
    sigma = MEMBRANE_LEAFLET_SIGMA_A / spacing_A
    sep = MEMBRANE_LEAFLET_SEP_A / spacing_A
    placed = 0
    for _ in range(n):
        radius = rng.uniform(*config.vesicle_radius_A) / spacing_A
        axes = radius * rng.uniform(0.8, 1.2, size=3)
        rot = Rotation.random(random_state=rng).as_matrix()
        half = int(np.ceil(axes.max() + 3 * sigma + 2))
        grid = np.mgrid[-half : half + 1, -half : half + 1, -half : half + 1].reshape(3, -1)
        local = rot.T @ grid
        rho = np.sqrt(((local / axes[:, None]) ** 2).sum(axis=0))
        dist = ((rho - 1) * axes.mean()).reshape((2 * half + 1,) * 3)  # >0 outside
        profile = np.exp(-0.5 * (dist / sigma) ** 2) + np.exp(-0.5 * ((dist + sep) / sigma) ** 2)
        body = dist < 2 * sigma
        # centres may lie beyond the slab faces: those vesicles are cut by the ice surface
        zlo, zhi = z_range
        centre = random_centre(potential.shape, (zlo - radius / 2, zhi + radius / 2), rng)
        sl = try_place(occupied, body, centre)
        if sl is None:
            continue
        vol_sl, box_sl = sl
        potential[vol_sl] += amplitude * profile[box_sl].astype(np.float32)
        occupied[vol_sl] |= body[box_sl]
        placed += 1
    return placed


def _candidate_centres(
    shape: tuple[int, int, int],
    z_range: tuple[float, float],
    anchors: list[tuple[NDArray, float]],
    radius_vox: float,
    cluster_p: float,
    rng: np.random.Generator,
) -> Iterator[NDArray[np.int64]]:
    """Yield trial centres: beside a placed particle of the same class, else anywhere."""
    clustered = bool(anchors) and rng.random() < cluster_p
    for attempt in range(_MAX_TRIES):
        if clustered and attempt < _MAX_TRIES // 2:
            anchor, anchor_radius = anchors[int(rng.integers(len(anchors)))]
            direction = rng.normal(size=3)
            distance = (anchor_radius + radius_vox) * rng.uniform(0.7, 1.0)
            centre = np.floor(anchor + direction / np.linalg.norm(direction) * distance)
            if np.all(centre >= 0) and np.all(centre < shape):  # truth stays inside the volume
                yield centre.astype(np.int64)
        else:
            yield random_centre(shape, z_range, rng)


def _place_targets(
    potential: NDArray[np.float32],
    occupied: NDArray[np.bool_],
    labels: NDArray[np.uint8],
    counts: dict[str, int],
    config: SimulationConfig,
    z_range: tuple[float, float],
    rng: np.random.Generator,
    library: SpecimenLibrary,
) -> tuple[list[NDArray], list[str], list[NDArray]]:
    """Place the targets, largest first, in random orientations; return their truth."""
    clustering = cluster_fractions(config, library.particles)
    order = sorted(library.targets, key=lambda t: -t.radius_out_vox)
    centres, types, rotations = [], [], []
    for target in order:
        anchors: list[tuple[NDArray, float]] = []
        for _ in range(counts[target.name]):
            tpl = target.maps[0]
            if len(target.maps) > 1 and rng.random() < config.alternate_fraction:
                tpl = target.maps[1]
            rot_xyz = Rotation.random(random_state=rng).as_matrix()
            shift = rng.uniform(-0.5, 0.5, size=3)
            rot_zyx = rotation_xyz_to_zyx(rot_xyz)
            density = rotate_template(tpl.density, rot_zyx, shift, target.zoom)
            mask = support_mask(density)
            radius = tpl.radius_vox * target.zoom
            cluster_p = clustering.get(target.name, 0.0)
            for centre in _candidate_centres(
                potential.shape, z_range, anchors, radius, cluster_p, rng
            ):
                sl = try_place(occupied, mask, centre)
                if sl is not None:
                    break
            else:
                continue
            vol_sl, box_sl = sl
            potential[vol_sl] += config.protein_contrast_V * density[box_sl]
            occupied[vol_sl] |= mask[box_sl]
            labels[vol_sl][mask[box_sl]] = target.label
            centres.append(centre + shift)
            types.append(target.name)
            rotations.append(rot_xyz)
            anchors.append((centre + shift, radius))
    return centres, types, rotations


def build_sample(
    config: SimulationConfig,
    params: dict,
    shape: tuple[int, int, int],
    spacing_A: float,
    rng: np.random.Generator,
    library: SpecimenLibrary | None = None,
) -> Sample:
    """Build one run's specimen potential, labels and truth.

    Parameters
    ----------
    config : SimulationConfig
        Simulator settings.
    params : dict
        This run's drawn settings (:func:`cryopick.simulate.presets.draw_run_params`).
    shape, spacing_A : tuple of int, float
        Volume shape (Z, Y, X) and voxel size in Å.
    rng : numpy.random.Generator
        The run's random generator.
    library : SpecimenLibrary, optional
        Densities at ``spacing_A`` (:func:`cryopick.simulate.library.prepare_library`);
        default: the CZII six with the default distractors.

    Returns
    -------
    Sample
    """
    library = _checked_library(library, spacing_A)
    slab, thickness, surfaces_z = _make_slab(shape, params, rng)
    potential = np.zeros(shape, np.float32)
    occupied = np.zeros(shape, bool)
    labels = np.zeros(shape, np.uint8)
    z_lo = float(np.argmax(slab.mean(axis=(1, 2)) > 0.01))
    z_range = (
        z_lo,
        z_lo + thickness + abs(np.tan(np.deg2rad(params["ice_tilt_deg"]))) * max(shape[1:]),
    )
    n_vesicles = _add_vesicles(potential, occupied, config, params, spacing_A, z_range, rng)
    potential *= slab
    extras = {"carbon_edge": 0.0, "gold_beads": 0.0, "contamination_blobs": 0.0}
    if config.extras.artefacts_enabled:  # before the targets, which then avoid them
        volts = (config.protein_contrast_V, config.ice_potential_V)
        canvas = Canvas(potential, occupied, slab, surfaces_z, spacing_A, *volts)
        extras = add_artefacts(canvas, config.extras, rng)
    occupied |= slab < 0.99  # vacuum and the soft surface are off limits to particles

    counts = draw_counts(config, float(np.prod(shape)) * spacing_A**3, rng, library.particles)
    centres, types, rotations = _place_targets(
        potential, occupied, labels, counts, config, z_range, rng, library
    )

    ice_voxels = float(slab.sum())
    placed = fill_distractors(
        potential, occupied, config, params, ice_voxels, z_range, rng, spacing_A, library
    )
    extras.update(
        procedural_crowders=float(len(placed["procedural"])),
        hard_negatives=float(len(placed["hard"])),
    )
    distractors = [(kind, name, c) for kind, items in placed.items() for name, c in items]
    ice = config.ice_potential_V * slab
    if config.solvent_noise > 0:
        ice *= 1 + config.solvent_noise * rng.standard_normal(shape, dtype=np.float32)
    potential += ice
    return Sample(
        potential=potential,
        labels=labels,
        centres_zyx=np.array(centres, dtype=np.float64).reshape(-1, 3),
        particle_types=types,
        rotations_xyz=np.array(rotations, dtype=np.float64).reshape(-1, 3, 3),
        slab_fraction=slab,
        thickness_A=thickness * spacing_A,
        n_vesicles=n_vesicles,
        distractor_centres_zyx=np.array([c for *_, c in distractors], np.float64).reshape(-1, 3),
        distractor_kinds=[kind for kind, _, _ in distractors],
        distractor_names=[name for _, name, _ in distractors],
        info={"counts_drawn": counts, "extras": extras},
    )


def _checked_library(library: SpecimenLibrary | None, spacing_A: float) -> SpecimenLibrary:
    """Return the library for ``spacing_A`` (the default one if None), checking the size."""
    low_A, high_A = SIMULATION_SPACING_RANGE_A
    if not low_A <= spacing_A <= high_A:
        raise ValueError(
            f"spacing_A must lie in {low_A:g}..{high_A:g} Å (templates are 10 Å maps), "
            f"got {spacing_A}"
        )
    if library is None:
        return prepare_library(None, spacing_A)
    if library.spacing_A != spacing_A:
        raise ValueError(f"library is for {library.spacing_A} Å voxels, not {spacing_A} Å")
    return library
