"""Which of the rescorer's density-shape descriptors earn their place (held-out F4 per group).

The rescorer reads the map around each candidate and the tomogram's radial density profile
(``map+density``); ``map+density+shape`` adds orientation-free descriptors of the density
crop (:mod:`cryopick.inference.shape_features`): 1-voxel shell means and spreads, the
principal axes of the dark density, and the power spectrum in 11 bands under a wide mask
and under one of 1.3 class radii. This collects every candidate with the full feature rows
once (rescorer runs, validation runs, held-out runs), then for each group of columns fits a
rescorer on the rescorer runs with the other shape columns blanked (a constant column
standardises to zero and carries nothing), tunes thresholds on the validation runs by the
probability rule as ``cryopick tune`` does, and scores the held-out runs' candidates
re-scored and thresholded as ``cryopick predict`` picks them. Several seeds per group: the
spread between them is the noise of a fit.

    python benchmarks/rescorer_shape.py --rescorer-data sim_r/copick_config.json \\
        sim_r2/copick_config.json sim_varied2/copick_config.json \\
        --val sim_val6/copick_config.json \\
        --held-out sim_test/copick_config.json sim_test2/copick_config.json \\
        --held-out-2 sim_ext/copick_config.json --seeds 0 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _projects import (
    add_rescorer_fit_arguments,
    describe_fit_data,
    read_truth,
    rename_runs,
    summarise_weak_types,
)

from cryopick.evaluation.metric import score_picks
from cryopick.evaluation.thresholds import select_picks, tune_and_score
from cryopick.inference.pipeline import PredictConfig, bundled_model_dir
from cryopick.inference.rescoring import count_features
from cryopick.inference.shape_features import shape_column_groups
from cryopick.model import describe_hardware, load_model
from cryopick.model.rescorer import Rescorer
from cryopick.training.rescorer import Candidates, collect_project_candidates, fit_rescorer

ROOT = Path(__file__).resolve().parents[1]
SHAPE_GROUPS = shape_column_groups()  # columns within the shape block
VARIANTS = {
    "map+density": [],
    "+profile": ["profile"],
    "+axes": ["axes"],
    "+power_wide": ["power_wide"],
    "+power_class": ["power_class"],
    "+power_both": ["power_wide", "power_class"],
    "map+density+shape": list(SHAPE_GROUPS),
}


def collect(model: Any, projects: list[Path], config: PredictConfig, floor: float) -> Candidates:
    """Labelled candidates with full feature rows, runs renamed ``project/run``."""
    parts = []
    for project in projects:
        found = collect_project_candidates(
            model, [project], config, truth=("simulation", None), floor=floor
        )
        parts.append(Candidates(rename_runs(found.picks, project), found.features, found.labels))
    return Candidates.concat(parts)


def blank_columns(features: np.ndarray, groups: list[str], n_density: int) -> np.ndarray:
    """The rows with every shape column outside ``groups`` set to zero."""
    keep = np.zeros(features.shape[1], bool)
    keep[:n_density] = True
    for group in groups:
        keep[[n_density + i for i in SHAPE_GROUPS[group]]] = True
    return np.where(keep, features, 0.0).astype(np.float32)


def rescored(rescorer: Rescorer, candidates: Candidates, rows: np.ndarray) -> pd.DataFrame:
    """The candidates with the rescorer's probabilities as scores."""
    picks = candidates.picks.copy()
    picks["score"] = rescorer.score(rows, picks["particle_type"].astype(str).to_numpy())
    return picks


def evaluate(
    rescorer: Rescorer, groups: list[str], sets: dict[str, tuple[Candidates, pd.DataFrame]], n: int
) -> dict[str, Any]:
    """Tune on ``sets['val']`` by the probability rule; score the other sets."""
    val, val_truth = sets["val"]
    tuned = tune_and_score(
        val_truth,
        rescored(rescorer, val, blank_columns(val.features, groups, n)),
        rule="probability",
    )
    row: dict[str, Any] = {"validation": round(tuned.score, 4)}
    for name, (candidates, truth) in sets.items():
        if name == "val":
            continue
        picks = rescored(rescorer, candidates, blank_columns(candidates.features, groups, n))
        row[name] = summarise_weak_types(score_picks(truth, select_picks(picks, tuned.thresholds)))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_rescorer_fit_arguments(parser, seeds=[0, 3])
    parser.add_argument("--floor", type=float, default=0.2, help="the card's candidate floor")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    model_dir = args.model or bundled_model_dir()
    network, card = load_model(model_dir, device="cpu")
    config = PredictConfig()
    t0 = time.perf_counter()
    train = collect((network, card), args.rescorer_data, config, floor=0.05)
    sets = {
        "val": (collect((network, card), [args.val], config, args.floor), read_truth([args.val]))
    }
    sets["held_out"] = (
        collect((network, card), args.held_out, config, args.floor),
        read_truth(args.held_out),
    )
    if args.held_out_2:
        sets["held_out_2"] = (
            collect((network, card), args.held_out_2, config, args.floor),
            read_truth(args.held_out_2),
        )
    collect_s = time.perf_counter() - t0
    n_density = count_features(card.particle_set.n_classes, "map+density")
    rows = []
    for variant in args.variants:
        groups = VARIANTS[variant]
        blanked = Candidates(
            train.picks, blank_columns(train.features, groups, n_density), train.labels
        )
        for seed in args.seeds:
            rescorer = fit_rescorer(blanked, card.particle_set, seed=seed)
            row = {"variant": variant, "seed": seed}
            row.update(evaluate(rescorer, groups, sets, n_density))
            print(json.dumps(row), flush=True)
            rows.append(row)
    record = {
        "model": str(model_dir),
        **describe_fit_data(args),
        "n_candidates": len(train.labels),
        "collect_seconds": round(collect_s, 1),
        "hardware": describe_hardware(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "rescorer_shape.json"
    path.write_text(json.dumps(record, indent=2, default=float))
    print(pd.json_normalize(rows).to_string(index=False))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
