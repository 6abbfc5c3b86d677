import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cryopick.cli import app
from cryopick.core.errors import InputError
from cryopick.model import ModelConfig, TargetSpec, load_model
from cryopick.simulate import simulate_run
from cryopick.training import trainer as train_module
from cryopick.training.augmentation import AugmentConfig
from cryopick.training.config import TrainConfig
from cryopick.training.sampling import PatchSampler, run_from_simulation
from cryopick.training.trainer import CHECKPOINT_FILENAME, load_checkpoint, train

from shared_settings import TINY_TRAINING

TINY = ModelConfig(**TINY_TRAINING["architecture"])


def _config(**update):
    return TrainConfig(**{**TINY_TRAINING, **update})


def test_sampler_is_seeded_and_balanced(tiny_train_run):
    def draw(seed):
        s = PatchSampler(
            [tiny_train_run],
            (32, 32, 32),
            2,
            "sphere",
            0.5,
            1.0,
            AugmentConfig(),
            np.random.default_rng(seed),
        )
        return s.sample_batch(3)

    (xa, ya), (xb, yb), (xc, _) = draw(1), draw(1), draw(2)
    assert xa.shape == (3, 1, 32, 32, 32) and ya.shape == (3, 16, 16, 16)
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb) and not np.array_equal(xa, xc)
    assert all((y > 0).any() for y in ya)  # particle_fraction=1: every patch shows a particle


def test_train_end_to_end_writes_model_card_and_checkpoint(tmp_path, tiny_train_run):
    config = _config(steps=4, validate_every=4)
    card = train(
        config, tmp_path, train_runs=[tiny_train_run], val_runs=[tiny_train_run], progress=False
    )
    assert {p.name for p in tmp_path.iterdir()} == {"model.pt", "model.json", CHECKPOINT_FILENAME}
    _, loaded = load_model(tmp_path)
    assert loaded == card
    assert loaded.steps == 4 and len(loaded.learning_curve) == 1
    assert loaded.learning_curve[0][1] == 4
    assert set(loaded.thresholds) == {
        "apo-ferritin",
        "beta-amylase",
        "beta-galactosidase",
        "ribosome",
        "thyroglobulin",
        "virus-like-particle",
    }
    assert loaded.train_config["steps"] == 4 and loaded.target == TargetSpec(
        kind="sphere", fraction=0.5
    )
    assert load_checkpoint(tmp_path / CHECKPOINT_FILENAME)["step"] == 4


def _weights(path):
    return torch.load(path / "model.pt", weights_only=True)


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_after_kill_reproduces_uninterrupted_weights(
    tmp_path, tiny_train_run, monkeypatch, ema_decay
):
    config = _config(ema_decay=ema_decay)
    train(config, tmp_path / "full", train_runs=[tiny_train_run], progress=False)

    real = PatchSampler.sample_batch
    calls = {"n": 0}

    def dying(self, batch_size):
        calls["n"] += 1
        if calls["n"] == 4:  # killed during step 4, after the checkpoint of step 2
            raise KeyboardInterrupt
        return real(self, batch_size)

    monkeypatch.setattr(PatchSampler, "sample_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", train_runs=[tiny_train_run], progress=False)
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT_FILENAME)["step"] == 2
    monkeypatch.setattr(PatchSampler, "sample_batch", real)
    train(config, tmp_path / "cut", resume=True, train_runs=[tiny_train_run], progress=False)

    full, cut = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert full.keys() == cut.keys()
    for key in full:
        assert torch.equal(full[key], cut[key]), key


def test_weight_average_is_saved_and_follows_the_decay(tmp_path, tiny_train_run):
    # warm-up covers both steps, so step 1's weights are those of a 1-step run
    train(_config(steps=1), tmp_path / "one", train_runs=[tiny_train_run], progress=False)
    config = _config(steps=2, ema_decay=0.25)
    train(config, tmp_path / "two", train_runs=[tiny_train_run], progress=False)
    first = _weights(tmp_path / "one")
    checkpoint = load_checkpoint(tmp_path / "two" / CHECKPOINT_FILENAME)
    raw, saved = checkpoint["model"], _weights(tmp_path / "two")
    averaged = {k.removeprefix("module."): v for k, v in checkpoint["ema"].items()}
    moved = 0
    for key, value in saved.items():
        assert torch.equal(value, averaged[key]), key  # the average is what is kept
        if value.is_floating_point():  # BatchNorm statistics are averaged too
            expected = 0.25 * first[key] + 0.75 * raw[key]
            assert torch.allclose(value, expected, atol=1e-6), key
            moved += not torch.allclose(value, raw[key])
    assert moved > len(saved) // 2  # the average differs from the raw weights


def test_crash_while_saving_checkpoint_keeps_previous(tmp_path, tiny_train_run, monkeypatch):
    config = _config(steps=2)
    train(config, tmp_path, train_runs=[tiny_train_run], progress=False)
    good = load_checkpoint(tmp_path / CHECKPOINT_FILENAME)

    def crashing_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"\x80\x02half a checkpoint")
        raise RuntimeError("power cut")

    monkeypatch.setattr(train_module.torch, "save", crashing_save)
    with pytest.raises(RuntimeError, match="power cut"):
        train(
            config.model_copy(update={"steps": 4}),
            tmp_path,
            resume=True,
            train_runs=[tiny_train_run],
            progress=False,
        )
    again = load_checkpoint(tmp_path / CHECKPOINT_FILENAME)
    assert again["step"] == good["step"] == 2
    for key, value in good["model"].items():
        assert torch.equal(value, again["model"][key])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_train_with_simulated_data(tmp_path):
    out = tmp_path / "model"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--out",
            str(out),
            "--simulate",
            "1",
            "--steps",
            "2",
            "--device",
            "cpu",
            "--no-progress",
            "--set",
            "simulate_shape=[32,64,64]",
            "--set",
            "simulate_preset=easy",
            "--set",
            "simulate_val=1",
            "--set",
            "architecture.widths=[4,8,16]",
            "--set",
            "patch_size=[32,32,32]",
            "--set",
            "batch_size=1",
            "--set",
            'tomo_types=["wbp"]',
            "--set",
            "val_tomo_type=wbp",
        ],
    )
    assert result.exit_code == 0, result.output
    card = json.loads((out / "model.json").read_text())
    assert card["steps"] == 2 and card["train_config"]["simulate"] == 1
    assert card["training_data"][0].endswith("sim_0000:wbp")
    assert (out / "simulated" / "train" / "copick_config.json").exists()


def test_cli_train_rejects_unknown_setting(tmp_path):
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path), "--set", "widths=[4]"])
    assert result.exit_code == 2
    assert "widths" in result.output


@pytest.mark.integration
def test_tiny_network_overfits_easy_volume(tmp_path):
    # 33 s of training + validation on 2 quiet cores (F4 0.997 measured); the small types
    # need ~400 steps. Widths 4-8-16 reach only 0.92 (one false pick in three classes).
    run = run_from_simulation(simulate_run("easy", shape=(64, 96, 96), seed=0), ["denoised"])
    no_aug = AugmentConfig(
        flip_xy=False,
        flip_z=False,
        rotate_xy=False,
        scale_range=(1, 1),
        offset_sigma=0,
        noise_probability=0,
        blur_probability=0,
    )
    config = TrainConfig(
        architecture=ModelConfig(widths=(8, 16, 32)),
        patch_size=(64, 64, 64),
        steps=400,
        validate_every=400,
        checkpoint_every=1000,
        warmup_steps=10,
        lr=5e-3,
        augment=no_aug,
        weight_radius_power=1.5,
    )
    card = train(config, tmp_path, train_runs=[run], val_runs=[run], progress=False)
    assert card.score > 0.9


def test_cli_resume_keeps_checkpoint_settings(tmp_path, tiny_train_run):
    train(
        _config(steps=2, checkpoint_every=1), tmp_path, train_runs=[tiny_train_run], progress=False
    )
    # a resume that does not name --steps keeps the checkpoint's 2 steps (no default 4000)
    config = TrainConfig.model_validate({})
    card = train(config, tmp_path, resume=True, train_runs=[tiny_train_run], progress=False)
    assert card.steps == 2
    extended = TrainConfig.model_validate({"steps": 3})
    card = train(extended, tmp_path, resume=True, train_runs=[tiny_train_run], progress=False)
    assert card.steps == 3 and card.train_config["steps"] == 3


def test_init_from_starts_from_the_given_weights(tmp_path, tiny_train_run):
    first = tmp_path / "first"
    train(_config(steps=4), first, train_runs=[tiny_train_run], progress=False)
    # another architecture in the config is replaced by the initial model's
    tuned = tmp_path / "tuned"
    config = _config(
        steps=1,
        lr=1e-12,
        warmup_steps=0,
        weight_decay=0.0,
        init_from=str(first),
        architecture=ModelConfig(widths=(8, 16)),
    )
    card = train(config, tuned, train_runs=[tiny_train_run], progress=False)
    assert card.architecture == TINY and card.train_config["init_from"] == str(first)
    before, after = _weights(first), _weights(tuned)
    conv = [k for k in before if k.endswith("weight") and before[k].ndim == 5]
    for key in conv:  # one step at lr ~0: the same weights (BatchNorm statistics move)
        assert torch.allclose(before[key], after[key], atol=1e-6), key
    fresh = train(_config(steps=1), tmp_path / "fresh", train_runs=[tiny_train_run], progress=False)
    assert fresh.architecture == TINY
    assert not torch.allclose(before[conv[0]], _weights(tmp_path / "fresh")[conv[0]])


def test_init_from_rejects_another_voxel_size(tmp_path, tiny_train_run):
    first = tmp_path / "first"
    train(_config(steps=2), first, train_runs=[tiny_train_run], progress=False)
    with pytest.raises(InputError, match="voxel size"):
        train(
            _config(init_from=str(first), spacing_A=5.0),
            tmp_path / "x",
            train_runs=[tiny_train_run],
            progress=False,
        )


def test_train_refuses_to_replace_a_model_unless_resumed_or_overwritten(tmp_path, tiny_train_run):
    train(_config(steps=2), tmp_path, train_runs=[tiny_train_run], progress=False)
    weights = (tmp_path / "model.pt").read_bytes()
    with pytest.raises(InputError, match=r"holds a trained model.*--resume.*--overwrite"):
        train(_config(steps=2), tmp_path, train_runs=[tiny_train_run], progress=False)
    assert (tmp_path / "model.pt").read_bytes() == weights
    # a model folder without a checkpoint (tuned, bundled) cannot be "resumed" over either
    (tmp_path / CHECKPOINT_FILENAME).unlink()
    with pytest.raises(InputError, match="holds a trained model"):
        train(_config(steps=2), tmp_path, resume=True, train_runs=[tiny_train_run], progress=False)
    card = train(
        _config(steps=1), tmp_path, train_runs=[tiny_train_run], progress=False, overwrite=True
    )
    assert card.steps == 1 and (tmp_path / "model.pt").read_bytes() != weights


def test_simulated_training_data_never_deletes_a_folder_it_did_not_make(tmp_path):
    from cryopick.training.sources import gather_runs

    config = _config(simulate=1, simulate_shape=(16, 32, 32), simulate_preset="easy")
    foreign = tmp_path / "simulated" / "train"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a cryopick simulation"):
        gather_runs(config, tmp_path)
    assert (foreign / "notes.txt").read_text() == "mine"
