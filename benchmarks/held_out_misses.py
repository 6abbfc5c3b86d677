"""Why held-out particles are missed: no candidate at all, or a candidate scored too low.

For each run of the held-out projects this runs the model's network once, collects every
candidate peak above the rescorer's floor (:mod:`cryopick.inference.rescoring`), re-scores
them, and sorts each true particle of the asked types into

* ``found``: a candidate of its type within half its radius scores at least the card's
  threshold (what ``predict`` keeps);
* ``below_threshold``: there is such a candidate, but it scores below the threshold;
* ``no_candidate``: no candidate of its type within half its radius.

It also counts, per band of the raw peak value, the candidates of each type and how many of
them are true, for every missed particle prints the nearest candidate of any type, and
sorts the false picks (kept candidates that match no particle of their type) by what they
sit on: a true particle of another type within the metric's match radius of that type, a
distractor (projects simulated since the simulator records them), or nothing. A model
whose misses are mostly ``below_threshold`` loses them in the ranking (rescorer,
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

from cryopick.evaluation.metric import match_radius_A
from cryopick.inference.picking import PickSettings, pick_particles
from cryopick.inference.pipeline import LoadedModel, PredictConfig, compute_probability_map
from cryopick.inference.rescoring import rescore_picks
from cryopick.io.tomograms import Tomogram, read_tomograms
from cryopick.model import ModelCard, load_model
from cryopick.model.bundled import bundled_model_dir
from cryopick.simulate import read_simulated_distractors
from cryopick.training.rescorer import label_candidates

RAW_BANDS = (0.2, 0.4, 0.6, 0.8, 1.01)


def rescore_candidates(model: LoadedModel, project: Path, tomo_type: str) -> pd.DataFrame:
    """Every candidate of every run of ``project``: raw peak value (``raw``) and ``score``.

    Candidates are the peaks above the rescorer's floor, found as prediction finds them
    (:func:`cryopick.inference.picking.pick_particles`), then re-scored.
    """
    frames = [rescore_tomogram(model, t) for t in read_tomograms(project, tomo_type=tomo_type)]
    return rename_runs(pd.concat(frames, ignore_index=True), project)


def rescore_tomogram(model: LoadedModel, tomo: Tomogram) -> pd.DataFrame:
    """The candidates of one tomogram, re-scored (see :func:`rescore_candidates`)."""
    network, card = model
    rescorer = card.rescorer
    assert rescorer is not None  # checked by main
    settings = PickSettings.for_candidates(card.target, rescorer.candidate_floor, card.particle_set)
    prob_map, volume, _, spacing_A = compute_probability_map(tomo, network, card, PredictConfig())
    grid = {"spacing_A": spacing_A, "stride": prob_map.stride}
    found = pick_particles(prob_map.probs, settings, experiment=tomo.name, **grid)
    found = found.assign(raw=found["score"])
    return rescore_picks(
        found, rescorer, prob_map.probs, volume, particles=card.particle_set, **grid
    )


def sort_particles(
    truth: pd.DataFrame, candidates: pd.DataFrame, card: ModelCard, name: str
) -> pd.DataFrame:
    """One row per true particle of type ``name``: found, below threshold or no candidate.

    A candidate counts for a particle within the metric's match radius, as in scoring.
    """
    radius_A, threshold = match_radius_A(card.particle_set, name), card.thresholds[name]
    rows = []
    for run, true_run in truth[truth["particle_type"] == name].groupby("experiment"):
        in_run = candidates[candidates["experiment"] == run]
        own = in_run[in_run["particle_type"] == name]
        xyz = true_run[["x", "y", "z"]].to_numpy()
        distance, index = cKDTree(own[["x", "y", "z"]].to_numpy()).query(xyz)
        near_any, near_index = cKDTree(in_run[["x", "y", "z"]].to_numpy()).query(xyz)
        for i in range(len(xyz)):
            close = bool(distance[i] <= radius_A)
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


def label_all(truth: pd.DataFrame, candidates: pd.DataFrame, card: ModelCard) -> pd.DataFrame:
    """The candidates with a column ``true``: a particle of its type within the match radius."""
    candidates = candidates.reset_index(drop=True)
    true = np.zeros(len(candidates), dtype=bool)
    for run, index in candidates.groupby("experiment").indices.items():
        in_run = candidates.iloc[index]
        true[index] = label_candidates(in_run, truth[truth["experiment"] == run], card.particle_set)
    return candidates.assign(true=true)


def count_bands(candidates: pd.DataFrame, card: ModelCard, name: str) -> list[dict]:
    """Candidates of type ``name`` per raw band: how many, how many true, how many kept.

    ``candidates`` are labelled (:func:`label_all`).
    """
    own = candidates[candidates["particle_type"] == name]
    true = own["true"].to_numpy()
    kept = own["score"].to_numpy() >= card.thresholds[name]
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


def sort_false_picks(
    truth: pd.DataFrame,
    candidates: pd.DataFrame,
    card: ModelCard,
    name: str,
    distractors: pd.DataFrame | None = None,
) -> dict[str, int]:
    """Kept false picks of type ``name``, counted by the type of true particle they sit on.

    ``candidates`` are labelled (:func:`label_all`). A false pick sits on a particle of
    another type when it lies within that type's match radius (as the metric would match
    it); else on a distractor (``distractor <kind>/<name>``, from the simulation's record
    of them, if given) within the pick type's match radius; ``none`` when on neither.
    """
    kept = candidates["score"].to_numpy() >= card.thresholds[name]
    own = candidates[(candidates["particle_type"] == name) & ~candidates["true"] & kept]
    counts: dict[str, int] = {}
    for run, false in own.groupby("experiment"):
        true_run = truth[truth["experiment"] == run]
        others = true_run[true_run["particle_type"] != name]
        sits_on = np.full(len(false), "none", dtype=object)
        if distractors is not None:
            run_distractors = distractors[distractors["experiment"] == run]
            own_radius = match_radius_A(card.particle_set, name)
            sits_on = name_distractors(false, run_distractors, own_radius)
        if len(others) and len(false):
            distance, nearest = cKDTree(others[["x", "y", "z"]].to_numpy()).query(
                false[["x", "y", "z"]].to_numpy()
            )
            types = others["particle_type"].to_numpy()[nearest]
            radius = np.array([match_radius_A(card.particle_set, t) for t in types])
            sits_on[distance <= radius] = types[distance <= radius]
        for key in sits_on:
            counts[str(key)] = counts.get(str(key), 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def name_distractors(picks: pd.DataFrame, distractors: pd.DataFrame, radius_A: float) -> np.ndarray:
    """Per pick, ``distractor <kind>/<name>`` of the nearest distractor within ``radius_A``,
    else ``none``."""
    out = np.full(len(picks), "none", dtype=object)
    if len(distractors) == 0 or len(picks) == 0:
        return out
    tree = cKDTree(distractors[["x", "y", "z"]].to_numpy())
    distance, nearest = tree.query(picks[["x", "y", "z"]].to_numpy())
    labels = ("distractor " + distractors["kind"] + "/" + distractors["name"]).to_numpy()
    out[distance <= radius_A] = labels[nearest[distance <= radius_A]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_held_out_arguments(parser, "/tmp/cryopick_misses")
    parser.add_argument("--types", nargs="+", default=["beta-galactosidase", "thyroglobulin"])
    args = parser.parse_args()
    model_dir = args.model or bundled_model_dir()
    projects = held_out_projects(args)
    model = load_model(model_dir)
    card = model[1]
    if card.rescorer is None:
        raise SystemExit(f"{model_dir}: the model has no rescorer")
    candidates = pd.concat([rescore_candidates(model, p, args.tomo_type) for p in projects])
    truth = read_truth(projects)
    distractors = pd.concat(
        [rename_runs(read_simulated_distractors(p), p) for p in projects], ignore_index=True
    )
    candidates = label_all(truth, candidates, card)
    result: dict = {"model": str(model_dir), "projects": [str(p) for p in projects], "types": {}}
    pd.set_option("display.width", 160)
    for name in args.types:
        particles = sort_particles(truth, candidates, card, name)
        outcomes = particles["outcome"].value_counts().to_dict()
        bands = count_bands(candidates, card, name)
        false_picks = sort_false_picks(truth, candidates, card, name, distractors)
        print(f"\n{name}: {len(particles)} particles, {outcomes}")
        print(f"false picks, by the true particle they sit on: {false_picks}")
        print(pd.DataFrame(bands).to_string(index=False))
        print(particles[particles["outcome"] != "found"].to_string(index=False))
        result["types"][name] = {
            "particles": len(particles),
            "outcomes": outcomes,
            "raw_bands": bands,
            "false_picks_on": false_picks,
            "missed": particles[particles["outcome"] != "found"].to_dict("records"),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "held_out_misses.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
