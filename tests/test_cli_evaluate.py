import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cryopick
from cryopick.cli import app
from cryopick.evaluation.metric import score_picks
from cryopick.io.picks import make_picks, read_picks, write_picks

EXAMPLE = Path(cryopick.__file__).parent / "data" / "example"
runner = CliRunner()


def f4(tp, fp, fn):
    p, r = tp / (tp + fp), tp / (tp + fn)
    return 17 * p * r / (16 * p + r)


@pytest.fixture
def hand_case(tmp_path):
    truth = make_picks("TS_1", "ribosome", [[0, 0, 0], [0, 0, 1000]])
    picks = make_picks("TS_1", "ribosome", [[0, 0, 50], [0, 0, 3000]], score=[0.9, 0.1])
    write_picks(truth, tmp_path / "truth.csv")
    write_picks(picks, tmp_path / "picks.csv", format="kaggle")
    return tmp_path / "truth.csv", tmp_path / "picks.csv"


def test_evaluate_table(hand_case):
    truth, picks = hand_case
    result = runner.invoke(app, ["evaluate", "--truth", str(truth), "--picks", str(picks)])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "ribosome" in x)
    cells = [c.strip() for c in line.strip("│ ").split("│")]
    assert cells == ["ribosome", "1", "1", "1", "0.500", "0.500", f"{f4(1, 1, 1):.3f}", "1"]
    assert f"score: {f4(1, 1, 1) / 7:.4f}" in result.output


def test_evaluate_json(hand_case):
    truth, picks = hand_case
    result = runner.invoke(
        app, ["evaluate", "--truth", str(truth), "--picks", str(picks), "--json", "--beta", "1"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)  # JSON only, nothing else on stdout
    assert data["beta"] == 1.0
    assert data["per_class"]["ribosome"]["tp"] == 1
    assert data["per_class"]["ribosome"]["fbeta"] == pytest.approx(0.5)  # F1 with P = R = 0.5
    assert data["score"] == pytest.approx(0.5 / 7)


def test_evaluate_bundled_example():
    args = [
        "evaluate",
        "--truth",
        str(EXAMPLE / "truth.csv"),
        "--picks",
        str(EXAMPLE / "picks.csv"),
    ]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    expected = score_picks(read_picks(EXAMPLE / "truth.csv"), read_picks(EXAMPLE / "picks.csv"))
    data = json.loads(result.output)
    assert data["score"] == pytest.approx(expected.score)
    assert 0.3 < data["score"] < 0.9  # non-trivial: some found, some missed, some false
    per_class = data["per_class"]
    assert len(per_class) == 6 and all(v["tp"] > 0 and v["fn"] > 0 for v in per_class.values())
    assert sum(v["fp"] for v in per_class.values()) > 0


def test_evaluate_copick_project_with_user_filters(tmp_path):
    truth = make_picks("TS_1", "thyroglobulin", [[0, 0, 0], [0, 0, 1000]])
    picks = make_picks("TS_1", "thyroglobulin", [[0, 0, 10]], score=0.8)
    write_picks(truth, tmp_path / "overlay", format="copick", user_id="curation", session_id="0")
    write_picks(picks, tmp_path / "overlay", format="copick", user_id="cryopick", session_id="1")
    root = str(tmp_path / "overlay")
    args = [
        "--truth",
        root,
        "--truth-user",
        "curation",
        "--picks",
        root,
        "--picks-user",
        "cryopick",
    ]
    result = runner.invoke(app, ["evaluate", *args, "--json"])
    assert result.exit_code == 0, result.output
    thyro = json.loads(result.output)["per_class"]["thyroglobulin"]
    assert (thyro["tp"], thyro["fp"], thyro["fn"]) == (1, 0, 1)


def test_evaluate_star_without_tomograms_is_a_clear_error(tmp_path, hand_case):
    truth, _ = hand_case
    star = tmp_path / "picks.star"
    shapes = {"TS_1": ((10, 10, 10), 10.0)}
    write_picks(read_picks(truth), star, format="star", tomogram_shapes=shapes)
    result = runner.invoke(app, ["evaluate", "--truth", str(truth), "--picks", str(star)])
    assert result.exit_code == 2
    assert "picks.star" in result.output and "give the tomograms" in result.output
    assert "--tomograms" in result.output


def test_version_names_cryopick_and_its_libraries():
    from importlib.metadata import version

    import cryopick

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    first, second = result.output.splitlines()
    assert first == f"cryopick {cryopick.__version__}"
    assert f"torch {version('torch')}" in second and f"numpy {version('numpy')}" in second


def test_a_tomogram_without_a_voxel_size_takes_spacing_a_in_evaluate_and_report(tmp_path):
    # evaluate, report and convert said "pass it with --spacing-A" but had no such option
    import mrcfile
    import numpy as np

    truth = make_picks("TS_1", "ribosome", [[200.0, 300.0, 400.0], [500.0, 600.0, 700.0]])
    write_picks(truth, tmp_path / "truth.csv")
    shapes = {"TS_1": ((64, 96, 128), 10.0)}
    write_picks(truth, tmp_path / "picks.star", format="star", tomogram_shapes=shapes)
    with mrcfile.new(tmp_path / "TS_1.mrc") as mrc:  # the header's voxel size left unset
        mrc.set_data(np.zeros((64, 96, 128), np.float32))
    args = ["--truth", str(tmp_path / "truth.csv"), "--picks", str(tmp_path / "picks.star")]
    args += ["--tomograms", str(tmp_path / "TS_1.mrc"), "--json"]
    unset = runner.invoke(app, ["evaluate", *args])
    assert unset.exit_code == 2 and "pass it with --spacing-A" in unset.output
    given = runner.invoke(app, ["evaluate", *args, "--spacing-A", "10"])
    assert given.exit_code == 0, given.output
    ribosome = json.loads(given.output)["per_class"]["ribosome"]
    assert (ribosome["tp"], ribosome["fp"], ribosome["fn"]) == (2, 0, 0)  # centres back in place
    report = ["report", str(tmp_path / "TS_1.mrc"), "--picks", str(tmp_path / "truth.csv")]
    report += ["--out", str(tmp_path / "r.html"), "--slices", "1", "--spacing-A", "10"]
    assert runner.invoke(app, report).exit_code == 0 and (tmp_path / "r.html").is_file()
