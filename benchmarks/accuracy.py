"""Accuracy of a model on held-out simulated tomograms: per-class P/R/F4 and weighted score.

The held-out runs are simulated here with a seed the training never used (other
parameter draws too: each run draws its own defocus, dose, thickness and crowding), or
taken from an existing project with ``--project``. The model's own per-class thresholds
(tuned on its validation runs) are used: nothing is tuned on the test runs.

    python benchmarks/accuracy.py                       # bundled model, 2 fresh runs
    python benchmarks/accuracy.py --model DIR --project sim_test/copick_config.json [more ...]

Several ``--project`` folders are scored together (their runs are renamed
``project/run`` so that equal run names stay apart).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _projects import add_held_out_arguments, held_out_projects, predict_projects, read_truth

from cryopick.console import format_score_table
from cryopick.evaluation.metric import score_picks
from cryopick.inference.pipeline import PredictConfig, bundled_model_dir
from cryopick.model import describe_hardware, read_model_card

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_held_out_arguments(parser, "/tmp/cryopick_accuracy")
    parser.add_argument(
        "--patch", type=int, nargs=3, help="inference window z y x (default: predict's choice)"
    )
    parser.add_argument("--overlap", type=float, default=0.25, help="window overlap (predict's)")
    parser.add_argument(
        "--flatten-background", choices=("auto", "on", "off"), default="auto", help="predict's"
    )
    args = parser.parse_args()

    model_dir = args.model or bundled_model_dir()
    projects = held_out_projects(args)
    config = PredictConfig(
        tta=args.tta,
        patch_size=tuple(args.patch) if args.patch else None,
        overlap=args.overlap,
        flatten_background=args.flatten_background,
    )
    t0 = time.perf_counter()
    picks = predict_projects(projects, model_dir, config, args.tomo_type)
    predict_s = time.perf_counter() - t0
    truth = read_truth(projects)
    result = score_picks(truth, picks)
    print(format_score_table(result))

    card = read_model_card(model_dir)
    record = {
        "model": str(model_dir),
        "model_steps": card.steps,
        "projects": [str(p) for p in projects],
        "preset": args.preset,
        "seed": args.seed,
        "tomo_type": args.tomo_type,
        "tta": args.tta,
        "patch_size": args.patch,
        "overlap": args.overlap,
        "flatten_background": args.flatten_background,
        "n_runs": int(truth.experiment.nunique()),
        "predict_seconds": round(predict_s, 1),
        "hardware": describe_hardware(),
        **result.to_dict(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"accuracy_{args.preset}{'_tta' if args.tta else ''}.json"
    path.write_text(json.dumps(record, indent=2, default=float))
    print(f"weighted F4 = {result.score:.4f}; saved {path}")


if __name__ == "__main__":
    main()
