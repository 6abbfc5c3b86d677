"""End-to-end speed and memory of ``predict_tomogram`` on one full-size tomogram.

Usage::

    .venv/bin/python benchmarks/predict_speed.py [--shape 184 630 630] [--threads 2]
        [--out FILE]

Steps, each timed (wall and process CPU seconds: the machine may be shared, and CPU time
is less sensitive to other processes), with the peak resident memory (RSS sampled every
10 ms) during it:

* ``read_normalise``: open the OME-Zarr (10 Å, random smooth content with dark blobs) and
  normalise it (one pass over the store);
* ``network``: :func:`cryopick.inference.window.predict_probabilities` with the default network of
  :mod:`cryopick.model` (untrained: cost does not depend on the weights), the default
  inference window (:func:`cryopick.inference.window.choose_patch_size`, or ``--patch``), overlap
  0.25, predict's default batch (one window at a time on a CPU running bf16, else two);
* ``peaks``: :func:`cryopick.inference.peaks.find_peaks` on the network's map, and, because an
  untrained network gives flat maps, also on a synthetic map with 150 blobs per class
  (``peaks_synthetic``);
* ``write``: the picks CSV;
* ``cli``: what a user runs, ``cryopick predict TOMO.mrc --output picks.csv`` with the
  bundled model, in a fresh process (Python start, imports, model load, reading the MRC,
  polarity check, network, peaks, writing), ``--cli-repeats`` times; wall seconds and the
  child's peak RSS. This is the issue's end-to-end figure.
* ``cli_tomogram`` (with ``--cli-tomogram PATH``): the same command on a given tomogram,
  e.g. a simulated one, whose candidate peaks are as many as a real tomogram's (the
  synthetic volume's random blobs give the rescorer more);
* ``bundled_stages``: where that time goes: the import of the pipeline in a fresh process,
  then the bundled model's loading, reading + preparing + orienting, networks, and peaks +
  rescoring on the same MRC in this process (after one untimed pass).

Also measured: fp32 and bf16 matmul peaks of this CPU (a 2048² matmul), the network's FLOPs
per window (torch's FlopCounter), and the network's achieved FLOP/s. Results go to
``benchmarks/results/predict_speed.json``. The comparison with MONAI's own window loop is
``benchmarks/window_vs_monai.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from _projects import CLI
from scipy import ndimage

from cryopick.core.particles import default_particle_set
from cryopick.inference.peaks import find_peaks
from cryopick.inference.preprocess import normalise_volume
from cryopick.inference.runtime import measure_bf16_slowdown, resolve_precision
from cryopick.inference.window import (
    choose_patch_size,
    choose_window_steps,
    count_windows,
    pad_shape_to_windows,
    predict_probabilities,
    predict_probability_map,
)
from cryopick.io.omezarr import write_ome_zarr
from cryopick.io.picks import write_picks
from cryopick.io.tomograms import read_tomogram
from cryopick.model import ModelCard, build_model, describe_hardware

RESULTS = Path(__file__).parent / "results" / "predict_speed.json"
PAGE = os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """Peak resident memory of this process, sampled in a background thread."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval_s)

    def __enter__(self) -> RssSampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *args: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


@contextmanager
def stage(results: dict, name: str):
    start, cpu_start = time.perf_counter(), time.process_time()
    with RssSampler() as sampler:
        yield
    results[name] = {
        "seconds": round(time.perf_counter() - start, 3),
        "cpu_seconds": round(time.process_time() - cpu_start, 3),  # all threads
        "peak_rss_GB": round(sampler.peak / 1e9, 3),
    }
    print(f"{name:>18s}: {results[name]}", flush=True)


def measure_matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 3) -> float:
    """GFLOP/s of an n x n matmul in ``dtype`` (best of ``repeats``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
        if best > 5:  # emulated bf16 without native instructions: one is enough
            break
    return 2 * n**3 / best / 1e9


def make_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Smooth random density with dark blobs (protein darker than solvent)."""
    rng = np.random.default_rng(seed)
    volume = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 1.5)
    zz, yy, xx = (rng.uniform(0, n, 600) for n in shape)
    blobs = np.zeros(shape, dtype=np.float32)
    blobs[zz.astype(int), yy.astype(int), xx.astype(int)] = -40.0
    volume += ndimage.gaussian_filter(blobs, 3.0)
    return volume


def make_synthetic_probs(shape: tuple[int, int, int], per_class: int = 150) -> np.ndarray:
    """Probability maps at stride 2 with Gaussian blobs of each class's target size."""
    rng = np.random.default_rng(1)
    probs = np.zeros((7, *shape), dtype=np.float16)
    for p in default_particle_set():
        sigma = 0.5 * p.radius_A / 20.0 / 1.18
        impulses = np.zeros(shape, dtype=np.float32)
        idx = tuple(rng.integers(0, n, per_class) for n in shape)
        impulses[idx] = 1.0
        field = ndimage.gaussian_filter(impulses, sigma) * (2 * np.pi * sigma**2) ** 1.5
        probs[p.label] = np.clip(field * 0.9, 0, 1)
    return probs


def time_cli(volume: np.ndarray, workdir: Path, repeats: int) -> dict:
    """Wall seconds and peak RSS of ``cryopick predict`` on an MRC, each in a fresh process."""
    import mrcfile

    path = workdir / "TS_cli.mrc"
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(volume)
        mrc.voxel_size = 10.0
    return time_cli_on(path, workdir, repeats, "cli")


def time_cli_on(path: Path, workdir: Path, repeats: int, label: str) -> dict:
    """Wall seconds of ``cryopick predict PATH`` in fresh processes, the children's peak RSS.

    The peak is that of every child so far (``getrusage``): time the larger input first.
    """
    command = [*CLI, "predict", str(path)]
    seconds, n_picks = [], 0
    for i in range(repeats):
        output = workdir / f"{label}_{i}.csv"
        start = time.perf_counter()
        subprocess.run([*command, "--output", str(output), "--quiet"], check=True)
        seconds.append(round(time.perf_counter() - start, 3))
        n_picks = sum(1 for _ in output.open()) - 1
    peak_GB = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    result = {"input": str(path), "seconds": seconds, "median_seconds": float(np.median(seconds))}
    result.update(peak_rss_GB=round(peak_GB, 3), n_picks=n_picks)
    print(f"{label:>18s}: {result}", flush=True)
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(184, 630, 630))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="windows per pass (default: predict's)"
    )
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument(
        "--patch", type=int, nargs=3, default=None, help="window (default: choose_patch_size)"
    )
    parser.add_argument("--cli-repeats", type=int, default=3, help="fresh-process CLI runs")
    parser.add_argument(
        "--cli-tomogram",
        type=Path,
        help="also time the CLI on this tomogram (e.g. a simulated run's denoised.zarr)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def describe_setup(
    args: argparse.Namespace, shape: tuple, card: ModelCard, model: torch.nn.Module, patch: tuple
) -> dict:
    """The settings, the machine, the network's FLOPs per window and the matmul peaks."""
    results: dict = {
        "shape_zyx": shape,
        "spacing_A": 10.0,
        "threads": args.threads,
        "hardware": describe_hardware("cpu"),
        "load_average_before": os.getloadavg(),
        "architecture": card.architecture.model_dump(),
        "patch_size": patch,
        "overlap": args.overlap,
        "batch_size": args.batch_size or "auto",
        "precision": str(resolve_precision("auto", torch.device("cpu"))),
        "bf16_conv_slowdown": round(measure_bf16_slowdown(), 3),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "(not set)"),
    }

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.forward_native(torch.zeros((1, 1, *patch)))  # FLOPs do not depend on the batch
    padded_shape = pad_shape_to_windows(shape, patch, 2)  # stride 2
    results["flops_per_window"] = counter.get_total_flops()
    results["n_windows"] = count_windows(
        padded_shape, patch, choose_window_steps(padded_shape, patch, args.overlap, 2)
    )
    results["fp32_matmul_peak_GFLOPs"] = round(measure_matmul_peak(torch.float32), 2)
    results["bf16_matmul_peak_GFLOPs"] = round(measure_matmul_peak(torch.bfloat16, n=1024), 3)
    return results


def time_stages(
    args: argparse.Namespace,
    shape: tuple,
    card: ModelCard,
    model: torch.nn.Module,
    patch: tuple,
    results: dict,
) -> None:
    """Time every stage in this process, then the CLI in fresh ones; add them to ``results``."""
    stages: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = write_ome_zarr(Path(tmp) / "TS_bench.zarr", make_volume(shape), 10.0, n_levels=1)
        total_start = time.perf_counter()
        with RssSampler() as whole:
            with stage(stages, "read_normalise"):
                tomogram = read_tomogram(store)
                volume = normalise_volume(tomogram.data, source=tomogram.source)
            with stage(stages, "network"):
                probs = predict_probabilities(
                    model, volume, patch, args.overlap, args.batch_size, "cpu", upsample=False
                )
            with stage(stages, "peaks"):
                picks = find_peaks(probs, 20.0, tomogram.name, card.thresholds, origin_A=5.0)
            with stage(stages, "write"):
                write_picks(picks, Path(tmp) / "picks.csv")
        results["end_to_end_seconds"] = round(time.perf_counter() - total_start, 3)
        results["end_to_end_peak_rss_GB"] = round(whole.peak / 1e9, 3)
        results["n_picks_untrained"] = len(picks)
        del probs
        synthetic = make_synthetic_probs(tuple(-(-n // 2) for n in shape))
        with stage(stages, "peaks_synthetic"):
            synthetic_picks = find_peaks(synthetic, 20.0, "synthetic", origin_A=5.0)
        results["n_picks_synthetic"] = len(synthetic_picks)
        del synthetic
        results["cli"] = time_cli(make_volume(shape), Path(tmp), args.cli_repeats)
        results["bundled_stages"] = time_bundled_stages(Path(tmp) / "TS_cli.mrc")
        if args.cli_tomogram:
            results["cli_tomogram"] = time_cli_on(
                args.cli_tomogram, Path(tmp), args.cli_repeats, "cli_tomogram"
            )
    results["stages"] = stages


def time_bundled_stages(path: Path) -> dict:
    """Where the CLI's time goes: the bundled model's stages on ``path``, wall seconds.

    ``imports``: a fresh process importing the prediction pipeline; the others run here,
    after one untimed pass (so the MRC is in the page cache, as for the CLI runs before).
    """
    from cryopick.inference.picking import PickSettings, pick_particles
    from cryopick.inference.pipeline import PredictConfig
    from cryopick.inference.polarity import orient_contrast
    from cryopick.inference.preprocess import prepare_volume
    from cryopick.model import load_model
    from cryopick.model.bundled import bundled_model_dir

    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import cryopick.inference.pipeline"], check=True)
    seconds = {"imports": time.perf_counter() - start}
    config = PredictConfig()

    def run_stages() -> None:
        with timed(seconds, "load_model"):
            model, card = load_model(bundled_model_dir())
        with timed(seconds, "read_prepare_orient"):
            tomogram = read_tomogram(path)
            volume, _ = prepare_volume(tomogram, card.spacing_A)
            volume = orient_contrast(volume, tomogram.name, None, model, "cpu", "auto")
        with timed(seconds, "networks"):
            prob_map = predict_probability_map(
                model, volume, overlap=config.overlap, upsample=False
            )
        with timed(seconds, "peaks_rescoring"):
            settings = PickSettings.for_model(card, config)
            picks = pick_particles(
                prob_map.probs,
                settings,
                spacing_A=card.spacing_A,
                stride=prob_map.stride,
                experiment="TS",
                volume=volume,
            )
        seconds["n_picks"] = len(picks)

    run_stages()  # warm: page cache, oneDNN primitives
    run_stages()
    result = {k: round(v, 3) if isinstance(v, float) else v for k, v in seconds.items()}
    print(f"{'bundled stages':>18s}: {result}", flush=True)
    return result


@contextmanager
def timed(seconds: dict, name: str):
    """Store the wall seconds of the block under ``seconds[name]``."""
    start = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - start


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    shape = tuple(args.shape)
    card = ModelCard()
    model = build_model(card.architecture).eval()
    patch = (
        tuple(args.patch)
        if args.patch
        else choose_patch_size(shape, model.input_multiple, overlap=args.overlap, step_multiple=2)
    )
    results = describe_setup(args, shape, card, model, patch)
    print(json.dumps(results, indent=1), flush=True)
    time_stages(args, shape, card, model, patch, results)
    achieved = results["n_windows"] * results["flops_per_window"]
    achieved /= results["stages"]["network"]["seconds"] * 1e9
    results["network_GFLOPs"] = round(achieved, 2)
    for kind in ("fp32", "bf16"):
        peak = results[f"{kind}_matmul_peak_GFLOPs"]
        results[f"network_fraction_of_{kind}_peak"] = round(achieved / peak, 3)
    results["max_rss_GB_getrusage"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 3
    )
    results["load_average_after"] = os.getloadavg()
    results["python"] = platform.python_version()
    results["torch"] = torch.__version__
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
