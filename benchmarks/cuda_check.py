"""Predict and train on a CUDA GPU: throughput, memory, and agreement with the CPU.

    python benchmarks/cuda_check.py [--cpu-picks FILE] [--out FILE] [--workdir DIR]

Run on a machine with a GPU (``--device cpu`` dry-runs the same steps on the CPU). Steps,
each printed when done and the JSON rewritten after each, so a run cut short keeps what
it measured:

* ``simulate``: the first held-out run (czii preset, seed 4242, 184x630x630 at 10 Å;
  ``cryopick simulate sim_test --runs 2 --seed 4242``'s ``sim_0000``, which is the same
  run on its own), on the CPU;
* ``predict_cli``: what a user runs, ``cryopick predict PROJECT --run sim_0000 --device
  cuda`` in fresh processes (wall seconds: Python start, imports, CUDA start, model load,
  reading, network, peaks, rescoring, writing), ``--repeats`` times, then once with
  ``--tta`` and once with ``--precision fp32``; each scored against the simulation's
  truth (weighted F4). With ``--cpu-picks`` (the same command's CSV on a CPU) the CPU
  picks are scored too, and
  the GPU's picks against the CPU's (same type within half a radius);
* ``predict_warm``: in one process, the bundled model loaded once, ``predict_tomogram``
  on the same tomogram three times: seconds per tomogram once CUDA is warm (what each
  tomogram of a batch costs), and the GPU's peak allocated memory;
* ``network``: the bundled networks alone over the tomogram's volume
  (:func:`cryopick.inference.window.predict_probability_map`), batch 2, 8 and 32, bf16;
* ``train_steps``: optimiser steps of one bundled-architecture network on random
  patches (the training patch, batch 2 and 16), fp32 and bf16 autocast;
* ``trainer``: ``cryopick train --data PROJECT --steps N --device cuda`` in a fresh
  process (patch sampling, augmentation and targets on the CPU included): steps/s from
  the card's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _projects import CLI

from cryopick.evaluation.metric import score_picks
from cryopick.inference.pipeline import predict_tomogram
from cryopick.inference.preprocess import normalise_volume
from cryopick.inference.runtime import describe_hardware
from cryopick.inference.window import predict_probability_map
from cryopick.io.picks import read_picks
from cryopick.io.tomograms import read_tomograms
from cryopick.model import ModelConfig, build_model, load_model, read_model_card
from cryopick.model.bundled import bundled_model_dir
from cryopick.simulate import simulate_project
from cryopick.training.config import TrainConfig, compute_loss

RUN = "sim_0000"


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that wall time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe(device: torch.device) -> dict:
    """The machine: GPU (or CPU), torch and CUDA versions, CPU cores."""
    info = {"hardware": describe_hardware(device), "torch": torch.__version__}
    info["cpu_cores"] = os.cpu_count()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["cuda"] = torch.version.cuda
        info["gpu_memory_GB"] = round(props.total_memory / 1e9, 1)
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    return info


def timed(function: Callable[[], object]) -> tuple[object, float]:
    """``function()``'s result and its wall seconds."""
    start = time.perf_counter()
    result = function()
    return result, round(time.perf_counter() - start, 3)


def run_cli(arguments: list[str]) -> float:
    """Wall seconds of one ``cryopick`` command in a fresh process (fails loudly)."""
    start = time.perf_counter()
    subprocess.run([*CLI, *arguments], check=True)
    return round(time.perf_counter() - start, 3)


def score_file(truth: pd.DataFrame, csv: Path) -> dict:
    """Weighted F4 and per-type F4 of a picks CSV against the truth."""
    result = score_picks(truth, read_picks(csv))
    per_class = result.per_class.set_index("particle_type")["fbeta"].round(4).to_dict()
    return {"f4": round(result.score, 4), "f4_per_type": per_class}


def predict_cli(args: argparse.Namespace, project: Path, truth: pd.DataFrame) -> dict:
    """Fresh-process ``cryopick predict`` on the GPU, scored; and against the CPU's picks."""
    base = ["predict", str(project), "--run", RUN, "--device", args.device, "--quiet"]
    seconds = []
    for i in range(args.repeats):
        seconds.append(run_cli([*base, "--output", str(args.workdir / f"gpu_{i}.csv")]))
        print(f"  predict {i}: {seconds[-1]} s", flush=True)
    result: dict = {"seconds": seconds, "median_seconds": float(np.median(seconds))}
    result["gpu"] = score_file(truth, args.workdir / "gpu_0.csv")
    tta_csv = args.workdir / "gpu_tta.csv"
    result["tta_seconds"] = run_cli([*base, "--tta", "--output", str(tta_csv)])
    result["gpu_tta"] = score_file(truth, tta_csv)
    fp32_csv = args.workdir / "gpu_fp32.csv"
    result["fp32_seconds"] = run_cli([*base, "--precision", "fp32", "--output", str(fp32_csv)])
    result["gpu_fp32"] = score_file(truth, fp32_csv)
    if args.cpu_picks is not None:
        result["cpu"] = score_file(truth, args.cpu_picks)
        agreement = score_picks(read_picks(args.cpu_picks), read_picks(args.workdir / "gpu_0.csv"))
        counts = agreement.per_class[["tp", "fp", "fn"]].sum()
        result["gpu_vs_cpu_picks"] = {
            "matched": int(counts["tp"]),
            "gpu_only": int(counts["fp"]),
            "cpu_only": int(counts["fn"]),
        }
    return result


def predict_warm(args: argparse.Namespace, project: Path) -> dict:
    """Seconds per tomogram with the model loaded once and CUDA warm; peak GPU memory."""
    device = torch.device(args.device)
    start = time.perf_counter()
    model, card = load_model(bundled_model_dir(), device=device)
    load_s = round(time.perf_counter() - start, 3)
    tomogram = read_tomograms(project, runs=[RUN])[0]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, counts = [], []
    for _ in range(3):
        picks, s = timed(lambda: predict_tomogram(tomogram, model, card, device=args.device))
        seconds.append(s)
        counts.append(len(picks))  # type: ignore[arg-type]
    result = {"load_model_seconds": load_s, "seconds": seconds, "picks": counts}
    if device.type == "cuda":
        result["gpu_peak_allocated_GB"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
    return result


def time_network(args: argparse.Namespace, project: Path) -> dict:
    """The bundled networks alone over the full volume at several batch sizes (bf16)."""
    device = torch.device(args.device)
    model, card = load_model(bundled_model_dir(), device=device)
    volume = normalise_volume(read_tomograms(project, runs=[RUN])[0].data)  # as predict does
    rows = []
    for batch in (2, 8, 32):
        for _repeat in range(2):  # the first of each batch size warms up (cuDNN autotune)
            start = time.perf_counter()
            predict_probability_map(
                model, volume, card.patch_size, 0.25, batch, device, upsample=False
            )
            synchronize(device)
            s = round(time.perf_counter() - start, 3)
        rows.append({"batch": batch, "seconds": s, "voxels_per_s": round(volume.size / s)})
        print(f"  network batch {batch}: {s} s", flush=True)
    return {"shape_zyx": list(volume.shape), "overlap": 0.25, "rows": rows}


def time_steps(
    architecture: ModelConfig, config: TrainConfig, batch: int, bf16: bool, device: torch.device
) -> dict:
    """Median seconds of one optimiser step on random patches (10 steps after 3 warm-ups)."""
    torch.manual_seed(0)
    model = build_model(architecture).to(device).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, *config.patch_size, device=device)
    stride = architecture.output_stride
    y = torch.randint(0, 7, (batch, *(p // stride for p in config.patch_size)), device=device)
    weights = config.class_weights().to(device)
    times = []
    for _ in range(13):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model.forward_native(x)
        loss = compute_loss(logits, y, config, weights)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    step_s = float(np.median(times[3:]))
    return {
        "batch": batch,
        "precision": "bf16" if bf16 else "fp32",
        "s_per_step": round(step_s, 4),
        "patch_voxels_per_s": round(batch * x[0, 0].numel() / step_s),
    }


def train_steps(args: argparse.Namespace) -> dict:
    """Training step speed of one network of the bundled architecture."""
    card = read_model_card(bundled_model_dir())
    architecture = card.architecture.model_copy(update={"members": 1})
    config = TrainConfig(architecture=architecture, patch_size=tuple(card.patch_size))
    rows = []
    for batch in (2, 16):
        for bf16 in (False, True):
            rows.append(time_steps(architecture, config, batch, bf16, torch.device(args.device)))
            print(f"  {rows[-1]}", flush=True)
    return {"architecture": architecture.model_dump(), "rows": rows}


def trainer(args: argparse.Namespace, project: Path) -> dict:
    """``cryopick train`` for ``--train-steps`` steps in a fresh process."""
    card = read_model_card(bundled_model_dir())
    config = TrainConfig(
        data=[str(project)],
        val=[str(project)],
        architecture=card.architecture.model_copy(update={"members": 1}),
        steps=args.train_steps,
        validate_every=0,
        device=args.device,
    )
    config_path = args.workdir / "train.json"
    config_path.write_text(config.model_dump_json())
    model_dir = args.workdir / "model"
    command = ["train", "--config", str(config_path), "--out", str(model_dir), "--overwrite"]
    wall_s = run_cli([*command, "--no-progress"])
    trained = read_model_card(model_dir)
    return {
        "steps": trained.steps,
        "wall_seconds": wall_s,
        "card_wall_time_s": trained.wall_time_s,
        "steps_per_s": round(trained.steps / trained.wall_time_s, 2),
        "validation_score": trained.score,
        "hardware": trained.hardware,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shape", type=int, nargs=3, default=(184, 630, 630))
    parser.add_argument("--repeats", type=int, default=3, help="fresh-process predicts")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--cpu-picks", type=Path, help="the CPU's picks of the same run (CSV)")
    parser.add_argument("--skip", nargs="*", default=[], help="steps not to run")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cuda_check"))
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "cuda_check.json"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": describe(torch.device(args.device)), "command": sys.argv}
    print(json.dumps(results["machine"]), flush=True)
    project, results["simulate_seconds"] = timed(
        lambda: simulate_project(
            args.workdir / "sim_test",
            n_runs=1,
            seed=4242,
            shape=tuple(args.shape),
            preset="czii",
            overwrite=True,
        )
    )
    project = Path(project)  # type: ignore[arg-type]
    truth = read_picks(project, user_id="simulation")
    results["truth_particles"] = len(truth)
    steps: dict[str, Callable[[], dict]] = {
        "predict_cli": lambda: predict_cli(args, project, truth),
        "predict_warm": lambda: predict_warm(args, project),
        "network": lambda: time_network(args, project),
        "train_steps": lambda: train_steps(args),
        "trainer": lambda: trainer(args, project),
    }
    for name, step in steps.items():
        if name in args.skip:
            continue
        try:
            results[name] = step()
        except Exception as error:  # keep the other steps' figures
            results[name] = {"error": f"{type(error).__name__}: {error}"}
        print(f"{name}: {json.dumps(results[name])}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
