"""Specimen artefacts that are not particles: gold fiducials, a carbon film, ice contamination.

Each is off by default and, while off, draws nothing from the run's generator (so
earlier simulations reproduce bit for bit). Their settings are :class:`SpecimenExtras`,
the ``extras`` field of :class:`cryopick.simulate.presets.SimulationConfig`, with the
procedural crowders (:mod:`cryopick.simulate.crowders`).

Potentials follow the simulator's convention: a material's ``contrast`` is its potential
above amorphous ice in units of ``protein_contrast_V``. Where an artefact lies in vacuum
(beyond the ice surface) the ice potential is added too, so its total potential is the
same inside and outside the ice. The mean inner potential of light-element solids scales
with mass density: the simulator's ice (0.94 g/cm³, 4.5 V) and protein (1.35 g/cm³,
6.5 V) both give ~4.8 V per g/cm³. Hence:

* amorphous carbon, ~2.0 g/cm³: ~9.6 V (measured 8-11 V), contrast
  ``(2.0 - 0.94) / (1.35 - 0.94) = 2.6``;
* gold: heavy atoms hold far less potential per unit mass, and its measured mean inner
  potential is ~20-30 V (electron holography of gold particles), not the ~90 V its
  19.3 g/cm³ would give; 25 V is ``(25 - 4.5) / 2 = 10`` times protein's contrast;
* ice contamination (crystalline ice, 0.92 g/cm³) is ice (contrast 0); real
  contamination images darker than its potential (Bragg-scattered electrons are lost),
  which a per-blob contrast of up to 1 imitates.

Artefacts are placed after the vesicles, before the targets and distractors, and mark
the occupancy grid, so no particle overlaps them; they are never labelled or picked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cryopick.simulate.crowders import Blobs, ProceduralCrowders, Range, render_ellipsoids

GOLD_CONTRAST = 10.0
CARBON_CONTRAST = 2.6
_TRIES = 10


def _check_positive_range(value: Range) -> Range:
    if not 0 < value[0] <= value[1]:
        raise ValueError(f"need 0 < low <= high, got {value}")
    return value


class GoldBeads(BaseModel):
    """Gold fiducials: spheres at the ice surfaces (off while ``probability`` is 0)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    probability: float = Field(0.0, ge=0, le=1, description="chance that a run has beads")
    per_um2: Range = Field((10.0, 60.0), description="beads per µm² of XY area, per run")
    diameter_A: Range = Field((50.0, 150.0), description="drawn per bead")
    surface_fraction: float = Field(0.85, ge=0, le=1, description="share at an ice surface")
    contrast: float = Field(GOLD_CONTRAST, ge=0, description="above ice, x protein_contrast_V")

    _check = field_validator("per_um2", "diameter_A")(_check_positive_range)


class CarbonFilm(BaseModel):
    """A carbon support film beyond a hole's edge, above or below the ice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    probability: float = Field(0.0, ge=0, le=1, description="chance that the edge is in view")
    thickness_A: Range = (100.0, 300.0)
    edge_radius_A: Range = Field(
        (5000.0, 50000.0), description="radius of the hole (curvature of the edge)"
    )
    contrast: float = Field(CARBON_CONTRAST, ge=0, description="above ice, x protein_contrast_V")

    _check = field_validator("thickness_A", "edge_radius_A")(_check_positive_range)


class IceContamination(BaseModel):
    """Large irregular blobs (crystalline ice, frost) resting on the ice surfaces."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    probability: float = Field(0.0, ge=0, le=1, description="chance that a run has any")
    count: tuple[int, int] = Field((1, 3), description="blobs per run (when present)")
    diameter_A: Range = Field((300.0, 2000.0), description="lateral size, per blob")
    contrast: Range = Field((0.0, 1.0), description="above ice, x protein_contrast_V, per blob")

    _check = field_validator("diameter_A")(_check_positive_range)

    @field_validator("count", "contrast")
    @classmethod
    def _check_order(cls, value: tuple) -> tuple:
        if not 0 <= value[0] <= value[1]:
            raise ValueError(f"need 0 <= low <= high, got {value}")
        return value


class SpecimenExtras(BaseModel):
    """Optional specimen elements; the defaults turn every one off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gold: GoldBeads = Field(default_factory=GoldBeads)
    carbon: CarbonFilm = Field(default_factory=CarbonFilm)
    contamination: IceContamination = Field(default_factory=IceContamination)
    crowders: ProceduralCrowders = Field(default_factory=ProceduralCrowders)

    @property
    def artefacts_enabled(self) -> bool:
        """Whether any of gold, carbon or contamination can appear."""
        return any(p.probability > 0 for p in (self.gold, self.carbon, self.contamination))


@dataclass
class Canvas:
    """The specimen being built, as the artefacts see it.

    Attributes
    ----------
    potential : numpy.ndarray, shape (Z, Y, X), float32
        Potential above ice (ice is added last), in volts; written in place.
    occupied : numpy.ndarray, shape (Z, Y, X), bool
        Occupancy grid of the sample (particles may not enter); written in place.
    slab_fraction : numpy.ndarray, shape (Z, Y, X), float32
        How much of each voxel is ice.
    surfaces_z : numpy.ndarray, shape (2, Y, X)
        Z (voxels) of the lower and upper ice surface of each column.
    spacing_A, protein_contrast_V, ice_potential_V : float
    blocked : numpy.ndarray, shape (Z, Y, X), bool
        What artefacts may not enter (set from ``occupied`` and the ice).
    """

    potential: NDArray[np.float32]
    occupied: NDArray[np.bool_]
    slab_fraction: NDArray[np.float32]
    surfaces_z: NDArray[np.float64]
    spacing_A: float
    protein_contrast_V: float
    ice_potential_V: float
    blocked: NDArray[np.bool_] = field(init=False)

    def __post_init__(self) -> None:
        # what artefacts may not enter: a vesicle's body may reach past the ice surface,
        # but only its part in the ice is there
        self.blocked = self.occupied & (self.slab_fraction > 0)

    def volts(self, contrast: float, region: tuple[slice, ...]) -> NDArray[np.float32]:
        """Potential of a unit fraction of material in ``region`` (ice added in vacuum)."""
        vacuum = 1 - self.slab_fraction[region]
        return np.float32(contrast * self.protein_contrast_V) + self.ice_potential_V * vacuum

    def stamp(self, fraction: NDArray[np.float32], centre_zyx: NDArray, contrast: float) -> bool:
        """Add a material's fraction map centred at ``centre_zyx`` if it touches nothing."""
        corner = np.round(centre_zyx).astype(np.int64) - np.array(fraction.shape) // 2
        sl = paste_slices(self.potential.shape, corner, fraction.shape)
        if sl is None:
            return False
        region, box = sl
        mask = fraction[box] > 0
        if np.any(self.blocked[region] & mask):
            return False
        self.potential[region] += fraction[box] * self.volts(contrast, region)
        self.blocked[region] |= mask
        self.occupied[region] |= mask
        return True


def paste_slices(
    shape: tuple[int, ...], corner: NDArray[np.int64], box: tuple[int, ...]
) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Slices of a volume and of a box placed with its first voxel at ``corner``.

    Returns None when the box lies wholly outside the volume.
    """
    vol_sl, box_sl = [], []
    for c, b, s in zip(corner, box, shape, strict=True):
        lo, hi = max(c, 0), min(c + b, s)
        if hi <= lo:
            return None
        vol_sl.append(slice(lo, hi))
        box_sl.append(slice(lo - c, hi - c))
    return tuple(vol_sl), tuple(box_sl)


def add_artefacts(
    canvas: Canvas, extras: SpecimenExtras, rng: np.random.Generator
) -> dict[str, float]:
    """Add the carbon film, gold beads and ice contamination a run draws.

    Returns
    -------
    dict
        ``carbon_edge`` (0 or 1), ``gold_beads`` and ``contamination_blobs`` placed.
    """
    info = {"carbon_edge": 0.0, "gold_beads": 0.0, "contamination_blobs": 0.0}
    if extras.carbon.probability > 0 and rng.random() < extras.carbon.probability:
        add_carbon_film(canvas, extras.carbon, rng)
        info["carbon_edge"] = 1.0
    if extras.gold.probability > 0 and rng.random() < extras.gold.probability:
        info["gold_beads"] = float(add_gold_beads(canvas, extras.gold, rng))
    contamination = extras.contamination
    if contamination.probability > 0 and rng.random() < contamination.probability:
        info["contamination_blobs"] = float(add_ice_contamination(canvas, contamination, rng))
    return info


def _surface_point(
    canvas: Canvas, yx: NDArray, side: int, offset_vox: float
) -> NDArray[np.float64]:
    """(z, y, x) at ``offset_vox`` outside the lower (side 0) or upper (1) ice surface."""
    iy, ix = np.clip(yx.astype(int), 0, np.array(canvas.surfaces_z.shape[1:]) - 1)
    z = canvas.surfaces_z[side, iy, ix] + (offset_vox if side else -offset_vox)
    return np.array([z, yx[0], yx[1]])


def add_gold_beads(canvas: Canvas, gold: GoldBeads, rng: np.random.Generator) -> int:
    """Place gold spheres, mostly at an ice surface; return how many were placed.

    The number is Poisson with mean ``per_um2`` (drawn per run) times the XY area; each
    bead has a diameter from ``diameter_A`` and is tried at up to 10 positions. A share
    ``surface_fraction`` is centred from one radius inside an ice surface to half a
    radius outside it, the others anywhere in the ice.
    """
    _, ny, nx = canvas.potential.shape
    area_um2 = ny * nx * (canvas.spacing_A * 1e-4) ** 2
    n = int(rng.poisson(rng.uniform(*gold.per_um2) * area_um2))
    placed = 0
    for _ in range(n):
        radius = rng.uniform(*gold.diameter_A) / 2 / canvas.spacing_A
        for _ in range(_TRIES):
            yx = rng.uniform(0, (ny, nx))
            if rng.random() < gold.surface_fraction:  # from just inside to a quarter out
                side = int(rng.integers(2))
                centre = _surface_point(canvas, yx, side, rng.uniform(-1.0, 0.5) * radius)
            else:
                low, high = canvas.surfaces_z[:, int(yx[0]), int(yx[1])] + (radius, -radius)
                centre = np.array([rng.uniform(low, max(high, low)), *yx])
            bead = _sphere(radius, centre - np.round(centre))
            if canvas.stamp(bead, centre, gold.contrast):
                placed += 1
                break
    return placed


def _sphere(radius_vox: float, shift: NDArray) -> NDArray[np.float32]:
    """Fraction of each voxel inside a sphere centred ``shift`` (voxels) past the box centre."""
    half = int(np.ceil(radius_vox)) + 2
    grid = np.mgrid[-half : half + 1, -half : half + 1, -half : half + 1].astype(np.float32)
    r = np.sqrt(((grid - shift.astype(np.float32)[:, None, None, None]) ** 2).sum(axis=0))
    fraction: NDArray[np.float32] = np.clip(radius_vox - r + 0.5, 0, 1).astype(np.float32)
    return fraction


def add_carbon_film(canvas: Canvas, carbon: CarbonFilm, rng: np.random.Generator) -> None:
    """Cover the field beyond a hole's edge with a carbon layer on one ice surface.

    The edge is a circle of radius ``edge_radius_A`` (log-uniform: nearly straight to
    gently curved) through a random point of the central 70 % of the field, at a random
    angle; the film lies directly above or below the ice there (on the side with room
    for it in the volume, when the drawn side has none).
    """
    nz, ny, nx = canvas.potential.shape
    thickness = rng.uniform(*carbon.thickness_A) / canvas.spacing_A
    radius = np.exp(rng.uniform(*np.log(carbon.edge_radius_A))) / canvas.spacing_A
    through = rng.uniform(0.15, 0.85, size=2) * (ny, nx)
    angle = rng.uniform(0, 2 * np.pi)
    side = int(rng.integers(2))
    room = (np.median(canvas.surfaces_z[0]), nz - np.median(canvas.surfaces_z[1]))
    if room[side] < thickness and room[1 - side] > room[side]:
        side = 1 - side  # keep the film in the volume (the projections see only the box)
    hole_centre = through - radius * np.array([np.sin(angle), np.cos(angle)])
    y, x = np.arange(ny)[:, None], np.arange(nx)[None, :]
    beyond = np.hypot(y - hole_centre[0], x - hole_centre[1]) - radius
    cover = np.clip(beyond + 0.5, 0, 1).astype(np.float32)
    surface = canvas.surfaces_z[side]
    low = surface if side else surface - thickness
    z_lo = max(int(np.floor(low.min())), 0)
    z_hi = min(int(np.ceil(low.max() + thickness)) + 1, nz)
    for z in range(z_lo, z_hi):
        depth = np.minimum(z - low, low + thickness - z) + 0.5
        fraction = cover * np.clip(depth, 0, 1).astype(np.float32)
        region = (slice(z, z + 1),)
        canvas.potential[z] += fraction * canvas.volts(carbon.contrast, region)[0]
        canvas.occupied[z] |= fraction > 0
        canvas.blocked[z] |= fraction > 0


def add_ice_contamination(
    canvas: Canvas, contamination: IceContamination, rng: np.random.Generator
) -> int:
    """Rest large flattened irregular blobs on the ice surfaces; return how many were placed.

    Each blob is 2-5 overlapping flat ellipsoids within a lateral diameter drawn from
    ``diameter_A`` (half as high as wide, or flatter), sunk 0-70 % of its height into the
    ice at a random surface, with its own contrast from ``contrast``.
    """
    _, ny, nx = canvas.potential.shape
    n = int(rng.integers(contamination.count[0], contamination.count[1] + 1))
    placed = 0
    for _ in range(n):
        radius = rng.uniform(*contamination.diameter_A) / 2 / canvas.spacing_A
        height = radius * rng.uniform(0.3, 0.6)
        blob = render_ellipsoids(_flat_lobes(radius, height, rng), cube=False)
        contrast = rng.uniform(*contamination.contrast)
        for _ in range(_TRIES):
            side = int(rng.integers(2))
            offset = height * rng.uniform(0.3, 1.0)  # centre outside: mostly in vacuum
            centre = _surface_point(canvas, rng.uniform(0, (ny, nx)), side, offset)
            if canvas.stamp(blob, centre, contrast):
                placed += 1
                break
    return placed


def _flat_lobes(radius: float, height: float, rng: np.random.Generator) -> Blobs:
    """2-5 flat ellipsoids turned about Z, within a disc of ``radius`` (voxels)."""
    n = int(rng.integers(2, 6))
    axes = np.empty((n, 3))
    axes[:, 0] = height * rng.uniform(0.6, 1.0, size=n)
    axes[:, 1:] = radius * rng.uniform(0.35, 0.65, size=(n, 2))
    centres = np.zeros((n, 3))
    centres[:, 1:] = rng.normal(0, 0.25 * radius, size=(n, 2))
    turn = rng.uniform(0, 2 * np.pi, size=n)
    rotations = np.zeros((n, 3, 3))
    rotations[:, 0, 0] = 1
    rotations[:, 1, 1] = rotations[:, 2, 2] = np.cos(turn)
    rotations[:, 1, 2], rotations[:, 2, 1] = -np.sin(turn), np.sin(turn)
    return Blobs(centres, axes, rotations, np.zeros(n))
