"""Held-out runs declared at a voxel size close to the model's (the portal's 10.012 Å).

The CZII portal's tomograms sit in ``VoxelSpacing10.000`` but their metadata say 10.012 Å,
and picks come back in that frame. This scores the same simulated held-out runs (made at
10 Å) three ways, with the bundled model (or ``--model``):

* ``native``: as simulated, 10 Å;
* ``declared``: the same voxels declared at ``--spacing-A`` (truth positions scaled by
  the same factor), picked as ``predict`` picks them (within 1 % of the model's voxel
  size: on the tomogram's own voxels,
  :func:`cryopick.inference.preprocess.choose_network_spacing_A`);
* ``resampled``: the same declared tomograms picked with the tolerance ``predict`` had
  before 2026-12-05 (0.1 %): resampled to the model's 10 Å first.

Prints one JSON row per variant (weighted F4, per-class F4, seconds) and saves them in
``--out``/``portal_spacing.json``.

    python benchmarks/portal_spacing.py --project sim_test/copick_config.json \\
        sim_test2/copick_config.json [--spacing-A 10.012] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from _projects import add_held_out_arguments, held_out_projects, read_truth, rename_runs

from cryopick.evaluation.metric import score_picks
from cryopick.inference import preprocess
from cryopick.inference.pipeline import PredictConfig, predict_tomogram
from cryopick.io.runs import read_inputs
from cryopick.io.tomograms import Tomogram
from cryopick.model import describe_hardware, load_model
from cryopick.model.bundled import bundled_model_dir

VARIANTS = ("native", "declared", "resampled")
OLD_TOLERANCE = 0.001


def as_variant(tomogram: Tomogram, variant: str, spacing_A: float) -> Tomogram:
    """The tomogram as ``variant`` presents it to the pipeline (see the module docstring)."""
    return tomogram if variant == "native" else dataclasses.replace(tomogram, spacing_A=spacing_A)


@contextmanager
def spacing_tolerance(variant: str) -> Iterator[None]:
    """``resampled``: predict's tolerance as it was before 2026-12-05 (0.1 %)."""
    kept = preprocess.SPACING_TOLERANCE
    preprocess.SPACING_TOLERANCE = OLD_TOLERANCE if variant == "resampled" else kept
    try:
        yield
    finally:
        preprocess.SPACING_TOLERANCE = kept


def score_variant(
    projects: list[Path], model, variant: str, spacing_A: float, args: argparse.Namespace
) -> dict:
    """Pick every run of ``projects`` presented as ``variant``; weighted and per-class F4."""
    network, card = model
    truth = read_truth(projects)
    factor = 1.0 if variant == "native" else spacing_A / float(card.spacing_A)
    truth[["x", "y", "z"]] *= factor
    config = PredictConfig(tta=args.tta)
    start = time.perf_counter()
    frames = []
    with spacing_tolerance(variant):
        for project in projects:
            picks = [
                predict_tomogram(as_variant(t, variant, spacing_A), network, card, config)
                for t in read_inputs(project, args.tomo_type, None)
            ]
            frames.append(rename_runs(pd.concat(picks, ignore_index=True), project))
    seconds = time.perf_counter() - start
    result = score_picks(truth, pd.concat(frames, ignore_index=True))
    per_class = {k: round(v["fbeta"], 3) for k, v in result.to_dict()["per_class"].items()}
    row = {"variant": variant, "score": round(result.score, 4), "seconds": round(seconds, 1)}
    return {**row, **per_class}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_held_out_arguments(parser, "/tmp/cryopick_portal_spacing")
    parser.add_argument("--spacing-A", type=float, default=10.012)
    args = parser.parse_args()
    projects = held_out_projects(args)
    model_dir = args.model or bundled_model_dir()
    model = load_model(model_dir)
    rows = []
    for variant in VARIANTS:
        rows.append(score_variant(projects, model, variant, args.spacing_A, args))
        print(json.dumps(rows[-1]), flush=True)
    record = {
        "model": str(model_dir),
        "projects": [str(p) for p in projects],
        "declared_spacing_A": args.spacing_A,
        "tomo_type": args.tomo_type,
        "tta": args.tta,
        "hardware": describe_hardware(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "portal_spacing.json"
    path.write_text(json.dumps(record, indent=2))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
