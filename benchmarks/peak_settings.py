"""Compare peak-finding and threshold-tuning settings of one model on held-out runs.

The network runs once per tomogram (probability maps cached under ``--cache``); each
setting then finds candidates (peaks above 0.05) on both projects, tunes per-class
thresholds for F4 on the tuning project and scores the held-out one with them, so no
setting sees its test truth.

    python benchmarks/peak_settings.py --model DIR \\
        --tune sim_val/copick_config.json --test sim_test/copick_config.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _projects import read_truth, run_key

from cryopick.evaluation.metric import DEFAULT_TUNE_TOLERANCE, score_picks, tune_thresholds
from cryopick.evaluation.thresholds import select_picks
from cryopick.inference.picking import PickSettings, pick_particles
from cryopick.inference.preprocess import normalise_volume
from cryopick.inference.runtime import resolve_device
from cryopick.inference.window import predict_probabilities, prepare_network
from cryopick.io.tomograms import read_tomograms
from cryopick.model import TargetSpec, bundled_model_dir, describe_hardware, load_model

ROOT = Path(__file__).resolve().parents[1]

SETTINGS: dict[str, dict] = {
    "defaults (no cross-class resolution, tolerance 0.02)": {},
    "thresholds at the best F4 (tolerance 0)": {"tolerance": 0.0},
    "tolerance 0.05": {"tolerance": 0.05},
    "cross-class 0.5 x radius (old default)": {"cross_class_fraction": 0.5},
    "cross-class 0.5 x radius, ratio 0.5": {"cross_class_fraction": 0.5, "cross_class_ratio": 0.5},
    "cross-class 0.5 x radius, ratio 0.25": {
        "cross_class_fraction": 0.5,
        "cross_class_ratio": 0.25,
    },
    "no blob-size check": {"blob_ratio_range": None},
    "blob-size range 0.6-1.8": {"blob_ratio_range": (0.6, 1.8)},
    "blob-size range 0.8-1.8": {"blob_ratio_range": (0.8, 1.8)},
    "NMS 0.4 x radius": {"nms_fraction": 0.4},
    "NMS 0.8 x radius": {"nms_fraction": 0.8},
}
FLOOR = 0.05  # candidate floor (as in training validation)
SPLITS = ("tune", "test")


def cached_maps(
    model: torch.nn.Module, projects: list[Path], tomo_type: str, cache: Path, tta: bool = False
) -> dict[str, Path]:
    """Probability maps (float16 .npy, model's strided grid) of every run, computed once."""
    out = {}
    for project in projects:
        for tomogram in read_tomograms(project, tomo_type=tomo_type):
            path = cache / f"{project.parent.name}_{tomogram.name}_{tomo_type}.npy"
            if not path.exists():
                volume = normalise_volume(tomogram.data, source=tomogram.source)
                probs = predict_probabilities(model, volume, upsample=False, tta=tta)
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, probs)
            out[run_key(project, tomogram.name)] = path
    return out


def find_candidates(
    maps: dict[str, Path], spacing_A: float, stride: int, target: TargetSpec, **kw
) -> pd.DataFrame:
    """Every peak above a low floor in every cached map (as training validation finds them)."""
    settings = replace(PickSettings.for_candidates(target, FLOOR), **kw)
    frames = [
        pick_particles(
            np.load(path, mmap_mode="r"),
            settings,
            spacing_A=spacing_A,
            stride=stride,
            experiment=name,
        )
        for name, path in maps.items()
    ]
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--tune", type=Path, nargs="+", required=True, help="tuning projects")
    parser.add_argument("--test", type=Path, nargs="+", required=True, help="held-out projects")
    parser.add_argument("--tomo-type", default="denoised")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/cryopick_peak_settings"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    model_dir = args.model or bundled_model_dir()
    model, card = load_model(model_dir)
    _, stride = prepare_network(model, resolve_device("cpu"))
    cache = args.cache / (Path(model_dir).resolve().name + ("_tta" if args.tta else ""))
    maps = {
        k: cached_maps(model, getattr(args, k), args.tomo_type, cache, args.tta) for k in SPLITS
    }
    truth = {k: read_truth(getattr(args, k)) for k in SPLITS}
    results, candidates = [], {}
    for label, setting in SETTINGS.items():
        kw = {k: v for k, v in setting.items() if k != "tolerance"}
        key = json.dumps(kw, sort_keys=True)
        if key not in candidates:  # settings differing only in tolerance share candidates
            candidates[key] = [
                find_candidates(maps[k], card.spacing_A, stride, card.target, **kw) for k in SPLITS
            ]
        tune_c, test_c = candidates[key]
        tolerance = setting.get("tolerance", DEFAULT_TUNE_TOLERANCE)
        thresholds = tune_thresholds(truth["tune"], tune_c, tolerance=tolerance)
        tuned = score_picks(truth["tune"], select_picks(tune_c, thresholds))
        result = score_picks(truth["test"], select_picks(test_c, thresholds))
        per_class = {
            r.particle_type: round(float(r.fbeta), 3) for r in result.per_class.itertuples()
        }
        results.append(
            {
                "setting": label,
                "options": setting,
                "tune_score": round(tuned.score, 4),
                "test_score": round(result.score, 4),
                "test_fbeta": per_class,
            }
        )
        print(f"{label:52s} tune {tuned.score:.3f}  test {result.score:.3f}  {per_class}")
    record = {
        "model": str(model_dir),
        "tune": [str(p) for p in args.tune],
        "test": [str(p) for p in args.test],
        "tomo_type": args.tomo_type,
        "tta": args.tta,
        "hardware": describe_hardware(),
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "peak_settings_tta.json" if args.tta else "peak_settings.json"
    (args.out / name).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
