"""Tomograms with constant fill: do the picks in the data stay what they were?

Rotated tomograms (the corners a rotation leaves empty), masked lamellae and padded
volumes hold regions of one value. This takes held-out simulated runs, writes each as an
MRC as it is and with such a region, predicts every copy with the bundled model (or
``--model``), and scores the picks against the truth in the part of the tomogram that
still holds data (farther than ``--margin-A`` from the fill), next to the unchanged
tomogram's picks in the same part. Fills:

* ``zero slab``: x >= 480 voxels set to 0 (the normalised tomogram's median is ~0);
* ``minimum slab``: the same slab set to the tomogram's minimum;
* ``rotated corners``: 0 outside a disc of radius 330 voxels in y, x (a volume rotated in
  plane and cut to a square);

    python benchmarks/fill_regions.py --project sim_test/copick_config.json
        [--runs sim_0000 sim_0001] [--model DIR] [--out DIR]

Writes ``fill_regions.json`` to ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from cryopick.evaluation.metric import score_picks
from cryopick.inference.pipeline import predict
from cryopick.io.mrc import write_mrc
from cryopick.io.picks import read_truth
from cryopick.io.tomograms import read_tomogram
from cryopick.model import bundled_model_dir, load_model

ROOT = Path(__file__).resolve().parents[1]
SLAB_X = 480
DISC_RADIUS = 330


def _slab(volume: np.ndarray, value: float) -> np.ndarray:
    out = volume.copy()
    out[:, :, SLAB_X:] = value
    return out


def _corners(volume: np.ndarray) -> np.ndarray:
    out = volume.copy()
    y, x = np.ogrid[: volume.shape[1], : volume.shape[2]]
    cy, cx = (volume.shape[1] - 1) / 2, (volume.shape[2] - 1) / 2
    out[:, (y - cy) ** 2 + (x - cx) ** 2 > DISC_RADIUS**2] = 0.0
    return out


FILLS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "zero slab": lambda v: _slab(v, 0.0),
    "minimum slab": lambda v: _slab(v, float(v.min())),
    "rotated corners": _corners,
}


def keep_far_from_fill(
    table: pd.DataFrame, fill: str, shape: tuple[int, ...], spacing_A: float, margin_A: float
) -> pd.DataFrame:
    """Rows whose position lies in the data, farther than ``margin_A`` from the fill."""
    if fill.endswith("slab"):
        return table[table.x < SLAB_X * spacing_A - margin_A]
    cy, cx = (shape[1] - 1) / 2 * spacing_A, (shape[2] - 1) / 2 * spacing_A
    radius = np.hypot(table.y - cy, table.x - cx)
    return table[radius < DISC_RADIUS * spacing_A - margin_A]


def measure_run(project: Path, run: str, model, margin_A: float, work: Path) -> list[dict]:
    """Predict one run as it is and with each fill; score both in the data part."""
    tomogram = read_tomogram(project, run=run)
    volume = np.asarray(tomogram.data[:], dtype=np.float32)
    truth = read_truth(project, user_id="simulation")
    truth = truth[truth.experiment == run]
    plain = predict(
        write_mrc(work / "plain" / f"{run}.mrc", volume, tomogram.spacing_A), model=model
    )
    rows = []
    for fill, make in FILLS.items():
        path = write_mrc(
            work / fill.replace(" ", "_") / f"{run}.mrc", make(volume), tomogram.spacing_A
        )
        start = time.perf_counter()
        picks = predict(path, model=model)
        seconds = time.perf_counter() - start
        near = len(picks) - len(
            keep_far_from_fill(picks, fill, volume.shape, tomogram.spacing_A, 0.0)
        )
        part = [
            keep_far_from_fill(t, fill, volume.shape, tomogram.spacing_A, margin_A)
            for t in (truth, plain, picks)
        ]
        as_is, filled = (score_picks(part[0], p) for p in part[1:])
        rows.append(
            {
                "run": run,
                "fill": fill,
                "seconds": round(seconds, 2),
                "picks": len(picks),
                "picks_inside_fill": int(near),
                "f4_data_part_as_is": round(as_is.score, 4),
                "f4_data_part_filled": round(filled.score, 4),
                "per_class_filled": filled.per_class[["particle_type", "tp", "fp", "fn"]].to_dict(
                    "records"
                ),
                "per_class_as_is": as_is.per_class[["particle_type", "tp", "fp", "fn"]].to_dict(
                    "records"
                ),
            }
        )
        print(
            f"{run} {fill:16s} F4 in the data {filled.score:.4f} (as is {as_is.score:.4f}); "
            f"{len(picks)} picks, {near} inside the fill; {seconds:.1f} s"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--runs", nargs="+", default=["sim_0000", "sim_0001"])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--margin-A", type=float, default=180.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    model = load_model(args.model or bundled_model_dir())
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            r
            for run in args.runs
            for r in measure_run(args.project, run, model, args.margin_A, Path(tmp))
        ]
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "fill_regions.json"
    out.write_text(json.dumps({"margin_A": args.margin_A, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
