"""Ensembles: several U-Nets of one architecture whose logits are averaged, as one model."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cryopick.cli import app
from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet, ParticleSpec, default_particle_set
from cryopick.inference.config import PredictConfig
from cryopick.inference.pipeline import predict
from cryopick.io.mrc import write_mrc
from cryopick.model import (
    ModelCard,
    ModelConfig,
    UNet3D,
    UNetEnsemble,
    average_model_weights,
    build_model,
    combine_models,
    load_model,
    read_model_card,
    save_model,
)
from cryopick.model.network import replace_head
from cryopick.training.config import TrainConfig
from cryopick.training.trainer import initialise_model

from shared_settings import TINY_MODEL_THRESHOLD, TINY_TRAINING

TINY = ModelConfig(widths=(4, 8))
PAIR = TINY.model_copy(update={"members": 2})


def _card(arch: ModelConfig = TINY, **update) -> ModelCard:
    names = default_particle_set().names
    return ModelCard(
        architecture=arch,
        patch_size=(32, 32, 32),
        thresholds=dict.fromkeys(names, TINY_MODEL_THRESHOLD),
        **update,
    )


def _saved(tmp_path, name: str, seed: int, arch: ModelConfig = TINY, **card) -> tuple:
    torch.manual_seed(seed)
    model = build_model(arch).eval()
    return save_model(tmp_path / name, model, _card(arch, **card)), model


def test_build_model_gives_an_ensemble_whose_logits_are_the_members_mean():
    torch.manual_seed(0)
    model = build_model(PAIR).eval()
    assert isinstance(model, UNetEnsemble) and isinstance(build_model(TINY), UNet3D)
    assert [type(net) for net in model.nets] == [UNet3D, UNet3D]
    x = torch.randn(1, 1, 16, 20, 24)
    with torch.no_grad():
        a, b = (net(x) for net in model.nets)
        assert torch.allclose(model(x), (a + b) / 2, atol=1e-6)
        assert model(x).shape == (1, 7, 16, 20, 24)
        assert model.forward_native(x).shape == (1, 7, 8, 10, 12)
    # known values: every weight 0 but the output biases, so the logits are the biases' mean
    with torch.no_grad():
        for net, shift in zip(model.nets, (1.0, 4.0), strict=True):
            for param in net.parameters():
                param.zero_()
            net.head.bias.copy_(torch.arange(7.0) + shift)
        out = model(x)
    assert torch.allclose(out[0, :, 3, 4, 5], torch.arange(7.0) + 2.5)
    with pytest.raises(ValueError, match="ensemble"):
        UNet3D(PAIR)


def test_ensemble_save_and_load_round_trip(tmp_path):
    path, model = _saved(tmp_path, "pair", 3, PAIR)
    loaded, card = load_model(path)
    assert isinstance(loaded, UNetEnsemble) and card.architecture.members == 2
    assert all(key.startswith(("nets.0.", "nets.1.")) for key in loaded.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_combine_models_averages_the_members_and_leaves_the_card_untuned(tmp_path):
    path_a, a = _saved(tmp_path, "a", 1, steps=100, provenance="run A")
    path_b, b = _saved(tmp_path, "b", 2, steps=50, training_data=["sim_varied"])
    ensemble, card = combine_models([path_a, path_b])
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(ensemble(x), (a(x) + b(x)) / 2, atol=1e-6)
    assert card.architecture == PAIR and card.steps == 150
    assert card.thresholds == {} and card.rescorer is None and card.calibration == {}
    assert str(path_a) in card.provenance and "run A" in card.provenance
    assert card.training_data == ["sim_varied"]
    # an ensemble's members count one by one: pair + single = three networks, same order
    pair = save_model(tmp_path / "pair", ensemble, card)
    triple, triple_card = combine_models([pair, path_a])
    assert triple_card.architecture.members == 3
    assert f"members 0-1: {pair}" in triple_card.provenance
    assert f"member 2: {path_a}" in triple_card.provenance
    for net, source in zip(triple.nets, [a, b, a], strict=True):
        assert torch.equal(net.head.weight, source.head.weight)


def test_flipped_odd_members_see_the_window_turned_and_are_turned_back(tmp_path):
    """Member 1's logits are those of the yx-flipped input, flipped back; z never flips."""
    path_a, a = _saved(tmp_path, "a", 1)
    path_b, b = _saved(tmp_path, "b", 2)
    ensemble, card = combine_models([path_a, path_b], flip_odd_members=True)
    assert card.architecture.flip_odd_members and "--flip-odd-members" in card.provenance
    x = torch.randn(1, 1, 16, 24, 32)
    yx = (-2, -1)
    with torch.no_grad():
        turned_b = torch.flip(b.forward_native(torch.flip(x, yx)), yx)
        expected = (a.forward_native(x) + turned_b) / 2
        assert torch.allclose(ensemble.forward_native(x), expected, atol=1e-6)
        plain = (a.forward_native(x) + b.forward_native(x)) / 2
        assert (ensemble.forward_native(x) - plain).abs().max() > 1e-4
        # the half turn commutes with the network as a whole: turning the input turns
        # the output exactly when both members are one network (no grid shift)
        same, _ = combine_models([path_a, path_a], flip_odd_members=True)
        turned_a = torch.flip(a.forward_native(torch.flip(x, yx)), yx)
        assert torch.allclose(same.forward_native(x), (a.forward_native(x) + turned_a) / 2)
    # the flag is saved with the card, and the members stay combinable with other models
    saved = save_model(tmp_path / "turned", ensemble, card)
    loaded, loaded_card = load_model(saved)
    assert loaded_card.architecture.flip_odd_members
    with torch.no_grad():
        assert torch.equal(loaded.forward_native(x), ensemble.forward_native(x))
    _, triple_card = combine_models([saved, path_a])
    assert triple_card.architecture.members == 3
    assert not triple_card.architecture.flip_odd_members
    with pytest.raises(ValueError, match="members >= 2"):
        ModelConfig(widths=(4, 8), flip_odd_members=True)


def test_combine_models_refuses_models_that_cannot_be_averaged(tmp_path):
    path_a, _ = _saved(tmp_path, "a", 1)
    wide, _ = _saved(tmp_path, "wide", 1, ModelConfig(widths=(4, 16)))
    with pytest.raises(InputError, match=r"wide.*architecture"):
        combine_models([path_a, wide])
    coarse, _ = _saved(tmp_path, "coarse", 1, spacing_A=13.48)
    with pytest.raises(InputError, match=r"coarse.*voxel size 13.48"):
        combine_models([path_a, coarse])
    with pytest.raises(InputError, match="at least two networks"):
        combine_models([path_a])
    with pytest.raises(InputError, match="missing"):
        combine_models([path_a, tmp_path / "missing"])


def test_average_model_weights_takes_each_parameters_and_statistics_mean(tmp_path):
    path_a, a = _saved(tmp_path, "a", 1, PAIR, steps=100, provenance="start")
    torch.manual_seed(9)
    b = build_model(PAIR)
    with torch.no_grad():  # a "fine-tuned copy": a's weights moved, BatchNorm statistics too
        for p_a, p_b in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
            if p_a.is_floating_point():
                p_b.copy_(p_a + 0.5)
    path_b = save_model(tmp_path / "b", b.eval(), _card(PAIR, steps=40, training_data=["r3"]))
    averaged, card = average_model_weights([path_a, path_b])
    assert isinstance(averaged, UNetEnsemble) and card.architecture == PAIR
    for key, value in averaged.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, a.state_dict()[key] + 0.25, atol=1e-6), key
    assert card.steps == 140 and card.thresholds == {} and card.rescorer is None
    assert f"model 1: {path_b}" in card.provenance and "start" in card.provenance
    assert card.training_data == ["r3"]
    single, _ = _saved(tmp_path, "single", 1)  # one network against a pair: refused
    with pytest.raises(InputError, match=r"single.*1 member networks, the first model 2"):
        average_model_weights([path_a, single])
    with pytest.raises(InputError, match="at least two models"):
        average_model_weights([path_a])


def test_fine_tuning_an_ensemble_onto_another_set_refits_every_members_output_layer(tmp_path):
    czii = default_particle_set()
    path, _ = _saved(tmp_path, "pair", 5, PAIR)
    before = load_model(path)[0].state_dict()
    mixed = ParticleSet(
        (ParticleSpec(name="blob", radius_A=50.0), ParticleSpec(name="ribosome", radius_A=150.0))
    )
    config = TrainConfig(architecture={"widths": (4, 8)}, init_from=str(path))
    config, model = initialise_model(config, mixed)
    assert isinstance(model, UNetEnsemble)
    assert config.architecture.members == 2 and config.architecture.n_classes == 3
    after = model.state_dict()
    old, new = czii.label("ribosome"), mixed.label("ribosome")
    for i in range(2):
        head = f"nets.{i}.head."
        assert after[head + "weight"].shape[0] == 3
        assert torch.equal(after[head + "weight"][new], before[head + "weight"][old])
        assert torch.equal(after[head + "bias"][0], before[head + "bias"][0])
    for key in before:
        if ".head." not in key:
            assert torch.equal(before[key], after[key]), key
    assert all(net.config.n_classes == 3 for net in model.nets)


def test_replace_head_keeps_members_independent():
    torch.manual_seed(0)
    model = build_model(PAIR)
    replace_head(model, 4, {0: 0})
    first, second = (net.head.weight for net in model.nets)
    assert first.shape[0] == second.shape[0] == 4 and not torch.equal(first[1:], second[1:])


def test_cli_combine_then_predict_gives_the_members_picks(tmp_path):
    """Two copies of one network average to that network: same picks end to end."""
    path, _ = _saved(tmp_path, "one", 0)
    volume = np.random.default_rng(0).normal(size=(32, 40, 40)).astype(np.float32)
    tomogram = tmp_path / "t.mrc"
    write_mrc(tomogram, volume, 10.0)
    runner = CliRunner()
    out = tmp_path / "both"
    args = ["combine", "--model", str(path), "--model", str(path), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "tune it" in result.output
    assert read_model_card(out).architecture.members == 2
    card = json.loads((out / "model.json").read_text())
    card["thresholds"] = read_model_card(path).thresholds
    (out / "model.json").write_text(json.dumps(card))
    config = PredictConfig(device="cpu")
    single, pair = (predict(tomogram, model, config=config) for model in (path, out))
    assert len(single) > 0
    cols = ["particle_type", "x", "y", "z"]
    assert single[cols].equals(pair[cols])
    assert np.allclose(single["score"], pair["score"], atol=1e-3)
    # an existing output is refused without --overwrite, and a bad member is one line
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    bad = runner.invoke(app, ["combine", "--model", str(path), "--model", str(tmp_path / "x")])
    assert bad.exit_code == 2
    missing = runner.invoke(
        app, ["combine", "--model", str(path), "--model", str(tmp_path / "x"), "--out", "o"]
    )
    assert missing.exit_code == 2 and "model" in missing.output
    assert "Traceback" not in missing.output
    # --average-weights: a network averaged with itself is itself, still one network
    same = tmp_path / "same"
    averaged = runner.invoke(app, [*args[:-1], str(same), "--average-weights"])
    assert averaged.exit_code == 0 and "weight average of 2 models" in averaged.output
    assert read_model_card(same).architecture.members == 1
    card = json.loads((same / "model.json").read_text())
    card["thresholds"] = read_model_card(path).thresholds
    (same / "model.json").write_text(json.dumps(card))
    assert predict(tomogram, same, config=config)[cols].equals(single[cols])


def test_training_an_ensemble_from_scratch_and_resuming_it(tmp_path, tiny_train_run):
    from cryopick.training.trainer import train

    arch = {**TINY_TRAINING["architecture"], "members": 2}
    config = TrainConfig(**{**TINY_TRAINING, "architecture": arch, "steps": 2, "ema_decay": 0.9})
    out = tmp_path / "pair"
    card = train(config, out, train_runs=[tiny_train_run], progress=False)
    model, saved = load_model(out)
    assert isinstance(model, UNetEnsemble) and saved.architecture.members == 2
    assert card.steps == 2
    first, second = (net.head.weight for net in model.nets)
    assert not torch.equal(first, second)  # members start from different weights
    more = config.model_copy(update={"steps": 4})
    resumed = train(more, out, resume=True, train_runs=[tiny_train_run], progress=False)
    assert resumed.steps == 4 and resumed.architecture.members == 2


def test_cli_combine_flips_odd_members_on_request_and_not_for_a_weight_average(tmp_path):
    path, _ = _saved(tmp_path, "one", 0)
    runner = CliRunner()
    args = ["combine", "--model", str(path), "--model", str(path), "--flip-odd-members"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "turned")])
    assert result.exit_code == 0, result.output
    assert read_model_card(tmp_path / "turned").architecture.flip_odd_members
    refused = runner.invoke(app, [*args, "--out", str(tmp_path / "avg"), "--average-weights"])
    assert refused.exit_code == 2 and "--flip-odd-members" in refused.output
    assert not (tmp_path / "avg").exists()
