"""Why held-out particles are missed: no candidate at all, or a candidate scored too low.

For each run of the held-out projects this runs the model's network once, collects every
candidate peak above the rescorer's floor (:mod:`cryopick.inference.rescoring`), re-scores
them, and sorts each true particle of the asked types into

* ``found``: a candidate of its type within half its radius scores at least the card's
  threshold (what ``predict`` keeps);
* ``below_threshold``: there is such a candidate, but it scores below the threshold;
* ``no_candidate``: no candidate of its type within half its radius.

It also counts, per band of the raw peak value, the candidates of each type and how many of
them are true, and for every missed particle prints the nearest candidate of any type. A
model whose misses are mostly ``below_threshold`` loses them in the ranking (rescorer,
thresholds); ``no_candidate`` misses and true candidates with low raw values point at the
network. Needs a model with a rescorer (the bundled one has one).

    python benchmarks/held_out_misses.py --project sim_test/copick_config.json \
        sim_test2/copick_config.json [--model DIR] [--types beta-galactosidase thyroglobulin]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
from _projects import add_held_out_arguments, held_out_projects, read_truth, rename_runs
from scipy.spatial import cKDTree

from cryopick.core.coords import strided_origin_A
from cryopick.inference.peaks import find_peaks
from cryopick.inference.pipeline import PredictConfig, compute_probability_map
from cryopick.inference.rescoring import rescore_picks
from cryopick.io.tomograms import read_tomograms
from cryopick.model import ModelCard, load_model
from cryopick.model.bundled import bundled_model_dir

RAW_BANDS = (0.2, 0.4, 0.6, 0.8, 1.01)


def collect_candidates(model_dir: Path, project: Path, tomo_type: str) -> pd.DataFrame:
    """Every candidate of every run of ``project``: raw peak value and re-scored value."""
    model, card = load_model(model_dir)
    rescorer = card.rescorer
    if rescorer is None:
        raise SystemExit(f"{model_dir}: the model has no rescorer")
    frames = []
    for tomo in read_tomograms(project, tomo_type=tomo_type):
        prob_map, volume, _ = compute_probability_map(tomo, model, card, PredictConfig())
        spacing_A, stride = float(card.spacing_A), prob_map.stride
        found = find_peaks(
            prob_map.probs,
            spacing_A=spacing_A * stride,
            experiment=tomo.name,
            default_threshold=rescorer.candidate_floor,
            blob_radius_fraction=card.target.blob_radius_fraction,
            origin_A=strided_origin_A(stride, spacing_A),
            particles=card.particle_set,
        )
        found = found.assign(raw=found["score"])
        frames.append(
            rescore_picks(
                found,
                rescorer,
                prob_map.probs,
                volume,
                spacing_A=spacing_A,
                stride=stride,
                particles=card.particle_set,
            )
        )
    return rename_runs(pd.concat(frames, ignore_index=True), project)


def sort_particles(
    truth: pd.DataFrame, candidates: pd.DataFrame, card: ModelCard, name: str
) -> pd.DataFrame:
    """One row per true particle of type ``name``: found, below threshold or no candidate."""
    radius_A, threshold = card.particle_set.radius_A(name), card.thresholds[name]
    rows = []
    for run, true_run in truth[truth["particle_type"] == name].groupby("experiment"):
        in_run = candidates[candidates["experiment"] == run]
        own = in_run[in_run["particle_type"] == name]
        xyz = true_run[["x", "y", "z"]].to_numpy()
        distance, index = cKDTree(own[["x", "y", "z"]].to_numpy()).query(xyz)
        near_any, near_index = cKDTree(in_run[["x", "y", "z"]].to_numpy()).query(xyz)
        for i in range(len(xyz)):
            close = bool(distance[i] < 0.5 * radius_A)
            score = float(own["score"].iloc[index[i]]) if close else float("nan")
            nearest = in_run.iloc[near_index[i]]
            rows.append(
                {
                    "run": run,
                    "outcome": "no_candidate"
                    if not close
                    else ("found" if score >= threshold else "below_threshold"),
                    "raw": float(own["raw"].iloc[index[i]]) if close else float("nan"),
                    "score": score,
                    "nearest_type": nearest["particle_type"],
                    "nearest_distance_A": round(float(near_any[i]), 1),
                    "nearest_score": round(float(nearest["score"]), 4),
                }
            )
    return pd.DataFrame(rows)


def count_bands(
    truth: pd.DataFrame, candidates: pd.DataFrame, card: ModelCard, name: str
) -> list[dict]:
    """Candidates of type ``name`` per raw band: how many, how many true, how many kept."""
    radius_A, threshold = card.particle_set.radius_A(name), card.thresholds[name]
    own = candidates[candidates["particle_type"] == name].reset_index(drop=True)
    true = np.zeros(len(own), dtype=bool)
    for run, true_run in truth[truth["particle_type"] == name].groupby("experiment"):
        rows = np.flatnonzero(own["experiment"].to_numpy() == run)
        if len(rows):
            tree = cKDTree(true_run[["x", "y", "z"]].to_numpy())
            distance, _ = tree.query(own.loc[rows, ["x", "y", "z"]].to_numpy())
            true[rows] = distance < 0.5 * radius_A
    kept = own["score"].to_numpy() >= threshold
    raw = own["raw"].to_numpy()
    bands = []
    for low, high in itertools.pairwise(RAW_BANDS):
        band = (raw >= low) & (raw < high)
        bands.append(
            {
                "raw": [low, min(high, 1.0)],
                "candidates": int(band.sum()),
                "true": int((band & true).sum()),
                "true_dropped": int((band & true & ~kept).sum()),
                "false_kept": int((band & ~true & kept).sum()),
            }
        )
    return bands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_held_out_arguments(parser, "/tmp/cryopick_misses")
    parser.add_argument("--types", nargs="+", default=["beta-galactosidase", "thyroglobulin"])
    args = parser.parse_args()
    model_dir = args.model or bundled_model_dir()
    projects = held_out_projects(args)
    card = load_model(model_dir)[1]
    candidates = pd.concat([collect_candidates(model_dir, p, args.tomo_type) for p in projects])
    truth = read_truth(projects)
    result: dict = {"model": str(model_dir), "projects": [str(p) for p in projects], "types": {}}
    pd.set_option("display.width", 160)
    for name in args.types:
        particles = sort_particles(truth, candidates, card, name)
        outcomes = particles["outcome"].value_counts().to_dict()
        bands = count_bands(truth, candidates, card, name)
        print(f"\n{name}: {len(particles)} particles, {outcomes}")
        print(pd.DataFrame(bands).to_string(index=False))
        print(particles[particles["outcome"] != "found"].to_string(index=False))
        result["types"][name] = {
            "particles": len(particles),
            "outcomes": outcomes,
            "raw_bands": bands,
            "missed": particles[particles["outcome"] != "found"].to_dict("records"),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "held_out_misses.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
