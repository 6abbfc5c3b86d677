"""Crowding distractors: the non-target proteins a simulated specimen is filled with.

The distractor library of a simulation (:func:`load_distractors`) is one of

* ``"default"``: albumin-sized ellipsoid blobs, serum albumin (8vaf) and the packaged
  large complexes (:data:`cryopick.simulate.templates._DISTRACTOR_FILES`); when the
  simulated set is not the CZII six, also the packaged CZII target maps of the types it
  does not hold (real proteins that are not targets);
* ``"none"``: no protein distractors (vesicles and ice stay);
* a particles file (:func:`cryopick.core.particles_file.load_particles_file`): its maps
  and models (a built-in CZII name: its packaged map) instead of the packaged maps; the
  blobs stay. A map whose support is at most :data:`SMALL_MAX_VOLUME_A3` counts as
  small (placed from the crowding volume), a larger one as a large complex (from the
  preset's ``large_distractor_fraction`` of it).

A target is never also a distractor: a map is dropped when one of its ids (name,
aliases, PDB id, file stem, lower case with ``_`` as ``-``) is one of a target's, or when
its density matches a target's (:func:`same_density`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet, ParticleSpec, default_particle_set, name_key
from cryopick.simulate.templates import (
    TEMPLATE_SPACING_A,
    load_templates,
    rotate_template,
    support_mask,
)

logger = logging.getLogger(__name__)

ALBUMIN_VOLUME_A3 = 66_500 * 1.21  # serum albumin, 66.5 kDa at 1.21 Å³/Da
SMALL_MAX_VOLUME_A3 = 3.0 * ALBUMIN_VOLUME_A3  # the largest blob; larger maps are complexes
SIZE_TOLERANCE = 0.1  # radii of gyration of one density within 10 %
MIN_CORRELATION = 0.9  # and normalised correlation above this: the same density
SIMILAR_CORRELATION = 0.85  # distinct packaged maps correlate at most this
DISTRACTOR_CHOICES = ("default", "none")


@dataclass(frozen=True)
class DistractorMap:
    """One distractor density.

    Attributes
    ----------
    key : str
        Its name in records, e.g. ``"8vaf"``, ``"czii/ribosome"`` or a file entry's name.
    density : numpy.ndarray, shape (n, n, n), float32
        Template, protein interior 1, centred in its box.
    zoom : float
        Simulation voxels per template voxel.
    ids : frozenset of str
        Identity keys (name, aliases, PDB id, file stems) compared with the targets'.
    large : bool
        Placed as a large complex rather than as a lysate-sized protein.
    """

    key: str
    density: NDArray[np.float32]
    zoom: float
    ids: frozenset[str]
    large: bool


@dataclass(frozen=True)
class DistractorLibrary:
    """The distractors of a simulation.

    Attributes
    ----------
    source : str
        ``"default"``, ``"none"`` or the particles file.
    blobs : bool
        Whether albumin-sized ellipsoid blobs are added.
    maps : tuple of DistractorMap
        The density maps, small ones first.
    dropped : tuple of str
        Keys of the maps left out because they are targets.
    """

    source: str
    blobs: bool
    maps: tuple[DistractorMap, ...]
    dropped: tuple[str, ...] = ()

    def record(self) -> dict[str, object]:
        """JSON-ready summary (source, map keys, dropped keys)."""
        return {
            "source": self.source,
            "maps": [m.key for m in self.maps],
            "dropped": list(self.dropped),
        }


def load_distractors(
    source: str | Path,
    particles: ParticleSet,
    target_densities: Mapping[str, Callable[[], Sequence[NDArray[np.float32]]]],
    spacing_A: float,
) -> DistractorLibrary:
    """Build the distractor library of a simulation, without any of its targets.

    Parameters
    ----------
    source : str or Path
        ``"default"``, ``"none"`` or a particles file of distractor maps/models.
    particles : ParticleSet
        The simulated (target) types.
    target_densities : mapping of str to callable
        Each target's densities on the simulation grid (compared by :func:`same_density`),
        made only when needed.
    spacing_A : float
        Voxel size of the simulation in Å.

    Raises
    ------
    InputError
        If ``source`` is neither choice nor an existing file, or the file is invalid.
    """
    if str(source) == "none":
        return DistractorLibrary("none", False, ())
    if str(source) == "default":
        maps = _packaged_maps(particles, spacing_A)
        # the packaged maps are distinct proteins: compare them with the user's maps only
        target_densities = {
            name: make for name, make in target_densities.items() if particles.get(name).source
        }
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(
                path, "--distractors: expected 'default', 'none' or a particles file (not found)"
            )
        maps = _file_maps(path, spacing_A)
    target_ids = set().union(*(spec_ids(spec) for spec in particles))
    targets = [(t, radius_of_gyration(t)) for make in target_densities.values() for t in make()]
    kept: list[DistractorMap] = []
    dropped: list[DistractorMap] = []
    for m in maps:
        same = m.ids & target_ids or _matches_a_target(m, targets)
        (dropped if same else kept).append(m)
    if dropped:
        logger.info("distractors left out as targets: %s", ", ".join(m.key for m in dropped))
    kept.sort(key=lambda m: m.large)  # stable: small maps first, each in their own order
    return DistractorLibrary(str(source), True, tuple(kept), tuple(m.key for m in dropped))


def spec_ids(spec: ParticleSpec) -> frozenset[str]:
    """Identity keys of a type: name, aliases, PDB id, source file stem, packaged map stems."""
    ids = {spec.name, *spec.aliases}
    if spec.pdb_id:
        ids.add(spec.pdb_id)
    if spec.source is not None:
        ids.add(spec.source.stem)
    elif spec.name in default_particle_set():
        czii_name = default_particle_set().resolve(spec.name)
        for kind in ("target", "alternate"):
            template = load_templates().get(f"{kind}/{czii_name}")
            if template is not None and template.source:
                ids.add(Path(template.source).stem)
    return frozenset(name_key(i) for i in ids)


def same_density(a: NDArray[np.float32], b: NDArray[np.float32]) -> bool:
    """Whether two centred densities on one grid are the same particle.

    Their radii of gyration (:func:`radius_of_gyration`) must agree within
    :data:`SIZE_TOLERANCE` and the densities, cropped to their common centred box, must
    correlate above :data:`MIN_CORRELATION`. (The radius of gyration, unlike the support
    volume, barely moves with the surface threshold a user gives a map; distinct packaged
    maps correlate at most 0.85.)
    """
    return _same(a, radius_of_gyration(a), b, radius_of_gyration(b))


def _same(a: NDArray[np.float32], ra: float, b: NDArray[np.float32], rb: float) -> bool:
    """:func:`same_density` given both radii of gyration."""
    if abs(ra - rb) > SIZE_TOLERANCE * max(ra, rb):
        return False
    n = min(a.shape[0], b.shape[0])
    ca, cb = _centre_crop(a, n).ravel(), _centre_crop(b, n).ravel()
    if ca.std() == 0 or cb.std() == 0:
        return False
    return bool(np.corrcoef(ca, cb)[0, 1] > MIN_CORRELATION)


def radius_of_gyration(density: NDArray[np.float32]) -> float:
    """Density-weighted RMS distance from the box centre, in voxels (0 for an empty box)."""
    centre = (np.array(density.shape) - 1) / 2
    r2 = ((np.indices(density.shape) - centre[:, None, None, None]) ** 2).sum(axis=0)
    mass = float(density.sum())
    return float(np.sqrt((density * r2).sum() / mass)) if mass > 0 else 0.0


def axis_view_correlation(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    """Highest correlation of ``a``, in any of its 48 axis orientations, with ``b``.

    Both are first moved so that their centres of mass sit at the centre of one cube
    (a rotation-tolerant version of the comparison in :func:`same_density`).
    """
    size = max(*a.shape, *b.shape) + 8
    za, zb = _standardised(_com_centred(a, size)), _standardised(_com_centred(b, size))
    best = -1.0
    for order in itertools.permutations(range(3)):
        turned = np.transpose(za, order)
        for flips in itertools.product((slice(None), slice(None, None, -1)), repeat=3):
            best = max(best, float((turned[flips] * zb).mean()))
    return best


def _standardised(volume: NDArray[np.float32]) -> NDArray[np.float32]:
    std = float(volume.std())
    out: NDArray[np.float32] = (volume - volume.mean()) / np.float32(std if std > 0 else 1.0)
    return out


def _com_centred(density: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    """``density`` in a ``size`` cube, its centre of mass on the cube's centre voxel."""
    out = np.zeros((size,) * 3, np.float32)
    mass = float(density.sum())
    if mass <= 0:
        return out
    com = np.indices(density.shape).reshape(3, -1) @ density.reshape(-1) / mass
    corner = size // 2 - np.round(com).astype(int)
    src, dst = [], []
    for c, n in zip(corner, density.shape, strict=True):
        lo, hi = max(c, 0), min(c + n, size)
        dst.append(slice(lo, hi))
        src.append(slice(lo - c, hi - c))
    out[tuple(dst)] = density[tuple(src)]
    return out


def _centre_crop(density: NDArray[np.float32], n: int) -> NDArray[np.float32]:
    lo = (density.shape[0] - n) // 2
    return density[lo : lo + n, lo : lo + n, lo : lo + n]


def _on_grid(density: NDArray[np.float32], zoom: float) -> NDArray[np.float32]:
    """Return a template resampled to the simulation grid (unrotated)."""
    return density if zoom == 1 else rotate_template(density, np.eye(3), zoom=zoom)


def _matches_a_target(
    m: DistractorMap, targets: Sequence[tuple[NDArray[np.float32], float]]
) -> bool:
    """Whether a distractor's density is one of the targets' (given with their radii)."""
    if not targets:
        return False
    density = _on_grid(m.density, m.zoom)
    rg = radius_of_gyration(density)
    return any(_same(density, rg, t, rt) for t, rt in targets)


def _packaged_maps(particles: ParticleSet, spacing_A: float) -> list[DistractorMap]:
    """Albumin, the packaged complexes and (for another set) the CZII maps it lacks."""
    zoom = TEMPLATE_SPACING_A / spacing_A
    maps = []
    for key, tpl in load_templates().items():
        if key.startswith("distractor/"):
            pdb = key.split("/", 1)[1]
            ids = frozenset({pdb} | ({Path(tpl.source).stem} if tpl.source else set()))
            maps.append(DistractorMap(pdb, tpl.density, zoom, ids, large=pdb != "8vaf"))
    if not particles.is_czii:
        for spec in default_particle_set():
            if spec.name not in particles:
                tpl = load_templates()[f"target/{spec.name}"]
                key = f"czii/{spec.name}"
                maps.append(DistractorMap(key, tpl.density, zoom, spec_ids(spec), large=True))
    return maps


def _file_maps(path: Path, spacing_A: float) -> list[DistractorMap]:
    """Return the maps and models of a particles file, on the simulation grid."""
    from cryopick.core.particles_file import load_particles_file
    from cryopick.simulate.user_maps import density_for

    maps = []
    for spec in load_particles_file(path):
        if spec.source is None:  # a built-in CZII name: its packaged map
            czii_name = default_particle_set().resolve(spec.name)
            density = load_templates()[f"target/{czii_name}"].density
            zoom = TEMPLATE_SPACING_A / spacing_A
        else:
            try:
                density, _ = density_for(spec, spacing_A)
            except InputError as err:
                raise InputError(path, f"particle '{spec.name}': {err}") from None
            zoom = 1.0
        volume_A3 = float(support_mask(_on_grid(density, zoom)).sum()) * spacing_A**3
        large = volume_A3 > SMALL_MAX_VOLUME_A3
        maps.append(DistractorMap(spec.name, density, zoom, spec_ids(spec), large))
    return maps


def ellipsoid_blob(rng: np.random.Generator, volume_A3: float, spacing_A: float) -> NDArray:
    """Make a smooth ellipsoid of the given volume, randomly elongated and oriented."""
    ratios = rng.uniform(0.5, 1.5, size=3)
    axes = ratios * (volume_A3 / (4 / 3 * np.pi * ratios.prod())) ** (1 / 3) / spacing_A
    half = int(np.ceil(axes.max() + 2))
    grid = np.mgrid[-half : half + 1, -half : half + 1, -half : half + 1].reshape(3, -1)
    local = Rotation.random(random_state=rng).as_matrix().T @ grid
    rho = np.sqrt(((local / axes[:, None]) ** 2).sum(axis=0)).reshape((2 * half + 1,) * 3)
    blob: NDArray[np.float32] = np.clip((1.0 - rho) * axes.mean() + 0.5, 0, 1).astype(np.float32)
    return blob


def distractor_pool(
    rng: np.random.Generator,
    spacing_A: float,
    library: DistractorLibrary,
    n_small_variants: int = 6,
    n_large_variants: int = 3,
) -> tuple[list[tuple[str, NDArray]], list[tuple[str, NDArray]]]:
    """Pre-rotated distractors on the simulation grid, small ones and large complexes, named.

    Small: 16 blobs of 0.4 to 3 albumin volumes (25 to 200 kDa lysate proteins, if the
    library has blobs; named ``"blob"``) and ``n_small_variants`` random rotations of each
    small map; large: ``n_large_variants`` rotations of each large map (named by the map's
    ``key``).
    """
    small: list[tuple[str, NDArray]] = []
    if library.blobs:
        sizes = ALBUMIN_VOLUME_A3 * np.exp(rng.uniform(np.log(0.4), np.log(3.0), size=16))
        small = [("blob", ellipsoid_blob(rng, size, spacing_A)) for size in sizes]
    large: list[tuple[str, NDArray]] = []
    for m in library.maps:
        pool, n = (large, n_large_variants) if m.large else (small, n_small_variants)
        for _ in range(n):
            rot = Rotation.random(random_state=rng).as_matrix()
            pool.append((m.key, rotate_template(m.density, rot, zoom=m.zoom)))
    return small, large
