"""Particle sets: the particle types of one project, from the built-in six or a user's file.

A :class:`ParticleSet` is an ordered tuple of :class:`ParticleSpec` with labels 1..N
(0 is background), looked up by name or alias, case-insensitively (``_`` and spaces count
as ``-``, as in :func:`cryopick.core.particles.get_particle`).
:func:`default_particle_set` is the CZII six of :data:`cryopick.core.particles.PARTICLES`;
:func:`load_particles_file` reads a user's JSON file (``{"particles": [...]}``) whose
entries name a density map (``map``, MRC) or an atomic model (``model``, PDB/mmCIF).

Status (issue 13): the set and its densities exist (``cryopick particles FILE``); the
simulate/train/predict stages still use :data:`~cryopick.core.particles.PARTICLES`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cryopick.core.errors import InputError, squeeze_error
from cryopick.core.particles import PARTICLES, UnknownParticleError

# matplotlib's tab10 then tab20's light tones: distinct colours for up to 20 types
PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip
RADIUS_TOLERANCE = 2.0  # a given radius may differ from the map's measured one by this factor


def name_key(name: str) -> str:
    """Return the lookup key of a name or alias: lower case, ``_`` and spaces as ``-``."""
    return str(name).strip().lower().replace("_", "-").replace(" ", "-")


class ParticleSpec(BaseModel):
    """One particle type of a set.

    Attributes
    ----------
    name : str
        Name used in picks files and on the command line.
    radius_A : float or None
        Particle radius in Å (the metric matches within half of it); None until measured
        from the density (:meth:`ParticleSet.with_radii`).
    weight : float
        Weight of this type's F-beta in the overall score (0 = not scored).
    label : int or None
        Segmentation label / network channel, 1..N; None: assigned in file order.
    colour : str or None
        Display colour (hex RGB); None: taken from :data:`PALETTE` by label.
    aliases : tuple of str
        Other names for the same type.
    map : Path or None
        Density map (MRC) of the particle, protein positive.
    model : Path or None
        Atomic model (PDB or mmCIF) of the particle.
    threshold : float or None
        Surface level of ``map`` in the map's units (as in ChimeraX); None: automatic.
    pdb_id : str or None
        Reference PDB entry (information only).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    radius_A: float | None = Field(default=None, gt=0)
    weight: float = Field(default=1.0, ge=0)
    label: int | None = Field(default=None, ge=1)
    colour: str | None = None
    aliases: tuple[str, ...] = ()
    map: Path | None = None
    model: Path | None = None
    threshold: float | None = None
    pdb_id: str | None = None

    @property
    def source(self) -> Path | None:
        """The density source (``map`` or ``model``), or None for a built-in type."""
        return self.map if self.map is not None else self.model


SPEC_KEYS: tuple[str, ...] = tuple(ParticleSpec.model_fields)


class ParticleSetError(ValueError):
    """An inconsistent particle set; ``name`` is the entry at fault."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(f"particle '{name}': {problem}")


@dataclass(frozen=True)
class ParticleSet:
    """An ordered set of particle types with labels 1..N.

    Building one assigns missing labels (the smallest free ones, in the given order) and
    colours, orders the specs by label, and checks that names and aliases are unique.

    Raises
    ------
    ParticleSetError
        On an empty set, a duplicate name or alias, or labels that are not 1..N.
    """

    specs: tuple[ParticleSpec, ...]
    _by_key: dict[str, ParticleSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        done = _assign_labels(tuple(self.specs))
        object.__setattr__(self, "specs", done)
        object.__setattr__(self, "_by_key", _index(done))

    def __len__(self) -> int:
        return len(self.specs)

    def __iter__(self) -> Iterator[ParticleSpec]:
        return iter(self.specs)

    @property
    def names(self) -> tuple[str, ...]:
        """Names in label order."""
        return tuple(s.name for s in self.specs)

    @property
    def n_classes(self) -> int:
        """Background plus one class per type."""
        return len(self.specs) + 1

    @property
    def weights(self) -> dict[str, float]:
        """Score weight by name."""
        return {s.name: s.weight for s in self.specs}

    @property
    def total_weight(self) -> float:
        """Sum of the score weights."""
        return sum(s.weight for s in self.specs)

    @property
    def radii_A(self) -> dict[str, float | None]:
        """Radius in Å by name (None where not given and not yet measured)."""
        return {s.name: s.radius_A for s in self.specs}

    @property
    def colours(self) -> dict[str, str]:
        """Display colour by name."""
        return {s.name: str(s.colour) for s in self.specs}

    def get(self, name: str) -> ParticleSpec:
        """Return the spec of a name or alias (case-insensitive).

        Raises
        ------
        UnknownParticleError
            If no type has that name or alias; the message lists the names.
        """
        try:
            return self._by_key[name_key(name)]
        except KeyError:
            raise UnknownParticleError(
                f"unknown particle type {name!r}; known types: {', '.join(self.names)}"
            ) from None

    def resolve(self, name: str) -> str:
        """Return the name of a name or alias."""
        return self.get(name).name

    def by_label(self, label: int) -> ParticleSpec:
        """Return the spec with segmentation label ``label`` (1..N)."""
        if not 1 <= label <= len(self.specs):
            raise UnknownParticleError(
                f"no particle type has label {label}; labels are 1-{len(self.specs)}"
            )
        return self.specs[label - 1]

    def with_radii(self, radii_A: Mapping[str, float]) -> ParticleSet:
        """Return a copy whose missing radii are filled from ``radii_A`` (e.g. measured ones)."""
        return ParticleSet(
            tuple(
                s
                if s.radius_A is not None or s.name not in radii_A
                else s.model_copy(update={"radius_A": float(radii_A[s.name])})
                for s in self.specs
            )
        )


def _assign_labels(specs: tuple[ParticleSpec, ...]) -> tuple[ParticleSpec, ...]:
    """Check given labels are distinct in 1..N, give the others the free ones; sort by label."""
    if not specs:
        raise ParticleSetError("-", "the set has no particle types")
    n = len(specs)
    taken: dict[int, str] = {}
    for s in specs:
        if s.label is None:
            continue
        if s.label > n:
            raise ParticleSetError(s.name, f"label {s.label} is not in 1..{n}")
        if s.label in taken:
            raise ParticleSetError(s.name, f"label {s.label} is also '{taken[s.label]}''s")
        taken[s.label] = s.name
    free = iter(sorted(set(range(1, n + 1)) - set(taken)))
    done = []
    for s in specs:
        label = s.label if s.label is not None else next(free)
        colour = s.colour or PALETTE[(label - 1) % len(PALETTE)]
        done.append(s.model_copy(update={"label": label, "colour": colour}))
    return tuple(sorted(done, key=lambda s: s.label or 0))


def _index(specs: tuple[ParticleSpec, ...]) -> dict[str, ParticleSpec]:
    """Map every name and alias key to its spec; raise on a clash."""
    by_key: dict[str, ParticleSpec] = {}
    for s in specs:
        if name_key(s.name) in by_key:
            twin = by_key[name_key(s.name)].name
            raise ParticleSetError(s.name, f"duplicate name (also '{twin}')")
        by_key[name_key(s.name)] = s
    for s in specs:
        for alias in s.aliases:
            other = by_key.get(name_key(alias))
            if other is not None and other.name != s.name:
                raise ParticleSetError(
                    s.name, f"alias '{alias}' clashes with particle '{other.name}'"
                )
            by_key[name_key(alias)] = s
    return by_key


def default_particle_set() -> ParticleSet:
    """Return the six CZII particle types of :data:`cryopick.core.particles.PARTICLES`."""
    return ParticleSet(
        tuple(
            ParticleSpec(
                name=p.name,
                radius_A=p.radius_A,
                weight=p.weight,
                label=p.label,
                colour=p.colour,
                aliases=p.aliases,
                pdb_id=p.pdb_id,
            )
            for p in PARTICLES
        )
    )


def load_particles_file(path: str | Path, check_maps: bool = True) -> ParticleSet:
    """Read a particles file: JSON ``{"particles": [{...}, ...]}``.

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
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "particles file does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"not a valid JSON particles file: {squeeze_error(err)}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("particles"), list):
        raise InputError(path, 'expected a JSON object {"particles": [...]}')
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
    if len(has) != 1:
        problem = "gives both 'map' and 'model'" if has else "needs a 'map' or a 'model' file"
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
