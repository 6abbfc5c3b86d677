"""What thresholds can still win: the best F4 a set's own thresholds give, and where particles go.

For held-out projects or robustness cells (``benchmarks/robustness.py``, read from its
``--cache``), collects every candidate the model re-scores (as ``held_out_misses.py`` does)
and reports, per set of runs:

* ``global``: weighted F4 with the card's thresholds (what ``predict`` gives);
* ``oracle``: weighted F4 with, per class, the threshold that is best on these very runs
  (an upper bound for any rule that sets thresholds from the data: per tomogram, per
  condition, from calibrated scores);
* per class, the true particles ``found``, ``below_threshold`` (a candidate, scored too
  low) and ``no_candidate``, and the sum of calibrated scores against the true count;
* recall by the particle's distance to the tomogram's lateral (y, x) edge, in class radii:
  with any candidate within the match radius, and with a kept one.

    python benchmarks/candidate_ceiling.py --project sim_test/copick_config.json \
        sim_test2/copick_config.json [--cells "thickness 300 nm" ...] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from _projects import add_held_out_arguments, read_truth, run_key
from held_out_misses import rescore_candidates, rescore_tomogram, sort_particles
from robustness import load_or_simulate_condition
from scipy.spatial import cKDTree

from cryopick.evaluation.metric import match_radius_A, score_picks
from cryopick.inference.pipeline import LoadedModel
from cryopick.io.tomograms import read_tomograms
from cryopick.model import ModelCard, bundled_model_dir, load_model
from cryopick.model.calibration import apply_calibration

EDGE_BINS = (0.0, 0.5, 1.0, 2.0, np.inf)
"""Distance to the lateral edge, in class radii."""


def cell_candidates(
    model: LoadedModel, cell: str, runs: int, seed: int, cache: Path | None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, tuple[float, float]]]:
    """Candidates, truth and lateral extents (Å) of a robustness cell's runs."""
    frames, truths, extents = [], [], {}
    for i in range(runs):
        truth, tomo = load_or_simulate_condition(cell, (184, 448, 448), seed, i, cache)
        frames.append(rescore_tomogram(model, tomo))
        truths.append(truth)
        extents[tomo.name] = tuple((n - 1) * tomo.spacing_A for n in tomo.shape[1:])
    return pd.concat(frames), pd.concat(truths), extents


def keep_global(candidates: pd.DataFrame, card: ModelCard) -> pd.DataFrame:
    """The candidates ``predict`` keeps: re-scored value at least the card's threshold."""
    threshold = candidates["particle_type"].map(card.thresholds).to_numpy()
    return candidates[candidates["score"].to_numpy() >= threshold]


def keep_oracle(candidates: pd.DataFrame, truth: pd.DataFrame, card: ModelCard) -> pd.DataFrame:
    """Per class, the candidates above the threshold that is best on these runs."""
    kept = []
    for name in card.particle_set.names:
        own = candidates[candidates["particle_type"] == name]
        levels = np.unique(np.quantile(own["score"], np.linspace(0, 1, 201))) if len(own) else []
        best, best_level = -1.0, 0.0
        for level in levels:
            table = score_picks(truth, own[own["score"] >= level], particles=card.particle_set)
            f = float(table.per_class.set_index("particle_type").loc[name, "fbeta"])
            if f > best:
                best, best_level = f, level
        kept.append(own[own["score"] >= best_level])
    return pd.concat(kept)


def recall_by_edge(
    candidates: pd.DataFrame,
    kept: pd.DataFrame,
    truth: pd.DataFrame,
    card: ModelCard,
    extents: dict[str, tuple[float, float]],
) -> list[dict]:
    """Recall (any candidate / kept) per band of distance to the lateral edge (radii)."""
    rows = []
    for (run, name), true in truth.groupby(["experiment", "particle_type"]):
        if card.particle_set.weight(str(name)) == 0:
            continue
        radius = match_radius_A(card.particle_set, str(name))
        xyz = true[["x", "y", "z"]].to_numpy()
        hits = {}
        for label, source in (("candidate", candidates), ("kept", kept)):
            own = source[(source["experiment"] == run) & (source["particle_type"] == name)]
            distance = (
                cKDTree(own[["x", "y", "z"]].to_numpy()).query(xyz)[0] if len(own) else np.inf
            )
            hits[label] = np.broadcast_to(distance <= radius, len(xyz))
        extent_y, extent_x = extents[str(run)]
        edge_A = np.minimum.reduce(
            [xyz[:, 0], extent_x - xyz[:, 0], xyz[:, 1], extent_y - xyz[:, 1]]
        )
        band = np.digitize(edge_A / card.particle_set.radius_A(str(name)), EDGE_BINS[1:-1])
        rows += [
            {"band": int(b), **{k: bool(v[i]) for k, v in hits.items()}} for i, b in enumerate(band)
        ]
    table = pd.DataFrame(rows).groupby("band")
    return [
        {
            "edge_radii": [EDGE_BINS[b], EDGE_BINS[b + 1]],
            "particles": len(group),
            "recall_candidate": round(float(group["candidate"].mean()), 3),
            "recall_kept": round(float(group["kept"].mean()), 3),
        }
        for b, group in table
    ]


def describe_set(
    name: str,
    candidates: pd.DataFrame,
    truth: pd.DataFrame,
    card: ModelCard,
    extents: dict[str, tuple[float, float]],
) -> dict:
    """The figures of one set of runs (see the module docstring)."""
    truth = truth[["experiment", "particle_type", "x", "y", "z"]]
    kept = keep_global(candidates, card)
    calibrated = apply_calibration(candidates, card.calibration)
    result: dict = {"set": name, "classes": {}}
    for rule, picks in (("global", kept), ("oracle", keep_oracle(candidates, truth, card))):
        score = score_picks(truth, picks, particles=card.particle_set)
        per_class = score.per_class.set_index("particle_type")["fbeta"].round(3).to_dict()
        result[rule] = {"score": round(score.score, 4), "per_class": per_class}
    for type_name in ("beta-galactosidase", "thyroglobulin", "apo-ferritin", "ribosome"):
        outcomes = sort_particles(truth, candidates, card, type_name)["outcome"]
        own = calibrated["particle_type"] == type_name
        result["classes"][type_name] = {
            **{k: int(v) for k, v in outcomes.value_counts().items()},
            "sum_calibrated": round(float(calibrated.loc[own, "score"].sum()), 1),
            "true": int((truth["particle_type"] == type_name).sum()),
        }
    result["recall_by_lateral_edge"] = recall_by_edge(candidates, kept, truth, card, extents)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_held_out_arguments(parser, "/tmp/cryopick_ceiling")
    parser.add_argument("--cells", nargs="*", default=[], help="robustness cells, by name")
    parser.add_argument("--cell-runs", type=int, default=4)
    parser.add_argument("--cell-seed", type=int, default=6262, help="robustness.py's seed")
    parser.add_argument("--cache", type=Path, help="robustness.py's cache of simulated runs")
    args = parser.parse_args()
    model_dir = args.model or bundled_model_dir()
    model = load_model(model_dir)
    card = model[1]
    if card.rescorer is None:
        raise SystemExit(f"{model_dir}: the model has no rescorer")
    results = []
    if args.project:
        projects = list(args.project)
        candidates = pd.concat([rescore_candidates(model, p, args.tomo_type) for p in projects])
        extents = {
            run_key(p, t.name): tuple((n - 1) * t.spacing_A for n in t.shape[1:])
            for p in projects
            for t in read_tomograms(p, tomo_type=args.tomo_type)
        }
        truth = read_truth(projects)
        results.append(describe_set("held-out projects", candidates, truth, card, extents))
    for cell in args.cells:
        candidates, truth, extents = cell_candidates(
            model, cell, args.cell_runs, args.cell_seed, args.cache
        )
        results.append(describe_set(cell, candidates, truth, card, extents))
    for r in results:
        print(json.dumps(r, default=float))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "candidate_ceiling.json"
    summary = {"model": str(model_dir), "sets": results}
    path.write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
