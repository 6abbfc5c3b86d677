"""Simulation settings: one validated config, with ranges that each run draws from.

A :class:`SimulationConfig` holds fixed microscope settings and ``(low, high)`` ranges for
the settings that vary between runs (defocus, dose, ice thickness, crowding,
misalignment). :func:`draw_run_params` draws one run's values from a seeded generator, so
a training set is varied and every run is reproducible from ``(config, seed)``.

Presets: ``czii`` (default) imitates the CZII phantom data (dataset 10440: 300 kV, -45..45
degrees in 3 degree steps, dose-symmetric, 120 e/Å², lysate crowded with serum albumin,
vesicles); ``easy`` has high SNR and few crowders for fast tests; ``varied`` (domain
randomisation) draws each run's tilt range and step, defocus, dose, B-factor, ice thickness,
crowding and misalignment from ranges that contain the CZII ones and reach well past them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet, default_particle_set, resolve_particle_set
from cryopick.simulate.artefacts import CarbonFilm, GoldBeads, IceContamination, SpecimenExtras
from cryopick.simulate.crowders import ProceduralCrowders

Range = tuple[float, float]

# Mean and standard deviation of the number of picks per class per tomogram in the seven
# CZII training runs (czii_train_picks.csv; tomograms 630 x 630 x 184 voxels at 10 Å).
REAL_COUNTS_MEAN_STD: dict[str, tuple[float, float]] = {
    "apo-ferritin": (53.6, 21.3),
    "beta-amylase": (12.4, 4.2),
    "beta-galactosidase": (16.0, 5.4),
    "ribosome": (47.3, 18.5),
    "thyroglobulin": (35.9, 8.1),
    "virus-like-particle": (16.1, 7.4),
}
# The real particles cluster: 76 % of apo-ferritins and 84 % of ribosomes have one of
# their own kind as nearest neighbour, mostly touching (czii_train_picks.csv); these
# chances reproduce those nearest-neighbour distances (benchmarks/simulate_realism.py).
REAL_CLUSTER_FRACTION: dict[str, float] = {
    "apo-ferritin": 0.4,
    "beta-amylase": 0.05,
    "beta-galactosidase": 0.05,
    "ribosome": 0.55,
    "thyroglobulin": 0.15,
    "virus-like-particle": 0.1,
}
REAL_VOLUME_A3 = 630 * 630 * 184 * 10.0**3
# A type without real statistics (a user's own) gets, per tomogram of REAL_VOLUME_A3, the
# number of copies whose spheres (of its radius) fill CUSTOM_VOLUME_FRACTION of the volume,
# kept within CUSTOM_COUNT_RANGE (a 150 Å ribosome-sized type: 50, a 250 Å one: 11), with a
# spread of CUSTOM_RELATIVE_STD of the mean (the CZII types' spread is 0.2 to 0.46).
CUSTOM_VOLUME_FRACTION = 0.01
CUSTOM_COUNT_RANGE = (10.0, 50.0)
CUSTOM_RELATIVE_STD = 0.35


class SimulationConfig(BaseModel):
    """Settings of the tomogram simulator (all lengths in Å, angles in degrees).

    Ranges are ``(low, high)`` and drawn uniformly per run.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "czii"
    # --- sample
    count_scale: float = Field(1.0, ge=0, description="multiplies the real per-class counts")
    cluster_fraction: dict[str, float] = Field(
        default_factory=lambda: dict(REAL_CLUSTER_FRACTION),
        description="per class: chance a particle is put beside one of its kind",
    )
    alternate_fraction: float = Field(0.25, ge=0, le=1, description="targets using 2nd model")
    ice_thickness_fraction: Range = Field((0.55, 0.8), description="slab thickness / Z")
    ice_tilt_deg: Range = (-4.0, 4.0)
    ice_offset_fraction: Range = Field((-0.14, -0.02), description="slab centre shift / Z")
    protein_contrast_V: float = Field(2.0, gt=0, description="protein minus ice potential")
    ice_potential_V: float = Field(4.5, ge=0)
    solvent_noise: float = Field(0.03, ge=0, description="amorphous ice, relative std per voxel")
    crowding_fraction: Range = Field((0.015, 0.05), description="distractor volume fraction")
    large_distractor_fraction: float = Field(0.15, ge=0, le=1, description="of crowding volume")
    vesicles_per_um2: Range = Field((1.0, 10.0), description="vesicles per µm² of XY area")
    vesicle_radius_A: Range = (200.0, 900.0)
    membrane_contrast: float = Field(1.2, ge=0, description="leaflet peak / protein interior")
    extras: SpecimenExtras = Field(
        default_factory=SpecimenExtras,
        description="gold, carbon film, ice contamination, procedural crowders (all off)",
    )
    # --- imaging
    voltage_kV: float = Field(300.0, gt=0)
    cs_mm: float = Field(2.7, ge=0)
    amplitude_contrast: float = Field(0.07, ge=0, le=1)
    tilt_min_deg: float = Field(-45.0, ge=-90, le=0)
    tilt_max_deg: float = Field(45.0, ge=0, le=90)
    tilt_step_deg: float = Field(3.0, gt=0)
    dose_total_e_A2: Range = (100.0, 140.0)
    defocus_um: Range = Field((2.0, 5.0), description="underfocus")
    astigmatism_um: Range = (0.0, 0.3)
    bfactor_A2: Range = (50.0, 300.0)
    inelastic_mfp_A: float = Field(3500.0, gt=0, description="zero-loss mean free path")
    detector_mtf: bool = True
    misalignment_vox: Range = Field((0.3, 1.2), description="std of per-tilt shifts")
    tilt_error_deg: Range = (0.0, 0.3)
    # per-run tilt scheme (domain randomisation); None keeps tilt_min/max/step_deg above
    tilt_extent_deg: Range | None = Field(
        None, description="per run: the lowest and highest tilt's |angle|, drawn independently"
    )
    tilt_step_choices_deg: tuple[float, ...] | None = Field(
        None, description="per run: the tilt step, one of these"
    )
    # --- reconstruction outputs
    wiener_snr: float = Field(30.0, gt=0, description="Wiener SNR at zero frequency")
    wiener_falloff_A: float = Field(60.0, gt=0, description="SNR halves every this many 1/Å⁻¹")
    denoise_sigma_vox: float = Field(1.0, ge=0)

    @field_validator(
        "ice_thickness_fraction",
        "ice_tilt_deg",
        "ice_offset_fraction",
        "crowding_fraction",
        "vesicles_per_um2",
        "vesicle_radius_A",
        "dose_total_e_A2",
        "defocus_um",
        "astigmatism_um",
        "bfactor_A2",
        "misalignment_vox",
        "tilt_error_deg",
        "tilt_extent_deg",
    )
    @classmethod
    def _check_range(cls, value: Range | None) -> Range | None:
        if value is None:
            return value
        low, high = value
        if low > high:
            raise ValueError(f"range low {low} > high {high}")
        return value

    @field_validator("cluster_fraction")
    @classmethod
    def _check_cluster(cls, value: dict[str, float]) -> dict[str, float]:
        # the names are checked against the simulated set by :func:`cluster_fractions`
        for name, p in value.items():
            if not 0 <= p <= 1:
                raise ValueError(f"cluster_fraction values must lie in [0, 1]: {name}={p}")
        return value

    @field_validator("ice_thickness_fraction")
    @classmethod
    def _check_thickness(cls, value: Range) -> Range:
        if not 0 < value[0] <= value[1] <= 1:
            raise ValueError("ice thickness fractions must lie in (0, 1]")
        return value

    @field_validator("tilt_extent_deg")
    @classmethod
    def _check_extent(cls, value: Range | None) -> Range | None:
        if value is not None and not 0 < value[0] <= value[1] <= 90:
            raise ValueError("tilt extents must lie in (0, 90] degrees")
        return value

    @field_validator("tilt_step_choices_deg")
    @classmethod
    def _check_steps(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and (not value or min(value) <= 0):
            raise ValueError("tilt step choices must be positive and at least one")
        return value

    def tilt_angles_deg(self, params: Mapping[str, float] | None = None) -> np.ndarray:
        """Return the nominal tilt angles, ascending.

        Parameters
        ----------
        params : mapping, optional
            A run's drawn values (:func:`draw_run_params`): its ``tilt_min_deg``,
            ``tilt_max_deg`` and ``tilt_step_deg`` replace the config's when present.
        """
        params = params or {}
        low = params.get("tilt_min_deg", self.tilt_min_deg)
        high = params.get("tilt_max_deg", self.tilt_max_deg)
        step = params.get("tilt_step_deg", self.tilt_step_deg)
        n = round((high - low) / step) + 1
        return np.linspace(low, high, n)


PRESETS: dict[str, SimulationConfig] = {
    "czii": SimulationConfig(),
    "easy": SimulationConfig(
        name="easy",
        count_scale=6.0,
        cluster_fraction={},
        alternate_fraction=0.0,
        protein_contrast_V=3.0,
        solvent_noise=0.0,
        crowding_fraction=(0.003, 0.006),
        large_distractor_fraction=0.0,
        vesicles_per_um2=(0.0, 2.0),
        dose_total_e_A2=(600.0, 800.0),
        defocus_um=(2.0, 2.5),
        astigmatism_um=(0.0, 0.0),
        bfactor_A2=(50.0, 50.0),
        detector_mtf=False,
        misalignment_vox=(0.0, 0.0),
        tilt_error_deg=(0.0, 0.0),
        tilt_step_deg=5.0,
        tilt_min_deg=-60.0,
        tilt_max_deg=60.0,
    ),
    # domain randomisation: every run draws its imaging from ranges wider than the CZII
    # data's (which they contain), so a model trained on them meets unseen microscopes
    "varied": SimulationConfig(
        name="varied",
        ice_thickness_fraction=(0.45, 0.95),
        ice_tilt_deg=(-8.0, 8.0),
        crowding_fraction=(0.01, 0.07),
        vesicles_per_um2=(0.0, 12.0),
        dose_total_e_A2=(50.0, 180.0),
        defocus_um=(1.5, 6.5),
        astigmatism_um=(0.0, 0.6),
        bfactor_A2=(30.0, 500.0),
        misalignment_vox=(0.2, 2.0),
        tilt_error_deg=(0.0, 0.6),
        tilt_extent_deg=(40.0, 70.0),
        tilt_step_choices_deg=(2.0, 3.0, 4.0),
        # gold in 40 % of runs, a carbon edge and ice contamination in 20 %, a third to a
        # half of the crowding volume procedural crowders (a quarter of them hard negatives
        # shaped unlike, but sized like, beta-galactosidase and thyroglobulin); "branched"
        # crowders are left out so the robustness benchmark can show shapes never seen
        extras=SpecimenExtras(
            gold=GoldBeads(probability=0.4, per_um2=(5.0, 60.0)),
            carbon=CarbonFilm(probability=0.2),
            contamination=IceContamination(probability=0.2, count=(1, 3)),
            crowders=ProceduralCrowders(
                fraction=(0.3, 0.5),
                shapes=("globular", "elongated", "shell"),
                hard_negative_fraction=0.25,
                hard_negative_types=("beta-galactosidase", "thyroglobulin"),
            ),
        ),
    ),
}
PresetName = Literal["czii", "easy", "varied"]


def get_preset(preset: str | SimulationConfig) -> SimulationConfig:
    """Return a preset by name (``czii`` or ``easy``), or a config unchanged."""
    if isinstance(preset, SimulationConfig):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}") from None


def draw_run_params(config: SimulationConfig, rng: np.random.Generator) -> dict[str, float]:
    """Draw one run's varying settings from the config's ranges.

    Returns
    -------
    dict
        Scalar values keyed like the config fields (plus ``astigmatism_angle_deg``; plus
        ``tilt_min_deg``/``tilt_max_deg`` and ``tilt_step_deg`` when the config draws them).
    """
    # drawn per vesicle, or below; None-valued options draw nothing, so a config without
    # them reproduces the runs made before they existed
    special = {"vesicle_radius_A", "tilt_extent_deg", "tilt_step_choices_deg"}
    ranged = [
        k for k, v in config.model_dump().items() if isinstance(v, tuple) and k not in special
    ]
    params = {k: float(rng.uniform(*getattr(config, k))) for k in ranged}
    params["astigmatism_angle_deg"] = float(rng.uniform(0, 180))
    if config.tilt_extent_deg is not None:
        params["tilt_min_deg"] = -float(rng.uniform(*config.tilt_extent_deg))
        params["tilt_max_deg"] = float(rng.uniform(*config.tilt_extent_deg))
    if config.tilt_step_choices_deg is not None:
        params["tilt_step_deg"] = float(rng.choice(config.tilt_step_choices_deg))
    return params


def draw_counts(
    config: SimulationConfig,
    volume_A3: float,
    rng: np.random.Generator,
    particles: ParticleSet | None = None,
) -> dict[str, int]:
    """Draw the number of particles per class for one run, like the real data scaled by volume.

    Counts follow a gamma distribution with the per-tomogram mean and spread of
    :func:`count_mean_std`, times ``config.count_scale * volume_A3 / REAL_VOLUME_A3``,
    then a Poisson draw (so small volumes get integer counts with the right expectation).
    Types are drawn in label order.

    Parameters
    ----------
    config : SimulationConfig
        Simulator settings (``count_scale``).
    volume_A3 : float
        Volume of the tomogram in Å³.
    rng : numpy.random.Generator
        The run's random generator.
    particles : ParticleSet, optional
        The simulated types (default: the CZII six); every radius must be known.

    Returns
    -------
    dict of str to int
        Count by particle name.
    """
    scale = config.count_scale * volume_A3 / REAL_VOLUME_A3
    counts = {}
    for spec in resolve_particle_set(particles):
        mean, std = count_mean_std(spec.name, spec.radius_A, builtin=spec.source is None)
        shape = (mean / std) ** 2
        expected = rng.gamma(shape, mean / shape) * scale
        counts[spec.name] = int(rng.poisson(expected))
    return counts


def count_mean_std(name: str, radius_A: float | None, builtin: bool = True) -> tuple[float, float]:
    """Mean and standard deviation of a type's count per tomogram of :data:`REAL_VOLUME_A3`.

    A built-in CZII type keeps its real statistics (:data:`REAL_COUNTS_MEAN_STD`). Any other
    type gets the count whose spheres of ``radius_A`` fill :data:`CUSTOM_VOLUME_FRACTION` of
    the volume, clipped to :data:`CUSTOM_COUNT_RANGE`, with a standard deviation of
    :data:`CUSTOM_RELATIVE_STD` times the mean.

    Raises
    ------
    ValueError
        If a type without real statistics has no radius.
    """
    if builtin and name in REAL_COUNTS_MEAN_STD:
        return REAL_COUNTS_MEAN_STD[name]
    if radius_A is None:
        raise ValueError(f"particle '{name}': its radius is needed to choose its count")
    sphere_A3 = 4 / 3 * np.pi * radius_A**3
    mean = float(np.clip(CUSTOM_VOLUME_FRACTION * REAL_VOLUME_A3 / sphere_A3, *CUSTOM_COUNT_RANGE))
    return mean, CUSTOM_RELATIVE_STD * mean


def cluster_fractions(config: SimulationConfig, particles: ParticleSet | None) -> dict[str, float]:
    """Return the config's clustering chances keyed by the simulated set's names.

    Names and aliases of the set are resolved to its names. A CZII name that the set does
    not hold (the ``czii`` preset's own entries, when simulating another set) is ignored;
    a type of the set without an entry does not cluster.

    Raises
    ------
    InputError
        If a name is neither a type of the set nor a CZII type.
    """
    particle_set = resolve_particle_set(particles)
    out: dict[str, float] = {}
    for name, p in config.cluster_fraction.items():
        if name in particle_set:
            out[particle_set.resolve(name)] = p
        elif name not in default_particle_set():
            raise InputError(
                None,
                f"simulator settings: cluster_fraction names '{name}', which is not a "
                f"particle type of this simulation ({', '.join(particle_set.names)})",
            )
    return out
