"""Rescorer variants compared on cached candidates: collect once, then a minute per variant.

Refitting the rescorer with ``cryopick tune`` costs about 10 minutes, most of it running the
networks over the fit runs again. Here the candidates of every set of runs are collected
once (the networks' peaks above 0.05 with their full feature rows and labels, as ``tune``
collects them) into ``--cache``; ``compare`` then fits a rescorer per variant on the fit
sets, sets thresholds by the card's rule (``probability``) on the validation set, and scores
every other set from the candidates at the rescorer's floor. With the bundled rescorer and
card this reproduces ``benchmarks/accuracy.py`` and ``robustness.py`` (0.908, 0.904, 0.918,
0.731 ...; the gold + carbon cell reads 0.754 against the matrix's 0.746, because the
gold-streak filter runs in ``predict`` only).

Variants: ``base`` (the bundled features), ``context`` (also where each candidate's raw
peak stands among its tomogram's candidates of its type: its logit minus their median,
its rank from the top, how many there are, how many above 0.8). ``--hidden``, ``--epochs``
and ``--members`` change the networks of every variant.

    python benchmarks/rescorer_variants.py collect-fit fit_base --cache C \\
        --projects sim_r/copick_config.json sim_r2/copick_config.json ... \\
        [--tomo-type denoised ... (as tune's --rescorer-tomo-type)]
    python benchmarks/rescorer_variants.py collect-runs held6 --cache C \\
        --projects sim_test/copick_config.json sim_test2/copick_config.json
    python benchmarks/rescorer_variants.py collect-cell c_thick --cache C \\
        --cell "thickness 300 nm" --robustness-cache /tmp/w/robcache
    python benchmarks/rescorer_variants.py compare --cache C --fit fit_base [fit_thick] \\
        --val val --sets held6 held12 c_thick ... --variants base context [--tag T]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _projects import ROOT
from robustness import load_or_simulate_condition

from cryopick.evaluation.metric import score_picks
from cryopick.evaluation.thresholds import probability_thresholds, select_picks
from cryopick.inference.pipeline import PredictConfig
from cryopick.io.picks import read_truth
from cryopick.io.tomograms import read_tomograms
from cryopick.model import bundled_model_dir, describe_hardware, load_model
from cryopick.model.rescorer import Rescorer
from cryopick.training.rescorer import (
    Candidates,
    _runs_in_turn,
    _train_network,
    collect_candidates,
)

TRUTH_COLUMNS = ["experiment", "particle_type", "x", "y", "z"]
COLLECT_FLOOR = 0.05
CELL_RUNS, CELL_SEED, CELL_SHAPE = 4, 6262, (184, 448, 448)  # robustness.py --runs 4


def save(cache: Path, name: str, parts: list[Candidates], truths: list[pd.DataFrame]) -> None:
    """Write one set's candidates (picks, feature rows, labels) and truth to the cache."""
    cache.mkdir(parents=True, exist_ok=True)
    found = Candidates.concat(parts)
    found.picks.reset_index(drop=True).to_csv(cache / f"{name}_picks.csv", index=False)
    np.save(cache / f"{name}_features.npy", found.features)
    np.save(cache / f"{name}_labels.npy", found.labels)
    if truths:
        pd.concat(truths)[TRUTH_COLUMNS].to_csv(cache / f"{name}_truth.csv", index=False)
    print(f"{name}: {len(found.labels)} candidates, {int(found.labels.sum())} true", flush=True)


def collect_runs(args: argparse.Namespace, model) -> None:
    """Candidates of every run of held-out or validation projects (denoised)."""
    parts, truths = [], []
    for project in args.projects:
        truth = read_truth(project, user_id="simulation")
        for tomo in read_tomograms(project, "denoised"):
            key = f"{Path(project).parent.name}/{tomo.name}"
            own = truth[truth["experiment"] == tomo.name]
            found = collect_candidates(tomo, own, model, PredictConfig(), COLLECT_FLOOR)
            found.picks = found.picks.assign(experiment=key)
            parts.append(found)
            truths.append(own.assign(experiment=key))
    save(args.cache, args.name, parts, truths)


def collect_fit(args: argparse.Namespace, model) -> None:
    """Candidates of rescorer fit projects, the reconstructions in turn as ``tune`` reads them."""
    parts: list[Candidates] = []
    for project in args.projects:
        truth = read_truth(project, user_id="simulation")
        kinds, spacing_A = args.tomo_type or ["denoised"], float(model[1].spacing_A)
        for tomo in _runs_in_turn(project, kinds, len(parts), spacing_A):
            own = truth[truth["experiment"] == tomo.name]
            found = collect_candidates(tomo, own, model, PredictConfig(), COLLECT_FLOOR)
            key = f"{len(parts)}:{Path(project).parent.name}/{tomo.name}/{tomo.tomo_type}"
            found.picks = found.picks.assign(experiment=key)  # one key per run read
            parts.append(found)
    save(args.cache, args.name, parts, [])


def collect_cell(args: argparse.Namespace, model) -> None:
    """Candidates of a robustness cell's runs (from robustness.py's cache when there)."""
    parts, truths = [], []
    for i in range(CELL_RUNS):
        shape = CELL_SHAPE
        truth, tomo = load_or_simulate_condition(
            args.cell, shape, CELL_SEED, i, args.robustness_cache
        )
        key = f"{args.name}/{i}"
        found = collect_candidates(tomo, truth, model, PredictConfig(), COLLECT_FLOOR)
        found.picks = found.picks.assign(experiment=key)
        parts.append(found)
        truths.append(truth.assign(experiment=key))
    save(args.cache, args.name, parts, truths)


def load_set(cache: Path, name: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, pd.DataFrame]:
    """One cached set: picks, feature rows, labels, truth (empty for fit sets)."""
    truth_file = cache / f"{name}_truth.csv"
    truth = pd.read_csv(truth_file) if truth_file.exists() else pd.DataFrame()
    return (
        pd.read_csv(cache / f"{name}_picks.csv"),
        np.load(cache / f"{name}_features.npy"),
        np.load(cache / f"{name}_labels.npy"),
        truth,
    )


def rank_context(picks: pd.DataFrame, floor: float) -> np.ndarray:
    """Where each raw peak stands among its tomogram's candidates of its type (4 columns)."""
    raw = picks["score"].to_numpy(np.float64)
    logit = np.log(np.clip(raw, 1e-4, 1 - 1e-4) / np.clip(1 - raw, 1e-4, 1))
    out = np.zeros((len(picks), 4), np.float32)
    for index in picks.groupby(["experiment", "particle_type"]).indices.values():
        own = raw[index]
        population = np.sort(own[own >= floor])
        median = np.median(logit[index][own >= floor]) if len(population) else 0.0
        out[index, 0] = logit[index] - median
        above = len(population) - np.searchsorted(population, own, side="right")
        out[index, 1] = above / max(len(population), 1)
        out[index, 2] = np.log1p(len(population))
        out[index, 3] = np.log1p((own >= 0.8).sum())
    return out


def feature_rows(picks: pd.DataFrame, rows: np.ndarray, n_base: int, variant: str, floor: float):
    """A variant's feature rows: the bundled columns, plus the rank context for ``context``."""
    base = rows[:, :n_base]
    if variant == "base":
        return base
    return np.concatenate([base, rank_context(picks, floor)], axis=1)


def fit_variant(
    cache: Path, fit_sets: list[str], variant: str, card, shape: tuple[int, int, int]
) -> Rescorer:
    """Fit a rescorer as ``tune`` does; ``shape`` is (width, epochs, networks): 64, 20, 9."""
    bundled = card.rescorer
    names = list(card.particle_set.names)
    loaded = [load_set(cache, s) for s in fit_sets]
    picks = pd.concat([part[0] for part in loaded], ignore_index=True)
    x = np.concatenate(
        [feature_rows(p, f, bundled.n_features, variant, bundled.candidate_floor)
         for p, f, _, _ in loaded]
    ).astype(np.float64)  # fmt: skip
    labels = np.concatenate([part[2] for part in loaded])
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    index = np.array([names.index(n) for n in picks["particle_type"]])
    inputs = np.concatenate([(x - mean) / scale, np.eye(len(names))[index]], axis=1)
    width, epochs, members = shape
    networks = [
        _train_network(inputs, labels, index, len(names), (width, epochs, seed))
        for seed in range(members)
    ]
    return bundled.model_copy(
        update={"n_features": x.shape[1], "mean": mean.tolist(), "scale": scale.tolist(),
                "members": networks, "n_candidates": len(labels)}
    )  # fmt: skip


def score_sets(cache: Path, rescorer: Rescorer, variant: str, card, sets: list[str], val: str):
    """Thresholds by the probability rule on ``val``; weighted, b-gal, thyroglobulin F4 per set."""
    particles = card.particle_set

    def rescored(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        picks, rows, _, truth = load_set(cache, name)
        keep = picks["score"].to_numpy() >= rescorer.candidate_floor
        x = feature_rows(picks, rows, card.rescorer.n_features, variant, rescorer.candidate_floor)
        kept = picks[keep].copy()
        kept["score"] = rescorer.score(x[keep], kept["particle_type"].astype(str).to_numpy())
        return kept, truth

    thresholds = probability_thresholds(*reversed(rescored(val)), particles=particles)
    result = {}
    for name in sets:
        picks, truth = rescored(name)
        score = score_picks(truth, select_picks(picks, thresholds), particles=particles)
        per_class = score.per_class.set_index("particle_type")["fbeta"]
        result[name] = {
            "weighted": round(score.score, 3),
            "beta-galactosidase": round(float(per_class["beta-galactosidase"]), 3),
            "thyroglobulin": round(float(per_class["thyroglobulin"]), 3),
        }
    return result


def compare(args: argparse.Namespace, card) -> None:
    """Score the bundled rescorer, then each variant fitted on ``--fit``; save the JSON."""
    rows = {"bundled": score_sets(args.cache, card.rescorer, "base", card, args.sets, args.val)}
    print("bundled", json.dumps(rows["bundled"]), flush=True)
    for variant in args.variants:
        t0 = time.perf_counter()
        shape = (args.hidden, args.epochs, args.members)
        rescorer = fit_variant(args.cache, args.fit, variant, card, shape)
        rows[variant] = score_sets(args.cache, rescorer, variant, card, args.sets, args.val)
        seconds = time.perf_counter() - t0
        print(variant, f"{seconds:.0f} s", json.dumps(rows[variant]), flush=True)
    record = {
        "fit": args.fit,
        "val": args.val,
        "rescorer": {"hidden": args.hidden, "epochs": args.epochs, "members": args.members},
        "hardware": describe_hardware(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"rescorer_variants{'_' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(record, indent=2))
    print(f"saved {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("collect-fit", "collect-runs", "collect-cell", "compare"))
    parser.add_argument("name", nargs="?", help="the set collected (collect-* stages)")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--projects", type=Path, nargs="+", default=[])
    parser.add_argument("--tomo-type", action="append", help="as tune's --rescorer-tomo-type")
    parser.add_argument("--cell", help="a robustness.py condition, by name")
    parser.add_argument("--robustness-cache", type=Path, help="robustness.py's --cache")
    parser.add_argument("--fit", nargs="+", default=[], help="cached sets to fit on")
    parser.add_argument("--val", default="val", help="cached set the thresholds are set on")
    parser.add_argument("--sets", nargs="+", default=[], help="cached sets to score")
    parser.add_argument("--variants", nargs="+", default=["base", "context"])
    parser.add_argument("--hidden", type=int, default=64, help="rescorer width (tune: 64)")
    parser.add_argument("--epochs", type=int, default=20, help="passes over the data (tune: 20)")
    parser.add_argument("--members", type=int, default=9, help="networks averaged (tune: 9)")
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    model = load_model(args.model or bundled_model_dir(), device="cpu")
    if args.stage == "compare":
        compare(args, model[1])
    elif args.name is None:
        parser.error(f"{args.stage} needs the name of the set it collects")
    else:
        stages = {"collect-fit": collect_fit, "collect-runs": collect_runs}
        stages.get(args.stage, collect_cell)(args, model)


if __name__ == "__main__":
    main()
