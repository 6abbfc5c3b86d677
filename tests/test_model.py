import json

import numpy as np
import pytest
import torch

from cryopick.core.coords import input_to_strided_vox, strided_origin_A
from cryopick.core.errors import InputError
from cryopick.core.particles import default_particle_set
from cryopick.model import (
    ClassMetrics,
    ModelCard,
    ModelConfig,
    TargetSpec,
    build_model,
    bundled_model_dir,
    load_model,
    read_model_card,
    save_model,
)
from cryopick.training.augmentation import AugmentConfig, augment_geometry, augment_intensity
from cryopick.training.config import TrainConfig, compute_loss
from cryopick.training.targets import render_targets

TINY = ModelConfig(widths=(4, 8, 16))
CZII_CLASSES = default_particle_set().n_classes  # the CZII six and background


@pytest.mark.parametrize(
    ("input_stride", "output_stride", "native_side"), [(1, 1, 32), (1, 2, 16), (2, 2, 16)]
)
def test_forward_shapes_and_backward(input_stride, output_stride, native_side):
    torch.manual_seed(0)
    cfg = ModelConfig(widths=(4, 8, 16), input_stride=input_stride, output_stride=output_stride)
    model = build_model(cfg)
    x = torch.randn(2, 1, 32, 32, 32)
    native = model.forward_native(x)
    assert native.shape == (2, CZII_CLASSES, native_side, native_side, native_side)
    full = model(x)
    assert full.shape == (2, CZII_CLASSES, 32, 32, 32)
    native.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_forward_pads_odd_input_and_crops_back():
    model = build_model(TINY).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 19, 21, 23))
    assert out.shape == (1, CZII_CLASSES, 19, 21, 23)
    assert TINY.input_multiple == 8


def test_config_rejects_bad_strides():
    with pytest.raises(ValueError, match="output_stride"):
        ModelConfig(input_stride=2, output_stride=1)
    with pytest.raises(ValueError, match="widths"):
        ModelConfig(widths=(8,))


def _card() -> ModelCard:
    return ModelCard(
        architecture=TINY,
        patch_size=(32, 64, 64),
        thresholds={"apo-ferritin": 0.25, "ribosome": 0.5},
        validation=[ClassMetrics(particle_type="ribosome", precision=0.5, recall=1.0, fbeta=0.9)],
        score=0.875,
        learning_curve=[(1.5, 10, 0.25), (3.0, 20, 0.875)],
        steps=20,
        training_data=["sim:a"],
        train_config={"lr": 0.001},
    )


def test_model_card_json_round_trip():
    card = _card()
    again = ModelCard.from_json(card.to_json())
    assert again == card
    assert again.learning_curve[1] == (3.0, 20, 0.875)
    assert again.architecture.widths == (4, 8, 16)


def test_save_and_load_model_round_trip(tmp_path):
    torch.manual_seed(1)
    model = build_model(TINY)
    save_model(tmp_path / "m", model, _card())
    loaded, card = load_model(tmp_path / "m")
    assert card.thresholds == {"apo-ferritin": 0.25, "ribosome": 0.5}
    assert card.cryopick_version  # filled in on save
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert not loaded.training
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.pt"]


def test_save_model_crash_keeps_previous(tmp_path, monkeypatch):
    model = build_model(TINY)
    save_model(tmp_path, model, _card())
    before = (tmp_path / "model.pt").read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_model(tmp_path, build_model(TINY), _card())
    assert (tmp_path / "model.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_load_model_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match=r"model\.json"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(InputError, match="not a valid model card"):
        read_model_card(tmp_path)


def test_sphere_target_labels_known_voxels():
    out = render_targets(
        np.array([[5.0, 5.0, 5.0], [5.0, 5.0, 12.0]]),
        [1, 4],
        [4.0, 6.0],
        (10, 12, 16),
        kind="sphere",
        fraction=0.5,
    )
    assert out.dtype == np.uint8
    assert out[5, 5, 5] == 1 and out[5, 5, 7] == 1 and out[5, 5, 8] == 0  # r = 2
    assert out[5, 5, 12] == 4 and out[5, 5, 9] == 4 and out[5, 5, 15] == 4  # r = 3
    assert out[5, 9, 12] == 0
    assert (out == 1).sum() == 33  # lattice points within radius 2


def test_gaussian_target_sums_to_one_and_peaks_at_centre():
    out = render_targets(np.array([[4.0, 6.0, 6.0]]), [3], [4.0], (8, 12, 12), kind="gaussian")
    assert out.shape == (CZII_CLASSES, 8, 12, 12)
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-6)
    assert np.unravel_index(out[3].argmax(), out[3].shape) == (4, 6, 6)
    assert out[3, 4, 6, 6] == pytest.approx(1.0)
    assert out[3, 4, 6, 8] == pytest.approx(np.exp(-4 / 8))  # sigma = 0.5 * 4 = 2


def test_output_grid_coordinates():
    # stride-2 output voxel j is centred at input voxel 2j + 0.5
    np.testing.assert_allclose(input_to_strided_vox([[0.5, 2.5, 10.5]], 2), [[0, 1, 5]])
    np.testing.assert_allclose(input_to_strided_vox([[3.0, 4.0, 5.0]], 1), [[3, 4, 5]])
    assert strided_origin_A(2, 10.0) == 5.0 and strided_origin_A(1, 10.0) == 0.0


def test_geometry_augmentation_moves_input_and_target_together():
    rng = np.random.default_rng(3)
    config = AugmentConfig()
    for _ in range(20):
        vol = np.zeros((16, 32, 32), np.float32)
        vol[2 * 3 : 2 * 3 + 2, 2 * 5 : 2 * 5 + 2, 2 * 11 : 2 * 11 + 2] = 1.0  # one stride-2 cell
        target = np.zeros((8, 16, 16), np.uint8)
        target[3, 5, 11] = 2
        v, t = augment_geometry(vol, target, rng, config)
        assert v.shape == (16, 32, 32) and t.shape == (8, 16, 16)  # z stays z
        z, y, x = np.argwhere(t == 2)[0]
        assert v[2 * z : 2 * z + 2, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2].sum() == 8
        assert z in (3, 4)  # z is only flipped (8 - 1 - 3 = 4), never rotated into XY


def test_intensity_augmentation_is_seeded():
    vol = np.random.default_rng(0).standard_normal((8, 8, 8)).astype(np.float32)
    a = augment_intensity(vol, np.random.default_rng(5), AugmentConfig())
    b = augment_intensity(vol, np.random.default_rng(5), AugmentConfig())
    c = augment_intensity(vol, np.random.default_rng(6), AugmentConfig())
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_loss_prefers_correct_logits_and_handles_soft_targets():
    config = TrainConfig(architecture=TINY, patch_size=(32, 32, 32))
    weights = config.class_weights()
    target = torch.zeros(1, 4, 4, 4, dtype=torch.int64)
    target[0, 1:3, 1:3, 1:3] = 5
    good = torch.nn.functional.one_hot(target, CZII_CLASSES).permute(0, 4, 1, 2, 3).float() * 10
    bad = torch.zeros_like(good)
    assert compute_loss(good, target, config, weights) < 1e-3
    assert compute_loss(bad, target, config, weights) == pytest.approx(
        np.log(CZII_CLASSES), rel=1e-5
    )
    soft = torch.nn.functional.one_hot(target, CZII_CLASSES).permute(0, 4, 1, 2, 3).float()
    assert compute_loss(bad, soft, config, weights) == pytest.approx(np.log(CZII_CLASSES), rel=1e-5)
    tversky = config.model_copy(update={"loss": "ce+tversky"})
    assert compute_loss(bad, target, tversky, weights) > compute_loss(bad, target, config, weights)


def test_class_weights_balance_particle_sizes():
    flat = TrainConfig(architecture=TINY, patch_size=(32, 32, 32), particle_weight=16.0)
    assert flat.class_weights().tolist() == [1.0] + [16.0] * 6
    sized = flat.model_copy(update={"weight_radius_power": 3.0}).class_weights()
    assert float(sized[1:].mean()) == pytest.approx(16.0)
    assert float(sized[1] / sized[4]) == pytest.approx((150 / 60) ** 3)  # apo-ferritin / ribosome


def test_model_card_target_is_typed_and_old_text_cards_still_load(tmp_path):
    card = _card().model_copy(update={"target": TargetSpec(kind="gaussian", fraction=0.3)})
    assert json.loads(card.to_json())["target"] == {"kind": "gaussian", "fraction": 0.3}
    assert ModelCard.from_json(card.to_json()) == card
    assert str(card.target) == "gaussian sigma=0.3"
    for text, expected in [
        ("sphere r=0.5", TargetSpec()),
        ("sphere", TargetSpec()),
        ("gaussian sigma=0.25", TargetSpec(kind="gaussian", fraction=0.25)),
    ]:
        old = json.loads(card.to_json()) | {"target": text}
        assert ModelCard.model_validate_json(json.dumps(old)).target == expected
    # a card written by an older cryopick (text form) reads from a model folder
    (tmp_path / "model.json").write_text(
        json.dumps(json.loads(card.to_json()) | {"target": "sphere r=0.5"})
    )
    assert read_model_card(tmp_path).target == TargetSpec(kind="sphere", fraction=0.5)
    assert read_model_card(bundled_model_dir()).target == TargetSpec(kind="sphere", fraction=0.5)
    (tmp_path / "model.json").write_text(
        json.dumps(json.loads(card.to_json()) | {"target": "cube"})
    )
    with pytest.raises(InputError, match=r"not a valid model card.*target"):
        read_model_card(tmp_path)
