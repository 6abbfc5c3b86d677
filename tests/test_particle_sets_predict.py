"""Predict and report with a model's own particle set (issue 13).

A custom two-type set whose labels, names, radii and colours all differ from the CZII types
on the same channels: channel 1 is ``ring`` (50 Å; CZII: apo-ferritin, 60 Å) and channel 2
``dumbbell`` (150 Å; CZII: beta-amylase, 65 Å). Every assertion below fails for an
implementation that takes names, radii or colours from the CZII table.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from cryopick.cli import app
from cryopick.core.coords import angstrom_to_voxels, voxels_to_angstrom
from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet, ParticleSpec
from cryopick.inference.peaks import find_peaks, resolve_cross_class
from cryopick.inference.picking import PickSettings, pick_particles
from cryopick.inference.pipeline import PredictConfig, count_picks_per_run, predict
from cryopick.io.layout import make_copick_config, read_copick_config
from cryopick.io.mrc import write_mrc
from cryopick.io.picks import read_picks, write_picks
from cryopick.io.tomograms import Tomogram, write_tomogram
from cryopick.model import ModelCard, ModelConfig, build_model, save_model
from cryopick.report import ReportConfig, build_report, choose_report_particles

# given out of label order: dumbbell claims label 2, ring gets the free label 1
SET = ParticleSet(
    (
        ParticleSpec(name="dumbbell", radius_A=150.0, label=2, colour="#abcdef"),
        ParticleSpec(name="ring", radius_A=50.0, colour="#123456", aliases=("torus",)),
    )
)
SPACING_A = 10.0
SHAPE = (40, 64, 64)
GRID = np.indices(SHAPE, dtype=np.float64)


def _card(**kw) -> ModelCard:
    arch = ModelConfig(widths=(4, 8), n_classes=SET.n_classes)
    return ModelCard(
        architecture=arch,
        patch_size=(16, 16, 16),
        spacing_A=SPACING_A,
        particles=SET.to_records(),
        **kw,
    )


def _gaussian(centre_vox, sigma_vox: float, height: float) -> np.ndarray:
    d2 = sum((g - c) ** 2 for g, c in zip(GRID, centre_vox, strict=True))
    return height * np.exp(-d2 / (2 * sigma_vox**2))


def _maps(*blobs) -> np.ndarray:
    """Background + one channel per type of SET, with (label, field) blobs added."""
    probs = np.zeros((SET.n_classes, *SHAPE))
    for label, field in blobs:
        probs[label] += field
    probs[0] = np.clip(1 - probs[1:].sum(0), 0, 1)
    return probs.astype(np.float16)


def _sigma_for(name: str) -> float:
    """Gaussian sigma (voxels) whose half maximum is the expected blob (half the radius)."""
    return 0.5 * SET.radius_A(name) / SPACING_A / 1.1774


# ---------------------------------------------------------------- peaks


def test_picks_take_names_and_blob_sizes_from_the_set():
    ring_vox, dumbbell_vox = np.array([12.3, 20.7, 15.4]), np.array([22.6, 44.2, 40.5])
    probs = _maps(
        (1, _gaussian(ring_vox, _sigma_for("ring"), 0.8)),
        (2, _gaussian(dumbbell_vox, _sigma_for("dumbbell"), 0.7)),
    )
    settings = PickSettings.for_model(_card(), PredictConfig())
    picks = pick_particles(probs, settings, spacing_A=SPACING_A, stride=1, experiment="TS_1")
    assert sorted(picks["particle_type"]) == ["dumbbell", "ring"]
    for name, centre in (("ring", ring_vox), ("dumbbell", dumbbell_vox)):
        found = picks.loc[picks["particle_type"] == name, ["z", "y", "x"]].to_numpy()[0]
        np.testing.assert_allclose(found, voxels_to_angstrom(centre, SPACING_A), atol=2.0)
    # the CZII table reads channel 1 as apo-ferritin and expects a 3.25-voxel blob on
    # channel 2 (beta-amylase), so it names the ring wrongly and rejects the dumbbell
    czii = find_peaks(probs, SPACING_A, "TS_1")
    assert list(czii["particle_type"]) == ["apo-ferritin"]


def test_suppression_distance_follows_the_sets_radius():
    # two maxima 6 voxels (60 Å) apart on each channel
    pair = [(20.0, 32.0, 26.0), (20.0, 32.0, 32.0)]
    narrow = [_gaussian(pair[0], 1.2, 0.9), _gaussian(pair[1], 1.2, 0.8)]
    options = {"blob_ratio_range": None, "particles": SET}
    # dumbbell: 60 Å < 0.6 * 150 Å: one particle, the stronger maximum
    dumbbell = find_peaks(_maps((2, sum(narrow))), SPACING_A, "r", **options)
    assert len(dumbbell) == 1 and dumbbell["score"].iloc[0] == pytest.approx(0.9, abs=0.01)
    assert angstrom_to_voxels(dumbbell[["z", "y", "x"]].to_numpy(), SPACING_A)[0] == (
        pytest.approx(pair[0], abs=0.1)
    )
    # CZII's beta-amylase on that channel (65 Å) suppresses within 39 Å only: two picks
    assert len(find_peaks(_maps((2, sum(narrow))), SPACING_A, "r", blob_ratio_range=None)) == 2
    # ring: 60 Å > 0.6 * 50 Å: two particles
    ring = find_peaks(_maps((1, sum(narrow))), SPACING_A, "r", **options)
    assert list(ring["particle_type"]) == ["ring", "ring"]


def test_a_map_with_more_channels_than_the_set_is_refused():
    with pytest.raises(ValueError, match=r"4 channels.*3 classes"):
        find_peaks(np.zeros((4, 8, 8, 8), np.float16), SPACING_A, "r", particles=SET)


def test_cross_class_resolution_uses_the_sets_radii():
    def picks(dx_A: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "experiment": ["r", "r"],
                "particle_type": ["ring", "dumbbell"],
                "x": [100.0, 100.0 + dx_A],
                "y": [100.0, 100.0],
                "z": [100.0, 100.0],
                "score": [0.9, 0.6],
            }
        )

    # the limit is 0.5 * min(50, 150) Å = 25 Å
    kept = resolve_cross_class(picks(20.0), 0.5, particles=SET)
    assert list(kept["particle_type"]) == ["ring"]
    assert len(resolve_cross_class(picks(30.0), 0.5, particles=SET)) == 2


def test_particle_sets_and_pick_settings_pickle():
    back = pickle.loads(pickle.dumps(SET))  # Dask and SLURM workers get pickled arguments
    assert back == SET and back.resolve("Torus") == "ring" and back.label("dumbbell") == 2
    settings = PickSettings.for_model(_card(), PredictConfig())
    assert pickle.loads(pickle.dumps(settings)).particles == SET


# ---------------------------------------------------------------- thresholds


def test_threshold_overrides_resolve_against_the_models_set():
    card = _card(thresholds={"ring": 0.3, "dumbbell": 0.4})
    config = PredictConfig(thresholds={"torus": 0.2})  # an alias; not resolved yet
    assert config.thresholds == {"torus": 0.2}
    assert dict(PickSettings.for_model(card, config).thresholds) == {"ring": 0.2, "dumbbell": 0.4}
    with pytest.raises(InputError) as err:
        PickSettings.for_model(card, PredictConfig(thresholds={"ribosome": 0.3}))
    message = str(err.value)
    assert "\n" not in message and "'ribosome'" in message and "ring, dumbbell" in message


def test_cli_threshold_of_an_unknown_type_is_a_one_line_error(tmp_path):
    model_dir = save_model(tmp_path / "m", build_model(_card().architecture), _card())
    write_mrc(tmp_path / "TS_1.mrc", np.zeros((16, 16, 16), np.float32), SPACING_A)
    out = tmp_path / "out.csv"
    args = ["predict", str(tmp_path / "TS_1.mrc"), "--model", str(model_dir), "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "--threshold", "ribosome=0.3", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "'ribosome'" in lines[0] and "ring, dumbbell" in lines[0]
    assert not out.exists()
    result = CliRunner().invoke(app, [*args, "--threshold", "ring"])
    assert result.exit_code == 2 and "NAME=VALUE" in result.output


# ---------------------------------------------------------------- predict through files

CENTRES_A = np.array([[101.0, 118.0, 121.0], [142.0, 282.5, 305.0]])  # (z, y, x)


class DarkRingDetector(nn.Module):
    """Pointwise 'network': dark voxels (protein) -> channel 1 (ring), else background."""

    output_stride = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros((x.shape[0], SET.n_classes, *x.shape[2:]), dtype=x.dtype)
        logits[:, 1] = -2.0 * x[:, 0] - 8.0
        logits[:, 2] = -10.0  # never a dumbbell
        return logits


def _volume(shape=(24, 40, 44), seed: int = 0) -> np.ndarray:
    grids = np.meshgrid(
        *(voxels_to_angstrom(np.arange(n), SPACING_A) for n in shape), indexing="ij"
    )
    volume = np.random.default_rng(seed).normal(0.0, 0.1, size=shape)
    for centre in CENTRES_A:
        d2 = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True))
        volume -= np.exp(-d2 / (2 * 20.0**2))
    return volume.astype(np.float32)


@pytest.fixture
def mrc_input(tmp_path) -> Path:
    write_mrc(tmp_path / "in" / "TS_1.mrc", _volume(), SPACING_A)
    return tmp_path / "in"


def test_predict_writes_the_models_names(mrc_input, tmp_path):
    model = (DarkRingDetector(), _card())
    cpu = PredictConfig(device="cpu")
    picks = predict(mrc_input, output=tmp_path / "p.csv", config=cpu, model=model)
    assert set(picks["particle_type"]) == {"ring"}
    for centre in CENTRES_A:
        assert np.linalg.norm(picks[["z", "y", "x"]].to_numpy() - centre, axis=1).min() < 3.0
    back = read_picks(tmp_path / "p.csv", particles=SET)
    assert sorted(back["particle_type"]) == ["ring", "ring"]
    counts = count_picks_per_run(picks, particles=SET)
    assert list(counts.columns) == ["ring", "dumbbell"]
    assert counts.loc["total"].tolist() == [2, 0]
    # without the set (the console's table today): the picked types, not the CZII six
    assert list(count_picks_per_run(picks).columns) == ["ring"]
    # STAR class numbers are the set's labels
    predict(mrc_input, output=tmp_path / "p.star", format="star", config=cpu, model=model)
    shapes = {"TS_1": ((24, 40, 44), SPACING_A)}
    star = read_picks(tmp_path / "p.star", tomogram_shapes=shapes, particles=SET)
    assert sorted(star["particle_type"]) == ["ring", "ring"]


def test_kaggle_format_is_refused_for_a_custom_set_before_any_work(mrc_input, tmp_path):
    out = tmp_path / "sub.csv"
    with pytest.raises(InputError, match=r"kaggle.*ring, dumbbell") as err:
        predict(
            mrc_input,
            output=out,
            format="kaggle",
            config=PredictConfig(device="cpu"),
            model=(DarkRingDetector(), _card()),
        )
    assert "\n" not in str(err.value) and not out.exists()


def test_copick_output_declares_the_models_objects(tmp_path):
    config = tmp_path / "copick.json"
    config.write_text(json.dumps(make_copick_config("t", tmp_path / "overlay")))  # CZII objects
    layout = read_copick_config(config)
    write_tomogram(layout, "TS_1", _volume(), SPACING_A, n_levels=1)
    cpu = PredictConfig(device="cpu")
    predict(config, format="copick", config=cpu, model=(DarkRingDetector(), _card()))
    objects = {o["name"]: o for o in json.loads(config.read_text())["pickable_objects"]}
    # the type with picks is declared with the model's radius (as CZII types are: no file
    # and no declaration for a type without picks in a project that does not declare it)
    assert objects["ring"]["radius"] == 50.0 and "dumbbell" not in objects
    ours = layout.overlay_root / "ExperimentRuns/TS_1/Picks/cryopick_0_ring.json"
    assert len(json.loads(ours.read_text())["points"]) == 2
    assert sorted(read_picks(config, user_id="cryopick")["particle_type"]) == ["ring", "ring"]


def test_resumable_tasks_give_the_in_process_picks_of_a_custom_model(mrc_input, tmp_path):
    from cryopick.scale.predict import predict_runs

    torch.manual_seed(0)
    card = _card(thresholds={"ring": 0.0, "dumbbell": 0.0})
    model_dir = save_model(tmp_path / "m", build_model(card.architecture), card)
    cfg = PredictConfig(device="cpu", blob_ratio_range=None)
    predict_runs(mrc_input, model_dir, tmp_path / "a.csv", config=cfg)
    tasks = predict_runs(mrc_input, model_dir, tmp_path / "b.csv", config=cfg, shard="0/1")
    assert tasks.parts_dir is not None and tasks.complete
    here = read_picks(tmp_path / "a.csv", particles=SET)
    assert set(here["particle_type"]) == {"ring", "dumbbell"}
    pd.testing.assert_frame_equal(here, read_picks(tmp_path / "b.csv", particles=SET))
    with pytest.raises(InputError, match="kaggle"):
        predict_runs(mrc_input, model_dir, tmp_path / "k.csv", "kaggle", cfg, shard="0/1")
    assert not (tmp_path / "k.csv.parts").exists()


# ---------------------------------------------------------------- report


def _report_inputs() -> tuple[list[Tomogram], pd.DataFrame, pd.DataFrame]:
    """A tomogram, truth (one of each type) and picks: the dumbbell pick 60 Å off."""
    tomo = Tomogram(
        name="TS_1", data=np.zeros((20, 32, 32), np.float32), spacing_A=SPACING_A, source=Path("t")
    )
    cols = ["experiment", "particle_type", "x", "y", "z", "score"]
    truth = pd.DataFrame(
        [
            ["TS_1", "ring", 100.0, 100.0, 100.0, np.nan],
            ["TS_1", "dumbbell", 200, 200, 100, np.nan],
        ],
        columns=cols,
    )
    # within 0.5 * 150 Å of the dumbbell: a match (CZII's beta-amylase: 32.5 Å, a miss)
    picks = pd.DataFrame([["TS_1", "dumbbell", 260.0, 200.0, 100.0, 0.8]], columns=cols)
    return [tomo], picks, truth


def test_report_shows_the_sets_types_colours_and_match_distance():
    tomograms, picks, truth = _report_inputs()
    config = ReportConfig(panel_width_px=64, n_xy_slices=1)
    page, figures = build_report(tomograms, picks, truth, config=config, particles=SET)
    assert 'style="background:#123456"' in page and 'style="background:#abcdef"' in page
    rows = [r for r in page.split("<tr") if 'data-particle="' in r]
    assert [r.split('data-particle="')[1].split('"')[0] for r in rows][:2] == ["ring", "dumbbell"]
    summary = page.split('id="cryopick-summary">')[1].split("</script>")[0]
    per_class = {r["particle_type"]: r for r in json.loads(summary)["per_class"]}
    assert (per_class["dumbbell"]["tp"], per_class["ring"]["fn"]) == (1, 1)
    assert "class_dumbbell.png" in figures
    # with a card and no set, the card's set is shown
    card_page, _ = build_report(tomograms, picks, truth, card=_card(), config=config)
    assert 'style="background:#abcdef"' in card_page


def test_report_set_comes_from_card_then_picks_project_then_file(tmp_path):
    config = tmp_path / "copick.json"
    config.write_text(json.dumps(make_copick_config("t", tmp_path / "o", particles=SET)))
    csv = tmp_path / "p.csv"
    csv.write_text("experiment,particle_type,x,y,z\n")
    other = ParticleSet((ParticleSpec(name="blob", radius_A=30.0),))
    assert choose_report_particles(_card(), config, other) == SET
    from_project = choose_report_particles(None, config, other)
    assert from_project.names == ("ring", "dumbbell") and from_project.colour("ring") == "#123456"
    assert choose_report_particles(None, csv, other) == other
    assert choose_report_particles(None, csv).is_czii


def test_report_cli_reads_a_particles_file(tmp_path):
    tomograms, picks, _ = _report_inputs()
    write_mrc(tmp_path / "TS_1.mrc", tomograms[0].data, SPACING_A)
    write_picks(picks, tmp_path / "p.csv", particles=SET)
    write_mrc(tmp_path / "map.mrc", np.zeros((8, 8, 8), np.float32), SPACING_A)
    entries = [
        {"name": "ring", "map": "map.mrc", "radius_A": 50, "colour": "#123456"},
        {"name": "dumbbell", "map": "map.mrc", "radius_A": 150, "colour": "#abcdef"},
    ]
    particles = tmp_path / "particles.json"
    particles.write_text(json.dumps({"particles": entries}))
    args = ["report", str(tmp_path / "TS_1.mrc"), "--picks", str(tmp_path / "p.csv")]
    args += ["--out", str(tmp_path / "r.html"), "--particles", str(particles), "--slices", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    assert 'data-particle="dumbbell"' in page and 'style="background:#abcdef"' in page
    del entries[1]["radius_A"]
    particles.write_text(json.dumps({"particles": entries}))
    result = CliRunner().invoke(app, args)
    # a missing radius is measured from the map; this one is empty: one line, exit 2
    assert result.exit_code == 2 and "empty map" in result.output
    assert result.output.strip().count("\n") == 0
