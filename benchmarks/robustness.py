"""Robustness matrix: held-out F4 of a model when one imaging condition changes at a time.

Each condition simulates its own held-out runs (same seeds for every condition, so only
the condition differs) from the ``czii`` preset with one setting changed, picks them with
the model's own thresholds and scores them with the CZII metric. Besides voxel size,
polarity, tilt range, defocus, dose and reconstruction, the conditions include 100 and 300 nm
thick ice, gold fiducials with a carbon edge in view, and procedural crowders of a shape
family ("branched") that the ``varied`` training preset leaves out.

    python benchmarks/robustness.py [--model DIR] [--runs 2] [--shape 184 448 448]
        [--only NAME ...] [--config predict.json] [--out DIR] [--cache DIR]

``--cache DIR`` keeps each simulated run (its tomogram as read and its truth) and reads it
back on the next call with the same seed and shape: comparing models then costs their
picking only (simulating is most of the 19 minutes of a 4-run matrix).

``--config`` takes predict settings as ``cryopick predict --config`` does (a JSON
file of :class:`cryopick.inference.pipeline.PredictConfig` fields), e.g.
``{"fiducial_max_score": null}`` to score without the gold-streak filter.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryopick.evaluation.metric import score_picks
from cryopick.inference.pipeline import LoadedModel, PredictConfig, predict_tomogram
from cryopick.io.atomic import atomic_path
from cryopick.io.tomograms import Tomogram
from cryopick.model import bundled_model_dir, describe_hardware
from cryopick.simulate import SimulatedRun, simulate_run
from cryopick.simulate.artefacts import CarbonFilm, GoldBeads, SpecimenExtras
from cryopick.simulate.crowders import ProceduralCrowders
from cryopick.simulate.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]
BOX_A = 10.0  # the default condition's voxel size
TRUTH_COLUMNS = ["experiment", "particle_type", "x", "y", "z"]  # what the metric reads


@dataclass(frozen=True)
class Condition:
    """One imaging condition: changes to the ``czii`` preset and how the tomogram is read."""

    changes: dict[str, Any] = field(default_factory=dict)
    spacing_A: float = BOX_A
    tomo_type: str = "denoised"
    inverted: bool = False
    z_A: float | None = None  # box height in Å when the sample needs a taller box


CONDITIONS: dict[str, Condition] = {
    "baseline (10 Å, denoised, tilt ±45°)": Condition(),
    "voxel 7.84 Å": Condition(spacing_A=7.84),
    "voxel 13.48 Å": Condition(spacing_A=13.48),
    "contrast inverted (no flag)": Condition(inverted=True),
    "tilt ±60°": Condition({"tilt_min_deg": -60.0, "tilt_max_deg": 60.0}),
    "tilt ±70°": Condition({"tilt_min_deg": -70.0, "tilt_max_deg": 70.0}),
    "defocus 2 µm": Condition({"defocus_um": (2.0, 2.0)}),
    "defocus 6 µm": Condition({"defocus_um": (6.0, 6.0)}),
    "dose 60 e/Å²": Condition({"dose_total_e_A2": (60.0, 60.0)}),
    "dose 160 e/Å²": Condition({"dose_total_e_A2": (160.0, 160.0)}),
    # ice slab of 100 nm in the usual 1840 Å box; of 300 nm in a 3200 Å box
    "thickness 100 nm": Condition({"ice_thickness_fraction": (1000 / 1840, 1000 / 1840)}),
    "thickness 300 nm": Condition(
        {"ice_thickness_fraction": (3000 / 3200, 3000 / 3200), "ice_offset_fraction": (0, 0)},
        z_A=3200.0,
    ),
    "gold fiducials + carbon edge": Condition(
        {
            "extras": SpecimenExtras(
                gold=GoldBeads(probability=1.0, per_um2=(40.0, 40.0)),
                carbon=CarbonFilm(probability=1.0),
            )
        }
    ),
    # the two parts of the cell above, one at a time
    "gold fiducials": Condition(
        {"extras": SpecimenExtras(gold=GoldBeads(probability=1.0, per_um2=(40.0, 40.0)))}
    ),
    "carbon edge": Condition({"extras": SpecimenExtras(carbon=CarbonFilm(probability=1.0))}),
    # half the crowding volume "branched" procedural crowders, a shape family that the
    # 'varied' training preset leaves out
    "unseen crowder shapes": Condition(
        {
            "extras": SpecimenExtras(
                crowders=ProceduralCrowders(fraction=(0.5, 0.5), shapes=("branched",))
            )
        }
    ),
    "wbp": Condition(tomo_type="wbp"),
    "ctfdeconvolved": Condition(tomo_type="ctfdeconvolved"),
    # wbp's grey values hardly skew (-0.09 to +0.04 on the runs above): the polarity has
    # to come from the network
    "wbp, contrast inverted (no flag)": Condition(tomo_type="wbp", inverted=True),
}


def simulate_condition(
    name: str, shape_10A: tuple[int, int, int], seed: int, index: int
) -> tuple[SimulatedRun, Tomogram]:
    """Simulate run ``index`` of a condition; return it and its tomogram as picking reads it.

    ``shape_10A`` is the box in 10 Å voxels (its height replaced by the condition's own,
    when it has one); the run is simulated at the condition's voxel size over the same
    extent, and the tomogram is the condition's reconstruction, inverted when it says so.
    """
    condition = CONDITIONS[name]
    config = get_preset("czii").model_copy(update=condition.changes)
    spacing_A, tomo_type = condition.spacing_A, condition.tomo_type
    if condition.z_A is not None:
        shape_10A = (round(condition.z_A / BOX_A), *shape_10A[1:])
    shape = tuple(round(s * BOX_A / spacing_A) for s in shape_10A)
    seed_seq = np.random.SeedSequence([seed, index])
    run = simulate_run(config, shape, spacing_A, seed_seq, run_label(index))
    volume = run.tomograms[tomo_type]
    return run, condition_tomogram(name, index, -volume if condition.inverted else volume)


def run_label(index: int) -> str:
    """The name of a condition's run ``index``: ``r<index>``, in the truth and the picks."""
    return f"r{index}"


def condition_tomogram(name: str, index: int, data: Any) -> Tomogram:
    """Run ``index`` of a condition as picking reads it: named ``r<index>``, its voxel
    size and reconstruction."""
    condition = CONDITIONS[name]
    label = run_label(index)
    return Tomogram(label, data, condition.spacing_A, Path(label), condition.tomo_type)


def load_or_simulate_condition(
    name: str, shape_10A: tuple[int, int, int], seed: int, index: int, cache: Path | None
) -> tuple[pd.DataFrame, Tomogram]:
    """Return run ``index`` of a condition (truth picks, tomogram), from ``cache`` if there.

    Simulating is most of the matrix's time; the same runs scored again with another model
    are read back instead (float32, exactly as simulated). Files are written atomically
    (:func:`cryopick.io.atomic.atomic_path`: a failed write, e.g. on a full disk, leaves none).
    """
    if cache is None:
        run, tomogram = simulate_condition(name, shape_10A, seed, index)
        return run.picks, tomogram
    slug = "".join(c if c.isalnum() else "_" for c in name)
    stem = cache / f"{slug}_seed{seed}_{'x'.join(map(str, shape_10A))}_r{index}"
    volume_path, truth_path = stem.with_suffix(".npy"), stem.with_suffix(".csv")
    if volume_path.exists() and truth_path.exists():
        data = np.load(volume_path, mmap_mode="r")
        return pd.read_csv(truth_path), condition_tomogram(name, index, data)
    run, tomogram = simulate_condition(name, shape_10A, seed, index)
    with atomic_path(volume_path) as tmp, tmp.open("wb") as handle:
        np.save(handle, np.asarray(tomogram.data, dtype=np.float32))
    with atomic_path(truth_path) as tmp:
        run.picks[TRUTH_COLUMNS].to_csv(tmp, index=False)
    return run.picks, tomogram


def score_condition(
    name: str,
    model: LoadedModel,
    runs: int,
    shape_10A: tuple[int, int, int],
    seed: int,
    settings: PredictConfig | None = None,
    cache: Path | None = None,
) -> dict[str, Any]:
    """Simulate ``runs`` tomograms under one condition (or read them from ``cache``), pick
    and score them."""
    truths, picks = [], []
    t0 = time.perf_counter()
    for i in range(runs):
        truth, tomogram = load_or_simulate_condition(name, shape_10A, seed, i, cache)
        network, card = model
        picks.append(predict_tomogram(tomogram, network, card, settings))
        truths.append(truth)
    result = score_picks(pd.concat(truths), pd.concat(picks))
    per_class = result.to_dict()["per_class"]
    row = {"condition": name, "score": round(result.score, 4), "seconds": 0.0}
    row.update({k: round(v["fbeta"], 3) for k, v in per_class.items()})
    row["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(row), flush=True)
    return row


def merge_rows(path: Path, record: dict[str, Any], rows: list[dict]) -> list[dict]:
    """Keep an earlier file's rows of other conditions when it scored the same model and runs."""
    if not path.exists():
        return rows
    old = json.loads(path.read_text())
    keys = ("model", "runs", "shape_at_10A", "seed", "config")
    same = all(old.get(k, {} if k == "config" else None) == record[k] for k in keys)
    if not same:
        return rows
    new_names = {row["condition"] for row in rows}
    kept = [row for row in old["rows"] if row["condition"] not in new_names]
    order = list(CONDITIONS)
    merged = kept + rows
    return sorted(
        merged, key=lambda r: order.index(r["condition"]) if r["condition"] in order else 99
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs=3, default=(184, 448, 448))
    parser.add_argument("--seed", type=int, default=6262)
    parser.add_argument("--only", nargs="*", help="condition names (default: all)")
    parser.add_argument("--config", type=Path, help="predict settings (JSON)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--cache", type=Path, help="keep the simulated runs here and read them back next time"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("cryopick.inference.background").setLevel(logging.INFO)  # flattened runs
    from cryopick.cli.app import load_predict_config
    from cryopick.model import load_model

    settings = load_predict_config(args.config)
    model: LoadedModel = load_model(args.model or bundled_model_dir())
    names = args.only or list(CONDITIONS)
    shape = tuple(args.shape)
    rows = [
        score_condition(n, model, args.runs, shape, args.seed, settings, args.cache) for n in names
    ]
    record = {
        "model": str(args.model or bundled_model_dir()),
        "runs": args.runs,
        "shape_at_10A": list(args.shape),
        "seed": args.seed,
        "config": settings.model_dump(exclude_defaults=True),
        "hardware": describe_hardware(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "robustness.json"
    record["rows"] = merge_rows(path, record, rows)
    path.write_text(json.dumps(record, indent=2))
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
