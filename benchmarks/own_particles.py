"""Your own particles: ``cryopick learn`` within a time budget, scored on held-out tomograms.

Issue 13's target: on 2 CPU cores, for two new particles of distinct shapes, ``learn``
reaches held-out F4 >= 0.8 for each within 20 minutes. By default the particles are the
example that ``cryopick particles FILE --make-example`` writes (the 20S proteasome from a
map, a made-up two-domain "dumbbell" from an atomic model); ``--particles`` takes any file.

The held-out tomograms are simulated afterwards with a seed ``learn`` never used; the
model's own thresholds (tuned on its validation set) are used, nothing is tuned on them.

    python benchmarks/own_particles.py --minutes 20 --workdir /tmp/own_particles
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cryopick.console import format_score_table
from cryopick.core.particles_file import load_particles_file
from cryopick.evaluation.metric import score_picks
from cryopick.inference.pipeline import predict
from cryopick.io.picks import read_picks
from cryopick.learn import LearnSettings, learn_particles
from cryopick.model import describe_hardware, read_model_card
from cryopick.simulate import simulate_project
from cryopick.simulate.examples import write_example_particles

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--particles", type=Path, help="particles file (default: the example)")
    parser.add_argument("--minutes", type=float, default=20.0, help="learn's whole budget")
    parser.add_argument("--train-runs", type=int, default=LearnSettings().train_runs)
    parser.add_argument("--val-runs", type=int, default=LearnSettings().val_runs)
    parser.add_argument("--shape", type=int, nargs=3, help="simulated Z Y X (default: learn's)")
    parser.add_argument("--init-from", default="bundled", help="bundled, none or a model folder")
    parser.add_argument("--test-runs", type=int, default=3)
    parser.add_argument("--test-seed", type=int, default=9001)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cryopick_own_particles"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--tag", default="", help="suffix of the saved JSON's name")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    particles_file = args.particles
    if particles_file is None:
        particles_file = args.workdir / "example" / "particles.json"
        if not particles_file.exists():
            write_example_particles(particles_file)
    settings = LearnSettings(
        minutes=args.minutes,
        train_runs=args.train_runs,
        val_runs=args.val_runs,
        shape=tuple(args.shape) if args.shape else None,
        init_from=None if args.init_from == "none" else args.init_from,
    )
    model_dir = args.workdir / "model"
    t0 = time.perf_counter()
    learn_particles(particles_file, model_dir, settings, overwrite=True)
    learn_s = time.perf_counter() - t0

    card = read_model_card(model_dir)
    particle_set = card.particle_set
    test = simulate_project(
        args.workdir / "test",
        n_runs=args.test_runs,
        seed=args.test_seed,
        shape=settings.tomogram_shape(),
        spacing_A=settings.spacing_A,
        particles=load_particles_file(particles_file),
        overwrite=True,  # the benchmark's own work folder
    )
    t1 = time.perf_counter()
    picks = predict(test, model_dir=model_dir)
    predict_s = time.perf_counter() - t1
    truth = read_picks(test, user_id="simulation", particles=particle_set)
    result = score_picks(truth, picks, particles=particle_set)
    print(format_score_table(result))

    record = {
        "particles_file": str(particles_file),
        "particles": particle_set.to_records(),
        "minutes_budget": args.minutes,
        "learn_minutes": round(learn_s / 60, 2),
        "learn": json.loads((model_dir / "learn.json").read_text()),
        "model_steps": card.steps,
        "validation_score": card.score,
        "test_runs": args.test_runs,
        "test_seed": args.test_seed,
        "predict_seconds": round(predict_s, 1),
        "hardware": describe_hardware(),
        **result.to_dict(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"own_particles{'_' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(record, indent=2, default=float))
    per_type = {name: round(row["fbeta"], 3) for name, row in result.to_dict()["per_class"].items()}
    print(f"learn {learn_s / 60:.1f} min; held-out F4 per type {per_type}; saved {path}")


if __name__ == "__main__":
    main()
