"""A user's particles file: JSON ``{"particles": [...]}`` -> :class:`ParticleSet`.

Each entry names a particle type and where its density comes from: a density map
(``map``, MRC) or an atomic model (``model``, PDB/mmCIF), paths relative to the file
(see ``docs/own_particles.md``). Every problem is one line naming the file and the entry.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cryopick.core.errors import InputError, squeeze_error
from cryopick.core.particles import (
    SIMULATION_SPACING_RANGE_A,
    SPEC_KEYS,
    ParticleSet,
    ParticleSetError,
    ParticleSpec,
    default_particle_set,
)

log = logging.getLogger(__name__)

RADIUS_TOLERANCE = 2.0  # a given radius may differ from the map's measured one by this factor


def load_particles_file(path: str | Path, check_maps: bool = True) -> ParticleSet:
    """Read a particles file: JSON (or YAML) ``{"particles": [{...}, ...]}``.

    Each entry has the fields of :class:`ParticleSpec`; ``name`` and one of ``map`` /
    ``model`` are required, paths are relative to the file. With ``check_maps`` every map
    is read at its own voxel size (:func:`cryopick.simulate.user_maps.measure_map`) to
    check it has density above its surface level and that a given radius is within a
    factor :data:`RADIUS_TOLERANCE` of the measured one.

    Raises
    ------
    InputError
        One line ``PATH: particle 'NAME': problem`` (``particle #i`` for an entry without
        a name) for invalid JSON, unknown keys, bad values, a missing or doubled source,
        a missing file, an empty map, a radius far from the map's, or clashing names.
    """
    path = Path(path)
    raw = _read_document(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("particles"), list):
        raise InputError(path, 'expected an object {"particles": [...]}')
    extra = sorted(set(raw) - {"particles"})
    if extra:
        raise InputError(path, f"unknown top-level key(s) {', '.join(extra)}; only 'particles'")
    specs = [_read_entry(path, i, entry) for i, entry in enumerate(raw["particles"], 1)]
    if not specs:
        raise InputError(path, "the file lists no particles")
    try:
        particle_set = ParticleSet(tuple(specs))
    except ParticleSetError as err:
        raise InputError(path, str(err)) from None
    if check_maps:
        _check_maps(path, particle_set)
    return particle_set


def _read_document(path: Path) -> Any:
    """Parse the file: YAML for ``.yaml`` / ``.yml`` (safe loader), else JSON."""
    import yaml

    yaml_file = path.suffix.lower() in (".yaml", ".yml")
    try:
        text = path.read_text()
        return yaml.safe_load(text) if yaml_file else json.loads(text)
    except FileNotFoundError:
        raise InputError(path, "particles file does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        kind = "YAML" if yaml_file else "JSON"
        raise InputError(path, f"not a valid {kind} particles file: {squeeze_error(err)}") from None


def _check_maps(path: Path, particle_set: ParticleSet) -> None:
    from cryopick.simulate.user_maps import measure_map

    for s in particle_set:
        if s.map is None:
            continue
        try:
            measured = measure_map(s.map, s.threshold)
        except InputError as err:
            raise InputError(path, f"particle '{s.name}': {err}") from None
        check_radius(path, s, measured)


def check_radius(path: str | Path, spec: ParticleSpec, measured_A: float) -> None:
    """Raise InputError if ``spec``'s given radius is over 2x off the measured one."""
    given = spec.radius_A
    if given is not None and not (1 / RADIUS_TOLERANCE <= given / measured_A <= RADIUS_TOLERANCE):
        raise InputError(
            path,
            f"particle '{spec.name}': radius_A {given:g} Å is inconsistent with the "
            f"{spec.source.name if spec.source else 'density'}'s measured radius "
            f"{measured_A:.0f} Å (more than {RADIUS_TOLERANCE:g}x off)",
        )


def _read_entry(path: Path, index: int, entry: Any) -> ParticleSpec:
    if not isinstance(entry, dict):
        raise InputError(path, f"particle #{index}: expected an object, got {entry!r:.40}")
    who = f"particle '{entry['name']}'" if entry.get("name") else f"particle #{index}"
    unknown = sorted(set(entry) - set(SPEC_KEYS))
    if unknown:
        raise InputError(
            path,
            f"{who}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(SPEC_KEYS)}",
        )
    if not entry.get("name"):
        raise InputError(path, f"{who}: missing 'name'")
    has = [k for k in ("map", "model") if entry.get(k) is not None]
    if not has and entry["name"] in default_particle_set():
        return _builtin_entry(path, who, entry)
    if len(has) != 1:
        problem = (
            "gives both 'map' and 'model'"
            if has
            else "needs a 'map' or a 'model' file (only the built-in CZII types need neither)"
        )
        raise InputError(path, f"{who}: {problem}")
    if entry.get("threshold") is not None and "model" in has:
        raise InputError(path, f"{who}: 'threshold' applies to a map, not to a model")
    try:
        spec = ParticleSpec.model_validate(entry)
    except ValidationError as err:
        raise InputError(path, f"{who}: {squeeze_error(err)}") from None
    source = spec.source
    assert source is not None
    resolved = source if source.is_absolute() else (path.parent / source).resolve()
    if not resolved.is_file():
        raise InputError(path, f"{who}: {has[0]} file {source} does not exist")
    if spec.threshold is not None and not math.isfinite(spec.threshold):
        raise InputError(path, f"{who}: threshold must be a finite number")
    return spec.model_copy(update={has[0]: resolved})


def _builtin_entry(path: Path, who: str, entry: dict[str, Any]) -> ParticleSpec:
    """Return a built-in CZII type (packaged template), the entry's fields overriding."""
    builtin = default_particle_set().get(entry["name"])
    given = {k: v for k, v in entry.items() if k not in ("name", "threshold")}
    if entry.get("threshold") is not None:
        raise InputError(path, f"{who}: 'threshold' applies to a map, not to a built-in type")
    merged = {**builtin.model_dump(exclude={"label", "colour"}), **given, "name": builtin.name}
    try:
        return ParticleSpec.model_validate(merged)
    except ValidationError as err:
        raise InputError(path, f"{who}: {squeeze_error(err)}") from None


def complete_radii(
    particle_set: ParticleSet,
    declared: Sequence[ParticleSet | None] = (),
    spacing_A: float = 10.0,
) -> ParticleSet:
    """Fill the radii a particles file leaves out: from a declared set, else measured.

    Parameters
    ----------
    particle_set : ParticleSet
        A set from :func:`load_particles_file`; types without ``radius_A`` get one.
    declared : sequence of ParticleSet or None
        Sets of the data at hand (e.g. a simulated project's config, which records the
        measured radii); the first with the same names gives its radii.
    spacing_A : float
        Voxel size at which a radius still missing is measured from the density
        (:func:`cryopick.simulate.user_maps.density_for`; the equivalent-sphere radius
        hardly depends on it).

    Returns
    -------
    ParticleSet
        The set with every radius known.
    """
    if all(spec.radius_A is not None for spec in particle_set):
        return particle_set
    for other in declared:
        if other is not None and other.names == particle_set.names:
            known = {name: r for name, r in other.radii_A.items() if r is not None}
            particle_set = particle_set.with_radii(known)
            break
    missing = [spec for spec in particle_set if spec.radius_A is None]
    if missing:
        from cryopick.simulate.user_maps import density_for

        measured = {spec.name: density_for(spec, spacing_A)[1] for spec in missing}
        log.info(
            "radii measured from the densities: %s",
            ", ".join(f"{name} {r:.0f} Å" for name, r in measured.items()),
        )
        particle_set = particle_set.with_radii(measured)
    return particle_set


PICKABLE_DIAMETER_VOX = (4.0, 48.0)
"""Particle diameters, in voxels of the simulation / picking grid, that the 3D U-Net's
default 64³-voxel training window suits: below 4 voxels a particle is a blob of noise,
above 48 it fills the window and the network never sees it whole with its surroundings."""


def describe_size_problems(
    particle_set: ParticleSet,
    spacing_A: float,
    spacing_range_A: tuple[float, float] = SIMULATION_SPACING_RANGE_A,
) -> list[str]:
    """One line per type whose size does not suit a picker at ``spacing_A``, with the fix.

    The voxel size suggested puts the particle about twice the smallest or half the
    largest suitable diameter across, within ``spacing_range_A`` (what ``cryopick simulate``
    and ``learn`` accept). Radii must be known (:func:`complete_radii`).
    """
    low, high = PICKABLE_DIAMETER_VOX
    problems = []
    for spec in particle_set:
        if spec.radius_A is None:
            continue
        diameter_A = 2.0 * spec.radius_A
        diameter_vox = diameter_A / spacing_A
        if low <= diameter_vox <= high:
            continue
        small = diameter_vox < low
        ideal_A = diameter_A / (2 * low if small else high / 2)
        best_A = min(max(ideal_A, spacing_range_A[0]), spacing_range_A[1])
        what = "too small to pick" if small else "too large for the network's window"
        fix = f"--spacing-A {best_A:.3g} and tomograms binned to it"
        if best_A != ideal_A:
            lo, hi = spacing_range_A
            fix += f" (about {ideal_A:.3g} Å would suit it; cryopick simulates {lo:g}-{hi:g} Å)"
        problems.append(
            f"'{spec.name}' is {diameter_A:.0f} Å across, {diameter_vox:.3g} voxels at "
            f"{spacing_A:g} Å: {what}; use {fix}"
        )
    return problems
