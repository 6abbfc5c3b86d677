"""The particle set a training run learns, and fitting a model's output layer to it.

The set comes from the training data: every training and validation source declares one
in its copick config (:func:`cryopick.io.picks.copick_config.read_particle_set`; a Kaggle
layout, or a config declaring no particles, counts as the CZII set), and all must declare
the same. With a particles file (``TrainConfig.particles``) the file's set is learnt (and
fresh simulated runs are simulated with it); the sources must declare that set too. Radii
the file leaves out are taken from a source declaring the same types, else measured from
the density (:func:`cryopick.simulate.user_maps.density_for`).

Fine-tuning a model onto another set keeps every weight but the output layer's, which is
re-initialised for the new types (:func:`fit_output_layer`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet, default_particle_set
from cryopick.model.network import PickingNetwork, replace_head

if TYPE_CHECKING:
    from cryopick.training.sampling import TrainRun

log = logging.getLogger(__name__)

#: (where a set comes from, the set): a source and the set it declares
Declared = tuple[str, ParticleSet]


def source_particle_set(source: str | Path) -> ParticleSet:
    """Return the set a training source declares (the CZII set when it declares none).

    Parameters
    ----------
    source : str or Path
        A copick config, a Kaggle root or another project folder.

    Raises
    ------
    InputError
        If the source's copick config cannot be read or declares an invalid set.
    """
    from cryopick.io.picks.copick_read import project_particle_set

    return project_particle_set(source) or default_particle_set()


def run_sets(runs: Iterable[TrainRun]) -> list[Declared]:
    """Return the set of each in-memory run, named ``source:run`` (see training_particle_set)."""
    return [(f"{run.source}:{run.name}" if run.source else run.name, run.particles) for run in runs]


def training_particle_set(
    declared: Sequence[Declared],
    particles: ParticleSet | None = None,
    reference_name: str = "the particles file",
    spacing_A: float = 10.0,
) -> ParticleSet:
    """Return the set a training run learns; every source must declare it.

    Parameters
    ----------
    declared : sequence of (str, ParticleSet)
        Each training / validation source and the set it declares.
    particles : ParticleSet, optional
        The set to learn (from a particles file); None: the sources' common set (the
        CZII set when there are no sources).
    reference_name : str
        What ``particles`` is, for messages (e.g. ``particles file types.json``).
    spacing_A : float
        Voxel size at which radii missing from ``particles`` are measured, when no source
        declares the same types.

    Returns
    -------
    ParticleSet
        The set, every radius known.

    Raises
    ------
    InputError
        One line naming each source whose set differs and how.
    """
    if particles is None:
        if not declared:
            return default_particle_set()
        reference_name, reference = declared[0]
    else:
        from cryopick.core.particles_file import complete_radii

        reference = complete_radii(particles, [other for _, other in declared], spacing_A)
    problems = [
        f"{reference_name} vs {name}: {diff}"
        for name, other in declared
        if (diff := reference.describe_differences(other))
    ]
    if problems:
        raise InputError(
            None,
            "the training data declare different particle sets (every training and "
            f"validation source must declare the set learnt): {'; '.join(problems)}",
        )
    return reference


def check_simulatable(particles: ParticleSet, has_file: bool) -> None:
    """Refuse to simulate a custom set the training data declare without a particles file.

    Raises
    ------
    InputError
        If ``particles`` is not the CZII set and no particles file gives the densities.
    """
    if not has_file and not particles.is_czii:
        raise InputError(
            None,
            f"--simulate with the training data's particle types ({', '.join(particles.names)}) "
            "needs --particles FILE giving their density maps or models",
        )


def fit_output_layer(
    model: PickingNetwork, trained_on: ParticleSet, particles: ParticleSet
) -> PickingNetwork:
    """Fit a trained network's output layer to the set a fine-tuning run learns.

    The same types in the same order keep every weight. Otherwise only the output layer
    (the final 1x1x1 convolution) is replaced, with one channel per type of
    ``particles``: the background channel, and those of types the model knew (by name
    or alias), keep their weights (reordered as needed); the others are initialised as in
    a fresh network. One log line says what was re-initialised.

    Parameters
    ----------
    model : UNet3D or UNetEnsemble
        The trained network (changed in place; every member of an ensemble).
    trained_on : ParticleSet
        The set it was trained on (its card's).
    particles : ParticleSet
        The set to learn now.

    Returns
    -------
    UNet3D or UNetEnsemble
        ``model``.
    """
    if trained_on.names == particles.names:
        return model
    kept = {0: 0}
    for spec in particles:
        if spec.name in trained_on:
            kept[int(spec.label or 0)] = trained_on.label(spec.name)
    replace_head(model, particles.n_classes, kept)
    fresh = [spec.name for spec in particles if spec.name not in trained_on]
    known = [spec.name for spec in particles if spec.name in trained_on]
    log.info(
        "fine-tuning from types %s to %s: output layer re-initialised for %s (kept: %s); "
        "every other weight kept",
        ", ".join(trained_on.names),
        ", ".join(particles.names),
        ", ".join(fresh) or "none",
        ", ".join(["background", *known]),
    )
    return model
