"""Combine trained models into one ensemble model (their logits averaged).

Networks trained on different data mixes are good at different things (docs/benchmarks.md:
one trained mostly on ``czii`` runs, one with twice the domain-randomised runs); the mean
of their logits is better than either. :func:`combine_models` builds that
:class:`~cryopick.model.network.UNetEnsemble` from model folders of one architecture,
voxel size, normalisation, target and particle set, and a card that says where each member
came from. The combined card has no thresholds, calibration or rescorer: the averaged
logits have their own score scale, so tune it (``cryopick tune``) before use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from cryopick.core.errors import InputError
from cryopick.model.card import ModelCard
from cryopick.model.network import PickingNetwork, UNet3D, UNetEnsemble
from cryopick.model.store import load_model

__all__ = ["combine_models", "member_networks"]


def member_networks(model: PickingNetwork) -> list[UNet3D]:
    """Return the single U-Nets in ``model`` (itself, or an ensemble's members)."""
    if isinstance(model, UNetEnsemble):
        return [net for net in model.nets if isinstance(net, UNet3D)]
    return [model]


def _check_compatible(first: ModelCard, card: ModelCard, path: Path) -> None:
    """Raise an InputError naming ``path`` if its model cannot be averaged with the first."""
    arch_a = first.architecture.model_copy(update={"members": 1})
    arch_b = card.architecture.model_copy(update={"members": 1})
    problems = []
    if arch_a != arch_b:
        problems.append(f"architecture {arch_b.model_dump()} differs from {arch_a.model_dump()}")
    if not math.isclose(first.spacing_A, card.spacing_A, rel_tol=1e-3):
        problems.append(f"voxel size {card.spacing_A} Å differs from {first.spacing_A} Å")
    if first.normalisation != card.normalisation:
        problems.append(f"normalisation {card.normalisation} differs from {first.normalisation}")
    if first.target != card.target:
        problems.append(f"target {card.target} differs from {first.target}")
    if first.particle_set.names != card.particle_set.names:
        problems.append(
            f"particle types {card.particle_set.names} differ from {first.particle_set.names}"
        )
    if problems:
        raise InputError(path, "cannot be combined with the first model: " + "; ".join(problems))


def _describe_member(path: Path, card: ModelCard, index: int, count: int) -> str:
    """One line of provenance for a member: where it came from and how it was trained."""
    score = "n/a" if card.score is None else f"{card.score:.3f}"
    which = f"member {index}" if count == 1 else f"members {index}-{index + count - 1}"
    return (
        f"{which}: {path} ({card.steps} steps, "
        f"validation F4 {score}; its provenance: {card.provenance or 'not recorded'})"
    )


def combine_models(
    model_dirs: Sequence[str | Path], device: str = "cpu"
) -> tuple[UNetEnsemble, ModelCard]:
    """Average the logits of trained models: one ensemble network and its untuned card.

    Parameters
    ----------
    model_dirs : sequence of str or Path
        Model folders (``model.pt`` + ``model.json``), at least two networks in all; a
        folder holding an ensemble contributes each of its members.
    device : str
        Where to put the ensemble.

    Returns
    -------
    (UNetEnsemble, ModelCard)
        The network in eval mode, and a card with the first model's settings, the members'
        training data and provenance, and no thresholds, calibration or rescorer.

    Raises
    ------
    InputError
        Naming a folder that is not a model, or whose architecture (widths, strides...),
        voxel size, normalisation, target or particle types differ from the first's.
    """
    paths = [Path(d) for d in model_dirs]
    loaded = [load_model(path, device) for path in paths]
    first = loaded[0][1]
    for path, (_, card) in zip(paths[1:], loaded[1:], strict=True):
        _check_compatible(first, card, path)
    members = [net for model, _ in loaded for net in member_networks(model)]
    if len(members) < 2:
        raise InputError(paths[0], "an ensemble needs at least two networks: give more models")
    architecture = first.architecture.model_copy(update={"members": len(members)})
    ensemble = UNetEnsemble(architecture).to(device)
    for target, source in zip(ensemble.nets, members, strict=True):
        target.load_state_dict(source.state_dict())
    lines, index = [], 0
    for path, (model, card) in zip(paths, loaded, strict=True):
        count = len(member_networks(model))
        lines.append(_describe_member(path, card, index, count))
        index += count
    card = ModelCard(
        architecture=architecture,
        spacing_A=first.spacing_A,
        normalisation=first.normalisation,
        patch_size=first.patch_size,
        target=first.target,
        particles=first.particles,
        training_data=list(dict.fromkeys(d for _, c in loaded for d in c.training_data)),
        validation_data=first.validation_data,
        steps=sum(c.steps for _, c in loaded),
        wall_time_s=sum(c.wall_time_s for _, c in loaded),
        provenance="Ensemble (mean of the members' logits), combined with cryopick combine. "
        + " --- ".join(lines),
    )
    return ensemble.eval(), card
