"""Throughput of ``cryopick predict`` on 1 vs 2 Dask workers, and the per-task overhead.

Usage::

    .venv/bin/python benchmarks/scale_out.py [--runs 8] [--shape 64 96 96] [--out FILE]

Measures on this machine, with small simulated runs and an untrained network of the
default architecture (the cost of a forward pass does not depend on the weights):

* ``in_process``: the runs one after the other in this process (all cores to PyTorch;
  "cold" includes loading the model, "warm" reuses it);
* ``workers_W_threads_T``: a LocalCluster with W worker processes of T PyTorch threads
  each (W=1, T=cores; W=1, T=1; W=2, T=cores//2); "cold" includes the workers' first
  imports and model load, "warm" is a second batch on the same workers (``overwrite=True``);
* ``overhead``: trivial Dask tasks (scheduler round trip per task), and cryopick tasks whose
  prediction is a no-op (task machinery: reading metadata, writing parts and the log).

Writes JSON to ``benchmarks/results/scale_out.json`` (see docs/scale_out.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cryopick.core.picks import empty_picks
from cryopick.model import ModelCard, ModelConfig, build_model, describe_hardware, save_model
from cryopick.scale.executors import ClusterConfig, count_cores, open_client
from cryopick.scale.runner import run_predict_tasks

RESULTS = Path(__file__).parent / "results" / "scale_out.json"


def predict_nothing(tomogram, model, card):
    return empty_picks()


def _summary(result, wall_s: float) -> dict:
    seconds = [r.seconds for r in result.runs if r.status == "done"]
    n = len(result.runs)
    return {
        "n_runs": n,
        "failed": len(result.failed),
        "wall_s": round(wall_s, 3),
        "runs_per_hour": round(3600 * n / wall_s, 1),
        "task_s_median": round(statistics.median(seconds), 3) if seconds else None,
        "task_s_max": round(max(seconds), 3) if seconds else None,
    }


def _timed_batch(project: Path, model_dir: Path, out: Path, **kwargs) -> dict:
    start = time.perf_counter()
    result = run_predict_tasks([project], model_dir, out, overwrite=True, progress=False, **kwargs)
    return _summary(result, time.perf_counter() - start)


def _trivial_task_overhead(client, n_tasks: int) -> float:
    client.gather(client.map(lambda i: i, range(50), pure=False))  # warm up
    start = time.perf_counter()
    client.gather(client.map(lambda i: i, range(n_tasks), pure=False))
    return (time.perf_counter() - start) / n_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 96, 96))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from cryopick.simulate import simulate_project

    n_cores = count_cores()
    report: dict = {
        "machine": {
            "cores": n_cores,
            "cpu": describe_hardware("cpu"),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        },
        "n_runs": args.runs,
        "shape_zyx": list(args.shape),
        "spacing_A": 10.0,
    }
    with tempfile.TemporaryDirectory(prefix="cryopick-bench-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        project = simulate_project(
            tmp / "project",
            args.runs,
            seed=0,
            shape=tuple(args.shape),
            preset="easy",
            progress=False,
        )
        report["simulate_s"] = round(time.perf_counter() - start, 2)
        arch = ModelConfig()
        card = ModelCard(architecture=arch, patch_size=(64, 64, 64))
        model_dir = save_model(tmp / "model", build_model(arch), card)
        report["model"] = {"architecture": arch.model_dump(), "untrained": True}

        torch.set_num_threads(n_cores)
        report["in_process"] = {
            "torch_threads": n_cores,
            "cold": _timed_batch(project, model_dir, tmp / "seq.csv"),
            "warm": _timed_batch(project, model_dir, tmp / "seq.csv"),
        }
        print("in process", report["in_process"], flush=True)

        # (workers, torch threads per worker): the default plan (cores // workers), plus one
        # worker with one thread to separate "more workers" from "fewer threads per run"
        plans = [(1, n_cores), (1, 1), (2, max(1, n_cores // 2))]
        for n_workers, n_threads in plans:
            start = time.perf_counter()
            config = ClusterConfig(workers=n_workers, torch_threads=n_threads)
            with open_client(config) as client:
                client.wait_for_workers(n_workers)
                entry = {"startup_s": round(time.perf_counter() - start, 2)}
                entry["torch_threads"] = n_threads
                out = tmp / f"w{n_workers}t{n_threads}.csv"
                entry["cold"] = _timed_batch(project, model_dir, out, client=client)
                entry["warm"] = _timed_batch(project, model_dir, out, client=client)
                if n_workers == 2:
                    per_task = _trivial_task_overhead(client, 500)
                    noop = _timed_batch(
                        project,
                        model_dir,
                        tmp / "noop.csv",
                        client=client,
                        predict_fn=predict_nothing,
                    )
                    report["overhead"] = {
                        "trivial_task_ms": round(1000 * per_task, 2),
                        "noop_run_task": noop,
                        "noop_run_ms_per_run": round(1000 * noop["wall_s"] / args.runs, 1),
                    }
                    print("overhead", report["overhead"], flush=True)
            report[f"workers_{n_workers}_threads_{n_threads}"] = entry
            print(f"{n_workers} worker(s) x {n_threads} thread(s)", entry, flush=True)
    report["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
