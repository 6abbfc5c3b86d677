"""``cryopick convert``: picks between formats, positions kept to the micro-ångström."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cryopick.cli import app
from cryopick.io.mrc import write_mrc
from cryopick.io.picks import read_picks, write_picks

pytest.importorskip("starfile")
RUNNER = CliRunner()


def _picks() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "experiment": ["TS_1", "TS_1", "TS_2"],
            "particle_type": ["ribosome", "apo-ferritin", "thyroglobulin"],
            "x": [1234.5, 10.0, 3000.25],
            "y": [200.0, 4470.0, 0.0],
            "z": [1000.125, 500.0, 90.0],
            "score": [0.9, 0.4, 0.75],
        }
    )


def test_csv_to_pixel_star_and_back_keeps_every_position(tmp_path):
    csv = write_picks(_picks(), tmp_path / "picks.csv", format="csv")
    star = tmp_path / "warp.star"
    result = RUNNER.invoke(app, ["convert", str(csv), "-o", str(star), "--to-pixel-A", "1.35"])
    assert result.exit_code == 0, result.output
    import starfile

    table = starfile.read(star)
    np.testing.assert_allclose(table["rlnCoordinateX"], _picks()["x"] / 1.35, atol=1e-6)
    back = tmp_path / "back.csv"
    args = ["convert", str(star), "-o", str(back), "--star-pixel-A", "1.35"]
    assert RUNNER.invoke(app, args).exit_code == 0
    again = read_picks(back)
    np.testing.assert_allclose(again[["x", "y", "z"]], _picks()[["x", "y", "z"]], atol=1e-5)
    assert again["particle_type"].tolist() == _picks()["particle_type"].tolist()
    np.testing.assert_allclose(again["score"], _picks()["score"])


def test_relion5_star_needs_the_tomograms_and_is_centred_on_them(tmp_path):
    for name in ("TS_1", "TS_2"):
        write_mrc(tmp_path / f"{name}.mrc", np.zeros((20, 40, 30), np.float32), spacing_A=10.0)
    csv = write_picks(_picks(), tmp_path / "picks.csv", format="csv")
    star = tmp_path / "relion5.star"
    bare = RUNNER.invoke(app, ["convert", str(csv), "-o", str(star)])
    assert bare.exit_code == 2 and "--tomograms" in bare.output and not star.exists()
    args = ["convert", str(csv), "-o", str(star), "--tomograms", str(tmp_path)]
    assert RUNNER.invoke(app, args).exit_code == 0
    import starfile

    first = starfile.read(star).iloc[0]  # TS_1: centre (x, y, z) = (150, 200, 100) Å
    assert first["rlnCenteredCoordinateXAngst"] == pytest.approx(1234.5 - 150.0)
    assert first["rlnCenteredCoordinateZAngst"] == pytest.approx(1000.125 - 100.0)


def test_convert_refuses_what_it_cannot_do_without_writing(tmp_path):
    csv = write_picks(_picks(), tmp_path / "picks.csv", format="csv")
    for args, message in (
        (["-o", str(tmp_path / "x.csv"), "--to-pixel-A", "2"], "STAR output only"),
        (["-o", str(csv)], "is an input of this command"),
        (["-o", str(tmp_path / "x.json"), "--format", "mrc"], "writes csv, kaggle, star or copick"),
    ):
        result = RUNNER.invoke(app, ["convert", str(csv), *args])
        assert result.exit_code == 2 and message in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picks.csv"]


def test_csv_into_a_copick_project_never_replaces_picks_without_overwrite(tmp_path):
    csv = write_picks(_picks(), tmp_path / "picks.csv", format="csv")
    project = tmp_path / "project"
    args = ["convert", str(csv), "-o", str(project), "--format", "copick"]
    first = RUNNER.invoke(app, [*args, "--user-id", "relion"])
    assert first.exit_code == 0, first.output
    back = read_picks(project, user_id="relion")
    np.testing.assert_allclose(
        back.sort_values("x")[["x", "y", "z"]], _picks().sort_values("x")[["x", "y", "z"]]
    )
    files = sorted(p.name for p in project.rglob("relion_0_*.json"))
    before = {p: p.read_bytes() for p in project.rglob("*.json")}
    again = RUNNER.invoke(app, [*args, "--user-id", "relion"])
    assert again.exit_code == 2 and "pick file(s) of user 'relion'" in again.output
    assert {p: p.read_bytes() for p in project.rglob("*.json")} == before
    assert RUNNER.invoke(app, [*args, "--user-id", "relion", "--overwrite"]).exit_code == 0
    assert sorted(p.name for p in project.rglob("relion_0_*.json")) == files
