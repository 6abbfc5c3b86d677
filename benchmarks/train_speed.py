"""Training and inference speed of the default network on CPU, and a learning curve.

    python benchmarks/train_speed.py                      # speeds -> benchmarks/results/
    python benchmarks/train_speed.py --curve-minutes 60   # + from-scratch run -> docs/img/
    python benchmarks/train_speed.py --skip-speed --curve-from MODEL_DIR   # plot a card's curve

Speeds: training steps/s and voxels/s (input voxels per second, batch included) for
fp32 / bf16 autocast, with and without channels_last_3d; inference voxels/s on a 128³
tile and the implied seconds for one 184x630x630 tomogram. On CPUs without native bf16
(AVX512-BF16/AMX) bf16 convolutions fall back to reference kernels that are two orders
of magnitude slower, so there bf16 is timed on one small forward pass only.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from cryopick.inference.runtime import cpu_has_fast_bf16
from cryopick.model import ModelConfig, build_model, count_parameters, describe_hardware
from cryopick.training.config import TrainConfig, compute_loss

ROOT = Path(__file__).resolve().parents[1]
TOMOGRAM_VOXELS = 184 * 630 * 630


def time_training(config: TrainConfig, bf16: bool, channels_last: bool, steps: int) -> dict:
    torch.manual_seed(0)
    model = build_model(config.architecture)
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    model.to(memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(config.batch_size, 1, *config.patch_size).contiguous(memory_format=fmt)
    s = config.architecture.output_stride
    y = torch.randint(0, 7, (config.batch_size, *(p // s for p in config.patch_size)))
    weights = config.class_weights()
    times = []
    for _ in range(steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model.forward_native(x)
        loss = compute_loss(logits, y, config, weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    dt = sorted(times[1:])[len(times[1:]) // 2]  # median: robust to a shared machine
    voxels = config.batch_size * x[0, 0].numel()
    return {"s_per_step": dt, "steps_per_s": 1 / dt, "voxels_per_s": voxels / dt}


def time_inference(arch: ModelConfig, channels_last: bool, bf16: bool, side: int) -> dict:
    model = build_model(arch).eval()
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    x = torch.randn(1, 1, side, side, side).contiguous(memory_format=fmt)
    best = float("inf")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model.forward_native(x)
        for _ in range(2):
            t0 = time.perf_counter()
            model.forward_native(x)
            best = min(best, time.perf_counter() - t0)
    rate = x.numel() / best
    return {
        "tile": side,
        "voxels_per_s": rate,
        "s_per_tomogram_184x630x630": TOMOGRAM_VOXELS / rate,
    }


def measure_speeds(config: TrainConfig, steps: int) -> dict:
    fast_bf16 = cpu_has_fast_bf16()
    rows = []
    for bf16 in (False, True):
        for cl in (False, True):
            name = f"{'bf16' if bf16 else 'fp32'}{' channels_last_3d' if cl else ''}"
            if bf16 and not fast_bf16:
                row = {"config": name, "note": "no native bf16: timed one 32^3 forward only"}
                small = time_inference(config.architecture, cl, True, 32)
                ref = time_inference(config.architecture, cl, False, 32)
                row["slowdown_vs_fp32_forward"] = ref["voxels_per_s"] / small["voxels_per_s"]
            else:
                row = {"config": name, **time_training(config, bf16, cl, steps)}
                row["inference"] = time_inference(config.architecture, cl, bf16, 128)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return {"native_bf16": fast_bf16, "rows": rows}


def plot_curve(curve: list, out_png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [c[0] / 60 for c in curve]
    scores = [c[2] for c in curve]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(minutes, scores, "o-")
    ax.axhline(0.8, ls="--", c="grey", lw=1, label="target 0.80")
    ax.set_xlabel("training wall-clock (minutes, validation excluded)")
    ax.set_ylabel("validation weighted F4")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per config")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--curve-minutes", type=float, default=0, help="train from scratch")
    parser.add_argument("--curve-runs", type=int, default=8, help="simulated training runs")
    parser.add_argument("--curve-from", type=Path, help="plot the curve of this model folder")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = TrainConfig()
    result = {
        "hardware": describe_hardware("cpu"),
        "machine": platform.machine(),
        "threads": args.threads,
        "architecture": config.architecture.model_dump(mode="json"),
        "parameters": count_parameters(build_model(config.architecture)),
        "patch_size": config.patch_size,
        "batch_size": config.batch_size,
    }
    if not args.skip_speed:
        result["speed"] = measure_speeds(config, args.steps)
    model_dir = args.curve_from
    if args.curve_minutes:
        from cryopick.training.trainer import train

        model_dir = args.out / "curve_model"
        run_config = config.model_copy(
            update=dict(
                simulate=args.curve_runs,
                time_limit_min=args.curve_minutes,
                steps=100_000,
                validate_every=500,
                threads=args.threads,
            )
        )
        train(TrainConfig.model_validate(run_config.model_dump()), model_dir, resume=True)
    if model_dir is not None:
        from cryopick.model import read_model_card

        card = read_model_card(model_dir)
        result["learning_curve"] = card.learning_curve
        png = ROOT / "docs" / "img" / "learning_curve.png"
        plot_curve(card.learning_curve, png, f"{card.hardware}\n{card.target}")
        result["learning_curve_png"] = str(png.relative_to(ROOT))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "train_speed.json"
    if path.exists():  # keep the parts of an earlier run that this one did not measure
        result = {**json.loads(path.read_text()), **result}
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
