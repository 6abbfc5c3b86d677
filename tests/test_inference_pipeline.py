import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from cryopick.cli import app
from cryopick.core.coords import voxels_to_angstrom
from cryopick.core.errors import InputError
from cryopick.core.particles import default_particle_set
from cryopick.evaluation.tuning import tune_model
from cryopick.inference.pipeline import (
    LoadedModel,
    PredictConfig,
    bundled_model_dir,
    predict,
    predict_tomogram,
)
from cryopick.io.layout import make_copick_config, read_copick_config
from cryopick.io.mrc import write_mrc
from cryopick.io.picks import make_picks, read_picks, write_picks
from cryopick.io.tomograms import Tomogram, read_tomograms, write_tomogram
from cryopick.model import (
    ModelCard,
    ModelConfig,
    TargetSpec,
    build_model,
    read_model_card,
    save_model,
)

CZII = default_particle_set()
SHAPE = (24, 40, 44)
APO = CZII.get("apo-ferritin")
# apo-ferritin centres (z, y, x) in Å, as dark Gaussian blobs
CENTRES_A = np.array([[101.0, 118.0, 121.0], [142.0, 282.5, 305.0]])


class DarkBlobDetector(nn.Module):
    """Pointwise 'network': dark voxels (protein) -> apo-ferritin, else background."""

    output_stride = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros((x.shape[0], 7, *x.shape[2:]), dtype=x.dtype)
        logits[:, APO.label] = -2.0 * x[:, 0] - 8.0  # p > 0.5 below -4 sigma
        return logits


def _volume(spacing_A: float = 10.0, shape=SHAPE, seed: int = 0) -> np.ndarray:
    grids = np.meshgrid(
        *(voxels_to_angstrom(np.arange(n), spacing_A) for n in shape), indexing="ij"
    )
    volume = np.random.default_rng(seed).normal(0.0, 0.1, size=shape)
    for centre in CENTRES_A:
        d2 = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True))
        volume -= np.exp(-d2 / (2 * 20.0**2))  # smooth: its centre is exact on any grid
    return volume.astype(np.float32)


def _card(**kw) -> ModelCard:
    tiny = ModelConfig(widths=(4, 8), output_stride=2)
    return ModelCard(architecture=tiny, patch_size=(16, 16, 16), spacing_A=10.0, **kw)


def _tomogram(volume, spacing_A=10.0, name="TS_1", source="TS_1.mrc") -> Tomogram:
    return Tomogram(name=name, data=volume, spacing_A=spacing_A, source=Path(source))


def _matched(picks: pd.DataFrame, tol_A: float) -> bool:
    found = picks[["z", "y", "x"]].to_numpy()
    if len(found) != len(CENTRES_A):
        return False
    return all(np.linalg.norm(found - c, axis=1).min() < tol_A for c in CENTRES_A)


def test_predict_tomogram_finds_particles_at_their_angstrom_positions():
    picks = predict_tomogram(_tomogram(_volume()), DarkBlobDetector(), _card(), device="cpu")
    assert set(picks["particle_type"]) == {"apo-ferritin"}
    assert (picks["experiment"] == "TS_1").all()
    assert _matched(picks, tol_A=3.0)
    again = predict_tomogram(_tomogram(_volume()), DarkBlobDetector(), _card(), device="cpu")
    pd.testing.assert_frame_equal(picks, again)  # deterministic


@pytest.mark.parametrize("spacing_A", [5.0, 13.48])
def test_other_voxel_sizes_are_resampled_and_picks_stay_in_angstrom(spacing_A):
    extent_A = np.array(SHAPE) * 10.0
    shape = tuple(int(n) for n in np.ceil(extent_A / spacing_A))
    tomo = _tomogram(_volume(spacing_A, shape), spacing_A=spacing_A)
    picks = predict_tomogram(tomo, DarkBlobDetector(), _card(), device="cpu")
    assert _matched(picks, tol_A=3.0)


def test_voxel_size_within_one_percent_is_not_resampled_and_picks_use_it():
    # the CZII portal's tomograms say 10.012 Å for a 10 Å model: same voxels, picks in
    # the tomogram's own Å (no resampling blur, no pass over the data)
    volume = _volume(10.08)
    at_model = predict_tomogram(_tomogram(volume), DarkBlobDetector(), _card(), device="cpu")
    own = predict_tomogram(
        _tomogram(volume, spacing_A=10.08), DarkBlobDetector(), _card(), device="cpu"
    )
    assert _matched(own, tol_A=3.0)
    assert len(own) == len(at_model) == 2
    xyz = ["z", "y", "x"]
    np.testing.assert_allclose(own[xyz], at_model[xyz].to_numpy() * 1.008, rtol=1e-9)
    np.testing.assert_allclose(own["score"], at_model["score"])


def test_int8_input_works_and_nan_input_names_the_file(tmp_path):
    volume = np.clip(_volume() * 60, -128, 127).astype(np.int8)
    write_mrc(tmp_path / "TS_8.mrc", volume, 10.0)
    (tomogram,) = read_tomograms(tmp_path / "TS_8.mrc")  # memory-mapped int8 MRC
    assert tomogram.data.dtype == np.int8
    picks = predict_tomogram(tomogram, DarkBlobDetector(), _card(), device="cpu")
    assert _matched(picks, tol_A=3.0)
    assert set(picks["experiment"]) == {"TS_8"}
    bad = _volume()
    bad[3, 4, 5] = np.nan
    with pytest.raises(InputError, match=r"TS_9\.mrc.*NaN"):
        predict_tomogram(_tomogram(bad, source="TS_9.mrc"), DarkBlobDetector(), _card())


def test_card_thresholds_are_used_and_options_validated():
    card = _card(thresholds={"apo-ferritin": 0.9999})
    picks = predict_tomogram(_tomogram(_volume()), DarkBlobDetector(), card, device="cpu")
    assert picks.empty
    with pytest.raises(ValueError, match="overlap"):
        predict_tomogram(_tomogram(_volume()), DarkBlobDetector(), _card(), overlap=1.5)


def test_tta_uses_the_cards_tta_thresholds():
    # the detector's blobs peak at ~0.55: a 0.9999 threshold keeps nothing, 0.3 keeps them
    strict, lenient = {"apo-ferritin": 0.9999}, {"apo-ferritin": 0.3}
    tomogram = _tomogram(_volume())
    card = _card(thresholds=strict, thresholds_tta=lenient)
    assert predict_tomogram(tomogram, DarkBlobDetector(), card, device="cpu").empty
    assert len(predict_tomogram(tomogram, DarkBlobDetector(), card, device="cpu", tta=True))
    # without TTA thresholds, --tta falls back to the plain ones
    plain = _card(thresholds=strict)
    assert predict_tomogram(tomogram, DarkBlobDetector(), plain, device="cpu", tta=True).empty


def test_blob_fraction_follows_the_target():
    def blob(target):  # cards written before TargetSpec hold the target as text
        return TargetSpec.model_validate(target).blob_radius_fraction

    assert blob("sphere") == 0.5
    assert blob("sphere r=0.4") == pytest.approx(0.4)
    assert blob("gaussian sigma=0.3") == pytest.approx(0.3 * 1.1774, abs=1e-3)
    assert blob({"kind": "gaussian", "fraction": 0.3}) == blob("gaussian sigma=0.3")


# ---------------------------------------------------------------- end to end through files


@pytest.fixture
def dark_blob_model() -> LoadedModel:
    """The detector with a tiny model's card, passed to the library as a loaded model."""
    return DarkBlobDetector(), _card()


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A saved tiny model with the card of :func:`dark_blob_model` (tune copies its weights)."""
    return save_model(tmp_path / "model", build_model(_card().architecture), _card())


@pytest.fixture
def project(tmp_path) -> Path:
    config = tmp_path / "copick.json"
    config.write_text(json.dumps(make_copick_config("t", tmp_path / "overlay", tmp_path / "st")))
    layout = read_copick_config(config)
    for i, run in enumerate(["TS_1", "TS_2"]):
        write_tomogram(layout, run, _volume(seed=i), 10.0, n_levels=1)
    return config


@pytest.mark.parametrize("fmt", ["csv", "kaggle", "star"])
def test_predict_writes_each_format_and_it_reads_back(project, dark_blob_model, tmp_path, fmt):
    out = tmp_path / f"picks.{'star' if fmt == 'star' else 'csv'}"
    config = PredictConfig(device="cpu")
    picks = predict(project, output=out, format=fmt, config=config, model=dark_blob_model)
    assert sorted(set(picks["experiment"])) == ["TS_1", "TS_2"]
    shapes = {t.name: (t.shape, t.spacing_A) for t in read_tomograms(project)}
    back = read_picks(out, tomogram_shapes=shapes)
    cols = ["experiment", "particle_type", "x", "y", "z"]
    key = ["experiment", "x"]
    a, b = picks.sort_values(key)[cols].reset_index(drop=True), back.sort_values(key)[cols]
    pd.testing.assert_frame_equal(a, b.reset_index(drop=True), atol=1e-3)
    if fmt == "kaggle":
        assert out.read_text().splitlines()[0] == "id,experiment,particle_type,x,y,z"


def test_copick_output_leaves_other_users_picks_untouched(project, dark_blob_model):
    layout = read_copick_config(project)
    other = make_picks("TS_1", "ribosome", [[10.0, 20.0, 30.0]])
    write_picks(other, project, format="copick", user_id="curation", session_id="0")
    theirs = layout.overlay_root / "ExperimentRuns/TS_1/Picks/curation_0_ribosome.json"
    before = theirs.read_bytes()
    config = PredictConfig(device="cpu")
    picks = predict(project, format="copick", config=config, model=dark_blob_model)
    assert theirs.read_bytes() == before
    ours = read_picks(project, user_id="cryopick")
    assert len(ours) == len(picks) == 4
    ours_file = layout.overlay_root / "ExperimentRuns/TS_2/Picks/cryopick_0_apo-ferritin.json"
    assert json.loads(ours_file.read_text())["user_id"] == "cryopick"


def test_predict_with_a_real_unet_runs_and_is_deterministic(tmp_path):
    torch.manual_seed(0)
    card = _card(thresholds=dict.fromkeys(["apo-ferritin", "ribosome"], 0.0))
    model_path = save_model(tmp_path / "m", build_model(card.architecture), card)
    write_mrc(tmp_path / "in" / "TS_7.mrc", _volume(), 10.0)
    cfg = PredictConfig(device="cpu", blob_ratio_range=None)
    a = predict(tmp_path / "in", model_path, tmp_path / "a.csv", config=cfg)
    b = predict(tmp_path / "in", model_path, tmp_path / "b.csv", config=cfg)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert len(a) == len(b) > 0


def test_loaded_model_or_model_dir_not_both(project, model_dir, dark_blob_model):
    with pytest.raises(ValueError, match="not both"):
        predict(project, model_dir, config=PredictConfig(device="cpu"), model=dark_blob_model)


def test_tune_writes_a_model_copy_with_thresholds_that_score(
    project, model_dir, dark_blob_model, tmp_path
):
    truth = pd.concat(
        [make_picks(run, "apo-ferritin", CENTRES_A) for run in ("TS_1", "TS_2")],
        ignore_index=True,
    )
    write_picks(truth, project, format="copick", user_id="curation", session_id="0")
    out = tmp_path / "tuned"
    cpu = PredictConfig(device="cpu")
    thresholds = tune_model(model_dir, project, out, cpu, model=dark_blob_model)
    card = json.loads((out / "model.json").read_text())
    assert card["thresholds"] == thresholds
    apo = next(m for m in card["validation"] if m["particle_type"] == "apo-ferritin")
    assert (apo["tp"], apo["fp"], apo["fn"]) == (4, 0, 0)  # both particles in both runs
    assert thresholds["apo-ferritin"] == pytest.approx(0.55, abs=0.01)  # the blobs' peak
    assert (out / "model.pt").read_bytes() == (model_dir / "model.pt").read_bytes()
    assert json.loads((model_dir / "model.json").read_text())["thresholds"] == {}
    # tuned on TTA maps: the thresholds go to thresholds_tta, the plain ones are kept
    tta_out = tmp_path / "tuned_tta"
    tuned_model = (DarkBlobDetector(), read_model_card(out))
    tta_config = PredictConfig(device="cpu", tta=True)
    tta = tune_model(out, project, tta_out, tta_config, model=tuned_model)
    tta_card = json.loads((tta_out / "model.json").read_text())
    assert tta_card["thresholds_tta"] == tta and tta_card["thresholds"] == thresholds
    with pytest.raises(InputError, match="new folder"):
        tune_model(model_dir, project, model_dir)
    # an earlier tuned model is not replaced, unless asked to
    with pytest.raises(InputError, match="holds a trained model"):
        tune_model(model_dir, project, out)
    again = tune_model(model_dir, project, out, cpu, overwrite=True, model=dark_blob_model)
    assert again == thresholds


def _same_picks(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = ["experiment", "particle_type", "x", "y", "z", "score"]
    pd.testing.assert_frame_equal(
        a[cols].reset_index(drop=True), b[cols].reset_index(drop=True), atol=1e-3
    )


def test_cli_predict_and_tune_give_what_the_library_gives(
    project, tiny_untrained_model_dir, tmp_path
):
    """The commands pass their options through: same picks, same tuned thresholds."""
    model = tiny_untrained_model_dir
    cpu = PredictConfig(device="cpu")
    runner = CliRunner()
    out = tmp_path / "cli.csv"
    args = ["predict", str(project), "--model", str(model), "-o", str(out), "--device", "cpu"]
    result = runner.invoke(app, [*args, "-q"])
    assert result.exit_code == 0, result.output
    library = predict(project, model, config=cpu)
    assert len(library) > 0
    _same_picks(read_picks(out), library)
    assert "ferritin" in result.output and "total" in result.output
    result = runner.invoke(app, ["predict", str(project), "--model", str(model)])
    assert result.exit_code == 2 and "--output" in result.output
    result = runner.invoke(app, ["predict", str(tmp_path / "missing"), "-o", str(out)])
    assert result.exit_code == 2
    truth = pd.concat([make_picks(r, "apo-ferritin", CENTRES_A) for r in ("TS_1", "TS_2")])
    truth_csv = tmp_path / "truth.csv"
    write_picks(truth, truth_csv)
    tuned = tmp_path / "tuned"
    result = runner.invoke(
        app,
        [
            *("tune", "--model", str(model), "--data", str(project), "--out", str(tuned)),
            *("--truth", str(truth_csv), "--device", "cpu", "-q"),
        ],
    )
    assert result.exit_code == 0, result.output
    expected = tune_model(model, project, tmp_path / "library_tuned", cpu, truth=truth_csv)
    assert json.loads((tuned / "model.json").read_text())["thresholds"] == expected


def test_cli_tune_passes_the_threshold_rule_and_refuses_an_unknown_one(monkeypatch, tmp_path):
    import cryopick.evaluation.tuning as tuning

    seen = {}
    monkeypatch.setattr(tuning, "tune_model", lambda *a, **kw: seen.update(kw) or {})
    args = ["tune", "--model", "m", "--data", "d", "--out", str(tmp_path / "t"), "-q"]
    runner = CliRunner()
    for given, expected in ((None, None), ("probability", "probability")):
        extra = [] if given is None else ["--threshold-rule", given]
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 0, result.output
        assert seen["rule"] == expected
    result = runner.invoke(app, [*args, "--threshold-rule", "best-fbeta"])
    assert result.exit_code == 0 and seen["rule"] == "best-fbeta"
    result = runner.invoke(app, [*args, "--threshold-rule", "peak"])
    assert result.exit_code == 2 and "--threshold-rule" in result.output


def test_cli_tune_tunes_the_bundled_model_without_model(monkeypatch, tmp_path):
    # the README says to re-tune the bundled model on your runs; --model was required
    import cryopick.evaluation.tuning as tuning
    from cryopick.model import bundled_model_dir

    seen = []
    monkeypatch.setattr(tuning, "tune_model", lambda *a, **kw: seen.append(a) or {})
    args = ["tune", "--data", "d", "--out", str(tmp_path / "t"), "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert Path(seen[0][0]) == bundled_model_dir()


def test_missing_bundled_model_is_a_clear_error(monkeypatch, tmp_path):
    import cryopick.model.bundled as bundled_module

    monkeypatch.setattr(bundled_module.resources, "files", lambda _: tmp_path)
    with pytest.raises(InputError, match=r"no bundled model.*--model"):
        bundled_model_dir()


def test_spacing_option_for_mrc_without_voxel_size(
    dark_blob_model, tiny_untrained_model_dir, tmp_path
):
    import mrcfile

    path = tmp_path / "TS_9.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(_volume(spacing_A=5.0, shape=(48, 80, 88)))  # header voxel size stays 0
    cpu = PredictConfig(device="cpu")
    picks = predict(path, config=cpu, spacing_A=5.0, model=dark_blob_model)
    assert _matched(picks[["z", "y", "x"]], tol_A=5.0)
    # the command line: refused without --spacing-A, and the library's picks with it
    out = tmp_path / "picks.csv"
    runner = CliRunner()
    model = str(tiny_untrained_model_dir)
    args = ["predict", str(path), "--model", model, "-o", str(out), "--device", "cpu", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--spacing-A" in result.output
    result = runner.invoke(app, [*args, "--spacing-A", "5"])
    assert result.exit_code == 0, result.output
    _same_picks(read_picks(out), predict(path, tiny_untrained_model_dir, config=cpu, spacing_A=5.0))


def test_predict_reads_the_voxel_spacing_nearest_the_models(tmp_path, dark_blob_model):
    # the CZII portal keeps runs at 4.99 and 10.012 Å; predict read the finest: 8 times the
    # voxels, resampled to the model's 10 Å (here a 5 Å copy without particles: no picks)
    config = tmp_path / "copick.json"
    config.write_text(json.dumps(make_copick_config("t", tmp_path / "overlay", tmp_path / "st")))
    layout = read_copick_config(config)
    write_tomogram(layout, "TS_1", _volume(), 10.0, n_levels=1)
    plain = np.random.default_rng(1).normal(0.0, 0.1, size=(96, 96, 96)).astype(np.float32)
    write_tomogram(layout, "TS_1", plain, 5.0, n_levels=1)
    assert read_tomograms(config)[0].spacing_A == 5.0  # without a model: the finest
    picks = predict(config, config=PredictConfig(device="cpu"), model=dark_blob_model)
    assert _matched(picks, tol_A=10.0)
