"""Compare simulated runs with the real CZII training picks, and time the simulator.

Usage::

    python benchmarks/simulate_realism.py [--runs 3] [--shape 184 630 630] [--preset czii]
        [--real /work/shared/data/czii_train_picks.csv] [--img-dir docs/img]

Prints and saves ``benchmarks/results/simulate_realism_<preset>.json`` with, per class,
the number of particles per tomogram (simulated runs are rescaled to the real
630 x 630 x 184 volume), nearest-neighbour distances (to any other particle) and the
depth (z) distribution, and the seconds per run and per stage. Saves into ``--img-dir``
an XY and an XZ slice of the first simulated run and the per-class sub-tomogram averages.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from cryopick.core.particles import default_particle_set
from cryopick.simulate import simulate_run
from cryopick.simulate.presets import REAL_VOLUME_A3
from cryopick.simulate.templates import load_templates

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PARTICLE_NAMES = default_particle_set().names
REAL_CSV = Path("/work/shared/data/czii_train_picks.csv")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _nn_distances_A(df: pd.DataFrame) -> pd.Series:
    """Distance from each pick to the nearest other pick of the same tomogram (any class)."""
    out = pd.Series(np.nan, index=df.index)
    for _, group in df.groupby("experiment"):
        xyz = group[["x", "y", "z"]].to_numpy()
        if len(xyz) > 1:
            dist, _ = cKDTree(xyz).query(xyz, k=2)
            out.loc[group.index] = dist[:, 1]
    return out


def _summarise(df: pd.DataFrame, count_scale: float, z_extent_A: float) -> dict:
    df = df.assign(nn_A=_nn_distances_A(df), depth=df["z"] / z_extent_A)
    counts = df.groupby(["experiment", "particle_type"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=list(PARTICLE_NAMES), fill_value=0) * count_scale
    summary = {"n_tomograms": int(df["experiment"].nunique())}
    for name in [*PARTICLE_NAMES, "all"]:
        sel = df if name == "all" else df[df["particle_type"] == name]
        per_tomo = counts.sum(axis=1) if name == "all" else counts[name]
        summary[name] = {
            "count_per_tomogram_mean": round(float(per_tomo.mean()), 1),
            "count_per_tomogram_std": round(float(per_tomo.std(ddof=0)), 1),
            "nn_distance_A_quantiles": [
                round(float(q), 1) for q in sel["nn_A"].quantile(QUANTILES)
            ],
            "depth_fraction_quantiles": [
                round(float(q), 3) for q in sel["depth"].quantile(QUANTILES)
            ],
        }
    return summary


def _save_slices(run, img_dir: Path, preset: str) -> list[str]:
    names = []
    for tomo_type in ("denoised", "wbp"):
        volume = run.tomograms[tomo_type]
        nz, ny, _ = volume.shape
        lo, hi = np.percentile(volume, [1, 99])
        fig, axes = plt.subplots(
            2, 1, figsize=(8, 8 * (ny + nz) / volume.shape[2]), height_ratios=[ny, nz]
        )
        axes[0].imshow(volume[nz // 2], cmap="gray", vmin=lo, vmax=hi)
        axes[0].set_title(f"simulated ({preset}) {tomo_type}: XY slice z={nz // 2}")
        axes[1].imshow(volume[:, ny // 2], cmap="gray", vmin=lo, vmax=hi)
        axes[1].set_title(f"XZ slice y={ny // 2}")
        for ax in axes:
            ax.set_axis_off()
        fig.tight_layout()
        name = f"sim_{preset}_{tomo_type}_slices.png"
        fig.savefig(img_dir / name, dpi=60)
        plt.close(fig)
        names.append(name)
    return names


def _save_averages(runs, img_dir: Path, preset: str, tomo_type: str = "denoised") -> str:
    templates = load_templates()
    fig, axes = plt.subplots(2, len(PARTICLE_NAMES), figsize=(2.6 * len(PARTICLE_NAMES), 5.6))
    for j, name in enumerate(PARTICLE_NAMES):
        half = templates[f"target/{name}"].density.shape[0] // 2 + 4
        boxes = []
        for run in runs:
            volume = np.pad(run.tomograms[tomo_type], half, mode="reflect")
            sel = run.picks[run.picks["particle_type"] == name]
            zyx_all = np.round(sel[["z", "y", "x"]].to_numpy() / run.spacing_A).astype(int)
            for zyx in np.clip(zyx_all, 0, np.array(run.labels.shape) - 1):
                boxes.append(volume[tuple(slice(c, c + 2 * half + 1) for c in zyx)])
        if boxes:
            avg = np.mean(boxes, axis=0)
            axes[0, j].imshow(avg[half], cmap="gray")
            axes[1, j].imshow(avg[:, half], cmap="gray")
        axes[0, j].set_title(f"{name}\n(n={len(boxes)}) XY", fontsize=9)
        axes[1, j].set_title("XZ", fontsize=9)
        for ax in axes[:, j]:
            ax.set_axis_off()
    fig.tight_layout()
    name = f"sim_{preset}_averages.png"
    fig.savefig(img_dir / name, dpi=60)
    plt.close(fig)
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=(184, 630, 630))
    parser.add_argument("--preset", default="czii")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", type=Path, default=REAL_CSV)
    parser.add_argument("--img-dir", type=Path, default=Path("docs/img"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    args.img_dir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    shape = tuple(args.shape)

    runs, seconds = [], []
    for i in range(args.runs):
        t0 = time.perf_counter()
        run = simulate_run(
            args.preset, shape, 10.0, np.random.SeedSequence([args.seed, i]), f"sim_{i:04d}"
        )
        seconds.append(time.perf_counter() - t0)
        extra = f"{run.params['n_distractors']} distractors, {run.params['n_vesicles']} vesicles"
        print(f"{run.name}: {seconds[-1]:.1f} s {run.timings_s} {len(run.picks)} targets, {extra}")
        runs.append(run)
    sim = pd.concat([r.picks for r in runs], ignore_index=True)
    real = pd.read_csv(args.real)
    volume_A3 = float(np.prod(shape)) * 10.0**3
    report = {
        "preset": args.preset,
        "shape_zyx": list(shape),
        "n_runs": args.runs,
        "seconds_per_run": [round(s, 2) for s in seconds],
        "seconds_per_stage": [{k: round(v, 2) for k, v in r.timings_s.items()} for r in runs],
        "quantiles": list(QUANTILES),
        "simulated": _summarise(sim, REAL_VOLUME_A3 / volume_A3, shape[0] * 10.0),
        "real": _summarise(real, 1.0, 184 * 10.012),
        "images": [
            *_save_slices(runs[0], args.img_dir, args.preset),
            _save_averages(runs, args.img_dir, args.preset),
        ],
    }
    path = args.out / f"simulate_realism_{args.preset}.json"
    path.write_text(json.dumps(report, indent=1))
    print(
        "class / count per tomogram sim, real / NN median sim, real (Å) / depth q25-q75 sim, real"
    )
    for name in [*PARTICLE_NAMES, "all"]:
        s, r = report["simulated"][name], report["real"][name]
        cells = [
            f"{name:20s}",
            f"{s['count_per_tomogram_mean']:6.1f}±{s['count_per_tomogram_std']:<5.1f}",
            f"{r['count_per_tomogram_mean']:6.1f}±{r['count_per_tomogram_std']:<5.1f}",
            f"{s['nn_distance_A_quantiles'][2]:6.0f} {r['nn_distance_A_quantiles'][2]:6.0f}",
            f"{s['depth_fraction_quantiles'][1]:.2f}-{s['depth_fraction_quantiles'][3]:.2f}",
            f"{r['depth_fraction_quantiles'][1]:.2f}-{r['depth_fraction_quantiles'][3]:.2f}",
        ]
        print("  ".join(cells))
    print(f"seconds per run: {np.mean(seconds):.1f} (shape {shape}); wrote {path}")


if __name__ == "__main__":
    main()
