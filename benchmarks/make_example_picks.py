"""Regenerate the bundled example ``src/cryopick/data/example/{truth,picks}.csv``.

Two experiments, all six particle types. The picks are the truth jittered: most
within half a radius (found), some beyond it (missed and a false positive), some truth
points without a pick, a few duplicates and a few picks far from any particle.
Seeded, so the files (and the demo's score) are reproducible::

    python benchmarks/make_example_picks.py
    cryopick evaluate --truth src/cryopick/data/example/truth.csv \\
                      --picks src/cryopick/data/example/picks.csv
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cryopick.core.particles import default_particle_set
from cryopick.io.picks import make_picks, write_picks

OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "cryopick" / "data" / "example"
EXPERIMENTS = ("TS_example_1", "TS_example_2")
EXTENT_ZYX_A = np.array([1840.0, 6300.0, 6300.0])  # a 184 x 630 x 630 tomogram at 10 Å
SEED = 20241124


def _random_direction(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _place_truth(rng: np.random.Generator, n: int, others: list[np.ndarray]) -> np.ndarray:
    """``n`` positions at least 400 Å from each other and from ``others``."""
    placed: list[np.ndarray] = []
    while len(placed) < n:
        p = np.round(rng.uniform(200.0, EXTENT_ZYX_A - 200.0), 3)
        if all(np.linalg.norm(p - q) > 400.0 for q in placed + others):
            placed.append(p)
    return np.array(placed)


def make_example(seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (truth, picks) tables for the example."""
    rng = np.random.default_rng(seed)
    truth_parts, pick_parts, everything = [], [], []
    for exp in EXPERIMENTS:
        for particle in default_particle_set():
            truth = _place_truth(rng, int(rng.integers(3, 6)), everything)
            everything.extend(truth)
            truth_parts.append(make_picks(exp, particle.name, truth))
            picks, scores = [], []
            for centre in truth:
                fate = rng.uniform()
                if fate < 0.15:  # missed
                    continue
                if fate < 0.30:  # beyond half a radius: a miss and a false positive
                    dist_A = particle.radius_A * rng.uniform(0.6, 0.9)
                    score = rng.uniform(0.3, 0.7)
                else:  # found
                    dist_A = particle.radius_A * rng.uniform(0.0, 0.45)
                    score = rng.uniform(0.5, 1.0)
                picks.append(centre + dist_A * _random_direction(rng))
                scores.append(score)
                if fate > 0.9:  # a duplicate on the same particle
                    picks.append(centre + 0.2 * particle.radius_A * _random_direction(rng))
                    scores.append(rng.uniform(0.2, 0.5))
            for _ in range(int(rng.integers(0, 3))):  # picks far from everything
                picks.append(_place_truth(rng, 1, everything)[0])
                scores.append(rng.uniform(0.05, 0.6))
            if picks:
                pick_parts.append(
                    make_picks(exp, particle.name, np.round(picks, 3), np.round(scores, 3))
                )
    return pd.concat(truth_parts, ignore_index=True), pd.concat(pick_parts, ignore_index=True)


def main() -> None:
    truth, picks = make_example()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    write_picks(truth.drop(columns="score"), OUT_DIR / "truth.csv", format="csv")
    write_picks(picks, OUT_DIR / "picks.csv", format="csv")
    print(f"wrote {len(truth)} truth points and {len(picks)} picks to {OUT_DIR}")


if __name__ == "__main__":
    main()
