"""Procedurally generated crowders: random assemblies of overlapping ellipsoidal blobs.

Besides the PDB-derived distractors (:mod:`cryopick.simulate.distractors`), a run may
fill part of its crowding volume with shapes no protein database holds, so a picker
cannot learn the distractor set by heart:

* :func:`make_crowder`: 1 to ``max_blobs`` overlapping ellipsoids in one of four
  families (``globular`` lumps, ``elongated`` curved rods, ``branched`` trees,
  hollow ``shell`` s with lobes), overall diameter drawn log-uniformly from ``size_A``;
* :func:`make_hard_negative`: an assembly whose radius of gyration equals a target's
  and whose volume is close to it (best of a few shapes): the size of the particle,
  another shape.

Densities are protein-like (interior 1, smooth one-voxel edges, like the templates).
:func:`crowder_pool` makes a run's pool; :func:`flip_and_permute` gives each paste one
of 48 axis orientations cheaply. Nothing here draws from a generator unless the
config turns crowders on (:attr:`ProceduralCrowders.enabled`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy.spatial.transform import Rotation

from cryopick.core.errors import InputError
from cryopick.core.particles import default_particle_set
from cryopick.simulate.distractors import (
    SIMILAR_CORRELATION,
    SIZE_TOLERANCE,
    axis_view_correlation,
)
from cryopick.simulate.templates import support_mask

if TYPE_CHECKING:
    from cryopick.simulate.library import SpecimenLibrary, TargetTemplate

Range = tuple[float, float]
ShapeName = Literal["globular", "elongated", "branched", "shell", "ring"]
SHAPES: tuple[ShapeName, ...] = ("globular", "elongated", "branched", "shell")
"""The default families ("ring", added later, is asked for by name: earlier seeds
simulate as before)."""
MIN_SHELL_VOX = 1.5  # thinnest shell wall, so a small shell keeps a visible wall
_HARD_NEGATIVE_TRIES = 6
_VOLUME_TOLERANCE = 0.15  # a hard negative's support volume within 15 % ends the search
_DISTINCT_TRIES = 4


class ProceduralCrowders(BaseModel):
    """Settings of the procedural crowders (off while ``fraction`` is ``(0, 0)``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fraction: Range = Field((0.0, 0.0), description="share of the crowding volume, per run")
    size_A: Range = Field((30.0, 300.0), description="overall diameter, log-uniform per shape")
    max_blobs: int = Field(8, ge=1, le=16, description="ellipsoids per crowder: 1 to this")
    shapes: tuple[ShapeName, ...] = Field(SHAPES, min_length=1)
    n_shapes: int = Field(24, ge=1, le=500, description="distinct crowders made per run")
    hard_negative_fraction: float = Field(
        0.0, ge=0, le=1, description="share of the procedural volume sized like targets"
    )
    hard_negative_types: tuple[str, ...] = Field(
        (), description="targets whose size hard negatives take (empty: every type)"
    )
    n_hard_negative_shapes: int = Field(4, ge=1, le=100, description="per type, per run")

    @field_validator("fraction", "size_A")
    @classmethod
    def _check_range(cls, value: Range) -> Range:
        if not 0 <= value[0] <= value[1]:
            raise ValueError(f"need 0 <= low <= high, got {value}")
        return value

    @field_validator("fraction")
    @classmethod
    def _check_fraction(cls, value: Range) -> Range:
        if value[1] > 1:
            raise ValueError("fractions must lie in [0, 1]")
        return value

    @field_validator("size_A")
    @classmethod
    def _check_size(cls, value: Range) -> Range:
        if value[0] <= 0:
            raise ValueError("sizes must be positive")
        return value

    @property
    def enabled(self) -> bool:
        """Whether runs place procedural crowders."""
        return self.fraction[1] > 0


@dataclass
class Blobs:
    """Ellipsoids in a common frame (voxels, (z, y, x)).

    Attributes
    ----------
    centres : numpy.ndarray, shape (n, 3)
    axes : numpy.ndarray, shape (n, 3)
        Semi-axes along each ellipsoid's own (z, y, x) axes.
    rotations : numpy.ndarray, shape (n, 3, 3)
        Own frame -> common frame.
    shells : numpy.ndarray, shape (n,)
        Wall thickness as a fraction of the mean semi-axis; 0 = solid.
    """

    centres: NDArray[np.float64]
    axes: NDArray[np.float64]
    rotations: NDArray[np.float64]
    shells: NDArray[np.float64]

    def scaled(self, factor: float) -> Blobs:
        """Return the assembly enlarged ``factor`` times about the origin."""
        return Blobs(self.centres * factor, self.axes * factor, self.rotations, self.shells)

    def extent(self) -> float:
        """Largest distance from the origin to a blob's surface (an upper bound)."""
        return float((np.linalg.norm(self.centres, axis=1) + self.axes.max(axis=1)).max())


def render_ellipsoids(blobs: Blobs, cube: bool = True) -> NDArray[np.float32]:
    """Rasterise the union of smooth ellipsoids (interior 1, edges soft over one voxel).

    Parameters
    ----------
    blobs : Blobs
        The ellipsoids, in voxels.
    cube : bool
        A cubic box (like the templates'); else each side just holds the blobs.

    Returns
    -------
    numpy.ndarray, float32
        An odd-sized box, its centre voxel ``(n - 1) / 2`` at the frame origin.
    """
    # half-width of each rotated ellipsoid along each axis
    reach = np.sqrt(((blobs.rotations * blobs.axes[:, None, :]) ** 2).sum(axis=2))
    half = np.ceil((np.abs(blobs.centres) + reach).max(axis=0) + 2).astype(int)
    if cube:
        half[:] = half.max()
    out = np.zeros(tuple(2 * half + 1), np.float32)
    for c, a, rot, shell, r in zip(
        blobs.centres, blobs.axes, blobs.rotations, blobs.shells, reach, strict=True
    ):
        lo = np.maximum(np.floor(c - r).astype(int) - 1 + half, 0)
        hi = np.minimum(np.ceil(c + r).astype(int) + 2 + half, 2 * half + 1)
        grid = np.mgrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.float32)
        offsets = grid.reshape(3, -1) - (half + c)[:, None].astype(np.float32)
        local = rot.T.astype(np.float32) @ offsets
        rho = np.sqrt(((local / a[:, None].astype(np.float32)) ** 2).sum(axis=0))
        dist = (rho - 1) * np.float32(a.mean())  # ~ distance outside the surface
        value = 0.5 - dist
        if shell > 0:
            wall = max(shell * a.mean(), MIN_SHELL_VOX)
            value = np.minimum(value, dist + wall + 0.5)
        box = out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        np.maximum(box, np.clip(value, 0, 1).reshape(box.shape), out=box)
    return out


def _rotations(n: int, rng: np.random.Generator) -> NDArray[np.float64]:
    return np.asarray(Rotation.random(n, random_state=rng).as_matrix()).reshape(n, 3, 3)


def _random_axes(n: int, low: float, high: float, rng: np.random.Generator) -> NDArray:
    """Semi-axes: a size per blob times an aspect per axis (0.6-1.5)."""
    return rng.uniform(low, high, size=(n, 1)) * rng.uniform(0.6, 1.5, size=(n, 3))


def _layout(shape: ShapeName, n: int, rng: np.random.Generator) -> Blobs:
    """One assembly of ``n`` blobs of a family, in arbitrary units, randomly oriented."""
    shells = np.zeros(n)
    rotations = _rotations(n, rng)
    if shape == "globular":
        centres = rng.normal(0.0, 0.35, size=(n, 3))
        axes = _random_axes(n, 0.35, 0.6, rng)
    elif shape == "elongated":
        t = np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
        bend = rng.uniform(-0.5, 0.5, size=2)
        centres = np.stack([bend[0] * t**2, bend[1] * t**2, t], axis=1)
        width = rng.uniform(0.15, 0.35)
        length = max(1.4 / n, width) * rng.uniform(0.9, 1.3)
        axes = np.tile([width, width, length if n > 1 else 3 * width], (n, 1))
        rotations = np.tile(np.eye(3), (n, 1, 1))  # along the rod
    elif shape == "branched":
        axes = _random_axes(n, 0.2, 0.4, rng)
        centres = np.zeros((n, 3))
        for i in range(1, n):
            parent = int(rng.integers(i))
            step = rng.normal(size=3)
            distance = (axes[parent].mean() + axes[i].mean()) * rng.uniform(0.6, 0.95)
            centres[i] = centres[parent] + step / np.linalg.norm(step) * distance
    elif shape == "ring":
        centres, axes = _ring_layout(n, rng)
    else:  # a hollow shell with lobes on its surface
        axes = _random_axes(n, 0.12, 0.3, rng)
        axes[0] = rng.uniform(0.85, 1.15, size=3)
        shells[0] = rng.uniform(0.2, 0.45)
        direction = rng.normal(size=(n, 3))
        centres = direction / np.linalg.norm(direction, axis=1, keepdims=True)
        centres[0] = 0.0
    weights = axes.prod(axis=1)
    centres = centres - (weights[:, None] * centres).sum(axis=0) / weights.sum()
    turn = _rotations(1, rng)[0]
    return Blobs(centres @ turn.T, axes, turn @ rotations, shells)


def _ring_layout(n: int, rng: np.random.Generator) -> tuple[NDArray, NDArray]:
    """Return centres and semi-axes of blobs evenly spaced on a circle of radius 1.

    A ring of subunits, as chaperonins, proteasomes and pores have; half the assemblies of
    6 blobs or more are two stacked rings, half a step apart.
    """
    n_rings = 2 if n >= 6 and rng.random() < 0.5 else 1
    per_ring = int(np.ceil(n / n_rings))
    index = np.arange(n)
    ring = index // per_ring
    angle = 2 * np.pi * (index % per_ring + 0.5 * ring) / per_ring + rng.uniform(0, 2 * np.pi)
    height = (ring - 0.5 * (n_rings - 1)) * rng.uniform(0.5, 0.8)
    centres = np.stack([height, np.sin(angle), np.cos(angle)], axis=1)
    # neighbours touch or overlap a little: a blob's size follows the spacing on the circle
    size = np.clip(np.pi / max(per_ring, 2) * rng.uniform(0.9, 1.2), 0.2, 0.7)
    return centres, _random_axes(n, size, size * 1.1, rng)


def make_crowder(
    config: ProceduralCrowders, spacing_A: float, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Make one procedural crowder of overall diameter in ``config.size_A``.

    Returns
    -------
    numpy.ndarray, float32
        Density (interior 1) centred in its box, on the ``spacing_A`` grid.
    """
    shape = config.shapes[int(rng.integers(len(config.shapes)))]
    n = int(rng.integers(1, config.max_blobs + 1))
    low, high = np.log(config.size_A[0]), np.log(config.size_A[1])
    radius_vox = float(np.exp(rng.uniform(low, high))) / 2 / spacing_A
    blobs = _layout(shape, n, rng)
    return render_ellipsoids(blobs.scaled(radius_vox / blobs.extent()))


def gyration_radius(density: NDArray[np.float32]) -> float:
    """Density-weighted RMS distance from the density's centre of mass, in voxels."""
    grid = np.indices(density.shape).reshape(3, -1).astype(np.float64)
    weights = density.reshape(-1).astype(np.float64)
    mass = weights.sum()
    if mass <= 0:
        return 0.0
    com = grid @ weights / mass
    return float(np.sqrt((((grid - com[:, None]) ** 2).sum(axis=0) * weights).sum() / mass))


def make_hard_negative(
    rg_vox: float,
    volume_vox: float,
    config: ProceduralCrowders,
    rng: np.random.Generator,
) -> NDArray[np.float32]:
    """Make an assembly of a target's radius of gyration and about its volume.

    Of up to :data:`_HARD_NEGATIVE_TRIES` random assemblies (2 to ``max_blobs`` blobs,
    ``config.shapes``), each scaled to ``rg_vox``, keeps the one whose support volume is
    closest to ``volume_vox``, then moves its blobs apart or together (keeping the radius
    of gyration) until the volume is within :data:`_VOLUME_TOLERANCE` (3 steps at most).

    Parameters
    ----------
    rg_vox, volume_vox : float
        The target's radius of gyration (voxels) and support volume (voxels).
    config : ProceduralCrowders
        Families and the largest number of blobs.
    rng : numpy.random.Generator
        The run's generator.
    """
    best, best_error = None, np.inf
    for _ in range(_HARD_NEGATIVE_TRIES):
        shape = config.shapes[int(rng.integers(len(config.shapes)))]
        blobs = _layout(shape, int(rng.integers(2, max(config.max_blobs, 2) + 1)), rng)
        blobs, error = _fit_size(blobs.scaled(1.3 * rg_vox / blobs.extent()), rg_vox, volume_vox)
        if abs(error) < abs(best_error):
            best, best_error = blobs, error
        if abs(best_error) < _VOLUME_TOLERANCE:
            break
    assert best is not None
    for _ in range(3):
        if abs(best_error) < _VOLUME_TOLERANCE:
            break
        # blobs further apart (closer): less (more) volume at the same radius of gyration
        centres = best.centres * np.exp(best_error)
        best, best_error = _fit_size(
            Blobs(centres, best.axes, best.rotations, best.shells), rg_vox, volume_vox
        )
    return render_ellipsoids(best)


def _fit_size(blobs: Blobs, rg_vox: float, volume_vox: float) -> tuple[Blobs, float]:
    """Scale an assembly to a radius of gyration; return it and log(its volume / volume_vox)."""
    density = render_ellipsoids(blobs)
    factor = rg_vox / max(gyration_radius(density), 1e-6)
    # the volume grows as the cube of the scale (up to the one-voxel edge)
    error = float(np.log(support_mask(density).sum() * factor**3 / volume_vox))
    return blobs.scaled(factor), error


def imitated_targets(config: ProceduralCrowders, library: SpecimenLibrary) -> list[TargetTemplate]:
    """Return the targets whose size hard negatives take (all, if none named is simulated).

    Names and aliases of the simulated set are resolved; a CZII name the set does not
    hold is skipped.

    Raises
    ------
    InputError
        If a name is neither a type of the set nor a CZII type.
    """
    particles = library.particles
    names = set()
    for name in config.hard_negative_types:
        if name in particles:
            names.add(particles.resolve(name))
        elif name not in default_particle_set():
            raise InputError(
                None,
                f"simulator settings: hard_negative_types names '{name}', which is not a "
                f"particle type of this simulation ({', '.join(particles.names)})",
            )
    chosen = [t for t in library.targets if t.name in names]
    return chosen or list(library.targets)


def crowder_pool(
    config: ProceduralCrowders,
    library: SpecimenLibrary,
    spacing_A: float,
    rng: np.random.Generator,
) -> tuple[list[NDArray[np.float32]], list[NDArray[np.float32]]]:
    """Make a run's procedural crowders and hard negatives, none of them like a target.

    A crowder or hard negative whose radius of gyration is within 10 % of a target's and
    that correlates above :data:`~cryopick.simulate.distractors.SIMILAR_CORRELATION` with
    it in some axis orientation (an apo-ferritin-sized hollow shell, say) is remade, up to
    :data:`_DISTINCT_TRIES` times, else left out.

    Returns
    -------
    crowders, hard_negatives : list of numpy.ndarray
        Up to ``config.n_shapes`` crowders; up to ``config.n_hard_negative_shapes`` per
        imitated target (none when ``hard_negative_fraction`` is 0).
    """
    references = [(d, gyration_radius(d)) for t in library.targets for d in t.on_grid()[:1]]
    make = partial(make_crowder, config, spacing_A, rng)
    crowders = _distinct(make, config.n_shapes, references)
    hard: list[NDArray[np.float32]] = []
    if config.hard_negative_fraction > 0:
        for target in imitated_targets(config, library):
            density = target.on_grid()[0]
            rg, volume = gyration_radius(density), float(support_mask(density).sum())
            make = partial(make_hard_negative, rg, volume, config, rng)
            hard += _distinct(make, config.n_hard_negative_shapes, references)
    return crowders, hard


def _distinct(
    make: Callable[[], NDArray[np.float32]],
    n: int,
    references: list[tuple[NDArray[np.float32], float]],
) -> list[NDArray[np.float32]]:
    """Up to ``n`` densities from ``make``, none resembling a reference (density, Rg)."""
    out = []
    for _ in range(n):
        for _ in range(_DISTINCT_TRIES):
            density = make()
            rg = gyration_radius(density)
            if not any(
                abs(rg - ref_rg) <= SIZE_TOLERANCE * max(rg, ref_rg)
                and axis_view_correlation(density, ref) > SIMILAR_CORRELATION
                for ref, ref_rg in references
            ):
                out.append(density)
                break
    return out


def flip_and_permute(arrays: tuple[NDArray, ...], rng: np.random.Generator) -> tuple[NDArray, ...]:
    """Return views of the arrays with one random axis order and flips (48 orientations)."""
    order = rng.permutation(3)
    flips = rng.integers(0, 2, size=3)
    index = tuple(slice(None, None, -1) if f else slice(None) for f in flips)
    return tuple(np.transpose(a, order)[index] for a in arrays)
