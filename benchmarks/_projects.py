"""Helpers shared by the benchmark scripts: scoring runs of several simulated projects.

Simulated projects name their runs ``sim_0000``, ``sim_0001``...; to score several
projects together, each run is renamed ``project_folder/run``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from cryopick.io.picks import read_picks

if TYPE_CHECKING:
    from cryopick.evaluation.metric import ScoreResult
    from cryopick.inference.pipeline import PredictConfig

ROOT = Path(__file__).resolve().parents[1]
WEAK_TYPES = ("beta-galactosidase", "thyroglobulin")
CLI = (sys.executable, "-c", "from cryopick.cli import app; app()")
"""``cryopick`` as a user runs it, in a fresh process (append the command's arguments)."""


def add_held_out_arguments(parser: argparse.ArgumentParser, workdir: str) -> None:
    """Add the options naming a model and its held-out projects (or how to simulate them)."""
    parser.add_argument("--model", type=Path, help="model folder (default: bundled)")
    parser.add_argument(
        "--project", type=Path, nargs="+", help="held-out copick project(s), simulated"
    )
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--shape", type=int, nargs=3, default=(184, 630, 630))
    parser.add_argument("--preset", default="czii")
    parser.add_argument("--tomo-type", default="denoised")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--workdir", type=Path, default=Path(workdir))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")


def add_rescorer_fit_arguments(parser: argparse.ArgumentParser, seeds: list[int]) -> None:
    """Add the options of a rescorer comparison: model, fitting, validation, held-out runs."""
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--rescorer-data", type=Path, nargs="+", required=True)
    parser.add_argument("--val", type=Path, required=True)
    parser.add_argument("--held-out", type=Path, nargs="+", required=True)
    parser.add_argument("--held-out-2", type=Path, nargs="*", default=[])
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds)


def describe_fit_data(args: argparse.Namespace) -> dict[str, object]:
    """The projects and floor of a rescorer comparison, for its result file."""
    return {
        "rescorer_data": [str(p) for p in args.rescorer_data],
        "validation": str(args.val),
        "held_out": [str(p) for p in args.held_out],
        "held_out_2": [str(p) for p in args.held_out_2],
        "floor": args.floor,
    }


def summarise_weak_types(result: ScoreResult) -> dict[str, float]:
    """Weighted F4 and the F4 of beta-galactosidase and thyroglobulin, rounded."""
    per_class = result.to_dict()["per_class"]
    row = {"score": round(result.score, 4)}
    row.update({t: round(per_class[t]["fbeta"], 3) for t in WEAK_TYPES})
    return row


def held_out_projects(args: argparse.Namespace) -> list[Path]:
    """The ``--project`` folders, or one project simulated into the benchmark's work folder."""
    from cryopick.simulate import simulate_project

    if args.project is not None:
        return list(args.project)
    path = simulate_project(
        args.workdir / f"{args.preset}_seed{args.seed}",
        n_runs=args.runs,
        seed=args.seed,
        shape=tuple(args.shape),
        preset=args.preset,
        overwrite=True,  # the benchmark's own work folder
    )
    return [Path(path)]


def run_key(project: Path, run: str) -> str:
    """Experiment name unique across projects: ``project_folder/run``."""
    return f"{Path(project).parent.name}/{run}"


def rename_runs(picks: pd.DataFrame, project: Path) -> pd.DataFrame:
    """The picks of one project with experiments renamed by :func:`run_key`."""
    return picks.assign(experiment=[run_key(project, r) for r in picks["experiment"]])


def read_truth(projects: list[Path]) -> pd.DataFrame:
    """The simulation's picks of every project, experiments renamed by :func:`run_key`."""
    frames = [rename_runs(read_picks(p, user_id="simulation"), p) for p in projects]
    return pd.concat(frames, ignore_index=True)


def predict_projects(
    projects: list[Path],
    model_dir: Path,
    config: PredictConfig | None = None,
    tomo_type: str = "denoised",
) -> pd.DataFrame:
    """Pick every run of every project with one model; experiments renamed by :func:`run_key`."""
    from cryopick.inference.pipeline import predict  # imports torch: only when picking

    frames = [
        rename_runs(predict(p, model_dir=model_dir, config=config, tomo_type=tomo_type), p)
        for p in projects
    ]
    return pd.concat(frames, ignore_index=True)
