"""Robustness matrix: held-out F4 of a model when one imaging condition changes at a time.

Each condition simulates its own held-out runs (same seeds for every condition, so only
the condition differs) from the ``czii`` preset with one setting changed, picks them with
the model's own thresholds and scores them with the CZII metric. Conditions the simulator
cannot make yet (gold fiducials, a carbon edge, unseen crowder shapes, 300 nm thick ice)
are not in the table.

    python benchmarks/robustness.py [--model DIR] [--runs 2] [--shape 184 448 448]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryopick.evaluation.metric import score_picks
from cryopick.inference.pipeline import LoadedModel, predict_tomogram
from cryopick.io.tomograms import Tomogram
from cryopick.model import bundled_model_dir, describe_hardware
from cryopick.simulate import simulate_run
from cryopick.simulate.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]
BOX_A = 10.0  # the default condition's voxel size

# name -> (changes to the czii preset, voxel size in Å, tomogram type, inverted contrast)
CONDITIONS: dict[str, tuple[dict[str, Any], float, str, bool]] = {
    "baseline (10 Å, denoised)": ({}, 10.0, "denoised", False),
    "voxel 7.84 Å": ({}, 7.84, "denoised", False),
    "voxel 13.48 Å": ({}, 13.48, "denoised", False),
    "contrast inverted (no flag)": ({}, 10.0, "denoised", True),
    "tilt ±60°": ({"tilt_min_deg": -60.0, "tilt_max_deg": 60.0}, 10.0, "denoised", False),
    "tilt ±70°": ({"tilt_min_deg": -70.0, "tilt_max_deg": 70.0}, 10.0, "denoised", False),
    "defocus 2 µm": ({"defocus_um": (2.0, 2.0)}, 10.0, "denoised", False),
    "defocus 6 µm": ({"defocus_um": (6.0, 6.0)}, 10.0, "denoised", False),
    "dose 60 e/Å²": ({"dose_total_e_A2": (60.0, 60.0)}, 10.0, "denoised", False),
    "dose 160 e/Å²": ({"dose_total_e_A2": (160.0, 160.0)}, 10.0, "denoised", False),
    "wbp": ({}, 10.0, "wbp", False),
    "ctfdeconvolved": ({}, 10.0, "ctfdeconvolved", False),
}


def score_condition(
    name: str, model: LoadedModel, runs: int, shape_10A: tuple[int, int, int], seed: int
) -> dict[str, Any]:
    """Simulate ``runs`` tomograms under one condition, pick and score them."""
    changes, spacing_A, tomo_type, inverted = CONDITIONS[name]
    config = get_preset("czii").model_copy(update=changes)
    shape = tuple(round(s * BOX_A / spacing_A) for s in shape_10A)
    truths, picks = [], []
    t0 = time.perf_counter()
    for i in range(runs):
        run = simulate_run(config, shape, spacing_A, np.random.SeedSequence([seed, i]), f"r{i}")
        volume = run.tomograms[tomo_type]
        data = -volume if inverted else volume
        tomogram = Tomogram(f"r{i}", data, spacing_A, Path(f"r{i}"), tomo_type)
        network, card = model
        picks.append(predict_tomogram(tomogram, network, card))
        truths.append(run.picks)
    result = score_picks(pd.concat(truths), pd.concat(picks))
    per_class = result.to_dict()["per_class"]
    row = {"condition": name, "score": round(result.score, 4), "seconds": 0.0}
    row.update({k: round(v["fbeta"], 3) for k, v in per_class.items()})
    row["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs=3, default=(184, 448, 448))
    parser.add_argument("--seed", type=int, default=6262)
    parser.add_argument("--only", nargs="*", help="condition names (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    from cryopick.model import load_model

    model: LoadedModel = load_model(args.model or bundled_model_dir())
    names = args.only or list(CONDITIONS)
    rows = [score_condition(n, model, args.runs, tuple(args.shape), args.seed) for n in names]
    record = {
        "model": str(args.model or bundled_model_dir()),
        "runs": args.runs,
        "shape_at_10A": list(args.shape),
        "seed": args.seed,
        "hardware": describe_hardware(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "robustness.json"
    path.write_text(json.dumps(record, indent=2))
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
