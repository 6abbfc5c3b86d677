"""Peers, side by side: cryopick and octopi trained and run on the same data, same CPU.

Both learn from the same simulated copick projects (``cryopick simulate``: training,
validation and held-out runs of other seeds), for the same minutes of training steps,
with the same number of threads; each runs its own inference and localisation on the
held-out runs, and both are scored with cryopick's CZII metric against the same truth.

* cryopick: ``cryopick train --set time_limit_min=T`` (or ``--cryopick-model DIR``), then
  ``cryopick predict`` with the trained card's thresholds, in child processes.
* octopi (CZII's copick-native MONAI U-Net picker, ``pip install octopi``): its own CLI
  (``create-targets``, ``train``, ``segment``, ``localize``) in its own virtual
  environment ``benchmarks/.venvs/octopi``, made here on first use (torch 2.13.0 CPU
  first, then octopi; never in cryopick's ``.venv``). Details: ``_peers_octopi.py``.
* topcup (the challenge winners' U-Net, ``pip install topcup``): run only if it can run on
  a CPU with torch 2.13.0; otherwise recorded as skipped, with the reasons.

Seconds per tomogram: wall time of the inference commands (process start included) over
the held-out runs; memory: the commands' peak PSS (process tree summed, shared pages split).

    python benchmarks/peers.py              # 8 + 1 + 2 runs of 184 x 630 x 630, 8 min: ~35 min
    python benchmarks/peers.py --train-runs 2 --val-runs 1 --test-runs 2 --shape 96 192 192 \\
        --train-minutes 1.5 --out benchmarks/results/peers_smoke.json   # smoke run: ~6 min
    python benchmarks/peers.py --cryopick-model bundled --peers   # cryopick's model only
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from _peers_env import describe_cpu, run_measured, thread_env
from _peers_octopi import (
    OctopiSettings,
    install_octopi,
    make_octopi_project,
    octopi_versions,
    predict_octopi,
    train_octopi,
)
from _peers_topcup import check_topcup
from _projects import read_truth, rename_runs

import cryopick
from cryopick.evaluation.metric import score_picks
from cryopick.io.picks import read_picks
from cryopick.model import bundled_model_dir, read_model_card
from cryopick.simulate import simulate_project

ROOT = Path(__file__).resolve().parents[1]
CRYOPICK = Path(sys.executable).parent / "cryopick"
SPLITS = ("train", "val", "test")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--train-runs", type=int, default=8)
    p.add_argument("--val-runs", type=int, default=1)
    p.add_argument("--test-runs", type=int, default=2)
    p.add_argument(
        "--seeds",
        type=int,
        nargs=3,
        default=(1000, 9000, 4242),
        metavar=("TRAIN", "VAL", "TEST"),
        help="simulation seeds",
    )
    p.add_argument("--shape", type=int, nargs=3, default=(184, 630, 630))
    p.add_argument("--preset", default="czii")
    p.add_argument(
        "--train-minutes",
        type=float,
        default=8.0,
        help="minutes of training steps for each tool (validation not counted)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cryopick-model", help="model folder or 'bundled': skip cryopick's training")
    p.add_argument(
        "--cryopick-set",
        action="append",
        default=["validate_every=2000"],
        metavar="FIELD=VALUE",
        help="extra TrainConfig field for cryopick train",
    )
    p.add_argument("--peers", nargs="*", default=["octopi", "topcup"], choices=["octopi", "topcup"])
    p.add_argument("--octopi-batch-size", type=int, default=OctopiSettings.batch_size)
    p.add_argument("--octopi-overlap", type=float, default=OctopiSettings.overlap)
    p.add_argument("--octopi-ntta", type=int, default=OctopiSettings.ntta)
    p.add_argument("--octopi-train-args", default="", help="more `octopi train` options (quoted)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/cryopick_peers"))
    p.add_argument("--fresh", action="store_true", help="simulate again even if the runs exist")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "peers.json")
    return p.parse_args(argv)


def simulate_projects(args: argparse.Namespace) -> dict[str, Path]:
    """Training, validation and held-out projects (reused when made with the same settings)."""
    stamp_path = args.workdir / "simulated.json"
    stamps = json.loads(stamp_path.read_text()) if stamp_path.exists() and not args.fresh else {}
    configs = {}
    for split, n_runs, seed in zip(
        SPLITS, (args.train_runs, args.val_runs, args.test_runs), args.seeds, strict=True
    ):
        wanted = {"runs": n_runs, "seed": seed, "shape": list(args.shape), "preset": args.preset}
        config = args.workdir / split / "copick_config.json"
        if stamps.get(split) != wanted or not config.exists():
            print(
                f"simulating {split}: cryopick simulate {config.parent} --runs {n_runs} "
                f"--seed {seed} --shape {' '.join(map(str, args.shape))}",
                flush=True,
            )
            simulate_project(
                config.parent,
                n_runs=n_runs,
                seed=seed,
                shape=tuple(args.shape),
                preset=args.preset,
                progress=False,
                overwrite=True,
            )
            stamps[split] = wanted
            stamp_path.write_text(json.dumps(stamps, indent=1))
        configs[split] = config
    return configs


def train_cryopick(args: argparse.Namespace, configs: dict[str, Path]) -> tuple[Path, dict]:
    """``cryopick train`` for ``--train-minutes`` of steps (or a given model): model, record."""
    if args.cryopick_model:
        given = args.cryopick_model
        return (bundled_model_dir() if given == "bundled" else Path(given)), {"trained_here": False}
    work = args.workdir / "cryopick"
    model = work / "model"
    settings = [f"time_limit_min={args.train_minutes}", f"threads={args.threads}"]
    command = [
        *(str(CRYOPICK), "train", "--data", str(configs["train"]), "--val", str(configs["val"])),
        *("--out", str(model), "--steps", "10000000", "--no-progress", "--overwrite"),
        *(x for field in settings + args.cryopick_set for x in ("--set", field)),
    ]
    train = run_measured(command, log=work / "train.log", env=thread_env(args.threads))
    if train.returncode != 0:
        raise RuntimeError(f"cryopick train failed: see {work / 'train.log'}")
    return model, {
        "trained_here": True,
        "train_command": shlex.join(command),
        "train_wall_minutes": round(train.seconds / 60, 2),
        "train_peak_GB": round(train.peak_GB, 2),
    }


def run_cryopick(args: argparse.Namespace, configs: dict[str, Path]) -> tuple[dict, pd.DataFrame]:
    """Train (unless given a model) and predict with cryopick's CLI; its record and picks."""
    model, trained = train_cryopick(args, configs)
    card = read_model_card(model)
    curve = card.learning_curve
    record = {
        "tool": "cryopick",
        "status": "ok",
        "versions": {"cryopick": cryopick.__version__},
        **trained,
        "model": str(model),
        "train_minutes": round(curve[-1][0] / 60, 2) if curve else None,
        "train_steps": curve[-1][1] if curve else card.steps,
        "kept_step": card.steps,
        "validation_f4": card.score,
    }
    work = args.workdir / "cryopick"
    csv = work / "picks.csv"
    command = [
        *(str(CRYOPICK), "predict", str(configs["test"]), "--model", str(model), "-o", str(csv)),
        *("--format", "csv", "--tomo-type", "denoised", "-q", "--overwrite"),
    ]
    predict = run_measured(command, log=work / "predict.log", env=thread_env(args.threads))
    if predict.returncode != 0:
        raise RuntimeError(f"cryopick predict failed: see {work / 'predict.log'}")
    record.update(
        predict_command=shlex.join(command),
        seconds_per_tomogram=round(predict.seconds / args.test_runs, 1),
        predict_peak_GB=round(predict.peak_GB, 2),
    )
    return record, rename_runs(read_picks(csv), configs["test"])


def run_octopi(args: argparse.Namespace, configs: dict[str, Path]) -> tuple[dict, pd.DataFrame]:
    """octopi with its own CLI in its own venv on the same runs; its record and picks."""
    settings = OctopiSettings(
        batch_size=args.octopi_batch_size,
        overlap=args.octopi_overlap,
        ntta=args.octopi_ntta,
        threads=args.threads,
        train_args=shlex.split(args.octopi_train_args),
    )
    work = args.workdir / "octopi"
    t0 = time.perf_counter()
    python = install_octopi()
    install_s = time.perf_counter() - t0
    config, runs = make_octopi_project(work, configs)
    record: dict = {
        "tool": "octopi",
        "status": "ok",
        "versions": octopi_versions(python),
        "venv_ready_s": round(install_s, 1),
        "settings": vars(settings),
    }
    train = train_octopi(
        python,
        config,
        runs,
        budget_s=60 * args.train_minutes,
        val_shape=tuple(args.shape),
        settings=settings,
        work=work,
    )
    record.update(train)
    if not train["has_model"]:
        record["status"] = "failed: no model saved (no validation finished)"
        return record, pd.DataFrame(columns=["experiment", "particle_type", "x", "y", "z"])
    picks, costs = predict_octopi(
        python,
        config,
        runs["test"],
        Path(train["model_dir"]),
        configs["test"],
        settings=settings,
        work=work,
    )
    record.update(costs)
    return record, picks


def add_scores(record: dict, picks: pd.DataFrame, truth: pd.DataFrame) -> None:
    """Score ``picks`` with cryopick's metric into ``record`` (F4 per class and weighted)."""
    result = score_picks(truth, picks)
    record["weighted_f4"] = round(result.score, 4)
    record["f4"] = {r.particle_type: round(r.fbeta, 4) for r in result.per_class.itertuples()}
    record["per_class"] = result.to_dict()["per_class"]
    record["n_picks"] = len(picks)


def format_table(records: list[dict]) -> str:
    """Markdown table of the records: F4 per class, weighted F4, speed and memory."""
    scored = [r for r in records if "f4" in r]
    classes = list(scored[0]["f4"]) if scored else []
    head = [
        "tool",
        "weighted F4",
        *classes,
        "s / tomogram",
        "predict GB",
        "train min (wall)",
        "train GB",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        if "f4" not in r:
            lines.append(f"| {r['tool']} | {r['status']} |" + " |" * (len(head) - 2))
            continue
        wall = r.get("train_wall_minutes")
        cells = [
            r["tool"],
            f"**{r['weighted_f4']:.3f}**",
            *(f"{r['f4'][c]:.3f}" for c in classes),
            _fmt(r.get("seconds_per_tomogram")),
            _fmt(r.get("predict_peak_GB")),
            f"{_fmt(r.get('train_minutes'))} ({_fmt(wall)})",
            _fmt(r.get("train_peak_GB")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: object) -> str:
    return "-" if value is None else str(value)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    configs = simulate_projects(args)
    truth = read_truth([configs["test"]])
    records = []
    cryopick_record, cryopick_picks = run_cryopick(args, configs)
    add_scores(cryopick_record, cryopick_picks, truth)
    records.append(cryopick_record)
    if "octopi" in args.peers:
        try:
            octopi_record, octopi_picks = run_octopi(args, configs)
        except (RuntimeError, subprocess.CalledProcessError) as err:  # keep cryopick's figures
            octopi_record, octopi_picks = {"tool": "octopi", "status": f"failed: {err}"}, None
        if octopi_picks is not None and octopi_record["status"] == "ok":
            add_scores(octopi_record, octopi_picks, truth)
        records.append(octopi_record)
    if "topcup" in args.peers:
        records.append(check_topcup())
    table = format_table(records)
    print(table)
    result = {
        "command": shlex.join(["python", "benchmarks/peers.py", *(argv or sys.argv[1:])]),
        "machine": describe_cpu(),
        "python": platform.python_version(),
        "data": {
            "shape": list(args.shape),
            "preset": args.preset,
            "seeds": list(args.seeds),
            "runs": [args.train_runs, args.val_runs, args.test_runs],
        },
        "train_minutes": args.train_minutes,
        "threads": args.threads,
        "total_minutes": round((time.perf_counter() - t0) / 60, 1),
        "tools": records,
        "table": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"saved {args.out} ({result['total_minutes']} min)")


if __name__ == "__main__":
    main()
