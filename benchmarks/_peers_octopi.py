"""octopi's side of ``benchmarks/peers.py``: its project, targets, training, segmentation, picks.

Every octopi step is octopi's own command line, run by its own virtual environment
through ``_peers_octopi_launch.py`` (which only moves its predictor to the CPU and
times its trainer's epochs). octopi reads one copick project, so the simulated
train / validation / held-out projects are joined into one: a static root of links to
their runs (``train-sim_0000``, ``val-sim_0000``, ``test-sim_0000``...) and an overlay of
octopi's own outputs (targets, segmentations, picks), so nothing is written into the
simulated projects.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from _peers_env import Measured, ensure_venv, package_version, run_measured, thread_env
from _projects import run_key

from cryopick.core.particles import default_particle_set
from cryopick.io.picks import read_picks

OCTOPI_PIN = "octopi==1.7.0"
LAUNCH = Path(__file__).resolve().parent / "_peers_octopi_launch.py"
TARGETS = "targets:octopi/1"
SEGMENTATION = "predict:octopi/1"


@dataclass
class OctopiSettings:
    """What octopi is run with (its CLI defaults unless the benchmark says otherwise)."""

    tomo_type: str = "denoised"
    spacing_A: float = 10.0
    batch_size: int = 2  # octopi's default 16 crops of 96^3: minutes a step on 2 cores
    overlap: float = 0.25  # octopi's default 0.5; 0.25 as cryopick's windows
    ntta: int = 1  # octopi's default 4; cryopick runs without TTA by default
    threads: int = 2
    train_args: list[str] = field(default_factory=list)

    @property
    def tomo_uri(self) -> str:
        """octopi's ``alg@voxel_size``."""
        return f"{self.tomo_type}@{self.spacing_A}"


def install_octopi() -> Path:
    """The Python of octopi's own environment (``benchmarks/.venvs/octopi``)."""
    return ensure_venv("octopi", [OCTOPI_PIN])


def octopi_versions(python: Path) -> dict[str, str | None]:
    """Versions of octopi and the packages its results depend on."""
    return {p: package_version(python, p) for p in ("octopi", "torch", "monai", "copick")}


def make_octopi_project(work: Path, configs: dict[str, Path]) -> tuple[Path, dict[str, list[str]]]:
    """One copick project over the simulated ones; returns its config and run names by split.

    Parameters
    ----------
    work
        octopi's work folder; its ``static`` links and ``overlay`` are made anew.
    configs
        ``{"train": copick_config.json, "val": ..., "test": ...}`` of simulated projects.
    """
    static, overlay = work / "static" / "ExperimentRuns", work / "overlay"
    for folder in (work / "static", overlay):
        shutil.rmtree(folder, ignore_errors=True)
    static.mkdir(parents=True)
    overlay.mkdir(parents=True)
    runs: dict[str, list[str]] = {}
    for split, config in configs.items():
        runs[split] = []
        for run_dir in sorted((config.parent / "ExperimentRuns").iterdir()):
            name = f"{split}-{run_dir.name}"
            (static / name).symlink_to(run_dir.resolve(), target_is_directory=True)
            runs[split].append(name)
    project = json.loads(configs["train"].read_text())
    weights = default_particle_set().weights
    for obj in project["pickable_objects"]:
        # octopi weighs its validation F-beta by this (the challenge's weights)
        obj["metadata"] = {"weight": weights.get(obj["name"], 1.0)}
    project.update(
        name="cryopick peers benchmark (octopi)",
        static_root=f"local://{work.resolve() / 'static'}",
        overlay_root=f"local://{overlay.resolve()}",
        overlay_fs_args={"auto_mkdir": True},
    )
    config = work / "copick_config.json"
    config.write_text(json.dumps(project, indent=2))
    return config, runs


def _octopi(python: Path, args: list[str], **launch: str) -> list[str]:
    options = [x for key, value in launch.items() for x in (f"--{key.replace('_', '-')}", value)]
    return [str(python), str(LAUNCH), *options, "--", *args]


def _cli(command: str, options: dict[str, object]) -> list[str]:
    """``command --option value ...`` for octopi's CLI."""
    return [command, *(str(x) for item in options.items() for x in item)]


def estimate_costs(python: Path, settings: OctopiSettings, log_dir: Path) -> tuple[dict, Measured]:
    """Seconds of one octopi training step and one validation forward on this CPU."""
    out = log_dir / "estimate.json"
    command = [str(python), str(LAUNCH), "--estimate", str(out), "--batch-size"]
    command.append(str(settings.batch_size))
    measured = run_measured(command, log=log_dir / "estimate.log", env=thread_env(settings.threads))
    if measured.returncode != 0:
        raise RuntimeError(f"octopi cost estimate failed: see {log_dir / 'estimate.log'}")
    return json.loads(out.read_text()), measured


def count_windows(shape: tuple[int, int, int], roi: int, overlap: float) -> int:
    """Windows of MONAI's sliding window over ``shape`` (its scan interval rule)."""
    interval = max(int(roi * (1 - overlap)), 1)
    return math.prod(1 if size <= roi else math.ceil((size - roi) / interval) + 1 for size in shape)


def plan_epochs(
    budget_s: float, costs: dict, n_train: int, n_val: int, val_shape: tuple[int, int, int]
) -> tuple[int, int, float]:
    """Epochs whose training steps fill ``budget_s``, the validation interval, and its seconds.

    An octopi epoch is one step per training tomogram. Its validation runs the full
    sliding window (128^3, overlap 0.5, 4 windows a batch) over every validation
    tomogram and is the only time it saves a model, so one is planned at the last
    epoch, and up to 5 while together they take under a fifth of ``budget_s``.
    """
    epoch_s = n_train * costs["step_s"] * 1.15  # + loading and augmenting the crops
    val_s = n_val * count_windows(val_shape, 128, 0.5) / 4 * costs["forward_s"]
    n_validations = max(1, min(5, int(0.2 * budget_s / max(val_s, 1e-6))))
    epochs = max(1, round(budget_s / epoch_s))
    return epochs, max(1, math.ceil(epochs / n_validations)), val_s


def make_targets(
    python: Path, config: Path, runs: list[str], settings: OctopiSettings, logs: Path
) -> Measured:
    """``octopi create-targets`` from the simulation's picks of ``runs`` (spheres, its default)."""
    options = {
        "-c": config,
        "--picks-user-id": "simulation",
        "--picks-session-id": "0",
        "--tomo-uri": settings.tomo_uri,
        "--target-uri": TARGETS,
        "--run-ids": ",".join(runs),
    }
    log = logs / "create_targets.log"
    targets = run_measured(
        _octopi(python, _cli("create-targets", options)), log=log, env=thread_env(settings.threads)
    )
    if targets.returncode != 0:
        raise RuntimeError(f"octopi create-targets failed: see {log}")
    return targets


def train_octopi(
    python: Path,
    config: Path,
    runs: dict[str, list[str]],
    *,
    budget_s: float,
    val_shape: tuple[int, int, int],
    settings: OctopiSettings,
    work: Path,
) -> dict:
    """Targets, a cost estimate, and ``octopi train`` for ``budget_s`` of training steps.

    octopi has no time limit: its epochs are planned from the estimate
    (:func:`plan_epochs`) so that its cosine schedule ends with the budget. The seconds
    its epochs really took are measured and returned (``train_minutes``), as are the
    wall minutes of all three commands (``train_wall_minutes``, validation included).
    """
    logs, env = work / "logs", thread_env(settings.threads)
    targets = make_targets(python, config, runs["train"] + runs["val"], settings, logs)
    costs, estimate = estimate_costs(python, settings, logs)
    epochs, interval, val_s = plan_epochs(
        budget_s, costs, len(runs["train"]), len(runs["val"]), val_shape
    )
    model_dir = work / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    options = {
        "-c": config,
        "--tomo-uri": settings.tomo_uri,
        "--target-uri": TARGETS,
        "--trainRunIDs": ",".join(runs["train"]),
        "--validateRunIDs": ",".join(runs["val"]),
        "--num-epochs": epochs,
        "--val-interval": interval,
        "--batch-size": settings.batch_size,
        "--best-metric": "fBeta4",
        "--output": model_dir,
    }
    args = [*_cli("train", options), *settings.train_args]
    timings = logs / "train_timings.json"
    # a backstop only: octopi is planned to end by itself near the budget
    timeout_s = 3 * budget_s + 3 * val_s * math.ceil(epochs / interval) + 600
    train = run_measured(
        _octopi(python, args, timings=str(timings)),
        log=logs / "train.log",
        env=env,
        timeout_s=timeout_s,
    )
    record = json.loads(timings.read_text()) if timings.exists() else {}
    epoch_s, validation_s = record.get("epoch_s", []), record.get("validation_s", [])
    return {
        "train_command": "octopi " + shlex.join(args),
        "model_dir": str(model_dir),
        "has_model": (model_dir / "best_model.pth").exists(),
        "train_minutes": round(sum(epoch_s) / 60, 2),
        "train_wall_minutes": round((targets.seconds + estimate.seconds + train.seconds) / 60, 2),
        "train_peak_GB": round(max(targets.peak_GB, train.peak_GB), 2),
        "planned_epochs": epochs,
        "val_interval": interval,
        "epochs_done": len(epoch_s),
        "train_steps": len(epoch_s) * len(runs["train"]),
        "validations_done": len(validation_s),
        "mean_epoch_s": _mean(epoch_s),
        "mean_validation_s": _mean(validation_s),
        "estimated_costs": {k: round(v, 2) for k, v in costs.items()},
        "returncode": train.returncode,
        "stopped_by_timeout": train.timed_out,
    }


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def predict_octopi(
    python: Path,
    config: Path,
    test_runs: list[str],
    model_dir: Path,
    test_config: Path,
    *,
    settings: OctopiSettings,
    work: Path,
) -> tuple[pd.DataFrame, dict]:
    """octopi's segmentation and localisation of the held-out runs; its picks (Å) and costs.

    The picks' experiments are renamed as :func:`_projects.run_key` names the
    held-out project's runs, so that they score against the same truth as cryopick's.
    """
    logs, env, runs = work / "logs", thread_env(settings.threads), ",".join(test_runs)
    options: dict[str, object] = {
        "-c": config,
        "--tomo-uri": settings.tomo_uri,
        "--model-config": model_dir / "model_config.yaml",
        "--model-weights": model_dir / "best_model.pth",
        "--seg-uri": SEGMENTATION,
        "--run-ids": runs,
        "--overlap": settings.overlap,
        "--ntta": settings.ntta,
    }
    segment = run_measured(
        _octopi(python, _cli("segment", options)), log=logs / "segment.log", env=env
    )
    options = {
        "-c": config,
        "--seg-uri": SEGMENTATION,
        "--voxel-size": settings.spacing_A,
        "--runIDs": runs,
        "--n-procs": settings.threads,
        "--pick-user-id": "octopi",
        "--pick-session-id": "1",
    }
    localize = run_measured(
        _octopi(python, _cli("localize", options)), log=logs / "localize.log", env=env
    )
    for name, step in (("segment", segment), ("localize", localize)):
        if step.returncode != 0:
            raise RuntimeError(f"octopi {name} failed: see {logs / (name + '.log')}")
    picks = _read_octopi_picks(work / "overlay", test_config)
    costs = {
        "segment_s": round(segment.seconds, 1),
        "localize_s": round(localize.seconds, 1),
        "seconds_per_tomogram": round((segment.seconds + localize.seconds) / len(test_runs), 1),
        "predict_peak_GB": round(max(segment.peak_GB, localize.peak_GB), 2),
    }
    return picks, costs


def _read_octopi_picks(overlay: Path, test_config: Path) -> pd.DataFrame:
    if not any(overlay.glob("ExperimentRuns/*/Picks/octopi_1_*.json")):
        return pd.DataFrame(columns=["experiment", "particle_type", "x", "y", "z", "score"])
    picks = read_picks(overlay, user_id="octopi", session_id="1")
    run = picks["experiment"].str.removeprefix("test-")
    renamed: pd.DataFrame = picks.assign(experiment=[run_key(test_config, r) for r in run])
    return renamed
