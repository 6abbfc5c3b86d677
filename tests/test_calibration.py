"""Calibrated pick scores: the isotonic fit, ECE, min-precision selection, the card, predict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from cryopick.cli import app
from cryopick.core.coords import voxels_to_angstrom
from cryopick.core.errors import InputError
from cryopick.core.particles import default_particle_set
from cryopick.evaluation.calibration import (
    apply_calibration,
    expected_calibration_error,
    expected_counts,
    fit_calibration,
    fit_score_calibration,
    mark_correct,
    reliability_table,
    select_for_min_precision,
)
from cryopick.evaluation.tuning import calibrate_model, tune_model
from cryopick.inference.pipeline import PredictConfig, predict, predict_tomogram
from cryopick.io.layout import make_copick_config, read_copick_config
from cryopick.io.picks import make_picks, write_picks
from cryopick.io.tomograms import Tomogram, write_tomogram
from cryopick.model import (
    ModelCard,
    ModelConfig,
    ScoreCalibration,
    build_model,
    read_model_card,
    save_model,
)
from cryopick.report.html import render_summary_table
from cryopick.report.summary import marked_thresholds, summarise_picks_per_class

from shared_settings import DarkBlobDetector

CZII = default_particle_set()
APO = CZII.get("apo-ferritin")
SHAPE = (24, 40, 44)
CENTRES_A = np.array([[101.0, 118.0, 121.0], [142.0, 282.5, 305.0]])
# the dark-blob detector's peaks are ~0.55 (raw); this map sends 0.55 to 0.3
HALF = ScoreCalibration(raw_scores=[0.5, 0.6], probabilities=[0.2, 0.4])


# ---------------------------------------------------------------- fitting


def test_isotonic_fit_recovers_a_known_probability_curve():
    rng = np.random.default_rng(0)
    raw = np.round(rng.uniform(0.0, 1.0, 20_000), 3)  # many tied scores, as float16 peaks
    correct = rng.uniform(size=raw.size) < raw**2
    fitted = fit_score_calibration(raw, correct)
    assert fitted.method == "isotonic" and fitted.n_candidates == 20_000
    assert 2 <= len(fitted.raw_scores) <= 64
    assert np.all(np.diff(fitted.probabilities) >= 0)
    grid = np.linspace(0.05, 0.95, 19)
    assert np.abs(fitted.apply(grid) - grid**2).max() < 0.08
    # on fresh candidates from the same curve it is calibrated; the raw score is not
    test = rng.uniform(0.0, 1.0, 50_000)
    right = rng.uniform(size=test.size) < test**2
    assert expected_calibration_error(fitted.apply(test), right) < 0.02
    assert expected_calibration_error(test, right) > 0.15


def test_ties_are_pooled_and_a_lone_top_candidate_is_not_made_certain():
    raw = np.full(50, 1.0)
    correct = np.arange(50) < 45  # 90 % of the picks at 1.0 are right
    tied = fit_score_calibration(raw, correct)
    assert tied.raw_scores == [1.0] and tied.probabilities == pytest.approx([0.9])
    # 40 wrong candidates at 0.3, one right at 0.99: its own block would say 1.0
    raw = np.append(np.full(40, 0.3), 0.99)
    fitted = fit_score_calibration(raw, np.arange(41) == 40)
    assert fitted.apply(0.99) == pytest.approx(1 / 41)
    # two right at the top of 33: the top group of 10 says 0.2, the rest 0
    raw = np.append(np.linspace(0.02, 0.5, 31), [0.9, 0.95])
    fitted = fit_score_calibration(raw, np.arange(33) >= 31)
    assert fitted.apply([0.95, 0.9, 0.45, 0.1]) == pytest.approx([0.2, 0.2, 0.2, 0.0])


def _truth_and_candidates() -> tuple[pd.DataFrame, pd.DataFrame]:
    truth = make_picks("TS_1", "apo-ferritin", [[100.0, 100.0, 100.0], [300.0, 300.0, 300.0]])
    candidates = pd.concat(
        [
            # on the first particle: the strongest is right, a second pick on it is not
            make_picks("TS_1", "apo-ferritin", [[100.0, 100.0, 110.0]], score=0.9),
            make_picks("TS_1", "apo-ferritin", [[105.0, 100.0, 100.0]], score=0.5),
            make_picks("TS_1", "apo-ferritin", [[300.0, 300.0, 340.0]], score=0.8),  # 40 Å off
            make_picks("TS_1", "ribosome", [[300.0, 300.0, 300.0]], score=0.7),  # wrong type
            make_picks("TS_2", "apo-ferritin", [[100.0, 100.0, 100.0]], score=0.9),  # no truth
        ],
        ignore_index=True,
    )
    return truth, candidates


def test_candidates_are_marked_as_the_metric_pairs_them():
    truth, candidates = _truth_and_candidates()
    marked = mark_correct(truth, candidates)
    assert len(marked) == 4  # the run without truth is left out
    assert marked["correct"].tolist() == [True, False, False, False]
    assert APO.radius_A * 0.5 < 40.0  # the 40 Å pick is beyond the match distance


def test_fit_calibration_falls_back_to_the_pooled_map_then_the_raw_score():
    truth, candidates = _truth_and_candidates()
    few = fit_calibration(truth, candidates)
    assert set(few) == set(CZII.names)
    assert all(c.method == "identity" for c in few.values())  # 4 candidates in all
    assert few["apo-ferritin"].n_candidates == 3 and few["ribosome"].n_candidates == 1
    # 40 apo-ferritin candidates, half of them on particles: apo gets its own map,
    # ribosome (1 candidate) the pooled one
    rng = np.random.default_rng(1)
    centres = rng.uniform(0, 2000, size=(40, 3))
    truth = make_picks("TS_1", "apo-ferritin", centres[:20])
    apo = make_picks("TS_1", "apo-ferritin", centres, score=np.linspace(0.9, 0.1, 40))
    calibration = fit_calibration(truth, pd.concat([apo, candidates.iloc[[3]]]))
    assert calibration["apo-ferritin"].method == "isotonic"
    assert calibration["apo-ferritin"].apply([0.85, 0.2]) == pytest.approx([1.0, 0.0])
    assert calibration["ribosome"].method == "pooled"
    assert calibration["ribosome"].n_candidates == 1


# ---------------------------------------------------------------- measuring and using scores


def test_expected_calibration_error_of_a_known_example():
    # bin [0.1, 0.2): score 0.1, 0 of 2 right -> gap 0.1 x 2; bin [0.9, 1]: 0.9, 1 of 2 -> 0.4 x 2
    assert expected_calibration_error([0.1, 0.1, 0.9, 0.9], [0, 0, 1, 0]) == pytest.approx(0.25)
    assert expected_calibration_error([1.0, 0.0, 0.5, 0.5], [1, 0, 1, 0]) == pytest.approx(0.0)
    assert math.isnan(expected_calibration_error([], []))
    table = reliability_table([0.1, 0.1, 0.9, 1.0], [0, 0, 1, 0])
    assert table["count"].tolist() == [0, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    last = table.iloc[-1]
    assert (last["mean_score"], last["fraction_correct"]) == pytest.approx((0.95, 0.5))


def test_min_precision_selection_on_a_hand_made_table():
    picks = pd.concat(
        [
            make_picks("TS_1", "ribosome", np.zeros((4, 3)), score=[0.5, 0.9, 0.2, 0.8]),
            make_picks("TS_1", "thyroglobulin", np.zeros((2, 3)), score=[0.6, 0.95]),
            make_picks("TS_1", "apo-ferritin", np.zeros((2, 3)), score=[0.5, math.nan]),
        ],
        ignore_index=True,
    )
    kept = select_for_min_precision(picks, 0.7)
    # ribosome means, strongest first: 0.9, 0.85, 0.733, 0.6 -> keep 3 (not the 0.2);
    # thyroglobulin 0.95, 0.775 -> both; apo-ferritin 0.5 < 0.7 -> none (NaN never)
    assert kept["score"].tolist() == [0.5, 0.9, 0.8, 0.6, 0.95]
    assert len(select_for_min_precision(picks, 1.0)) == 0
    with pytest.raises(ValueError, match="min_precision"):
        select_for_min_precision(picks, 0.0)
    assert expected_counts(kept) == pytest.approx({"ribosome": 2.2, "thyroglobulin": 1.55})
    counts = expected_counts(kept, CZII)
    assert list(counts) == list(CZII.names) and counts["apo-ferritin"] == 0.0


def test_apply_calibration_maps_only_classes_with_a_map():
    picks = pd.concat(
        [
            make_picks("TS_1", "apo-ferritin", np.zeros((2, 3)), score=[0.55, 0.7]),
            make_picks("TS_1", "ribosome", np.zeros((1, 3)), score=[0.55]),
        ],
        ignore_index=True,
    )
    mapped = apply_calibration(picks, {"apo-ferritin": HALF})
    assert mapped["score"].tolist() == pytest.approx([0.3, 0.4, 0.55])
    assert list(mapped.columns) == list(picks.columns)  # no extra column
    assert picks["score"].tolist() == [0.55, 0.7, 0.55]  # the input is not changed


# ---------------------------------------------------------------- the model card


def _card(**kw) -> ModelCard:
    tiny = ModelConfig(widths=(4, 8), output_stride=2)
    return ModelCard(architecture=tiny, patch_size=(16, 16, 16), spacing_A=10.0, **kw)


def test_card_round_trip_with_calibration_and_old_cards_without(tmp_path):
    card = _card(calibration={"ferritin": HALF}, calibration_tta={"ribosome": HALF})
    assert set(card.calibration) == {"apo-ferritin"}  # aliases resolved
    assert ModelCard.from_json(card.to_json()) == card
    save_model(tmp_path / "m", build_model(card.architecture), card)
    assert read_model_card(tmp_path / "m").calibration["apo-ferritin"] == HALF
    old = json.loads(_card().to_json())
    del old["calibration"], old["calibration_tta"]  # as cards were written before
    assert ModelCard.model_validate(old).calibration == {}


@pytest.mark.parametrize(
    "table",
    [
        {"raw_scores": [0.6, 0.5], "probabilities": [0.2, 0.4]},  # knots not ascending
        {"raw_scores": [0.5, 0.6], "probabilities": [0.2, 1.4]},  # above 1
        {"raw_scores": [0.5, 0.6], "probabilities": [0.4, 0.2]},  # not monotone
        {"raw_scores": [0.5, 0.6], "probabilities": [0.2]},  # lengths differ
        {"raw_scores": [0.5, math.nan], "probabilities": [0.2, 0.3]},
    ],
)
def test_bad_calibration_tables_are_refused(tmp_path, table):
    with pytest.raises(ValidationError):
        ScoreCalibration.model_validate(table)
    card = json.loads(_card().to_json())
    card["calibration"] = {"apo-ferritin": table}
    save_model(tmp_path / "m", build_model(_card().architecture), _card())
    (tmp_path / "m" / "model.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="not a valid model card"):
        read_model_card(tmp_path / "m")


def test_calibration_of_an_unknown_type_is_refused():
    with pytest.raises(ValidationError, match="calibration"):
        _card(calibration={"virus": HALF})


# ---------------------------------------------------------------- predict


def _volume(seed: int = 0) -> np.ndarray:
    grids = np.meshgrid(*(voxels_to_angstrom(np.arange(n), 10.0) for n in SHAPE), indexing="ij")
    volume = np.random.default_rng(seed).normal(0.0, 0.1, size=SHAPE)
    for centre in CENTRES_A:
        volume -= np.exp(
            -sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) / (2 * 20.0**2)
        )
    return volume.astype(np.float32)


def _tomogram() -> Tomogram:
    return Tomogram(name="TS_1", data=_volume(), spacing_A=10.0, source=Path("TS_1.mrc"))


def test_predict_maps_scores_with_the_cards_calibration_and_keeps_the_set():
    detector, tomogram = DarkBlobDetector(), _tomogram()
    raw = predict_tomogram(tomogram, detector, _card(), device="cpu")  # no calibration: raw
    assert len(raw) == 2 and raw["score"].between(0.5, 0.6).all()
    card = _card(calibration={"apo-ferritin": HALF})
    calibrated = predict_tomogram(tomogram, detector, card, device="cpu")
    cols = ["experiment", "particle_type", "x", "y", "z"]
    pd.testing.assert_frame_equal(calibrated[cols], raw[cols])
    assert calibrated["score"].to_numpy() == pytest.approx(HALF.apply(raw["score"]))
    # thresholds stay raw: 0.9999 keeps nothing although calibrated scores are ~0.3
    strict = _card(thresholds={"apo-ferritin": 0.9999}, calibration={"apo-ferritin": HALF})
    assert predict_tomogram(tomogram, detector, strict, device="cpu").empty
    # --tta falls back to the plain calibration when the card has no TTA one
    tta = predict_tomogram(tomogram, detector, card, device="cpu", tta=True)
    assert tta["score"].between(0.2, 0.4).all()


def test_min_precision_replaces_the_thresholds_and_needs_a_calibration():
    detector, tomogram = DarkBlobDetector(), _tomogram()
    card = _card(thresholds={"apo-ferritin": 0.9999}, calibration={"apo-ferritin": HALF})
    kept = predict_tomogram(tomogram, detector, card, device="cpu", min_precision=0.25)
    assert len(kept) == 2 and kept["score"].between(0.25, 0.4).all()
    assert predict_tomogram(tomogram, detector, card, device="cpu", min_precision=0.5).empty
    with pytest.raises(InputError, match="min-precision needs calibrated scores"):
        predict_tomogram(tomogram, detector, _card(), device="cpu", min_precision=0.5)
    with pytest.raises(ValidationError):
        PredictConfig(min_precision=0.0)


def test_cli_min_precision_without_calibration_is_a_one_line_error(tmp_path):
    model = save_model(tmp_path / "m", build_model(_card().architecture), _card())
    (tmp_path / "in").mkdir()
    from cryopick.io.mrc import write_mrc

    write_mrc(tmp_path / "in" / "TS_1.mrc", _volume(), 10.0)
    args = ["predict", str(tmp_path / "in"), "--model", str(model), "-o", str(tmp_path / "p.csv")]
    result = CliRunner().invoke(app, [*args, "--min-precision", "0.8", "-q"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "min-precision needs calibrated scores" in lines[0]
    assert not (tmp_path / "p.csv").exists()
    result = CliRunner().invoke(app, [*args, "--min-precision", "1.5", "-q"])
    assert result.exit_code == 2 and "min_precision" in result.output


# ---------------------------------------------------------------- fitting in the workflow


@pytest.fixture
def annotated_project(tmp_path) -> Path:
    config = tmp_path / "copick.json"
    config.write_text(json.dumps(make_copick_config("t", tmp_path / "overlay", tmp_path / "st")))
    layout = read_copick_config(config)
    for i, run in enumerate(["TS_1", "TS_2"]):
        write_tomogram(layout, run, _volume(seed=i), 10.0, n_levels=1)
    truth = pd.concat([make_picks(r, "apo-ferritin", CENTRES_A) for r in ("TS_1", "TS_2")])
    write_picks(truth, config, format="copick", user_id="curation", session_id="0")
    return config


def test_tune_and_calibrate_model_store_a_calibration(annotated_project, tmp_path):
    model_dir = save_model(tmp_path / "model", build_model(_card().architecture), _card())
    loaded = (DarkBlobDetector(), _card(calibration={"apo-ferritin": HALF}))
    cpu = PredictConfig(device="cpu")
    thresholds = tune_model(model_dir, annotated_project, tmp_path / "tuned", cpu, model=loaded)
    # candidates keep raw scores although the loaded card calibrates them
    assert thresholds["apo-ferritin"] == pytest.approx(0.55, abs=0.01)
    card = read_model_card(tmp_path / "tuned")
    assert set(card.calibration) == set(CZII.names) and card.calibration_tta == {}
    assert card.calibration["apo-ferritin"].method == "identity"  # too few candidates
    # calibrate_model fits only the calibration, on several projects, into a new folder
    projects = [annotated_project, annotated_project]  # equal run names are kept apart
    fitted = calibrate_model(model_dir, projects, tmp_path / "cal", cpu, model=loaded)
    written = read_model_card(tmp_path / "cal")
    assert written.calibration == fitted and written.thresholds == {}
    assert fitted["apo-ferritin"].n_candidates == 2 * card.calibration["apo-ferritin"].n_candidates
    with pytest.raises(InputError, match="new folder"):
        calibrate_model(model_dir, [annotated_project], model_dir)


def test_predict_with_min_precision_through_a_project(annotated_project, tmp_path):
    card = _card(calibration={"apo-ferritin": HALF})
    picks = predict(
        annotated_project,
        config=PredictConfig(device="cpu", min_precision=0.25),
        model=(DarkBlobDetector(), card),
    )
    assert sorted(set(picks["experiment"])) == ["TS_1", "TS_2"] and len(picks) == 4


# ---------------------------------------------------------------- report


def test_report_table_adds_expected_particles_only_for_calibrated_scores():
    picks = make_picks("TS_1", "apo-ferritin", np.zeros((3, 3)), score=[0.9, 0.5, 0.1])
    plain, _ = summarise_picks_per_class(picks)
    assert "expected_particles" not in plain.columns
    assert "expected particles" not in render_summary_table(plain, None)
    assert "expected-note" not in render_summary_table(plain, None)
    table, _ = summarise_picks_per_class(picks, calibrated=True)
    apo = table.set_index("particle_type").loc["apo-ferritin"]
    assert apo["expected_particles"] == pytest.approx(1.5)
    html = render_summary_table(table, None)
    assert "expected particles" in html and '<td class="">1.5</td>' in html
    assert 'id="expected-note"' in html and "calibrated on simulated tomograms" in html
    card = _card(thresholds={"apo-ferritin": 0.55}, calibration={"apo-ferritin": HALF})
    assert marked_thresholds(card, "apo-ferritin") == pytest.approx((0.3, None))
    assert marked_thresholds(_card(thresholds={"apo-ferritin": 0.55}), "apo-ferritin") == (
        0.55,
        None,
    )
