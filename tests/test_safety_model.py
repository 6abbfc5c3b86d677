"""Hardening (issue 11): unsafe or damaged model / checkpoint files, bad model cards, bad
devices, and the pydantic serializer warning of batch predictions."""

import json
import math
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from cryopick.cli import app
from cryopick.core.coords import voxels_to_angstrom
from cryopick.core.errors import InputError
from cryopick.core.particles import default_particle_set
from cryopick.inference.pipeline import PredictConfig, bundled_model_dir, predict_tomogram
from cryopick.inference.runtime import resolve_device
from cryopick.io.mrc import write_mrc
from cryopick.io.tomograms import Tomogram
from cryopick.model import (
    ModelCard,
    ModelConfig,
    build_model,
    load_model,
    read_model_card,
    save_model,
)
from cryopick.training.config import TrainConfig
from cryopick.training.trainer import CHECKPOINT_FILENAME, train

from shared_settings import TINY_TRAINING, DarkBlobDetector

TINY = ModelConfig(widths=(4, 8))
NO_GPU_MESSAGE = (
    "--device cuda: no CUDA GPU is available (torch.cuda.is_available() is False); "
    "use --device cpu or auto"
)


class CreatesFile:
    """Unpickling this runs code: ``open(marker, "w")`` creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _one_line_input_error(excinfo, filename: str) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, text
    assert filename in text, text
    return text


def _tiny_model_dir(path: Path, **card) -> Path:
    torch.manual_seed(0)
    base = dict(architecture=TINY, patch_size=(16, 16, 16), spacing_A=10.0)
    return save_model(path, build_model(TINY), ModelCard(**{**base, **card}))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_train_run):
    """A 2-step training run (checkpoint at step 2) and the runs it used."""
    run = tiny_train_run
    config = TrainConfig(**{**TINY_TRAINING, "steps": 2, "warmup_steps": 1})
    out = tmp_path_factory.mktemp("trained")
    train(config, out, train_runs=[run], progress=False)
    return out, config, run


def _copy(trained, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(trained[0], out)
    return out


# ---------------------------------------------------------------- item 2: model.pt / checkpoint


def test_load_model_never_runs_code_from_model_pt(tmp_path):
    model_dir = _tiny_model_dir(tmp_path / "m")
    marker = tmp_path / "pwned"
    torch.save({"weights": CreatesFile(marker)}, model_dir / "model.pt")
    with pytest.raises(InputError) as excinfo:
        load_model(model_dir)
    text = _one_line_input_error(excinfo, "model.pt")
    assert "nothing in it was run" in text
    assert not marker.exists()


def test_load_model_rejects_damaged_or_foreign_weights(tmp_path):
    model_dir = _tiny_model_dir(tmp_path / "m")
    good = (model_dir / "model.pt").read_bytes()
    other_net = tmp_path / "linear.pt"
    torch.save(nn.Linear(3, 2).state_dict(), other_net)
    cases = {
        "random bytes": np.random.default_rng(0).bytes(4096),
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "plain pickle": pickle.dumps({"a": [1, 2, 3]}, protocol=4),
        "another network": other_net.read_bytes(),
    }
    for name, data in cases.items():
        (model_dir / "model.pt").write_bytes(data)
        with pytest.raises(InputError) as excinfo:
            load_model(model_dir)
        text = _one_line_input_error(excinfo, "model.pt")
        assert text.startswith(f"{model_dir / 'model.pt'}: "), (name, text)
    torch.save([torch.zeros(3)], model_dir / "model.pt")  # tensors, but not a state dict
    with pytest.raises(InputError, match="do not match the model card") as excinfo:
        load_model(model_dir)
    _one_line_input_error(excinfo, "model.pt")


def test_resume_never_runs_code_from_checkpoint(trained, tmp_path):
    config, run = trained[1], trained[2]
    out = _copy(trained, tmp_path)
    marker = tmp_path / "pwned"
    state = torch.load(out / CHECKPOINT_FILENAME, weights_only=True)
    state["extra"] = CreatesFile(marker)  # otherwise a valid checkpoint
    torch.save(state, out / CHECKPOINT_FILENAME)
    with pytest.raises(InputError) as excinfo:
        train(config, out, resume=True, train_runs=[run], progress=False)
    _one_line_input_error(excinfo, CHECKPOINT_FILENAME)
    assert not marker.exists()
    # and through the CLI: one line, exit status 2, still nothing run
    result = CliRunner().invoke(app, ["train", "--out", str(out), "--resume"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and CHECKPOINT_FILENAME in lines[0]
    assert not marker.exists()


def test_resume_rejects_damaged_or_foreign_checkpoints(trained, tmp_path):
    config, run = trained[1], trained[2]
    out = _copy(trained, tmp_path)
    path = out / CHECKPOINT_FILENAME
    good = path.read_bytes()
    state = torch.load(path, weights_only=True)
    other = tmp_path / "other.pt"
    torch.save({**state, "model": nn.Linear(3, 2).state_dict()}, other)
    cases = {
        "random bytes": (np.random.default_rng(1).bytes(4096), "cryopick can load safely"),
        "truncated": (good[: len(good) // 2], "not a readable training checkpoint"),
        "a model.pt": ((out / "model.pt").read_bytes(), "not a cryopick training checkpoint"),
        "another network": (other.read_bytes(), "does not fit this run"),
    }
    for name, (data, problem) in cases.items():
        path.write_bytes(data)
        with pytest.raises(InputError) as excinfo:
            train(config, out, resume=True, train_runs=[run], progress=False)
        text = _one_line_input_error(excinfo, str(path))
        assert problem in text, (name, text)


# ---------------------------------------------------------------- item 11: model.json


def _card_json(**changes) -> str:
    card = json.loads(ModelCard(architecture=TINY, patch_size=(16, 16, 16)).to_json())
    card.update(changes)
    return json.dumps(card)  # writes NaN / Infinity as JSON extensions, as an attacker may


BAD_CARDS = {
    "thresholds": [
        {"thresholds": {"ribosome": math.nan}},
        {"thresholds": {"ribosome": math.inf}},
        {"thresholds": {"ribosome": -0.1}},
        {"thresholds": {"ribosome": 1.5}},
        {"thresholds": {"not-a-particle": 0.5}},
        {"thresholds": {"ferritin": 0.3, "apo-ferritin": 0.4}},  # one type twice
    ],
    "thresholds_tta": [
        {"thresholds_tta": {"ribosome": math.nan}},
        {"thresholds_tta": {"ribosome": 2.0}},
        {"thresholds_tta": {"virus": 0.5}},
    ],
    "spacing_A": [
        {"spacing_A": 0.0},
        {"spacing_A": -10.0},
        {"spacing_A": math.nan},
        {"spacing_A": math.inf},
    ],
    "patch_size": [{"patch_size": [0, 16, 16]}, {"patch_size": [16, -16, 16]}],
}


def test_bad_model_card_values_are_one_line_input_errors(tmp_path):
    model_dir = _tiny_model_dir(tmp_path / "m")
    for field, variants in BAD_CARDS.items():
        for changes in variants:
            (model_dir / "model.json").write_text(_card_json(**changes))
            for load in (read_model_card, load_model):
                with pytest.raises(InputError) as excinfo:
                    load(model_dir)
                text = _one_line_input_error(excinfo, str(model_dir / "model.json"))
                assert "not a valid model card" in text and field in text, (changes, text)
    # pydantic's multi-line report of several errors is squeezed into one line
    (model_dir / "model.json").write_text(
        _card_json(spacing_A=-1.0, thresholds={"ribosome": math.nan})
    )
    with pytest.raises(InputError) as excinfo:
        read_model_card(model_dir)
    text = _one_line_input_error(excinfo, "model.json")
    assert "spacing_A" in text and "thresholds.ribosome" in text and "validation error" not in text


def test_model_card_resolves_aliases_and_keeps_good_cards(tmp_path):
    card = ModelCard.from_json(
        _card_json(
            thresholds={"ferritin": 0.25, "cytosolic-ribosome": 0.5}, thresholds_tta={"VLP": 0.75}
        )
    )
    assert card.thresholds == {"apo-ferritin": 0.25, "ribosome": 0.5}
    assert card.thresholds_tta == {"virus-like-particle": 0.75}
    # tuning gives a class it found nothing for a threshold a hair above its best score, 1
    hair = float(np.nextafter(1.0, 2.0))
    model_dir = _tiny_model_dir(tmp_path / "m", thresholds={"ribosome": hair, "thyroglobulin": 0})
    _, loaded = load_model(model_dir)
    assert loaded.thresholds == {"ribosome": hair, "thyroglobulin": 0.0}
    bundled = read_model_card(bundled_model_dir())
    assert set(bundled.thresholds) == set(default_particle_set().names)
    assert bundled.spacing_A == 10.0


def test_cli_predict_with_bad_model_card_is_one_line_error(tmp_path):
    model_dir = _tiny_model_dir(tmp_path / "m")
    (model_dir / "model.json").write_text(_card_json(thresholds={"ribosome": 2.0}))
    write_mrc(tmp_path / "t.mrc", np.zeros((16, 16, 16), np.float32), 10.0)
    out = tmp_path / "out.csv"
    args = ["predict", str(tmp_path / "t.mrc"), "--model", str(model_dir), "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "-q"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "model.json" in lines[0] and "thresholds.ribosome" in lines[0]
    assert not out.exists()


# ---------------------------------------------------------------- item 18: --device


def test_resolve_device_gives_one_line_input_errors(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(InputError) as excinfo:
        resolve_device("cuda")
    assert str(excinfo.value) == NO_GPU_MESSAGE
    with pytest.raises(InputError, match=r"^--device cuda:7: no CUDA GPU is available"):
        resolve_device("cuda:7")
    with pytest.raises(InputError, match=r"^--device gpu0: unknown device; use auto, cpu"):
        resolve_device("gpu0")
    with pytest.raises(InputError, match=r"^--device cuda:x: unknown device"):
        resolve_device("cuda:x")
    with pytest.raises(InputError, match=r"^--device cuda: no CUDA GPU"):
        load_model(_tiny_model_dir(tmp_path / "m"), device="cuda")
    # a machine with one GPU: cuda:0 is fine, cuda:7 is not there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(InputError, match=r"^--device cuda:7: no such GPU; this machine has 1"):
        resolve_device("cuda:7")


@pytest.mark.parametrize("device", ["cuda", "gpu0", "cuda:7"])
def test_cli_bad_device_is_one_line_error(monkeypatch, tmp_path, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model_dir = _tiny_model_dir(tmp_path / "m")
    write_mrc(tmp_path / "t.mrc", np.zeros((16, 16, 16), np.float32), 10.0)
    out = tmp_path / "out.csv"
    runner = CliRunner()
    args = ["predict", str(tmp_path / "t.mrc"), "--model", str(model_dir), "-o", str(out)]
    result = runner.invoke(app, [*args, "--device", device])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --device {device}: "), result.output
    assert not out.exists()
    # train resolves the device before simulating anything
    train_out = tmp_path / "train"
    result = runner.invoke(
        app, ["train", "--out", str(train_out), "--simulate", "1", "--device", device]
    )
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --device {device}: "), result.output
    assert not (train_out / "simulated").exists()


# ---------------------------------------------------------------- item 19: serializer warning

APO = default_particle_set().get("apo-ferritin")


def _blob_tomogram() -> Tomogram:
    shape, centre = (24, 32, 32), np.array([120.0, 160.0, 160.0])
    grids = np.meshgrid(*(voxels_to_angstrom(np.arange(n), 10.0) for n in shape), indexing="ij")
    volume = np.random.default_rng(0).normal(0.0, 0.1, size=shape)
    volume -= np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) / 800.0)
    return Tomogram(
        name="TS_1", data=volume.astype(np.float32), spacing_A=10.0, source=Path("TS_1.mrc")
    )


def test_predict_options_as_json_give_no_serializer_warning():
    card = ModelCard(architecture=TINY, patch_size=(16, 16, 16), spacing_A=10.0)
    # batch workers get the options as JSON (tuples become lists)
    options = PredictConfig(device="cpu", precision="fp32", patch_size=(16, 32, 32)).model_dump(
        mode="json"
    )
    assert isinstance(options["blob_ratio_range"], list)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = PredictConfig.model_validate(options)
        assert config.blob_ratio_range == (0.35, 1.8)
        config.model_dump(), config.model_dump(mode="json"), config.model_copy().model_dump()
        picks = predict_tomogram(_blob_tomogram(), DarkBlobDetector(), card, **options)
        assert len(picks) == 1  # the blob, accepted by the default blob ratio range
        # a list-valued blob_ratio_range option takes effect: no blob is 5-6x the expected size
        strict = {**options, "blob_ratio_range": [5.0, 6.0]}
        none = predict_tomogram(_blob_tomogram(), DarkBlobDetector(), card, **strict)
        assert len(none) == 0
        predict_tomogram(_blob_tomogram(), DarkBlobDetector(), card, config, **options)


def test_bad_device_fails_before_a_local_batch_starts(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model_dir = _tiny_model_dir(tmp_path / "m")
    write_mrc(tmp_path / "t.mrc", np.zeros((16, 16, 16), np.float32), 10.0)
    out = tmp_path / "out.csv"
    args = ["predict", str(tmp_path / "t.mrc"), "--model", str(model_dir), "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "--shard", "0/1", "--device", "cuda"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: --device cuda: no CUDA GPU")
    assert not out.exists() and not (tmp_path / "out.csv.parts").exists()


def test_threshold_overrides_are_validated_and_aliases_resolved(tmp_path):
    from cryopick.inference.picking import choose_thresholds
    from cryopick.inference.pipeline import PredictConfig

    # names are resolved against the model's particle set when the model is known
    card = ModelCard(thresholds=dict.fromkeys(default_particle_set().names, 0.5))
    config = PredictConfig(thresholds={"ferritin": 0.3, "vlp": 0.2})
    chosen = choose_thresholds(card, overrides=config.thresholds)
    assert chosen == {**card.thresholds, "apo-ferritin": 0.3, "virus-like-particle": 0.2}
    with pytest.raises(InputError, match="not-a-particle"):
        choose_thresholds(
            card, overrides=PredictConfig(thresholds={"not-a-particle": 0.5}).thresholds
        )
    for bad in ({"ribosome": float("nan")}, {"ribosome": -1.0}):
        with pytest.raises(ValueError):
            PredictConfig(thresholds=bad)
    settings = tmp_path / "predict.json"
    settings.write_text('{"thresholds": {"ribosome": 7, "beta-amylase": -1}}')
    write_mrc(tmp_path / "t.mrc", np.zeros((16, 16, 16), np.float32), 10.0)
    result = CliRunner().invoke(
        app, ["predict", str(tmp_path / "t.mrc"), "--config", str(settings), "-o", "o.csv"]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "predict.json" in lines[0]
    assert "thresholds.ribosome" in lines[0] and "thresholds.beta-amylase" in lines[0]
