"""Training learns the particle set of its data (issue 13): set inference, errors, weights,
fine-tuning onto another set, the card's set, resume across sets."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet, ParticleSpec, default_particle_set
from cryopick.core.picks import make_picks
from cryopick.io.layout import make_copick_config, read_copick_config
from cryopick.io.mrc import write_mrc
from cryopick.io.picks import write_picks
from cryopick.io.tomograms import write_tomogram
from cryopick.model import load_model, read_model_card
from cryopick.training.config import TrainConfig
from cryopick.training.particle_sets import source_particle_set
from cryopick.training.sampling import TrainRun
from cryopick.training.sources import gather_runs
from cryopick.training.trainer import CHECKPOINT_FILENAME, initialise_model, train

from shared_settings import TINY_TRAINING

# two made-up types: labels in file order, weights and radii of their own
TWO = ParticleSet(
    (
        ParticleSpec(name="disc", radius_A=40.0, weight=2.0, aliases=("d",)),
        ParticleSpec(name="rod", radius_A=80.0),
    )
)
SHAPE = (32, 32, 32)


def _config(**update):
    return TrainConfig(**{**TINY_TRAINING, **update})


def _project(root: Path, particles, picks: pd.DataFrame | None = None) -> Path:
    """A copick project declaring ``particles`` with one noise tomogram per run of ``picks``."""
    config = root / "copick.json"
    root.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(make_copick_config("t", root / "overlay", particles=particles)))
    if picks is not None:
        layout = read_copick_config(config)
        for i, run in enumerate(sorted(set(picks["experiment"]))):
            noise = np.random.default_rng(i).normal(size=SHAPE).astype(np.float32)
            write_tomogram(layout, run, noise, 10.0, tomo_type="denoised", n_levels=1)
        write_picks(picks, config, "copick", particles=particles, user_id="truth", session_id="1")
    return config


def _two_picks(run: str = "TS_1") -> pd.DataFrame:
    centres = [[100.0, 120.0, 140.0], [200.0, 150.0, 160.0], [150.0, 220.0, 90.0]]
    return make_picks(run, ["rod", "d", "disc"], centres, particles=TWO)


def _run(name: str, particles: ParticleSet, types: list[str], seed: int = 0) -> TrainRun:
    """An in-memory run: noise and picks of ``types`` at fixed places."""
    volume = np.random.default_rng(seed).normal(size=SHAPE).astype(np.float16)
    centres = [[80.0 + 60 * i, 160.0, 160.0] for i in range(len(types))]
    picks = make_picks(name, types, centres, particles=particles)
    return TrainRun(name, {"denoised": volume}, picks, 10.0, f"mem:{name}", particles)


def test_training_data_declare_the_set_learnt(tmp_path):
    config_path = _project(tmp_path / "p", TWO, _two_picks())
    assert source_particle_set(config_path).describe_differences(TWO) == ""
    kaggle = tmp_path / "kaggle" / "overlay" / "ExperimentRuns"
    kaggle.mkdir(parents=True)  # a Kaggle layout declares nothing: the CZII set
    assert source_particle_set(tmp_path / "kaggle") is default_particle_set()

    data = gather_runs(_config(data=[str(config_path)], tomo_types=["denoised"]), tmp_path)
    assert data.particles.names == ("disc", "rod")
    assert data.particles.radii_A == {"disc": 40.0, "rod": 80.0}
    assert data.particles.weights == {"disc": 2.0, "rod": 1.0}
    (run,) = data.train_runs
    assert run.particles.names == ("disc", "rod") and data.val_runs == []
    order = np.argsort(run.picks["y"].to_numpy())  # rod (y 120), disc (150), disc (220)
    assert run._labels[order].tolist() == [2, 1, 1]

    card = train(_config(data=[str(config_path)], steps=2), tmp_path / "m", progress=False)
    assert card.particle_set.names == ("disc", "rod") and card.architecture.n_classes == 3
    model, _ = load_model(tmp_path / "m")
    assert model.head.weight.shape[0] == 3 and model.head.bias.shape == (3,)


def test_sources_declaring_different_sets_are_one_error_naming_both(tmp_path):
    ours = _project(tmp_path / "ours", TWO)
    czii = _project(tmp_path / "czii", None)
    config = _config(data=[str(ours)], val=[str(czii)])
    with pytest.raises(InputError) as err:
        gather_runs(config, tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and str(ours) in message and str(czii) in message
    assert "types ['disc', 'rod'] vs ['apo-ferritin', 'beta-amylase'," in message
    assert not (tmp_path / "out" / "simulated").exists()  # refused before simulating

    # a particles file's set must be what the data declare too (built-in types: no maps)
    wanted = tmp_path / "types.json"
    wanted.write_text(json.dumps({"particles": [{"name": "ribosome"}, {"name": "apo-ferritin"}]}))
    with pytest.raises(InputError, match=re.escape(f"particles file {wanted} vs {ours}: types")):
        gather_runs(_config(data=[str(ours)], particles=str(wanted)), tmp_path / "out")


def test_particles_file_radius_comes_from_the_data_that_declare_it(tmp_path):
    # a map without a given radius: the project's declared radius fills it
    grid = np.indices((24, 24, 24)).astype(np.float32) - 11.5
    ball = (np.sqrt((grid**2).sum(0)) * 5.0 <= 40.0).astype(np.float32)
    write_mrc(tmp_path / "blob.mrc", ball, 5.0)
    wanted = tmp_path / "types.json"
    wanted.write_text(json.dumps({"particles": [{"name": "blob", "map": "blob.mrc"}]}))
    declared = ParticleSet((ParticleSpec(name="blob", radius_A=42.0),))
    picks = make_picks("TS_1", "blob", [[150.0, 150.0, 150.0]], particles=declared)
    project = _project(tmp_path / "p", declared, picks)
    config = _config(data=[str(project)], particles=str(wanted), tomo_types=["denoised"])
    data = gather_runs(config, tmp_path / "out")
    assert data.particles.radii_A == {"blob": 42.0}
    other = ParticleSet((ParticleSpec(name="blob", radius_A=42.0, weight=3.0),))
    project = _project(tmp_path / "q", other, picks.assign(experiment="TS_2"))
    with pytest.raises(InputError, match="blob weight 1 vs 3"):
        gather_runs(config.model_copy(update={"data": [str(project)]}), tmp_path / "out")


def test_class_weights_follow_the_sets_radii():
    flat = _config(particle_weight=32.0, background_weight=0.5)
    assert flat.class_weights(TWO).tolist() == [0.5, 32.0, 32.0]
    # radius^-3: disc (40 Å) weighs 8x rod (80 Å); the two average particle_weight
    sized = flat.model_copy(update={"weight_radius_power": 3.0}).class_weights(TWO)
    assert sized.tolist() == pytest.approx([0.5, 32.0 * 16 / 9, 32.0 * 2 / 9])
    assert len(flat.class_weights()) == 7  # default: the CZII six


def test_type_weights_multiply_one_type_and_keep_the_particles_mean(tmp_path):
    flat = _config(particle_weight=32.0, background_weight=0.5, type_weights={"disc": 3.0})
    # disc 3, rod 1 before the mean is set back to 32: 48 and 16
    assert flat.class_weights(TWO).tolist() == pytest.approx([0.5, 48.0, 16.0])
    sized = flat.model_copy(update={"weight_radius_power": 3.0}).class_weights(TWO)
    assert sized.tolist() == pytest.approx([0.5, 32.0 * 48 / 25, 32.0 * 2 / 25])
    with pytest.raises(ValueError, match="type_weights names sphere, not in the particle set"):
        _config(type_weights={"sphere": 2.0}).class_weights(TWO)
    with pytest.raises(ValueError, match="type_weights must be positive"):
        _config(type_weights={"disc": 0.0})
    runs = [_run("a", TWO, ["disc", "rod"])]
    with pytest.raises(InputError, match="type_weights names sphere") as err:
        train(_config(steps=1, type_weights={"sphere": 2.0}), tmp_path, train_runs=runs)
    assert "\n" not in str(err.value) and not (tmp_path / "model.pt").exists()
    new = tmp_path / "new"
    with pytest.raises(InputError, match="type_weights names sphere"):
        train(_config(steps=1, type_weights={"sphere": 2.0}), new, train_runs=runs)
    assert not new.exists()  # the folder it made for the model is gone again, it was empty
    assert tmp_path.is_dir()  # one it did not make stays


def test_fine_tuning_onto_another_set_reinitialises_only_the_output_layer(tmp_path):
    czii = default_particle_set()
    first = tmp_path / "first"
    run = _run("a", czii, ["ribosome", "apo-ferritin"])
    train(_config(steps=2), first, train_runs=[run], progress=False)
    before = torch.load(first / "model.pt", weights_only=True)

    # ribosome stays (by name), blob is new: ribosome's channel moves from 4 to 2
    mixed = ParticleSet(
        (
            ParticleSpec(name="blob", radius_A=50.0),
            ParticleSpec(name="ribosome", radius_A=150.0),
        )
    )
    torch.manual_seed(0)
    config, model = initialise_model(_config(init_from=str(first)), mixed)
    after = model.state_dict()
    assert config.architecture.n_classes == 3 and model.config.n_classes == 3
    assert after.keys() == before.keys()
    for key in before:
        if not key.startswith("head."):
            assert torch.equal(before[key], after[key]), key  # bit-identical
    assert after["head.weight"].shape == (3, *before["head.weight"].shape[1:])
    assert after["head.bias"].shape == (3,)
    old = czii.label("ribosome")
    for new_c, old_c in ((0, 0), (mixed.label("ribosome"), old)):
        assert torch.equal(after["head.weight"][new_c], before["head.weight"][old_c])
        assert torch.equal(after["head.bias"][new_c], before["head.bias"][old_c])
    fresh = mixed.label("blob")
    assert not any(torch.equal(after["head.weight"][fresh], w) for w in before["head.weight"])

    # the same set keeps every weight as it is
    _, same = initialise_model(_config(init_from=str(first)), czii)
    assert all(torch.equal(before[k], v) for k, v in same.state_dict().items())

    # a whole run: the card and the weights are the new set's
    tuned = tmp_path / "tuned"
    runs = [_run("b", mixed, ["blob", "ribosome"])]
    card = train(_config(steps=1, init_from=str(first)), tuned, train_runs=runs, progress=False)
    assert card.particle_set.names == ("blob", "ribosome") and card.architecture.n_classes == 3
    assert load_model(tuned)[0].head.weight.shape[0] == 3


def test_card_records_the_set_and_resume_refuses_another(tmp_path):
    runs = [_run("a", TWO, ["disc", "rod"])]
    train(_config(steps=2, checkpoint_every=1), tmp_path, train_runs=runs, progress=False)
    saved = json.loads((tmp_path / "model.json").read_text())["particles"]
    assert saved == TWO.to_records()
    assert [r["name"] for r in saved] == ["disc", "rod"] and saved[0]["weight"] == 2.0
    back = read_model_card(tmp_path).particle_set
    assert back.describe_differences(TWO) == "" and back.get("d").name == "disc"

    bigger = ParticleSet((*TWO.specs, ParticleSpec(name="cube", radius_A=30.0)))
    other = [_run("a", bigger, ["disc", "cube"])]
    before = (tmp_path / CHECKPOINT_FILENAME).read_bytes()
    with pytest.raises(InputError, match=r"another particle set.*types") as err:
        train(_config(steps=3), tmp_path, resume=True, train_runs=other, progress=False)
    assert "\n" not in str(err.value)
    assert (tmp_path / CHECKPOINT_FILENAME).read_bytes() == before
    # the same set resumes
    card = train(_config(steps=3), tmp_path, resume=True, train_runs=runs, progress=False)
    assert card.steps == 3 and card.particle_set.names == ("disc", "rod")


def test_in_memory_runs_of_different_sets_are_refused(tmp_path):
    runs = [_run("a", TWO, ["disc"]), _run("b", default_particle_set(), ["ribosome"])]
    with pytest.raises(InputError, match="mem:a:a vs mem:b:b: types"):
        train(_config(steps=1), tmp_path, train_runs=runs, progress=False)


def test_cli_train_simulates_and_learns_the_particles_file(tmp_path):
    from typer.testing import CliRunner

    from cryopick.cli import app

    grid = np.indices((24, 24, 24)).astype(np.float32) - 11.5
    r = np.sqrt((grid**2).sum(0)) * 5.0  # Å from the centre, 5 Å voxels
    write_mrc(tmp_path / "ball.mrc", (r <= 40.0).astype(np.float32), 5.0)
    write_mrc(tmp_path / "shell.mrc", ((r >= 35.0) & (r <= 55.0)).astype(np.float32), 5.0)
    entries = [
        {"name": "ball", "map": "ball.mrc", "weight": 2},
        {"name": "shell", "map": "shell.mrc"},
    ]
    (tmp_path / "types.json").write_text(json.dumps({"particles": entries}))
    out = tmp_path / "model"
    tiny = ["architecture.widths=[4,8,16]", "patch_size=[32,32,32]", "batch_size=1"]
    tiny += ["simulate_shape=[32,64,64]", "simulate_preset=easy", "simulate_val=0"]
    args = ["train", "--out", str(out), "--simulate", "1", "--steps", "1", "--no-progress"]
    args += ["--particles", str(tmp_path / "types.json"), "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, *[f"--set={s}" for s in tiny]])
    assert result.exit_code == 0, result.output
    card = read_model_card(out)
    assert card.particle_set.names == ("ball", "shell") and card.architecture.n_classes == 3
    assert card.particle_set.weights == {"ball": 2.0, "shell": 1.0}
    radii = card.particle_set.radii_A  # measured from the maps when simulating
    assert radii["ball"] == pytest.approx(40.0, rel=0.1)
    assert radii["shell"] == pytest.approx(55.0, rel=0.1)
    declared = source_particle_set(out / "simulated" / "train" / "copick_config.json")
    assert declared.describe_differences(card.particle_set) == ""
    assert card.train_config["particles"] == str(tmp_path / "types.json")
