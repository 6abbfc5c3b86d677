"""Figures of the simulator's optional specimen elements for docs/simulation.md.

Usage::

    python benchmarks/simulate_elements_figures.py [--img-dir docs/img] [--shape 96 256 256]

Simulates one small ``czii`` tomogram per element with only that element on (gold
fiducials, carbon edge, ice contamination, procedural crowders with hard negatives) and
saves ``sim_<element>.png``: XY and XZ slices of the ``denoised`` tomogram through the
element (for the crowders, the central XY slice and a gallery of crowders and hard
negatives beside the beta-galactosidase and thyroglobulin maps they imitate), and
``sim_crowder_families.png``: three crowders of each procedural family.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

from cryopick.simulate import get_preset, simulate_run
from cryopick.simulate.artefacts import CarbonFilm, GoldBeads, IceContamination, SpecimenExtras
from cryopick.simulate.crowders import (
    SHAPES,
    ProceduralCrowders,
    crowder_pool,
    imitated_targets,
    make_crowder,
)
from cryopick.simulate.library import prepare_library
from cryopick.simulate.presets import SimulationConfig, draw_run_params
from cryopick.simulate.sample import Sample, build_sample

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HARD = ("beta-galactosidase", "thyroglobulin")
ELEMENTS = {
    "gold_fiducials": SpecimenExtras(gold=GoldBeads(probability=1.0, per_um2=(60.0, 60.0))),
    "carbon_edge": SpecimenExtras(carbon=CarbonFilm(probability=1.0)),
    "ice_contamination": SpecimenExtras(
        contamination=IceContamination(probability=1.0, count=(3, 3))
    ),
    "procedural_crowders": SpecimenExtras(
        crowders=ProceduralCrowders(
            fraction=(0.5, 0.5), hard_negative_fraction=0.25, hard_negative_types=HARD
        )
    ),
}
SEEDS = {"gold_fiducials": 1, "carbon_edge": 1, "ice_contamination": 2, "procedural_crowders": 1}


def _sample(config: SimulationConfig, shape: tuple[int, int, int], seed: int) -> Sample:
    """The specimen of ``simulate_run(config, shape, 10.0, seed)`` (same draws)."""
    rng = np.random.default_rng(seed)
    return build_sample(config, draw_run_params(config, rng), shape, 10.0, rng)


def _element_zy(element: str, sample: Sample, config: SimulationConfig) -> tuple[int, int]:
    """A z slice and a y row through the element, from the specimen's potential."""
    potential, ice_V = sample.potential, config.ice_potential_V
    if element == "gold_fiducials":
        z, y, _ = np.unravel_index(np.argmax(potential), potential.shape)
        return int(z), int(y)
    if element == "carbon_edge":
        carbon_V = ice_V + config.extras.carbon.contrast * config.protein_contrast_V
        material = np.abs(potential - carbon_V) < 0.05
    else:  # contamination: material beyond the ice
        material = (sample.slab_fraction == 0) & (potential > 0.5 * ice_V)
    z = int(np.argmax(material.sum(axis=(1, 2))))
    return z, int(np.argmax(material[z].sum(axis=1)))


def _show(ax, image: np.ndarray, lo: float, hi: float, title: str) -> None:
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def _slices_figure(element: str, shape: tuple[int, int, int], img_dir: Path) -> Path:
    config = get_preset("czii").model_copy(update={"extras": ELEMENTS[element]})
    seed = SEEDS[element]
    volume = simulate_run(config, shape, 10.0, seed=seed).tomograms["denoised"]
    z, y = _element_zy(element, _sample(config, shape, seed), config)
    lo, hi = np.percentile(volume, [1, 99])
    nz, _, nx = volume.shape
    fig, axes = plt.subplots(
        1, 3, figsize=(10, 3.6), width_ratios=[nx, nx, nx * 1.0], layout="constrained"
    )
    _show(axes[0], volume[z], lo, hi, f"XY z={z} (through it)")
    _show(axes[1], volume[nz // 2], lo, hi, f"XY z={nz // 2} (central)")
    _show(axes[2], volume[:, y], lo, hi, f"XZ y={y}")
    fig.suptitle(f"{element.replace('_', ' ')} (czii, denoised, 10 Å voxels)", fontsize=10)
    path = img_dir / f"sim_{element}.png"
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


def _crowders_figure(shape: tuple[int, int, int], img_dir: Path) -> Path:
    extras = ELEMENTS["procedural_crowders"]
    config = get_preset("czii").model_copy(update={"extras": extras})
    volume = simulate_run(config, shape, 10.0, seed=SEEDS["procedural_crowders"])
    tomogram = volume.tomograms["denoised"]
    library = prepare_library(None, 10.0)
    crowders = extras.crowders.model_copy(update={"n_shapes": 8, "n_hard_negative_shapes": 2})
    shapes, hard = crowder_pool(crowders, library, 10.0, np.random.default_rng(0))
    targets = [t.on_grid()[0] for t in imitated_targets(crowders, library)]
    gallery = [*shapes, targets[0], *hard[:2], targets[1], *hard[2:4]]
    names = (
        ["crowder"] * 8
        + [HARD[0], "hard negative", "hard negative"] * 1
        + [HARD[1], "hard negative", "hard negative"]
    )
    fig = plt.figure(figsize=(12, 4.4), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1, 1.5])
    ax = left.subplots()
    lo, hi = np.percentile(tomogram, [1, 99])
    nz = tomogram.shape[0]
    _show(ax, tomogram[nz // 2], lo, hi, f"XY z={nz // 2}: half the crowding is procedural")
    cells = right.subplots(2, 7)
    for cell, density, name in zip(cells.ravel(), gallery, names, strict=True):
        cell.imshow(density.sum(axis=0), cmap="gray_r")
        cell.set_title(name, fontsize=7)
        cell.set_axis_off()
    right.suptitle("projections along Z (10 Å voxels, not to one scale)", fontsize=9)
    path = img_dir / "sim_procedural_crowders.png"
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


def _families_figure(img_dir: Path) -> Path:
    """Three crowders of each family, 200 Å across, projected along z."""
    families = (*SHAPES, "ring")
    fig, cells = plt.subplots(3, len(families), figsize=(7, 4.4), layout="constrained")
    rng = np.random.default_rng(4)
    for column, family in enumerate(families):
        config = ProceduralCrowders(fraction=(0.5, 0.5), size_A=(200.0, 200.0), shapes=(family,))
        for row in range(3):
            cell = cells[row, column]
            cell.imshow(make_crowder(config, 10.0, rng).sum(axis=0), cmap="gray_r")
            cell.set_axis_off()
            if row == 0:
                cell.set_title(family, fontsize=9)
    fig.suptitle("procedural crowder families (projections along z, 10 Å voxels)", fontsize=9)
    path = img_dir / "sim_crowder_families.png"
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--img-dir", type=Path, default=Path("docs/img"))
    parser.add_argument("--shape", type=int, nargs=3, default=(96, 256, 256))
    args = parser.parse_args()
    args.img_dir.mkdir(parents=True, exist_ok=True)
    shape = (args.shape[0], args.shape[1], args.shape[2])
    for element in ELEMENTS:
        if element == "procedural_crowders":
            path = _crowders_figure(shape, args.img_dir)
        else:
            path = _slices_figure(element, shape, args.img_dir)
        print(f"{path} ({path.stat().st_size / 1024:.0f} KB)")
    path = _families_figure(args.img_dir)
    print(f"{path} ({path.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
