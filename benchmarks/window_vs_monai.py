"""cryopick's sliding window against MONAI's ``sliding_window_inference``, fairly, interleaved.

Usage::

    .venv/bin/python benchmarks/window_vs_monai.py [--shape 184 630 630] [--repeats 3]

Both get the same prepared network (batch norms folded, ``channels_last_3d``, the same
autocast dtype as ``precision="auto"`` chooses on this CPU), the same normalised volume
already in memory, the same window, overlap 0.25, 2 windows per forward pass and Gaussian
blending with sigma 0.125 of the window, on the network's native stride-2 grid. Runs
alternate (ours, MONAI, ours, ...) so that a drifting machine load hits both; the median
of each is reported, with the largest difference between their maps. Results go to
``benchmarks/results/window_vs_monai.json``.

Each process that predicts also pays the import of its loop: the script times, in fresh
processes, ``import torch`` alone and ``import monai.inferers`` (torch included); "ours" needs
only torch. Run at commit 58de9aa, "ours" was cryopick's old loop (slab blending in numpy)
and MONAI was 17 % faster; "ours" is now :mod:`cryopick.inference.blending` (the weighted
sums in torch, no whole-volume padding).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from predict_speed import make_volume

from cryopick.inference.preprocess import normalise_volume
from cryopick.inference.runtime import describe_hardware, resolve_precision
from cryopick.inference.window import (
    choose_patch_size,
    predict_probability_map,
    prepare_network,
)
from cryopick.model import build_model

RESULTS = Path(__file__).parent / "results" / "window_vs_monai.json"


def run_monai(model: torch.nn.Module, volume: np.ndarray, patch, overlap: float, batch: int):
    """MONAI's ``sliding_window_inference`` given exactly what our window loop gets.

    The same prepared network (:func:`cryopick.inference.window.prepare_network`: batch
    norms folded, ``channels_last_3d``), the same autocast dtype (``precision="auto"``), the
    same softmax on the native stride-2 grid, the same patch, overlap, batch and Gaussian
    blending (sigma 0.125 of the patch): only the window loop and blending differ.
    """
    from monai.inferers import sliding_window_inference

    device = torch.device("cpu")
    net, _ = prepare_network(model, device, channels_last=True)
    amp_dtype = resolve_precision("auto", device)

    def predictor(x: torch.Tensor) -> torch.Tensor:
        logits = net(x.contiguous(memory_format=torch.channels_last_3d))
        return torch.softmax(logits.float(), dim=1)

    x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    autocast = torch.autocast("cpu", dtype=amp_dtype) if amp_dtype else nullcontext()
    with torch.inference_mode(), autocast:
        return sliding_window_inference(
            x, patch, batch, predictor, overlap=overlap, mode="gaussian", sigma_scale=0.125
        )


def time_import(module: str, repeats: int) -> float:
    """Median seconds of ``python -c "import <module>"`` in a fresh process."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(184, 630, 630))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = tuple(args.shape)
    model = build_model().eval()
    patch = choose_patch_size(shape, model.input_multiple)
    volume = normalise_volume(make_volume(shape))
    times: dict[str, list[float]] = {"ours": [], "monai": []}
    maps: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = predict_probability_map(model, volume, patch, 0.25, 2, "cpu", upsample=False)
        times["ours"].append(time.perf_counter() - start)
        start = time.perf_counter()
        theirs = run_monai(model, volume, patch, 0.25, 2)
        times["monai"].append(time.perf_counter() - start)
        maps = {"ours": ours.probs.astype(np.float32), "monai": theirs[0].numpy()}
    median = {k: float(np.median(v)) for k, v in times.items()}
    imports = {m: round(time_import(m, args.repeats), 3) for m in ("torch", "monai.inferers")}
    results = {
        "shape_zyx": shape,
        "patch_size": patch,
        "threads": args.threads,
        "hardware": describe_hardware("cpu"),
        "precision": str(resolve_precision("auto", torch.device("cpu"))),
        "load_average_before": os.getloadavg(),
        "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "median_seconds": {k: round(v, 3) for k, v in median.items()},
        "monai_over_ours": round(median["monai"] / median["ours"], 3),
        "fresh_process_import_seconds": imports,
        "max_abs_map_difference": float(np.abs(maps["ours"] - maps["monai"]).max()),
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
