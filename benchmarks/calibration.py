"""Calibration of a model's pick scores on held-out simulated tomograms (ECE, reliability).

For the model's default picks (its own thresholds, tuned on its validation runs; nothing is
tuned here), per class and overall: the expected calibration error (10 equal-width bins; a
pick is correct when paired with a truth centre of its type within 0.5 x radius, one to one,
strongest first) of the raw peak values ("before") and of the card's calibrated scores
("after"), a reliability table (per bin: mean score, fraction correct, count), and the
expected number of true particles (sum of calibrated scores) beside the true count. With
``--fit-on`` projects, a calibration fitted on those (e.g. validation simulations) is
measured instead of the card's. With ``--min-precision``, the precision that
``predict --min-precision P`` reaches per class.

Each run is predicted once, keeping every peak above the candidate floor with raw scores;
the default picks are the candidates at or above the card's thresholds (the set
``predict`` gives: thresholds only drop weaker peaks), ``--min-precision`` selections are
made per run from the calibrated candidates, as ``predict`` does.

    python benchmarks/calibration.py                       # bundled model, 2 fresh runs
    python benchmarks/calibration.py --model DIR --project sim_test/copick_config.json [...]
    python benchmarks/calibration.py --project HELD_OUT... --fit-on VALIDATION...
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _projects import add_held_out_arguments, held_out_projects, read_truth, rename_runs

from cryopick.evaluation.calibration import (
    apply_calibration,
    expected_calibration_error,
    fit_calibration,
    mark_correct,
    reliability_table,
    select_for_min_precision,
)
from cryopick.evaluation.thresholds import select_picks
from cryopick.inference.picking import candidate_thresholds, choose_calibration, choose_thresholds
from cryopick.inference.pipeline import LoadedModel, PredictConfig, bundled_model_dir, predict
from cryopick.model import ScoreCalibration, describe_hardware, load_model

ROOT = Path(__file__).resolve().parents[1]
N_BINS = 10


def predict_candidates(
    projects: list[Path], model: LoadedModel, tta: bool, tomo_type: str
) -> pd.DataFrame:
    """Every peak above the candidate floor with its raw score, runs renamed per project."""
    network, card = model
    raw_card = card.without_calibration()
    config = PredictConfig(tta=tta, thresholds=candidate_thresholds(card.particle_set))
    found = [
        rename_runs(predict(p, config=config, tomo_type=tomo_type, model=(network, raw_card)), p)
        for p in projects
    ]
    return pd.concat(found, ignore_index=True)


def calibration_record(
    picks: pd.DataFrame, calibration: dict[str, ScoreCalibration], names: list[str]
) -> dict[str, Any]:
    """ECE before / after, reliability tables and expected counts of labelled picks."""
    calibrated = apply_calibration(picks, calibration)["score"].to_numpy()
    raw, correct = picks["score"].to_numpy(), picks["correct"].to_numpy()
    groups = {"all": np.ones(len(picks), dtype=bool)}
    groups.update({name: (picks["particle_type"] == name).to_numpy() for name in names})
    record: dict[str, Any] = {}
    for name, rows in groups.items():
        record[name] = {
            "n_picks": int(rows.sum()),
            "n_correct": int(correct[rows].sum()),
            "expected_correct": float(calibrated[rows].sum()) if calibration else None,
            "ece_before": expected_calibration_error(raw[rows], correct[rows], N_BINS),
            "ece_after": (
                expected_calibration_error(calibrated[rows], correct[rows], N_BINS)
                if calibration
                else None
            ),
            "reliability_before": _records(reliability_table(raw[rows], correct[rows], N_BINS)),
            "reliability_after": (
                _records(reliability_table(calibrated[rows], correct[rows], N_BINS))
                if calibration
                else None
            ),
        }
    return record


def min_precision_record(
    candidates: pd.DataFrame,
    calibration: dict[str, ScoreCalibration],
    levels: list[float],
    names: list[str],
) -> dict[str, Any]:
    """Per target P, per class: picks kept per run by ``--min-precision P`` and their precision."""
    calibrated = apply_calibration(candidates, calibration)
    out: dict[str, Any] = {}
    for level in levels:
        kept = pd.concat(
            [select_for_min_precision(run, level) for _, run in calibrated.groupby("experiment")],
            ignore_index=True,
        )
        per_class = {}
        for name in names:
            rows = kept[kept["particle_type"] == name]
            n, right = len(rows), int(rows["correct"].sum())
            per_class[name] = {"kept": n, "precision": right / n if n else None}
        out[f"{level:g}"] = per_class
    return out


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        for row in table.to_dict("records")
    ]


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def print_summary(record: dict[str, Any]) -> None:
    """Per-class ECE table, then the overall reliability table (after, else before)."""
    print(f"{'class':<22}{'picks':>7}{'correct':>9}{'expected':>10}{'ECE raw':>9}{'ECE cal':>9}")
    for name, row in record.items():
        print(
            f"{name:<22}{row['n_picks']:>7}{row['n_correct']:>9}"
            f"{_fmt(row['expected_correct'], 1):>10}"
            f"{_fmt(row['ece_before']):>9}{_fmt(row['ece_after']):>9}"
        )
    which = "reliability_after" if record["all"]["reliability_after"] else "reliability_before"
    print(f"\nall classes, {which.replace('_', ' ')}:")
    print(f"{'bin':<12}{'mean score':>12}{'fraction correct':>18}{'count':>8}")
    for row in record["all"][which]:
        span = f"{row['bin_low']:.1f}-{row['bin_high']:.1f}"
        print(
            f"{span:<12}{_fmt(row['mean_score']):>12}{_fmt(row['fraction_correct']):>18}"
            f"{row['count']:>8}"
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    add_held_out_arguments(parser, "/tmp/cryopick_calibration")
    parser.add_argument(
        "--fit-on", type=Path, nargs="+", help="fit the calibration on these projects instead"
    )
    parser.add_argument("--min-precision", type=float, nargs="*", default=[0.5, 0.8, 0.9])
    return parser


def main() -> None:
    args = _parser().parse_args()
    model_dir = args.model or bundled_model_dir()
    model = load_model(model_dir, device="cpu")
    card, names = model[1], list(model[1].particle_set.names)
    projects = held_out_projects(args)
    t0 = time.perf_counter()
    candidates = predict_candidates(projects, model, args.tta, args.tomo_type)
    predict_s = time.perf_counter() - t0
    truth = read_truth(projects)
    calibration, source = choose_calibration(card, args.tta), "model card"
    if args.fit_on:
        fit_candidates = predict_candidates(args.fit_on, model, args.tta, args.tomo_type)
        calibration = fit_calibration(read_truth(args.fit_on), fit_candidates, card.particle_set)
        source = f"fitted on {', '.join(map(str, args.fit_on))}"
    candidates = mark_correct(truth, candidates, card.particle_set)
    defaults = select_picks(candidates, choose_thresholds(card, args.tta))
    record = calibration_record(defaults, calibration, names)
    print(f"calibration: {source if calibration else 'none (scores stay raw)'}")
    print_summary(record)
    levels = args.min_precision if calibration else []
    precision = min_precision_record(candidates, calibration, levels, names)
    for level, per_class in precision.items():
        shown = ", ".join(
            f"{n} {v['kept']} ({_fmt(v['precision'], 2)})" for n, v in per_class.items()
        )
        print(f"--min-precision {level}: kept (precision) {shown}")
    result = {
        "model": str(model_dir),
        "model_steps": card.steps,
        "calibration": source if calibration else None,
        "projects": [str(p) for p in projects],
        "seed": args.seed if args.project is None else None,
        "tomo_type": args.tomo_type,
        "tta": args.tta,
        "n_runs": int(truth["experiment"].nunique()),
        "n_bins": N_BINS,
        "predict_seconds": round(predict_s, 1),
        "hardware": describe_hardware(),
        "per_class": record,
        "min_precision": precision,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"calibration{'_tta' if args.tta else ''}.json"
    path.write_text(json.dumps(result, indent=2, default=float))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
