"""``cryopick predict``'s one library path: in this process, or as resumable tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import test_inference_pipeline
from cryopick.cli import app
from cryopick.core.errors import InputError
from cryopick.inference.output import OutputFormat
from cryopick.inference.pipeline import PredictConfig, count_picks_per_run
from cryopick.io.layout import make_copick_config
from cryopick.io.picks import PICKS_FORMATS, make_picks, read_picks, write_picks
from cryopick.scale.predict import predict_runs

# a two-run copick project of dark blobs (see test_inference_pipeline)
project = test_inference_pipeline.project
CPU = PredictConfig(device="cpu")


def test_in_process_writes_no_parts_and_reports_every_run(
    project, tiny_untrained_model_dir, tmp_path
):
    out = tmp_path / "picks.csv"
    result = predict_runs(project, tiny_untrained_model_dir, out, "csv", CPU)
    assert result.parts_dir is None and not list(tmp_path.glob("*.parts"))
    assert [r.run for r in result.runs] == ["TS_1", "TS_2"]
    assert {r.status for r in result.runs} == {"done"} and result.complete
    assert sum(r.n_picks for r in result.runs) == len(result.picks) > 0
    assert all(r.seconds > 0 for r in result.runs)
    assert result.output == out
    pd.testing.assert_frame_equal(read_picks(out), result.picks, check_exact=True)


def test_tasks_give_the_same_picks_with_parts(project, tiny_untrained_model_dir, tmp_path):
    plain = tmp_path / "plain.csv"
    predict_runs(project, tiny_untrained_model_dir, plain, OutputFormat.CSV, CPU)
    out = tmp_path / "tasks.csv"
    result = predict_runs(project, tiny_untrained_model_dir, out, "csv", CPU, overwrite=True)
    assert result.parts_dir == tmp_path / "tasks.csv.parts" and result.parts_dir.is_dir()
    assert result.processed == ["TS_1", "TS_2"] and not result.failed
    assert out.read_bytes() == plain.read_bytes()
    again = predict_runs(project, tiny_untrained_model_dir, out, "csv", CPU, shard="0/1")
    assert again.skipped == ["TS_1", "TS_2"]  # resumed: nothing predicted twice


def test_every_run_failing_in_process_is_exit_1_listing_them(tiny_untrained_model_dir, tmp_path):
    tomos = tmp_path / "tomos"
    tomos.mkdir()
    for run in ("A", "B"):
        (tomos / f"{run}.mrc").write_bytes(b"not an MRC file" * 50)
    out = tmp_path / "picks.csv"
    args = ["predict", str(tomos), "--model", str(tiny_untrained_model_dir), "-o", str(out), "-q"]
    result = CliRunner().invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert "run A failed" in result.output and "run B failed" in result.output
    assert "2 of 2 run(s) failed (nothing written)" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_output_format_is_one_enum() -> None:
    assert [f.value for f in OutputFormat] == ["csv", "kaggle", "copick", "star"]
    assert OutputFormat.parse("star") is OutputFormat.STAR
    assert f"{OutputFormat.KAGGLE}" == str(OutputFormat.KAGGLE) == "kaggle"
    assert OutputFormat.STAR.suffixes == (".star",) and OutputFormat.COPICK.suffixes == ()
    with pytest.raises(InputError, match="unknown output format 'xml'; choose from"):
        OutputFormat.parse("xml")
    assert {f.value for f in OutputFormat} <= {f.name for f in PICKS_FORMATS}


def test_count_picks_per_run_has_a_total_row() -> None:
    picks = make_picks(["A", "A", "B"], ["ribosome", "vlp", "ribosome"], [[0, 0, 0]] * 3)
    counts = count_picks_per_run(picks, ["A", "B", "C"])
    assert list(counts.index) == ["A", "B", "C", "total"]
    assert counts.loc["total", "ribosome"] == 2 and counts.loc["C"].sum() == 0


def test_read_picks_takes_the_first_registered_format_that_matches(tmp_path: Path) -> None:
    picks = make_picks("TS_1", "ribosome", [[1.0, 2.0, 3.0]], score=0.5)
    write_picks(picks, tmp_path / "plain.csv")
    write_picks(picks, tmp_path / "kaggle.csv", format="kaggle")
    shapes = {"TS_1": ((10, 10, 10), 10.0)}
    write_picks(picks, tmp_path / "p.star", format="star", tomogram_shapes=shapes)
    config = tmp_path / "copick.config"  # a copick config of any name
    config.write_text(json.dumps(make_copick_config("p", tmp_path / "overlay")))
    written = write_picks(picks, config, format="copick", user_id="u", session_id="0")
    pick_file = next(p for p in written if p.name == "u_0_ribosome.json")
    cases = {
        "plain.csv": "csv",
        "kaggle.csv": "kaggle",
        "p.star": "star",
        "copick.config": "copick",
        "overlay": "copick",
        str(pick_file): "copick",
    }
    for name, expected in cases.items():
        path = tmp_path / name
        assert next(f.name for f in PICKS_FORMATS if f.can_read(path)) == expected, name
        back = read_picks(path, tomogram_shapes=shapes)
        assert back[["experiment", "particle_type"]].values.tolist() == [["TS_1", "ribosome"]]
    (tmp_path / "p.txt").write_text("x")
    assert not [f.name for f in PICKS_FORMATS if f.can_read(tmp_path / "p.txt")]


def test_slurm_without_dask_jobqueue_writes_nothing(
    project, tiny_untrained_model_dir, tmp_path, monkeypatch
):
    # the error came after the output's .parts folder and manifest had been written
    import sys

    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    out = tmp_path / "out" / "picks.csv"
    args = ["predict", str(project), "--model", str(tiny_untrained_model_dir), "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "--slurm", "-q"])
    try:  # without Dask at all (the copick environment) it is Dask that is missing
        import distributed  # noqa: F401

        missing = "pip install 'cryopick[slurm]'"
    except ImportError:
        missing = "pip install 'cryopick[scale]'"
    assert result.exit_code == 2 and missing in result.output
    assert not (tmp_path / "out").exists()
