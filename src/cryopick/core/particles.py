"""The particle types cryopick knows: the single source of truth.

Every other module takes names, labels, radii, score weights and colours from
:data:`PARTICLES`. Names are the CZII challenge names; :func:`resolve_particle_name`
also accepts the CryoET Data Portal aliases.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParticleType:
    """One particle type.

    Attributes
    ----------
    name : str
        Canonical CZII challenge name.
    label : int
        Label id in segmentations and network output channel (0 is background).
    radius_A : float
        Particle radius in Å; the metric's match distance is half of it.
    weight : float
        Weight of this type's F-beta in the challenge score.
    pdb_id : str
        PDB entry of the reference structure.
    colour : str
        Display colour (hex RGB).
    aliases : tuple of str
        Other names used for the same object (CryoET Data Portal, copick projects).
    """

    name: str
    label: int
    radius_A: float
    weight: float
    pdb_id: str
    colour: str
    aliases: tuple[str, ...] = ()


PARTICLES: tuple[ParticleType, ...] = (
    ParticleType(
        "apo-ferritin",
        1,
        60.0,
        1.0,
        "4V1W",
        "#1f77b4",
        ("ferritin-complex", "ferritin", "apoferritin", "apo_ferritin"),
    ),
    ParticleType("beta-amylase", 2, 65.0, 0.0, "1FA2", "#bcbd22", ("beta_amylase", "betaamylase")),
    ParticleType(
        "beta-galactosidase",
        3,
        90.0,
        2.0,
        "6X1Q",
        "#2ca02c",
        ("beta_galactosidase", "betagalactosidase", "b-galactosidase"),
    ),
    ParticleType(
        "ribosome",
        4,
        150.0,
        1.0,
        "6EK0",
        "#d62728",
        ("cytosolic-ribosome", "80s-ribosome", "80S ribosome"),
    ),
    ParticleType("thyroglobulin", 5, 130.0, 2.0, "6SCJ", "#9467bd", ()),
    ParticleType(
        "virus-like-particle",
        6,
        135.0,
        1.0,
        "6N4V",
        "#ff7f0e",
        ("virus-like-capsid", "vlp", "virus_like_particle", "pp7-vlp"),
    ),
)

PARTICLE_NAMES: tuple[str, ...] = tuple(p.name for p in PARTICLES)
N_CLASSES: int = len(PARTICLES) + 1  # background + one channel per particle type
TOTAL_WEIGHT: float = sum(p.weight for p in PARTICLES)

_BY_KEY: dict[str, ParticleType] = {}
for _p in PARTICLES:
    for _key in (_p.name, *_p.aliases):
        _BY_KEY[_key.lower().replace("_", "-").replace(" ", "-")] = _p


class UnknownParticleError(ValueError):
    """A particle name that is neither a canonical name nor a known alias."""


def get_particle(name: str) -> ParticleType:
    """Return the particle type for a canonical name or alias (case-insensitive).

    Raises
    ------
    UnknownParticleError
        If the name is unknown; the message lists the known names.
    """
    key = str(name).strip().lower().replace("_", "-").replace(" ", "-")
    try:
        return _BY_KEY[key]
    except KeyError:
        known = ", ".join(PARTICLE_NAMES)
        raise UnknownParticleError(
            f"unknown particle type {name!r}; known types: {known} "
            "(CryoET Data Portal aliases such as ferritin-complex, cytosolic-ribosome and "
            "virus-like-capsid are accepted too)"
        ) from None


def resolve_particle_name(name: str) -> str:
    """Return the canonical name for a particle name or alias."""
    return get_particle(name).name


def get_particle_by_label(label: int) -> ParticleType:
    """Return the particle type with segmentation label / output channel ``label`` (1-6)."""
    for p in PARTICLES:
        if p.label == label:
            return p
    raise UnknownParticleError(f"no particle type has label {label}; labels are 1-{len(PARTICLES)}")
