"""Picks IO and scoring with a custom particle set (issue 13): names, labels, radii, weights.

The set here has two made-up types whose labels are not in file order ("dumbbell" is 1,
"ring" is 2) and whose radii and weights differ from every CZII type, so a reader, writer
or metric that falls back to the CZII table gets the asserted values wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from cryopick.cli import app
from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet, ParticleSpec
from cryopick.evaluation.metric import (
    fbeta_curve,
    merge_duplicate_truth,
    score_picks,
    tune_thresholds,
)
from cryopick.io.layout import make_copick_config, read_copick_config
from cryopick.io.picks import make_picks, read_picks, read_truth, write_picks
from cryopick.io.picks.copick_config import read_particle_set

RING_R, DUMBBELL_R = 50.0, 70.0
SET = ParticleSet(
    (
        ParticleSpec(name="ring", radius_A=RING_R, weight=1.0, label=2),
        ParticleSpec(name="dumbbell", radius_A=DUMBBELL_R, weight=2.0, label=1, aliases=("db",)),
    )
)
SHAPES = {"TS_1": ((20, 30, 40), 10.0), "TS_2": ((20, 30, 40), 10.0)}
runner = CliRunner()


def _picks() -> pd.DataFrame:
    ring = make_picks("TS_1", "ring", [[10.0, 20.0, 30.0], [100.0, 110.0, 120.0]], [0.9, 0.4])
    dumbbell = make_picks("TS_2", "db", [[50.0, 60.0, 70.0]], 0.7, particles=SET)
    return pd.concat([ring, dumbbell], ignore_index=True)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    cols = ["experiment", "particle_type", "x", "y", "z", "score"]
    return df[cols].sort_values(cols).reset_index(drop=True)


def test_the_set_labels_are_not_file_order():
    assert SET.names == ("dumbbell", "ring")
    assert (SET.label("ring"), SET.label("dumbbell"), SET.total_weight) == (2, 1, 3.0)


def test_csv_keeps_custom_names_and_resolves_aliases_in_the_set(tmp_path):
    path = tmp_path / "picks.csv"
    write_picks(_picks(), path, "csv", particles=SET)
    assert path.read_text().splitlines()[1].startswith("TS_1,ring,30.0,20.0,10.0,0.9")
    pd.testing.assert_frame_equal(_sorted(read_picks(path, particles=SET)), _sorted(_picks()))
    pd.testing.assert_frame_equal(_sorted(read_picks(path)), _sorted(_picks()))  # no set
    path.write_text("experiment,particle_type,x,y,z\nTS_1,DB,1,2,3\nTS_1,Ring ,4,5,6\n")
    assert read_picks(path, particles=SET)["particle_type"].tolist() == ["dumbbell", "ring"]
    assert read_picks(path)["particle_type"].tolist() == ["DB", "Ring"]  # kept, stripped


def test_star_class_numbers_are_the_sets_labels_both_ways(tmp_path):
    import starfile

    path = tmp_path / "picks.star"
    write_picks(_picks(), path, "star", particles=SET, tomogram_shapes=SHAPES)
    first = path.read_text().splitlines()[0]
    assert first.endswith("(1 dumbbell, 2 ring)")
    table = starfile.read(path, always_dict=True)["particles"]
    assert dict(zip(table["rlnTomoName"], table["rlnClassNumber"], strict=True)) == {
        "TS_1": 2,
        "TS_2": 1,
    }
    back = read_picks(path, tomogram_shapes=SHAPES, particles=SET)
    pd.testing.assert_frame_equal(_sorted(back), _sorted(_picks()), atol=1e-5)
    # the default (CZII) labels would read 2 as beta-amylase: refused, naming both sets
    with pytest.raises(InputError, match=r"labels are 1 dumbbell, 2 ring, not those of"):
        read_picks(path, tomogram_shapes=SHAPES)
    with pytest.raises(InputError, match=r"type\(s\) dumbbell, ring are not in it"):
        write_picks(_picks(), tmp_path / "czii.star", "star", tomogram_shapes=SHAPES)


def test_star_without_marker_reads_labels_in_the_set_given(tmp_path):
    path = tmp_path / "old.star"
    write_picks(_picks(), path, "star", particles=SET, tomogram_shapes=SHAPES)
    path.write_text("\n".join(path.read_text().splitlines()[1:]) + "\n")  # no marker line
    back = read_picks(path, tomogram_shapes=SHAPES, particles=SET)
    assert sorted(back["particle_type"]) == ["dumbbell", "ring", "ring"]


def _project(tmp_path: Path, particles: ParticleSet | None) -> Path:
    config = tmp_path / "copick.json"
    cfg = make_copick_config("p", tmp_path / "overlay", particles=particles)
    config.write_text(json.dumps(cfg, indent=2))
    return config


def test_copick_write_declares_the_types_and_reads_back_their_names(tmp_path):
    config = _project(tmp_path, None)  # a CZII project: ring and dumbbell get declared
    write_picks(_picks(), config, "copick", particles=SET, user_id="cryopick", session_id="1")
    objects = {o["name"]: o for o in json.loads(config.read_text())["pickable_objects"]}
    assert objects["ring"]["radius"] == RING_R and objects["dumbbell"]["radius"] == DUMBBELL_R
    assert objects["dumbbell"]["metadata"]["cryopick"] == {"weight": 2.0, "aliases": ["db"]}
    picks_dir = tmp_path / "overlay" / "ExperimentRuns" / "TS_1" / "Picks"
    assert sorted(p.name for p in picks_dir.iterdir()) == [
        "cryopick_1_dumbbell.json",
        "cryopick_1_ring.json",
    ]
    ring = json.loads((picks_dir / "cryopick_1_ring.json").read_text())
    assert ring["pickable_object_name"] == "ring" and len(ring["points"]) == 2
    back = read_picks(config)  # the project's declared set gives the names
    pd.testing.assert_frame_equal(_sorted(back), _sorted(_picks()))
    declared = read_particle_set(read_copick_config(config))
    assert declared is not None and declared.weight("dumbbell") == 2.0


def test_copick_project_of_the_set_and_objects_outside_it(tmp_path, caplog):
    config = _project(tmp_path, SET)
    write_picks(_picks(), config, "copick", user_id="curation", session_id="0")  # set of config
    other = tmp_path / "overlay" / "ExperimentRuns" / "TS_1" / "Picks" / "curation_0_ribosome.json"
    other.write_text(json.dumps({"pickable_object_name": "ribosome", "points": []}))
    truth = read_truth(config)
    pd.testing.assert_frame_equal(_sorted(truth), _sorted(_picks()))
    assert "skipping picks of 'ribosome': not a type of the particle set (dumbbell, ring)" in (
        caplog.text
    )
    assert json.loads(config.read_text())["pickable_objects"][0]["name"] == "dumbbell"
    # custom names, no set given and none declared (a new overlay folder): refused
    with pytest.raises(InputError, match=r"dumbbell, ring \(not CZII types\) need their"):
        write_picks(_picks(), tmp_path / "new", "copick", user_id="u", session_id="0")
    assert not (tmp_path / "new").exists()


def test_kaggle_format_refuses_a_custom_set_naming_its_types(tmp_path):
    path = tmp_path / "submission.csv"
    with pytest.raises(InputError) as err:
        write_picks(_picks(), path, "kaggle", particles=SET)
    assert "\n" not in str(err.value)
    assert "CZII challenge's six types, not for dumbbell, ring" in str(err.value)
    with pytest.raises(InputError, match=r"not for dumbbell, ring: write --format csv"):
        write_picks(_picks(), path, "kaggle")  # custom names without a set: refused too
    assert not path.exists()


def test_score_of_a_hand_computed_case_uses_the_sets_radii_and_weights():
    truth = pd.concat(
        [
            make_picks("A", "ring", [[0.0, 0.0, 0.0], [0.0, 0.0, 1000.0]]),
            make_picks("A", "dumbbell", [[0.0, 1000.0, 0.0]]),
        ],
        ignore_index=True,
    )
    picks = pd.concat(
        [
            make_picks("A", "ring", [[0.0, 0.0, 10.0]]),  # TP; the other ring is missed
            make_picks("A", "dumbbell", [[30.0, 1000.0, 0.0]]),  # TP: 30 Å <= 35 Å
            make_picks("A", "dumbbell", [[500.0, 500.0, 500.0]]),  # FP
        ],
        ignore_index=True,
    )
    result = score_picks(truth, picks, particles=SET)
    rows = result.per_class.set_index("particle_type")
    assert list(rows.index) == ["dumbbell", "ring"]
    assert rows.loc["ring", ["tp", "fp", "fn"]].tolist() == [1, 0, 1]
    assert rows.loc["dumbbell", ["tp", "fp", "fn"]].tolist() == [1, 1, 0]
    f_ring = 17 * 1.0 * 0.5 / (16 * 1.0 + 0.5)  # P 1, R 1/2
    f_dumbbell = 17 * 0.5 * 1.0 / (16 * 0.5 + 1.0)  # P 1/2, R 1
    assert rows.loc["ring", "fbeta"] == pytest.approx(f_ring)
    assert result.score == pytest.approx((1 * f_ring + 2 * f_dumbbell) / 3)


@pytest.mark.parametrize(("name", "radius"), [("ring", RING_R), ("dumbbell", DUMBBELL_R)])
def test_a_pick_matches_within_half_the_sets_radius(name, radius):
    truth = make_picks("A", name, [[0.0, 0.0, 0.0]])
    for fraction, tp in ((0.49, 1), (0.51, 0)):
        pick = make_picks("A", name, [[0.0, fraction * radius, 0.0]], 0.5)
        rows = score_picks(truth, pick, particles=SET).per_class.set_index("particle_type")
        assert rows.loc[name, "tp"] == tp
        curve = fbeta_curve(truth, pick, name, particles=SET)
        assert curve.recall.tolist() == [float(tp)]


def test_duplicate_truth_is_merged_within_half_the_sets_radius():
    truth = pd.concat(
        [
            make_picks("A", "ring", [[0.0, 0.0, 0.0], [0.0, 0.0, 24.0]]),  # 24 <= 25: one
            make_picks("A", "dumbbell", [[0.0, 0.0, 0.0], [0.0, 0.0, 36.0]]),  # 36 > 35: two
        ],
        ignore_index=True,
    )
    merged = merge_duplicate_truth(truth, particles=SET)
    assert merged["particle_type"].value_counts().to_dict() == {"dumbbell": 2, "ring": 1}


def test_tune_thresholds_returns_the_sets_types():
    truth = make_picks("A", "ring", [[0.0, 0.0, 0.0]])
    cands = make_picks("A", ["ring", "ring"], [[0.0, 0.0, 5.0], [0.0, 500.0, 0.0]], [0.8, 0.3])
    thresholds = tune_thresholds(truth, cands, particles=SET)
    assert set(thresholds) == {"dumbbell", "ring"} and thresholds["dumbbell"] == 1.0
    assert 0.3 < thresholds["ring"] < 0.8  # keeps the 0.8 pick, mid-way to the 0.3 one


def test_unknown_name_is_a_one_line_error_listing_the_set():
    truth = make_picks("A", "ring", [[0.0, 0.0, 0.0]])
    with pytest.raises(InputError) as err:
        score_picks(truth, make_picks("A", "proteasome", [[0.0, 0.0, 0.0]]), particles=SET)
    assert str(err.value) == "unknown particle type 'proteasome'; known types: dumbbell, ring"
    with pytest.raises(InputError, match="known types: apo-ferritin"):
        score_picks(truth, truth)  # the default set is the CZII six


def _write_particles_file(tmp_path: Path) -> Path:
    for name in ("ring", "dumbbell"):
        (tmp_path / f"{name}.mrc").write_bytes(b"")  # not read by evaluate
    entries = [
        {"name": "ring", "map": "ring.mrc", "radius_A": RING_R, "weight": 1, "label": 2},
        {"name": "dumbbell", "map": "dumbbell.mrc", "radius_A": DUMBBELL_R, "weight": 2},
    ]
    path = tmp_path / "particles.json"
    path.write_text(json.dumps({"particles": entries}))
    return path


def _hand_case(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    truth = make_picks("TS_1", ["ring", "ring", "dumbbell"], [[0, 0, 0], [0, 0, 900], [0, 900, 0]])
    picks = make_picks("TS_1", ["ring", "dumbbell"], [[0, 0, 20], [0, 900, 40]])  # 40 > 35
    picks_csv = tmp_path / "picks.csv"
    write_picks(picks, picks_csv)
    return truth, picks_csv


EXPECTED = (1 * (17 * 0.5 / 16.5) + 2 * 0.0) / 3  # ring P 1, R 1/2; dumbbell missed


def test_evaluate_cli_with_a_particles_file(tmp_path):
    truth, picks_csv = _hand_case(tmp_path)
    truth_csv = tmp_path / "truth.csv"
    write_picks(truth, truth_csv)
    particles = _write_particles_file(tmp_path)
    args = ["evaluate", "--truth", str(truth_csv), "--picks", str(picks_csv)]
    result = runner.invoke(app, [*args, "--particles", str(particles), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["score"] == pytest.approx(EXPECTED)
    assert list(data["per_class"]) == ["dumbbell", "ring"]  # label order: ring is 2
    table = runner.invoke(app, [*args, "--particles", str(particles)])
    assert "dumbbell" in table.output and "ribosome" not in table.output
    # without the set the truth's names are not CZII types: one line listing those
    plain = runner.invoke(app, args)
    assert plain.exit_code == 2
    assert plain.output.strip().count("\n") == 0
    assert "truth.csv: unknown particle type 'ring'; known types: apo-ferritin" in plain.output


def test_evaluate_cli_takes_the_set_from_the_truth_projects_config(tmp_path):
    truth, picks_csv = _hand_case(tmp_path)
    config = _project(tmp_path, SET)
    write_picks(truth, config, "copick", particles=SET, user_id="curation", session_id="0")
    args = ["evaluate", "--truth", str(config), "--picks", str(picks_csv), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["score"] == pytest.approx(EXPECTED)
    assert data["per_class"]["dumbbell"]["weight"] == 2.0
    assert (data["per_class"]["ring"]["tp"], data["per_class"]["ring"]["fn"]) == (1, 1)
    bad = tmp_path / "bad.csv"
    bad.write_text("experiment,particle_type,x,y,z\nTS_1,proteasome,1,2,3\n")
    wrong = runner.invoke(app, ["evaluate", "--truth", str(config), "--picks", str(bad)])
    assert wrong.exit_code == 2
    assert wrong.output.strip() == (
        f"error: {bad}: unknown particle type 'proteasome'; known types: dumbbell, ring"
    )


class RingDetector(nn.Module):
    """Pointwise 'network' of the set: dark voxels -> ring (channel 2), else background."""

    output_stride = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros((x.shape[0], SET.n_classes, *x.shape[2:]), dtype=x.dtype)
        logits[:, SET.label("ring")] = -2.0 * x[:, 0] - 8.0  # p > 0.5 below -4 sigma
        return logits


def test_tune_model_uses_the_cards_set(tmp_path):
    from cryopick.evaluation.tuning import tune_model
    from cryopick.inference.pipeline import PredictConfig
    from cryopick.io.tomograms import write_tomogram
    from cryopick.model import ModelCard, ModelConfig, build_model, save_model

    centres = np.array([[101.0, 118.0, 121.0], [142.0, 282.5, 305.0]])
    shape = (24, 40, 44)
    grids = np.meshgrid(*(np.arange(n) * 10.0 for n in shape), indexing="ij")
    config = _project(tmp_path, None)  # a CZII config: the truth write declares the set
    layout = read_copick_config(config)
    for seed, run in enumerate(["TS_1", "TS_2"]):
        volume = np.random.default_rng(seed).normal(0.0, 0.1, size=shape)
        for c in centres:
            volume -= np.exp(-sum((g - v) ** 2 for g, v in zip(grids, c, strict=True)) / 800.0)
        write_tomogram(layout, run, volume.astype(np.float32), 10.0, n_levels=1)
    truth = pd.concat([make_picks(r, "ring", centres) for r in ("TS_1", "TS_2")])
    write_picks(truth, config, "copick", particles=SET, user_id="curation", session_id="0")
    arch = ModelConfig(widths=(4, 8), output_stride=2, n_classes=SET.n_classes)
    card = ModelCard(
        architecture=arch, patch_size=(16, 16, 16), spacing_A=10.0, particles=SET.to_records()
    )
    model_dir = save_model(tmp_path / "model", build_model(arch), card)
    out = tmp_path / "tuned"
    cpu = PredictConfig(device="cpu")
    thresholds = tune_model(model_dir, config, out, cpu, model=(RingDetector(), card))
    assert set(thresholds) == {"dumbbell", "ring"}
    tuned = json.loads((out / "model.json").read_text())
    validation = {m["particle_type"]: m for m in tuned["validation"]}
    assert list(validation) == ["dumbbell", "ring"]
    assert (validation["ring"]["tp"], validation["ring"]["fn"]) == (4, 0)  # 2 runs x 2 rings
    assert validation["dumbbell"]["fbeta"] == 0.0 and validation["ring"]["fbeta"] > 0.9
    # the set's weights: ring 1 of a total 3 (the CZII six would divide by 7)
    assert tuned["score"] == pytest.approx(validation["ring"]["fbeta"] / 3)
