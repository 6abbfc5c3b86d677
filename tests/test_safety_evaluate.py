"""Hardening of scoring (issue 11, items 9, 10, 15): inputs that used to give wrong scores.

Every test builds tiny synthetic data itself and checks exact counts or scores that the
faulty behaviour gets wrong (a score above 1, a silent 0.0, a class number misread).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cryopick.cli import app
from cryopick.core.particles import default_particle_set
from cryopick.evaluation.metric import fbeta_curve, score_picks
from cryopick.io.layout import make_copick_config, resolve_layout
from cryopick.io.mrc import write_mrc
from cryopick.io.picks import make_picks, read_picks, write_picks
from cryopick.io.picks.copick_read import write_copick_picks
from cryopick.io.tomograms import write_tomogram

PARTICLES = default_particle_set().specs  # the CZII six, the default set

runner = CliRunner()
SHAPE = (20, 30, 40)  # z, y, x voxels of the test tomogram
SPACING_A = 10.0
CENTRE_XYZ = (200.0, 150.0, 100.0)  # RELION's centre of SHAPE in Å: N / 2 * spacing


def _evaluate(*args: str) -> tuple[int, str, dict | None]:
    result = runner.invoke(app, ["evaluate", *args, "--json"])
    data = json.loads(result.output) if result.exit_code == 0 else None
    return result.exit_code, result.output, data


def _counts(data: dict, name: str) -> tuple[int, int, int]:
    row = data["per_class"][name]
    return row["tp"], row["fp"], row["fn"]


def _summary(html: Path) -> dict:
    """The summary JSON that ``cryopick report`` embeds in its page."""
    text = html.read_text().split('id="cryopick-summary">', 1)[1]
    return json.loads(text.split("</script>", 1)[0])


def _one_of_each() -> pd.DataFrame:
    """One particle of every type in run TS_1, 1000 Å apart (zyx in Å)."""
    zyx = [[0.0, 0.0, 1000.0 * i] for i in range(len(PARTICLES))]
    return make_picks("TS_1", [p.name for p in PARTICLES], zyx)


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "copick_config.json"
    config.write_text(json.dumps(make_copick_config("test", tmp_path / "overlay")))
    return config


# ---------------------------------------------------------------- item 9: scores above 1


def test_one_pick_near_two_truth_points_is_one_match_never_negative_fp() -> None:
    # ribosome: match distance 75 Å; the pick lies 50 Å from both truth points
    truth = make_picks("A", "ribosome", [[0, 0, 0], [0, 0, 100]])
    picks = make_picks("A", "ribosome", [[0, 0, 50]], score=0.9)
    row = score_picks(truth, picks).per_class.set_index("particle_type").loc["ribosome"]
    assert (row.tp, row.fp, row.fn) == (1, 0, 1)
    assert row.precision == 1.0 and row.recall == 0.5
    curve = fbeta_curve(truth, picks, "ribosome")  # the curve counts the same way
    assert (curve.precision[-1], curve.recall[-1]) == (1.0, 0.5)


def test_augmenting_path_finds_the_larger_matching() -> None:
    # pick a (score 0.9) reaches truth 0 and 1; pick b (0.5) reaches only truth 0.
    # A greedy first-come pairing gives a -> 0 and leaves b unmatched; one-to-one
    # maximum matching re-pairs a -> 1 so that both truth points are found.
    truth = make_picks("A", "ribosome", [[0, 0, 0], [0, 0, 100]])
    picks = make_picks("A", "ribosome", [[0, 0, 40], [0, 0, -30]], score=[0.9, 0.5])
    row = score_picks(truth, picks).per_class.set_index("particle_type").loc["ribosome"]
    assert (row.tp, row.fp, row.fn) == (2, 0, 0)
    curve = fbeta_curve(truth, picks, "ribosome")
    assert list(curve.recall) == [0.5, 1.0] and list(curve.precision) == [1.0, 1.0]


def test_duplicated_truth_scores_at_most_one(tmp_path: Path, caplog) -> None:
    truth = _one_of_each()
    doubled = pd.concat([truth, truth], ignore_index=True)  # every point annotated twice
    write_picks(doubled, tmp_path / "truth.csv")
    write_picks(truth.assign(score=0.9), tmp_path / "picks.csv")
    # the metric itself: duplicates cost recall, never give FP < 0 or precision > 1
    raw = score_picks(doubled, truth.assign(score=0.9))
    assert (raw.per_class[["tp", "fp", "fn"]].to_numpy() == [1, 0, 1]).all()
    assert raw.score <= 1.0
    # read as truth (evaluate): merged, with a warning naming the file and the count
    with caplog.at_level(logging.WARNING):
        code, output, data = _evaluate(
            "--truth", str(tmp_path / "truth.csv"), "--picks", str(tmp_path / "picks.csv")
        )
    assert code == 0, output
    assert data["score"] == pytest.approx(1.0)  # was 1.03 (precision 2)
    assert all(_counts(data, p.name) == (1, 0, 0) for p in PARTICLES)
    assert "truth.csv: merged 6 duplicate truth point(s)" in caplog.text


@pytest.fixture
def two_users(tmp_path: Path) -> dict[str, Path]:
    """A copick project holding the truth (simulation/0) and cryopick's picks (cryopick/0)."""
    config = _config(tmp_path)
    truth = make_picks("TS_1", "ribosome", [[0, 0, 0], [0, 0, 1000], [0, 0, 2000]])
    picks = make_picks("TS_1", "ribosome", [[0, 0, 10], [0, 0, 5000]], score=0.8)
    write_copick_picks(truth, config, "simulation", "0")
    write_copick_picks(picks, config, "cryopick", "0")
    write_picks(picks, tmp_path / "picks.csv")
    return {"config": config, "picks": tmp_path / "picks.csv", "root": tmp_path}


def test_evaluate_truth_of_several_users_needs_truth_user(two_users: dict[str, Path]) -> None:
    config, picks = str(two_users["config"]), str(two_users["picks"])
    code, output, _ = _evaluate("--truth", config, "--picks", picks)
    assert code == 2  # was 0: cryopick's picks merged into the truth
    assert "copick_config.json" in output and "2 user/session pairs" in output
    assert "cryopick/0 (2 picks)" in output and "simulation/0 (3 picks)" in output
    assert "--truth-user" in output
    code, output, data = _evaluate(
        "--truth", config, "--truth-user", "simulation", "--picks", picks
    )
    assert code == 0, output
    assert _counts(data, "ribosome") == (1, 1, 2)
    # library callers that read every user (training) keep working: merged with a warning
    assert len(read_picks(two_users["config"])) == 5


def test_a_truth_user_with_no_picks_names_the_users_there(
    two_users: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert read_picks(two_users["config"], user_id="simulatoin").empty  # a typo
    assert "no picks of user simulatoin, session any; the project has picks of" in caplog.text
    assert "cryopick/0 (2 picks), simulation/0 (3 picks)" in caplog.text


def test_report_takes_truth_user(two_users: dict[str, Path]) -> None:
    tomo = two_users["root"] / "TS_1.mrc"
    write_mrc(tomo, np.zeros(SHAPE, np.float32), SPACING_A)
    out = two_users["root"] / "r.html"
    args = [
        "report",
        str(tomo),
        "--picks",
        str(two_users["picks"]),
        "--truth",
        str(two_users["config"]),
        "--out",
        str(out),
        "--slices",
        "1",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "cryopick/0 (2 picks)" in result.output, result.output
    result = runner.invoke(app, [*args, "--truth-user", "simulation", "--truth-session", "0"])
    assert result.exit_code == 0, result.output
    rows = {r["particle_type"]: r for r in _summary(out)["per_class"]}
    assert (rows["ribosome"]["tp"], rows["ribosome"]["fp"], rows["ribosome"]["fn"]) == (1, 1, 2)


# ---------------------------------------------------------------- item 10: run names


def test_runs_absent_on_either_side_are_named(tmp_path: Path, caplog) -> None:
    truth = pd.concat([_one_of_each(), _one_of_each().assign(experiment="TS_2")])
    write_picks(truth, tmp_path / "truth.csv")
    picks = pd.concat([_one_of_each(), _one_of_each().assign(experiment="TS_9")])
    write_picks(picks.assign(score=0.5), tmp_path / "picks.csv")
    with caplog.at_level(logging.WARNING):
        code, output, data = _evaluate(
            "--truth", str(tmp_path / "truth.csv"), "--picks", str(tmp_path / "picks.csv")
        )
    assert code == 0, output
    assert _counts(data, "ribosome") == (1, 0, 1)  # TS_9 ignored, TS_2 all missed
    assert "picks.csv: 1 run(s) have no truth, their picks are not scored: TS_9" in caplog.text
    assert "truth.csv: 1 truth run(s) have no picks" in caplog.text and "TS_2" in caplog.text


def test_no_matching_run_is_an_error_listing_both_sides(tmp_path: Path) -> None:
    write_picks(_one_of_each(), tmp_path / "truth.csv")
    write_picks(_one_of_each().assign(experiment="ts1", score=0.9), tmp_path / "picks.csv")
    code, output, _ = _evaluate(
        "--truth", str(tmp_path / "truth.csv"), "--picks", str(tmp_path / "picks.csv")
    )
    assert code == 2  # was 0 with score 0.0 and no word
    line = output.strip()
    assert "\n" not in line and "picks.csv" in line
    assert "picks have ts1; truth has TS_1" in line


# ---------------------------------------------------------------- item 15: foreign STAR


def _relion_class3d_star(path: Path) -> Path:
    """A STAR file as a RELION Class3D job leaves it: rlnClassNumber is a 3D class."""
    import starfile

    table = pd.DataFrame(
        {
            "rlnTomoName": ["TS_1", "TS_1"],
            "rlnCenteredCoordinateXAngst": [0.0, 0.0],
            "rlnCenteredCoordinateYAngst": [0.0, 0.0],
            "rlnCenteredCoordinateZAngst": [0.0, 300.0],
            "rlnAngleRot": [10.0, 20.0],
            "rlnClassNumber": [1, 1],
            "rlnImageName": ["1@a.mrcs", "2@a.mrcs"],
        }
    )
    starfile.write({"particles": table}, path)
    return path


def _ribosome_truth(tmp_path: Path) -> Path:
    x, y, z = CENTRE_XYZ  # one ribosome at the tomogram centre, one 1000 Å away
    write_picks(make_picks("TS_1", "ribosome", [[z, y, x], [z, y, x + 1000]]), tmp_path / "t.csv")
    return tmp_path / "t.csv"


def test_foreign_star_needs_particle_type(tmp_path: Path) -> None:
    star = _relion_class3d_star(tmp_path / "class3d.star")
    write_mrc(tmp_path / "tomos" / "TS_1.mrc", np.zeros(SHAPE, np.float32), SPACING_A)
    base = [
        "--truth",
        str(_ribosome_truth(tmp_path)),
        "--picks",
        str(star),
        "--tomograms",
        str(tmp_path / "tomos"),
    ]
    code, output, _ = _evaluate(*base)
    assert code == 2  # was 0: class 1 read as apo-ferritin
    assert "class3d.star" in output and "--particle-type" in output and "Class3D" in output
    code, output, data = _evaluate(*base, "--particle-type", "ribosome")
    assert code == 0, output
    assert _counts(data, "ribosome") == (1, 1, 1)
    assert _counts(data, "apo-ferritin") == (0, 0, 0)


def test_tomo_type_reads_shapes_of_that_type(tmp_path: Path) -> None:
    config = _config(tmp_path)
    write_tomogram(
        resolve_layout(config),
        "TS_1",
        np.zeros(SHAPE, np.float32),
        SPACING_A,
        tomo_type="wbp",
        n_levels=1,
    )
    star = _relion_class3d_star(tmp_path / "class3d.star")
    base = [
        "--truth",
        str(_ribosome_truth(tmp_path)),
        "--picks",
        str(star),
        "--tomograms",
        str(config),
        "--particle-type",
        "ribosome",
    ]
    code, output, _ = _evaluate(*base)
    assert code == 2 and "denoised" in output  # the default type is not there
    code, output, data = _evaluate(*base, "--tomo-type", "wbp")
    assert code == 0, output
    assert _counts(data, "ribosome") == (1, 1, 1)


def test_cryopick_star_keeps_its_class_labels(tmp_path: Path) -> None:
    import starfile

    from cryopick.io.picks.star_io import CRYOPICK_MARKER

    shapes = {"TS_1": (SHAPE, SPACING_A)}
    picks = _one_of_each().assign(score=0.5)
    write_picks(picks, tmp_path / "ours.star", format="star", tomogram_shapes=shapes)
    assert (tmp_path / "ours.star").read_text().startswith(CRYOPICK_MARKER)
    back = read_picks(tmp_path / "ours.star", tomogram_shapes=shapes)
    assert list(back["particle_type"]) == [p.name for p in PARTICLES]
    # files of earlier cryopick versions (no marker, only cryopick's columns) still read
    table = starfile.read(tmp_path / "ours.star")
    starfile.write({"particles": table}, tmp_path / "old.star")
    old = read_picks(tmp_path / "old.star", tomogram_shapes=shapes)
    assert list(old["particle_type"]) == [p.name for p in PARTICLES]


def _scattered(n: int, seed: int, extent_A: float = 6300.0) -> pd.DataFrame:
    """``n`` apo-ferritins spread over a 630 x 630-voxel tomogram at 10 Å, run TS_1."""
    rng = np.random.default_rng(seed)
    zyx = rng.uniform([200.0, 0.0, 0.0], [1600.0, extent_A, extent_A], size=(n, 3))
    return make_picks("TS_1", ["apo-ferritin"] * n, zyx)


def test_picks_in_pixels_are_named_as_such_before_a_score_of_zero(tmp_path, caplog):
    from cryopick.io.picks import check_position_scale

    truth = _scattered(60, seed=1)
    in_pixels = truth.assign(x=truth["x"] / 10.0, y=truth["y"] / 10.0, z=truth["z"] / 10.0)
    write_picks(truth, tmp_path / "truth.csv")
    write_picks(in_pixels, tmp_path / "picks.csv")
    with caplog.at_level(logging.WARNING):
        code, _, data = _evaluate(
            "--picks", str(tmp_path / "picks.csv"), "--truth", str(tmp_path / "truth.csv")
        )
    assert code == 0 and data is not None and data["score"] == 0.0
    warned = [r.getMessage() for r in caplog.records if "positions must be in Å" in r.getMessage()]
    assert len(warned) == 1 and "picks.csv" in warned[0] and "0.1 times" in warned[0]
    assert check_position_scale(truth, in_pixels) == pytest.approx(0.1)
    # a picker's own picks: a few missed, others false, the same span: no warning
    picker = pd.concat([truth.iloc[10:], _scattered(15, seed=2)], ignore_index=True)
    assert 0.8 < check_position_scale(truth, picker) < 1.25
    # too few picks in the shared runs to tell
    assert check_position_scale(truth, in_pixels.iloc[:5]) is None
