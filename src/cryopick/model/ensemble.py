"""Combine trained models into one: an ensemble (logits averaged) or one weight average.

Networks trained on different data mixes are good at different things (docs/benchmarks.md:
one trained mostly on ``czii`` runs, one with twice the domain-randomised runs); the mean
of their logits is better than either. :func:`combine_models` builds that
:class:`~cryopick.model.network.UNetEnsemble` from model folders of one architecture,
voxel size, normalisation, target and particle set, and a card that says where each member
came from. The combined card has no thresholds, calibration or rescorer: the averaged
logits have their own score scale, so tune it (``cryopick tune``) before use.

:func:`average_model_weights` instead averages the weights themselves, parameter by
parameter (BatchNorm statistics too): a model and its fine-tuned copy, averaged, often
generalise better than either (Wortsman et al. 2022, "robust fine-tuning"), at no cost in
prediction time. That needs models of one architecture fine-tuned from one start; the
weights of independently trained networks do not correspond and must not be averaged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from cryopick.core.errors import InputError
from cryopick.model.card import ModelCard
from cryopick.model.network import ModelConfig, PickingNetwork, UNet3D, UNetEnsemble
from cryopick.model.store import load_model

__all__ = ["average_model_weights", "combine_models", "member_networks"]


def member_networks(model: PickingNetwork) -> list[UNet3D]:
    """Return the single U-Nets in ``model`` (itself, or an ensemble's members)."""
    if isinstance(model, UNetEnsemble):
        return [net for net in model.nets if isinstance(net, UNet3D)]
    return [model]


def _check_compatible(first: ModelCard, card: ModelCard, path: Path) -> None:
    """Raise an InputError naming ``path`` if its model cannot be averaged with the first."""
    single = {"members": 1, "flip_odd_members": False}  # any network can be any member
    arch_a = first.architecture.model_copy(update=single)
    arch_b = card.architecture.model_copy(update=single)
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


def _describe_member(path: Path, card: ModelCard, which: str) -> str:
    """One line of provenance for a model: where it came from and how it was trained."""
    score = "n/a" if card.score is None else f"{card.score:.3f}"
    return (
        f"{which}: {path} ({card.steps} steps, "
        f"validation F4 {score}; its provenance: {card.provenance or 'not recorded'})"
    )


def combine_models(
    model_dirs: Sequence[str | Path], device: str = "cpu", flip_odd_members: bool = False
) -> tuple[UNetEnsemble, ModelCard]:
    """Average the logits of trained models: one ensemble network and its untuned card.

    Parameters
    ----------
    model_dirs : sequence of str or Path
        Model folders (``model.pt`` + ``model.json``), at least two networks in all; a
        folder holding an ensemble contributes each of its members.
    device : str
        Where to put the ensemble.
    flip_odd_members : bool
        Members 1, 3, ... see each window flipped in y and x
        (:attr:`~cryopick.model.network.ModelConfig.flip_odd_members`).

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
    architecture = ModelConfig.model_validate(
        first.architecture.model_dump()
        | {"members": len(members), "flip_odd_members": flip_odd_members}
    )
    ensemble = UNetEnsemble(architecture).to(device)
    for target, source in zip(ensemble.nets, members, strict=True):
        target.load_state_dict(source.state_dict())
    lines, index = [], 0
    for path, (model, card) in zip(paths, loaded, strict=True):
        count = len(member_networks(model))
        which = f"member {index}" if count == 1 else f"members {index}-{index + count - 1}"
        lines.append(_describe_member(path, card, which))
        index += count
    head = "Ensemble (mean of the members' logits), combined with cryopick combine"
    head += " --flip-odd-members. " if flip_odd_members else ". "
    return ensemble.eval(), _combined_card(loaded, architecture, head + " --- ".join(lines))


def average_model_weights(
    model_dirs: Sequence[str | Path], device: str = "cpu"
) -> tuple[PickingNetwork, ModelCard]:
    """Average the weights of models fine-tuned from one start: one network, untuned card.

    Parameters
    ----------
    model_dirs : sequence of str or Path
        At least two model folders of one architecture (ensembles of as many members).
    device : str
        Where to put the network.

    Returns
    -------
    (PickingNetwork, ModelCard)
        The network (every floating-point parameter and buffer the mean of the models'),
        in eval mode, and a card as :func:`combine_models` writes one.

    Raises
    ------
    InputError
        Naming a folder that is not a model, or that differs from the first in
        architecture (members included), voxel size, normalisation, target or types.
    """
    paths = [Path(d) for d in model_dirs]
    if len(paths) < 2:
        raise InputError(paths[0] if paths else None, "averaging needs at least two models")
    loaded = [load_model(path, device) for path in paths]
    first = loaded[0][1]
    for path, (_, card) in zip(paths[1:], loaded[1:], strict=True):
        _check_compatible(first, card, path)
        if card.architecture.members != first.architecture.members:
            raise InputError(
                path,
                f"has {card.architecture.members} member networks, the first model "
                f"{first.architecture.members}: weights average only within one architecture",
            )
    states = [model.state_dict() for model, _ in loaded]
    network = loaded[0][0]
    network.load_state_dict({key: _mean_tensor([s[key] for s in states]) for key in states[0]})
    lines = [
        _describe_member(path, card, f"model {i}")
        for i, (path, (_, card)) in enumerate(zip(paths, loaded, strict=True))
    ]
    head = "Weights averaged over the models below, with cryopick combine --average-weights. "
    card = _combined_card(loaded, first.architecture, head + " --- ".join(lines))
    return network.eval(), card


def _mean_tensor(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Return the mean of floating-point tensors (in float64, cast back), else the first."""
    if not tensors[0].is_floating_point():
        return tensors[0]  # e.g. BatchNorm's step counter
    mean = torch.stack([t.double() for t in tensors]).mean(dim=0)
    return mean.to(tensors[0].dtype)


def _combined_card(
    loaded: list[tuple[PickingNetwork, ModelCard]], architecture: ModelConfig, provenance: str
) -> ModelCard:
    """Return the untuned card of a model made from ``loaded`` (the first's settings)."""
    first = loaded[0][1]
    return ModelCard(
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
        provenance=provenance,
    )
