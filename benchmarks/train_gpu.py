"""Train one network on a GPU machine inside a fixed wall-clock budget: simulate, then train.

    python benchmarks/train_gpu.py --out DIR [--budget-s 560] [--init-from MODEL[:MEMBER]]
        [--czii 6] [--varied 6] [--parallel 14] [--workers 12] [--batch 16]

For a GPU lent for minutes (one call, nothing kept afterwards): every step is a
``cryopick`` command, run in fresh processes, and everything is written under ``--out``:

* ``simulate``: ``--czii`` projects of 2 runs of the czii preset (seeds 11000, 11001, ...)
  and ``--varied`` projects of 2 domain-randomised runs (seeds 12000, ...), 184 x 630 x
  630 at 10 Å, plus the 6 validation runs of the bundled model (``sim_val``: 3 runs of
  seed 9000; ``sim_val2``: 3 of seed 9100), ``--parallel`` ``cryopick simulate`` at once,
  one thread each. Projects not finished at 40 % of the budget are stopped and left out.
* ``train``: ``cryopick train --device cuda`` on what was simulated, batch ``--batch``,
  ``--workers`` processes drawing batches (``sampling_workers``), with a time limit that
  ends training, its validations included, before the budget; the model (the best
  validation's) lands in ``OUT/model``. ``--init-from bundled:1`` continues the bundled
  ensemble's second network alone (this session's run).

``OUT/train_gpu.json`` (rewritten after each step) holds the commands, their seconds and
the trainer's learning curve; ``OUT/train.log`` the trainer's log. The simulated data go
to ``--workdir`` (default a folder beside ``--out``'s parent, never inside it: tens of GB).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

from _projects import CLI

VALIDATION = {"sim_val": (3, 9000), "sim_val2": (3, 9100)}
TRAIN_SETTINGS = [
    "ema_decay=0.999",
    "validate_every=5000",
    "hard_negative_fraction=0.1",
    "warmup_steps=200",
    'augment={"blur_sigma_max_vox": 1.5, "blur_probability": 0.3, "coarsen_probability": 0.15}',
]


def plan_projects(n_czii: int, n_varied: int) -> dict[str, tuple[int, int, str]]:
    """Name -> (runs, seed, preset) of every project to simulate, validation first."""
    plan = {name: (runs, seed, "czii") for name, (runs, seed) in VALIDATION.items()}
    plan |= {f"czii_{i}": (2, 11000 + i, "czii") for i in range(n_czii)}
    plan |= {f"varied_{i}": (2, 12000 + i, "varied") for i in range(n_varied)}
    return plan


def simulate_projects(
    plan: dict[str, tuple[int, int, str]],
    workdir: Path,
    parallel: int,
    deadline_s: float,
    shape: tuple[int, int, int] = (184, 630, 630),
) -> dict[str, float]:
    """Simulate the plan, ``parallel`` at once; return name -> seconds of those finished."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    queue, running, done = list(plan), {}, {}
    start = time.perf_counter()
    while queue or running:
        while queue and len(running) < parallel:
            name = queue.pop(0)
            runs, seed, preset = plan[name]
            cmd = [*CLI, "simulate", str(workdir / name), "--runs", str(runs), "--seed", str(seed)]
            cmd += ["--preset", preset, "--shape", *map(str, shape)]
            log = open(workdir / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
            running[name] = (
                subprocess.Popen(cmd, stdout=log, stderr=log, env=env),
                log,
                time.perf_counter(),
            )
        for name, (proc, log, t0) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                del running[name]
                if proc.returncode == 0:
                    done[name] = round(time.perf_counter() - t0, 1)
                else:
                    print(f"simulate {name} failed ({proc.returncode})", flush=True)
        if time.perf_counter() - start > deadline_s:
            for name, (proc, log, _) in running.items():
                proc.kill()
                log.close()
                print(f"simulate {name}: stopped at the deadline", flush=True)
            break
        time.sleep(1.0)
    return done


def extract_member(init_from: str, out: Path) -> str:
    """``MODEL:K`` -> a folder holding member K of ensemble MODEL alone; else ``init_from``.

    ``bundled:1`` is the bundled ensemble's second network (the card's thresholds and
    calibration come along but are the ensemble's; training replaces them).
    """
    model_dir, _, member = init_from.rpartition(":")
    if not model_dir or not member.isdigit():
        return init_from
    from cryopick.model import bundled_model_dir, load_model, save_model
    from cryopick.model.ensemble import member_networks

    model, card = load_model(bundled_model_dir() if model_dir == "bundled" else model_dir)
    networks = member_networks(model)
    if int(member) >= len(networks):
        raise SystemExit(f"{model_dir} has {len(networks)} member(s), no member {member}")
    single = card.architecture.model_copy(update={"members": 1})
    note = f"member {member} of {model_dir} ({card.provenance[:60]}...)"
    card = card.model_copy(update={"architecture": single, "rescorer": None, "provenance": note})
    target = out / f"init_member{member}"
    save_model(target, networks[int(member)], card)
    return str(target)


def train_command(
    args: argparse.Namespace, sources: list[Path], vals: list[Path], limit_min: float
) -> list[str]:
    """The ``cryopick train`` command line of the run."""
    cmd = [
        *CLI,
        "train",
        "--out",
        str(args.out / "model"),
        "--device",
        args.device,
        "--no-progress",
    ]
    for source in sources:
        cmd += ["--data", str(source / "copick_config.json")]
    for val in vals:
        cmd += ["--val", str(val / "copick_config.json")]
    if args.init_from:
        cmd += ["--init-from", str(extract_member(args.init_from, args.out))]
    settings = [
        f"batch_size={args.batch}",
        f"sampling_workers={args.workers}",
        f"lr={args.lr}",
        f"seed={args.seed}",
        "steps=1000000",
        f"time_limit_min={limit_min:.2f}",
        *TRAIN_SETTINGS,
    ]
    for setting in settings:
        cmd += ["--set", setting]
    return cmd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/train_gpu_data"))
    parser.add_argument("--budget-s", type=float, default=560.0)
    parser.add_argument("--init-from", default=None)
    parser.add_argument("--czii", type=int, default=8)
    parser.add_argument("--varied", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the same steps")
    parser.add_argument("--shape", type=int, nargs=3, default=(184, 630, 630))
    parser.add_argument(
        "--validation-s", type=float, default=150.0, help="reserve for validations and loading"
    )
    args = parser.parse_args()
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    save = lambda: (args.out / "train_gpu.json").write_text(json.dumps(result, indent=1))  # noqa: E731
    plan = plan_projects(args.czii, args.varied)
    deadline_s = 0.4 * args.budget_s
    done = simulate_projects(plan, args.workdir, args.parallel, deadline_s, tuple(args.shape))
    result["simulate"] = {
        "seconds": round(time.perf_counter() - start, 1),
        "projects": done,
        "plan": {k: list(v) for k, v in plan.items()},
    }
    print(
        f"simulated {len(done)}/{len(plan)} projects in {result['simulate']['seconds']} s",
        flush=True,
    )
    save()
    vals = [args.workdir / n for n in VALIDATION if n in done]
    sources = [args.workdir / n for n in done if n not in VALIDATION]
    left_s = args.budget_s - (time.perf_counter() - start) - args.validation_s
    cmd = train_command(args, sources, vals, max(left_s, 30.0) / 60.0)
    result["train_command"] = cmd[3:]
    save()
    t0 = time.perf_counter()
    with open(args.out / "train.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
    result["train"] = {"seconds": round(time.perf_counter() - t0, 1), "returncode": proc.returncode}
    card_path = args.out / "model" / "model.json"
    if card_path.exists():
        card = json.loads(card_path.read_text())
        result["train"] |= {
            k: card.get(k) for k in ("steps", "wall_time_s", "score", "learning_curve", "hardware")
        }
    result["total_s"] = round(time.perf_counter() - start, 1)
    save()
    print(json.dumps(result["train"], indent=1), flush=True)


if __name__ == "__main__":
    main()
