"""How much the rescorer's own randomness moves the held-out figures.

The bundled rescorer's networks are trained with seeds 0, 1, 2. This refits the rescorer
of a model on the same candidates with other seeds, re-tunes thresholds and calibration
on the validation runs as ``cryopick tune`` does, and scores each result on held-out
projects: the spread between seeds is the noise floor for judging a model change whose
rescorer was refitted.

    python benchmarks/rescorer_seeds.py --rescorer-data sim_r/copick_config.json \\
        sim_r2/copick_config.json sim_varied2/copick_config.json \\
        --val sim_val6/copick_config.json \\
        --held-out sim_test/copick_config.json sim_test2/copick_config.json \\
        --held-out-2 sim_ext/copick_config.json --seeds 0 3 6

``--hidden``, ``--epochs`` and ``--members`` change the rescorer itself (defaults: the
bundled one's 64, 20, 9); ``--tag`` names the result file (``rescorer_seeds_TAG.json``).
Candidates are collected once (the expensive part), every peak above ``--collect-floor``
(0.05, as ``cryopick tune`` collects them; ``--floor`` is the re-scoring floor stored in
the rescorer, as ``tune --rescorer-floor`` sets it), read as the
``--tomo-type`` reconstructions in turn (repeatable, as ``cryopick tune
--rescorer-tomo-type``; a project may be given twice). ``--flatten-background off`` (the
default here) reproduces the candidates the bundled v3.4 rescorer was fitted on, from
before the carbon-film flattening existed; prediction of the held-out runs uses
``auto``, as ``cryopick predict`` does.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
from _projects import (
    add_rescorer_fit_arguments,
    describe_fit_data,
    predict_projects,
    read_truth,
    summarise_weak_types,
)

from cryopick.evaluation.metric import score_picks
from cryopick.evaluation.tuning import tune_model
from cryopick.inference.pipeline import LoadedModel, PredictConfig, bundled_model_dir
from cryopick.model import describe_hardware, load_model
from cryopick.training.rescorer import (
    Candidates,
    collect_project_candidates,
    describe_sources,
    fit_rescorer,
)

ROOT = Path(__file__).resolve().parents[1]


def score_projects(model_dir: Path, projects: list[Path]) -> dict[str, Any]:
    """Weighted F4 (and the two weak types') of a model on held-out projects, together."""
    return summarise_weak_types(
        score_picks(read_truth(projects), predict_projects(projects, model_dir))
    )


def fit_and_score(
    args: argparse.Namespace,
    candidates: Candidates,
    model: LoadedModel,
    model_dir: Path,
    config: PredictConfig,
    seed: int,
    members: int,
) -> dict[str, Any]:
    """Fit one rescorer, tune thresholds on the validation runs, score the held-out runs."""
    network, card = model
    t0 = time.perf_counter()
    rescorer = fit_rescorer(
        candidates,
        card.particle_set,
        seed=seed,
        hidden=args.hidden,
        epochs=args.epochs,
        members=members,
        training_data=describe_sources(candidates.sources),
    ).model_copy(update={"candidate_floor": args.floor})
    out_dir = args.workdir / f"seed{seed}_members{members}"
    tuned = (network, card.model_copy(update={"rescorer": rescorer}))
    tune_model(
        model_dir,
        args.val,
        out_dir,
        config,
        truth_user=args.truth_user,
        overwrite=True,
        model=tuned,
    )
    row: dict[str, Any] = {
        "seed": seed,
        "members": members,
        "validation": json.loads((out_dir / "model.json").read_text())["score"],
    }
    row["held_out"] = score_projects(out_dir, list(args.held_out))
    if args.held_out_2:
        row["held_out_2"] = score_projects(out_dir, list(args.held_out_2))
    row["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_rescorer_fit_arguments(parser, seeds=[0, 3, 6])
    parser.add_argument("--floor", type=float, default=0.2)
    parser.add_argument(
        "--collect-floor",
        type=float,
        default=0.05,
        help="raw peak value of the candidates fitted on (cryopick tune: 0.05)",
    )
    parser.add_argument(
        "--tomo-type",
        action="append",
        default=None,
        help="reconstructions taken in turn over the runs (repeat), as --rescorer-tomo-type",
    )
    parser.add_argument("--flatten-background", choices=("auto", "on", "off"), default="off")
    parser.add_argument("--truth-user", default="simulation")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cryopick_rescorer_seeds"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--hidden", type=int, default=64, help="rescorer hidden width")
    parser.add_argument("--epochs", type=int, default=20, help="rescorer passes over the data")
    parser.add_argument(
        "--members", type=int, nargs="+", default=[9], help="rescorer networks averaged (each)"
    )
    parser.add_argument("--tag", default="", help="suffix of the result file's name")
    args = parser.parse_args()

    model_dir = args.model or bundled_model_dir()
    network, card = load_model(model_dir, device="cpu")
    config = PredictConfig(flatten_background=args.flatten_background)
    t0 = time.perf_counter()
    candidates = collect_project_candidates(
        (network, card),
        args.rescorer_data,
        config,
        tomo_types=args.tomo_type or ["denoised"],
        truth=(args.truth_user, None),
        floor=args.collect_floor,
    )
    collect_s = time.perf_counter() - t0
    rows = [
        fit_and_score(args, candidates, (network, card), model_dir, config, seed, members)
        for members in args.members
        for seed in args.seeds
    ]
    record = {
        "model": str(model_dir),
        **describe_fit_data(args),
        "rescorer": {"hidden": args.hidden, "epochs": args.epochs, "members": args.members},
        "flatten_background_for_candidates": args.flatten_background,
        "n_candidates": len(candidates.labels),
        "collect_floor": args.collect_floor,
        "tomo_types": describe_sources(candidates.sources),
        "collect_seconds": round(collect_s, 1),
        "hardware": describe_hardware(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"rescorer_seeds{'_' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(record, indent=2, default=float))
    print(pd.json_normalize(rows).to_string(index=False))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
