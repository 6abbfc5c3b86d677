"""STAR files of other tools: RELION-4 / Warp pixel positions, origin shifts, tomogram names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cryopick.cli import app
from cryopick.core.errors import InputError
from cryopick.io.picks import read_picks, write_picks

starfile = pytest.importorskip("starfile")

RELION4_OPTICS = pd.DataFrame(
    {
        "rlnOpticsGroup": [1, 2],
        "rlnOpticsGroupName": ["opticsGroup1", "opticsGroup2"],
        "rlnTomoTiltSeriesPixelSize": [1.35, 2.7],
        "rlnImagePixelSize": [5.4, 10.8],  # the subtomograms' pixel: not the coordinates'
    }
)


def _relion4_particles() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rlnTomoName": ["TS_01", "TS_01", "TS_02"],
            "rlnCoordinateX": [1000.0, 200.0, 100.0],
            "rlnCoordinateY": [2000.0, 400.0, 50.0],
            "rlnCoordinateZ": [300.0, 60.0, 20.0],
            "rlnOriginXAngst": [1.35, 0.0, -2.0],
            "rlnOriginYAngst": [0.0, 2.7, 0.0],
            "rlnOriginZAngst": [0.0, 0.0, 4.0],
            "rlnOpticsGroup": [1, 1, 2],
            "rlnClassNumber": [1, 1, 2],  # a Class3D result, not a particle type
        }
    )


def test_relion4_pixels_are_scaled_by_each_optics_groups_tilt_series_pixel(tmp_path):
    path = tmp_path / "run_data.star"
    starfile.write({"optics": RELION4_OPTICS, "particles": _relion4_particles()}, path)
    picks = read_picks(path, particle_type="ribosome")
    # position = coordinate x tilt-series pixel - origin shift (RELION's convention)
    expected_xyz = [
        [1000 * 1.35 - 1.35, 2000 * 1.35, 300 * 1.35],
        [200 * 1.35, 400 * 1.35 - 2.7, 60 * 1.35],
        [100 * 2.7 + 2.0, 50 * 2.7, 20 * 2.7 - 4.0],
    ]
    np.testing.assert_allclose(picks[["x", "y", "z"]].to_numpy(), expected_xyz, atol=1e-9)
    assert list(picks["experiment"]) == ["TS_01", "TS_01", "TS_02"]
    given = read_picks(path, particle_type="ribosome", star_pixel_A=10.0)
    assert given["x"].iloc[0] == pytest.approx(1000 * 10.0 - 1.35)


def test_warp_pixels_need_their_pixel_size_and_name_runs_by_micrograph(tmp_path):
    path = tmp_path / "warp.star"
    table = pd.DataFrame(
        {
            "rlnMicrographName": ["TS_01.tomostar", "data/TS_17.mrc:mrc"],
            "rlnCoordinateX": [10.0, 4.5],
            "rlnCoordinateY": [20.0, 0.0],
            "rlnCoordinateZ": [30.0, 1.0],
        }
    )
    starfile.write({"particles": table}, path)
    with pytest.raises(InputError, match=r"warp\.star: positions are in pixels .*--star-pixel-A"):
        read_picks(path, particle_type="ribosome")
    picks = read_picks(path, particle_type="ribosome", star_pixel_A=7.84)
    assert list(picks["experiment"]) == ["TS_01", "TS_17"]
    np.testing.assert_allclose(
        picks[["x", "y", "z"]].to_numpy(), [[78.4, 156.8, 235.2], [35.28, 0.0, 7.84]]
    )


def test_relion5_origin_shifts_are_subtracted(tmp_path):
    shapes = {"TS_1": ((10, 20, 30), 10.0)}  # centre (x, y, z) = (150, 100, 50) Å
    path = tmp_path / "refined.star"
    table = pd.DataFrame(
        {
            "rlnTomoName": ["TS_1"],
            "rlnCenteredCoordinateXAngst": [10.0],
            "rlnCenteredCoordinateYAngst": [-20.0],
            "rlnCenteredCoordinateZAngst": [0.0],
            "rlnOriginXAngst": [3.0],
            "rlnOriginYAngst": [-1.0],
            "rlnOriginZAngst": [0.5],
        }
    )
    starfile.write({"particles": table}, path)
    picks = read_picks(path, tomogram_shapes=shapes, particle_type="ribosome")
    np.testing.assert_allclose(picks[["x", "y", "z"]].to_numpy(), [[157.0, 81.0, 49.5]])


def test_a_star_without_3d_positions_is_one_clear_error(tmp_path):
    path = tmp_path / "2d.star"
    starfile.write(
        {"particles": pd.DataFrame({"rlnCoordinateX": [1.0], "rlnCoordinateY": [2.0]})}, path
    )
    with pytest.raises(InputError, match=r"2d\.star: no particle block with 3-D positions"):
        read_picks(path, particle_type="ribosome")


def test_evaluate_scores_warp_picks_against_truth_with_their_pixel_size(tmp_path: Path):
    truth = pd.DataFrame(
        {
            "experiment": ["TS_01", "TS_01"],
            "particle_type": ["ribosome", "ribosome"],
            "x": [784.0, 1568.0],
            "y": [392.0, 784.0],
            "z": [78.4, 156.8],
        }
    )
    truth_path = write_picks(truth, tmp_path / "truth.csv", format="csv")
    star = tmp_path / "warp.star"
    pixels = truth[["x", "y", "z"]].to_numpy() / 7.84
    table = pd.DataFrame(
        {
            "rlnMicrographName": ["TS_01.tomostar"] * 2,
            "rlnCoordinateX": pixels[:, 0],
            "rlnCoordinateY": pixels[:, 1],
            "rlnCoordinateZ": pixels[:, 2],
        }
    )
    starfile.write({"particles": table}, star)
    args = ["evaluate", "--truth", str(truth_path), "--picks", str(star), "--json"]
    args += ["--particle-type", "ribosome"]
    result = CliRunner().invoke(app, [*args, "--star-pixel-A", "7.84"])
    assert result.exit_code == 0, result.output
    assert '"tp": 2' in result.output and '"fp": 0' in result.output
    wrong = CliRunner().invoke(app, [*args, "--star-pixel-A", "10"])
    assert wrong.exit_code == 0 and '"tp": 0' in wrong.output  # 28 % too far out


def test_the_report_reads_warp_picks_with_their_pixel_size(tmp_path):
    from cryopick.io.tomograms import Tomogram
    from cryopick.report.page import ReportConfig, _read_picks_and_truth

    star = tmp_path / "warp.star"
    table = pd.DataFrame(
        {
            "rlnMicrographName": ["TS_01.tomostar"],
            "rlnCoordinateX": [12.0],
            "rlnCoordinateY": [5.0],
            "rlnCoordinateZ": [3.0],
        }
    )
    starfile.write({"particles": table}, star)
    tomograms = [Tomogram("TS_01", np.zeros((8, 16, 16), np.float32), 10.0, tmp_path / "a.mrc")]
    config = ReportConfig(star_pixel_A=10.0)
    with pytest.raises(InputError, match="particle type"):  # a foreign STAR: no type
        _read_picks_and_truth(star, None, tomograms, config, None)
    typed = ReportConfig(star_pixel_A=10.0, particle_type="ribosome")
    picks, _ = _read_picks_and_truth(star, None, tomograms, typed, None)
    assert picks[["x", "y", "z"]].to_numpy().tolist() == [[120.0, 50.0, 30.0]]
    assert picks["particle_type"].tolist() == ["ribosome"]
