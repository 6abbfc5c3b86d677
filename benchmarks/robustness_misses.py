"""Why a robustness condition loses: where the model's picks sit against the truth.

For one condition of ``benchmarks/robustness.py`` (same simulation, same seeds), simulates
the runs, picks them with a model and prints, per particle type: how far each true particle
is from the nearest pick of its own type (quartiles), the mean offset (z, y, x) of the
picks within 100 Å (a systematic shift shows here; the CZII metric allows half a radius),
and for the particles missed (no pick of their type within half a radius): the type of
the nearest pick of any type within 40 Å, and the local background of the normalised
tomogram around them (the mean of the column through the particle, smoothed over
15 voxels in y and x; 0 is the tomogram's median, 1 its robust spread) next to that of
the particles found. A carbon film, for example, shows as missed particles sitting on a
bright background.

    python benchmarks/robustness_misses.py "carbon edge" [--model DIR] [--runs 2]
        [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from robustness import CONDITIONS, simulate_condition
from scipy import ndimage
from scipy.spatial import cKDTree

from cryopick.inference.pipeline import predict_tomogram
from cryopick.inference.preprocess import normalise_volume
from cryopick.model import bundled_model_dir, load_model

ROOT = Path(__file__).resolve().parents[1]
ZYX = ["z", "y", "x"]


def describe_type(
    truth: pd.DataFrame,
    picks: pd.DataFrame,
    background: np.ndarray,
    spacing_A: float,
    name: str,
    radius_A: float,
) -> dict[str, Any]:
    """Distances, offsets and misses of one particle type in one run."""
    true_zyx = truth.loc[truth.particle_type == name, ZYX].to_numpy()
    own = picks.loc[picks.particle_type == name, ZYX].to_numpy()
    if len(true_zyx) == 0:
        return {"truth": 0}
    if len(own):
        distance, nearest = cKDTree(own).query(true_zyx)
        close = distance < 100.0
        offsets = own[nearest[close]] - true_zyx[close]
    else:
        distance, offsets = np.full(len(true_zyx), np.inf), np.zeros((0, 3))
    missed = distance > 0.5 * radius_A
    any_distance, any_index = cKDTree(picks[ZYX].to_numpy()).query(true_zyx)
    confused = missed & (any_distance < 40.0)
    yx = np.clip((true_zyx[:, 1:] / spacing_A).astype(int), 0, np.array(background.shape) - 1)
    local = background[yx[:, 0], yx[:, 1]]
    return {
        "truth": len(true_zyx),
        "picks": len(own),
        "missed": int(missed.sum()),
        "distance_quartiles_A": np.round(np.percentile(distance, [25, 50, 75]), 1).tolist(),
        "mean_offset_zyx_A": np.round(offsets.mean(axis=0), 1).tolist() if len(offsets) else [],
        "missed_picked_as": picks.particle_type.to_numpy()[any_index[confused]].tolist(),
        "background_missed": round(float(local[missed].mean()), 2) if missed.any() else None,
        "background_found": round(float(local[~missed].mean()), 2) if (~missed).any() else None,
    }


def diagnose(name: str, model_dir: Path, runs: int, seed: int) -> list[dict[str, Any]]:
    """Simulate the condition's runs as robustness.py does and describe each type per run."""
    network, card = load_model(model_dir)
    rows = []
    for i in range(runs):
        run, tomogram = simulate_condition(name, (184, 448, 448), seed, i)
        picks = predict_tomogram(tomogram, network, card)
        column_mean = normalise_volume(tomogram.data, clip_sigma=None).mean(axis=0)
        background = ndimage.uniform_filter(column_mean, 15)
        for particle in card.particle_set.names:
            radius_A = card.particle_set.radius_A(particle)
            row = describe_type(
                run.picks, picks, background, tomogram.spacing_A, particle, radius_A
            )
            rows.append({"run": f"r{i}", "particle_type": particle, **row})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("condition", choices=list(CONDITIONS))
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=6262)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    model_dir = args.model or bundled_model_dir()
    rows = diagnose(args.condition, model_dir, args.runs, args.seed)
    record = {"condition": args.condition, "model": str(model_dir), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isascii() and c.isalnum() else "_" for c in args.condition).strip("_")
    path = args.out / f"robustness_misses_{slug}.json"
    path.write_text(json.dumps(record, indent=2))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
