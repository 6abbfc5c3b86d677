"""Your own particles end to end: particles file -> simulate -> train -> predict -> evaluate.

Two shapes made here (a ring and a dumbbell, as MRC maps) go through the CLI as a user
would run it; names and radii must survive every step, and a tiny network trained for
a short while must find both types far above chance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cryopick.cli import app
from cryopick.core.particles_file import load_particles_file
from cryopick.io.mrc import write_mrc
from cryopick.model import read_model_card
from cryopick.simulate.examples import dumbbell_atoms, write_example_particles
from cryopick.simulate.user_maps import density_for

MAP_SPACING_A = 5.0
RING_RADII_A = (50.0, 18.0)  # torus: major radius, tube radius
DUMBBELL_BALL_A, DUMBBELL_SEPARATION_A = 30.0, 56.0  # two overlapping balls


def _grid(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    axis = (np.arange(n) - (n - 1) / 2) * MAP_SPACING_A
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    return z, y, x


def _write_shapes(folder: Path) -> Path:
    """Write ring.mrc, dumbbell.mrc and a particles file naming them; return the file."""
    z, y, x = _grid(48)
    major, tube = RING_RADII_A
    ring = (np.hypot(np.hypot(y, x) - major, z) <= tube).astype(np.float32)
    half = DUMBBELL_SEPARATION_A / 2
    dumbbell = (
        (np.sqrt((x - half) ** 2 + y**2 + z**2) <= DUMBBELL_BALL_A)
        | (np.sqrt((x + half) ** 2 + y**2 + z**2) <= DUMBBELL_BALL_A)
    ).astype(np.float32)
    write_mrc(folder / "ring.mrc", 3.0 * ring, MAP_SPACING_A)
    write_mrc(folder / "dumbbell.mrc", 0.5 * dumbbell, MAP_SPACING_A)
    entries = [
        {"name": "ring", "map": "ring.mrc", "radius_A": 45, "aliases": ["torus"]},
        {"name": "dumbbell", "map": "dumbbell.mrc", "weight": 2, "colour": "#00aa00"},
    ]
    path = folder / "particles.json"
    path.write_text(json.dumps({"particles": entries}))
    return path


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


TINY_TRAINING = [
    "architecture.widths=[8,16,32]",
    "patch_size=[64,64,64]",
    "steps=800",
    "validate_every=800",
    "checkpoint_every=1000",
    "warmup_steps=10",
    "lr=0.005",
    "weight_radius_power=1.5",
    'tomo_types=["denoised"]',
    "augment.flip_xy=false",
    "augment.flip_z=false",
    "augment.rotate_xy=false",
    "augment.scale_range=[1,1]",
    "augment.offset_sigma=0",
    "augment.noise_probability=0",
    "augment.blur_probability=0",
]


@pytest.mark.integration
def test_own_particles_round_trip_and_learning(tmp_path: Path) -> None:
    # ~45 s on 2 cores: two 64x128x128 simulations, 800 steps of a tiny network
    particles_file = _write_shapes(tmp_path)
    sim_config = tmp_path / "sim.json"
    sim_config.write_text(json.dumps({"count_scale": 40.0}))
    for split, seed in (("train", 1), ("val", 2)):
        _invoke(
            "simulate", tmp_path / split, "--particles", particles_file, "--runs", 1,
            "--seed", seed, "--shape", 64, 128, 128, "--preset", "easy", "--config", sim_config,
        )  # fmt: skip
    config = json.loads((tmp_path / "val" / "copick_config.json").read_text())
    declared = {o["name"]: o["radius"] for o in config["pickable_objects"]}
    assert list(declared) == ["ring", "dumbbell"] and declared["ring"] == 45.0
    measured = declared["dumbbell"]  # equivalent sphere of the two balls: 37.75 Å
    assert abs(measured - 37.8) < 0.1 * 37.8

    train_args = [f"--set={item}" for item in TINY_TRAINING]
    _invoke(
        "train", "--data", tmp_path / "train" / "copick_config.json",
        "--val", tmp_path / "val" / "copick_config.json", "--out", tmp_path / "model",
        "--no-progress", *train_args,
    )  # fmt: skip
    card = read_model_card(tmp_path / "model")
    assert card.particle_set.names == ("ring", "dumbbell")
    assert card.particle_set.radii_A == declared
    assert card.particle_set.weights == {"ring": 1.0, "dumbbell": 2.0}
    assert card.particle_set.colour("dumbbell") == "#00aa00"
    assert card.architecture.n_classes == 3

    picks_csv = tmp_path / "picks.csv"
    _invoke("predict", tmp_path / "val" / "copick_config.json", "--model", tmp_path / "model",
            "-o", picks_csv, "-q")  # fmt: skip
    picks = pd.read_csv(picks_csv)
    assert set(picks["particle_type"]) == {"ring", "dumbbell"}

    output = _invoke(
        "evaluate", "--truth", tmp_path / "val" / "copick_config.json", "--picks", picks_csv,
        "--json",
    )  # fmt: skip
    result = json.loads(output)
    per_class = result["per_class"]
    assert set(per_class) == {"ring", "dumbbell"}
    # chance is ~0 (random picks in 1 Mvoxel rarely land within 20 Å of a particle); measured
    # 0.69 (ring) and 0.60 (dumbbell): a tiny network, one training tomogram, 800 steps
    assert per_class["ring"]["fbeta"] > 0.45 and per_class["dumbbell"]["fbeta"] > 0.45
    expected = (per_class["ring"]["fbeta"] + 2 * per_class["dumbbell"]["fbeta"]) / 3
    assert result["score"] == pytest.approx(expected)


def test_example_particles_give_the_documented_shapes(tmp_path: Path) -> None:
    path = write_example_particles(tmp_path / "example" / "particles.json")
    particle_set = load_particles_file(path)
    assert particle_set.names == ("proteasome-20s", "dumbbell")
    assert particle_set.get("20s").map == (tmp_path / "example/maps/proteasome-20s.mrc")
    density, radius_A = density_for(particle_set.get("dumbbell"), 10.0)
    # two 48 Å balls 90 Å apart and a waist: equivalent sphere ~61 Å, centre of mass centred
    assert 55.0 < radius_A < 68.0
    centre = (np.array(density.shape) - 1) / 2
    com = np.array(np.unravel_index(0, density.shape), dtype=float)
    weights = density / density.sum()
    com = np.array([(weights.sum(axis=tuple(a for a in range(3) if a != i)) *
                     np.arange(density.shape[i])).sum() for i in range(3)])  # fmt: skip
    assert np.abs(com - centre).max() < 0.5
    _, proteasome_A = density_for(particle_set.get("proteasome-20s"), 10.0)
    assert 55.0 < proteasome_A < 75.0  # a 150 x 110 Å barrel
    atoms = dumbbell_atoms()
    assert abs(np.ptp(atoms[:, 0]) - (90.0 + 96.0)) < 5.0  # domains' far edges along x
    with pytest.raises(Exception, match="exists already"):
        write_example_particles(path)


@pytest.mark.integration
def test_learn_writes_a_model_of_the_file_set_and_never_overwrites(tmp_path: Path) -> None:
    # ~40 s: two tiny easy simulations and ~20 s of training from scratch
    particles_file = _write_shapes(tmp_path)
    out = tmp_path / "model"
    args = [
        "learn", particles_file, "--out", out, "--minutes", 0.6, "--preset", "easy",
        "--shape", 48, 96, 96, "--train-runs", 1, "--val-runs", 1, "--init-from", "none",
        "--no-progress",
    ]  # fmt: skip
    output = _invoke(*args)
    assert "validation F4" in output and "ring" in output and "dumbbell" in output
    card = read_model_card(out)
    assert card.particle_set.names == ("ring", "dumbbell") and card.thresholds.keys() == {
        "ring",
        "dumbbell",
    }
    record = json.loads((out / "learn.json").read_text())
    assert record["shape_zyx"] == [48, 96, 96] and record["total_min"] < 2.0
    for split in ("train", "val"):
        config = json.loads((out / "data" / split / "copick_config.json").read_text())
        assert [o["name"] for o in config["pickable_objects"]] == ["ring", "dumbbell"]
    before = (out / "model.pt").read_bytes()
    again = CliRunner().invoke(app, [str(a) for a in args])
    assert again.exit_code == 2 and "holds a trained model" in again.output
    assert (out / "model.pt").read_bytes() == before
    # --resume keeps the finished simulations and continues training from the checkpoint
    sim_before = (out / "data" / "train" / "simulation.json").stat().st_mtime_ns
    _invoke(*args, "--resume")
    assert (out / "data" / "train" / "simulation.json").stat().st_mtime_ns == sim_before


def test_learn_refuses_a_budget_too_small_for_training(tmp_path: Path) -> None:
    particles_file = _write_shapes(tmp_path)
    result = CliRunner().invoke(
        app,
        [
            "learn", str(particles_file), "--out", str(tmp_path / "m"), "--minutes", "0.01",
            "--preset", "easy", "--shape", "32", "64", "64", "--train-runs", "1",
            "--val-runs", "1", "--no-progress",
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "too short" in result.output
    assert not (tmp_path / "m").exists()  # refused before anything was written
