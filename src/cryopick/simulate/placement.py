"""Placing things in the specimen: free-space tests and the crowding distractors.

Particles are placed by rejection sampling on an occupancy grid (:func:`try_place`): a
particle's support may not touch any voxel already taken. :func:`fill_distractors` crowds
the ice with distractor proteins (and, when the config turns them on, procedural crowders
and hard negatives) until their volume fraction reaches the run's drawn value, and says
where it put each one.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from cryopick.simulate.artefacts import paste_slices
from cryopick.simulate.crowders import crowder_pool, flip_and_permute
from cryopick.simulate.distractors import distractor_pool
from cryopick.simulate.library import SpecimenLibrary
from cryopick.simulate.presets import SimulationConfig
from cryopick.simulate.templates import support_mask

DISTRACTOR_KINDS = ("large", "hard", "procedural", "small")
"""The kinds of distractor :func:`fill_distractors` places, in the order it places them."""


def try_place(
    occupied: NDArray[np.bool_],
    mask: NDArray[np.bool_],
    centre: NDArray[np.int64],
) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Slices where ``mask`` centred at ``centre`` fits without touching ``occupied``."""
    corner = centre - np.array(mask.shape) // 2
    sl = paste_slices(occupied.shape, corner, mask.shape)
    if sl is None:
        return None
    vol_sl, box_sl = sl
    if np.any(occupied[vol_sl] & mask[box_sl]):
        return None
    return sl


def random_centre(
    shape: tuple[int, int, int], z_range: tuple[float, float], rng: np.random.Generator
) -> NDArray[np.int64]:
    """Return a uniformly drawn voxel with z within ``z_range`` (the ice), any y and x."""
    z = rng.uniform(*z_range)
    y, x = rng.uniform(0, shape[1]), rng.uniform(0, shape[2])
    return np.floor([z, y, x]).astype(np.int64)


def fill_distractors(
    potential: NDArray[np.float32],
    occupied: NDArray[np.bool_],
    config: SimulationConfig,
    params: dict,
    ice_voxels: float,
    z_range: tuple[float, float],
    rng: np.random.Generator,
    spacing_A: float,
    library: SpecimenLibrary,
) -> dict[str, list[tuple[str, NDArray[np.float64]]]]:
    """Crowd the ice with distractors until their volume fraction reaches the drawn value.

    With procedural crowders on, a drawn share of that volume is theirs, part of it hard
    negatives. Returns the placed distractors (name, centre in voxels) by kind
    (:data:`DISTRACTOR_KINDS`).
    """
    small, large = distractor_pool(rng, spacing_A, library.distractors)
    pools: dict[str, list[tuple[str, NDArray]]] = {kind: [] for kind in DISTRACTOR_KINDS}
    pools["large"], pools["small"] = large, small
    target = params["crowding_fraction"] * ice_voxels
    budget = {"hard": 0.0, "procedural": 0.0}
    crowders = config.extras.crowders
    if crowders.enabled:  # drawn only when on, so runs without them reproduce
        procedural, hard = crowder_pool(crowders, library, spacing_A, rng)
        pools["procedural"] = [("crowder", d) for d in procedural]
        pools["hard"] = [("hard-negative", d) for d in hard]
        share = target * rng.uniform(*crowders.fraction)
        budget["hard"] = share * crowders.hard_negative_fraction
        budget["procedural"] = share - budget["hard"]
        target -= share
    budget["large"] = target * config.large_distractor_fraction
    budget["small"] = target - budget["large"]
    return {
        kind: paste_pool(
            potential, occupied, pool, budget[kind], z_range, rng, config.protein_contrast_V,
            reorient=kind in ("hard", "procedural"),
        )
        for kind, pool in pools.items()
    }  # fmt: skip


def paste_pool(
    potential: NDArray[np.float32],
    occupied: NDArray[np.bool_],
    pool: list[tuple[str, NDArray]],
    budget_vox: float,
    z_range: tuple[float, float],
    rng: np.random.Generator,
    volts: float,
    reorient: bool,
) -> list[tuple[str, NDArray[np.float64]]]:
    """Paste random members of a pool into free space until their volume reaches the budget.

    Gives up after 200 failures in a row; ``reorient`` turns each paste to one of 48 axis
    orientations (the procedural crowders, whose holes are filled in their masks). Returns
    the name and box centre (voxels) of every member placed.
    """
    if not pool:
        return []
    masks = [support_mask(d) if reorient else d > 0.35 for _, d in pool]
    volumes = [m.sum() for m in masks]
    filled, failures = 0.0, 0
    placed: list[tuple[str, NDArray[np.float64]]] = []
    while filled < budget_vox and failures < 200:
        i = int(rng.integers(len(pool)))
        (name, density), mask = pool[i], masks[i]
        if reorient:
            density, mask = flip_and_permute((density, mask), rng)
        centre = random_centre(potential.shape, z_range, rng)
        sl = try_place(occupied, mask, centre)
        if sl is None:
            failures += 1
            continue
        failures = 0
        vol_sl, box_sl = sl
        potential[vol_sl] += volts * density[box_sl]
        occupied[vol_sl] |= mask[box_sl]
        filled += volumes[i]
        box_centre = centre - np.array(mask.shape) // 2 + (np.array(mask.shape) - 1) / 2
        placed.append((name, box_centre.astype(np.float64)))
    return placed
