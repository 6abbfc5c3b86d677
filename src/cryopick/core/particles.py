"""Particle sets: the particle types a project, a model or a picks table is about.

A :class:`ParticleSet` is an ordered tuple of :class:`ParticleSpec` with labels 1..N
(0 is background), looked up by name or alias, case-insensitively (``_`` and spaces count
as ``-``). Every stage takes its names, labels, radii, score weights and colours from the
set it is given: the model card's (:attr:`cryopick.model.card.ModelCard.particle_set`), a
copick project's ``pickable_objects`` (:func:`cryopick.io.picks.copick_config.read_particle_set`)
or a user's particles file (:func:`cryopick.core.particles_file.load_particles_file`).
:func:`default_particle_set` is the CZII challenge's six, shipped as data in
``cryopick/data/particles/czii.json``; it is what a function uses when it is given no set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# matplotlib's tab10 then tab20's light tones: distinct colours for up to 20 types
PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip
SIMULATION_SPACING_RANGE_A: tuple[float, float] = (4.0, 25.0)
"""Voxel sizes (Å) cryopick simulates at: the packaged templates are 10 Å maps, so finer
voxels invent detail they lack and coarser ones leave too few voxels per particle."""
# fields of a spec kept in model cards and copick configs (not the density source paths)
RECORD_KEYS: tuple[str, ...] = (
    "name",
    "label",
    "radius_A",
    "weight",
    "colour",
    "aliases",
    "pdb_id",
)


class UnknownParticleError(ValueError):
    """A particle name that is neither a name nor an alias of the set in use."""


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

    def to_record(self) -> dict[str, Any]:
        """Return the spec as a JSON-ready dict of :data:`RECORD_KEYS` (no density source)."""
        record = self.model_dump(include=set(RECORD_KEYS), mode="json")
        return {k: record[k] for k in RECORD_KEYS if record.get(k) not in (None, [])}


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
    def max_radius_A(self) -> float:
        """The largest radius in Å (every radius must be known)."""
        return max(self.radius_A(n) for n in self.names)

    @property
    def colours(self) -> dict[str, str]:
        """Display colour by name."""
        return {s.name: str(s.colour) for s in self.specs}

    @property
    def is_czii(self) -> bool:
        """True when this is the CZII challenge's six types (names and labels)."""
        return self.names == default_particle_set().names

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

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name_key(name) in self._by_key

    def resolve(self, name: str) -> str:
        """Return the name of a name or alias."""
        return self.get(name).name

    def label(self, name: str) -> int:
        """Segmentation label / network channel of a name or alias."""
        return int(self.get(name).label or 0)

    def radius_A(self, name: str) -> float:
        """Radius in Å of a name or alias.

        Raises
        ------
        ParticleSetError
            If the radius is not known yet (a particles file entry before its density
            was measured).
        """
        spec = self.get(name)
        if spec.radius_A is None:
            raise ParticleSetError(spec.name, "radius_A is not known (not given, not measured)")
        return float(spec.radius_A)

    def weight(self, name: str) -> float:
        """Score weight of a name or alias."""
        return float(self.get(name).weight)

    def colour(self, name: str) -> str:
        """Display colour (hex RGB) of a name or alias."""
        return str(self.get(name).colour)

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

    def to_records(self) -> list[dict[str, Any]]:
        """JSON-ready records (name, label, radius, weight, colour, aliases, PDB id)."""
        return [s.to_record() for s in self.specs]

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> ParticleSet:
        """Rebuild a set from :meth:`to_records` (unknown keys are refused)."""
        return cls(tuple(ParticleSpec.model_validate(dict(r)) for r in records))

    def describe_differences(self, other: ParticleSet) -> str:
        """One line naming what differs between two sets (empty when they agree)."""
        parts = []
        if self.names != other.names:
            parts.append(f"types {list(self.names)} vs {list(other.names)}")
        else:
            for a, b in zip(self.specs, other.specs, strict=True):
                if a.radius_A != b.radius_A:
                    parts.append(f"{a.name} radius {a.radius_A} vs {b.radius_A} Å")
                if a.weight != b.weight:
                    parts.append(f"{a.name} weight {a.weight:g} vs {b.weight:g}")
        return "; ".join(parts)


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


@cache
def default_particle_set() -> ParticleSet:
    """Return the CZII challenge's six types (``cryopick/data/particles/czii.json``)."""
    text = resources.files("cryopick").joinpath("data/particles/czii.json").read_text()
    return ParticleSet.from_records(json.loads(text)["particles"])


def resolve_particle_set(particles: ParticleSet | None) -> ParticleSet:
    """Return ``particles``, or the default (CZII) set when None."""
    return default_particle_set() if particles is None else particles
