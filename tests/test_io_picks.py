import json

import numpy as np
import pandas as pd
import pytest

from cryopick.core.errors import InputError
from cryopick.core.particles import default_particle_set
from cryopick.io.layout import make_copick_config
from cryopick.io.picks import (
    PICKS_FORMATS,
    empty_picks,
    make_picks,
    read_picks,
    validate_picks,
    write_copick_picks,
    write_picks,
)
from cryopick.scale.parts import read_part, write_part

ROT = np.array(
    [[0.0, -1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


def sample_picks() -> pd.DataFrame:
    a = make_picks("TS_1", "ribosome", [[100.5, 200.25, 300.125], [10.0, 20.0, 30.0]], [0.9, 0.25])
    b = make_picks("TS_2", "ferritin-complex", [[1.0, 2.0, 3.0]])  # alias, no score
    c = make_picks("TS_2", "thyroglobulin", [[4.0, 5.0, 6.0]], 0.5)
    return pd.concat([a, b, c], ignore_index=True)


def assert_same_picks(a: pd.DataFrame, b: pd.DataFrame, atol: float = 0.0) -> None:
    key = ["experiment", "particle_type", "x", "y", "z"]
    a = a.sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)
    assert a["experiment"].tolist() == b["experiment"].tolist()
    assert a["particle_type"].tolist() == b["particle_type"].tolist()
    np.testing.assert_allclose(a[["x", "y", "z"]], b[["x", "y", "z"]], atol=atol, rtol=0)
    np.testing.assert_allclose(a["score"], b["score"], atol=atol, rtol=0)  # NaN == NaN


def test_make_picks_columns_order_and_aliases():
    df = sample_picks()
    assert list(df.columns) == ["experiment", "particle_type", "x", "y", "z", "score"]
    row = df.iloc[0]
    assert (row.x, row.y, row.z, row.score) == (300.125, 200.25, 100.5, 0.9)
    assert df["particle_type"].tolist()[2] == "apo-ferritin"
    assert np.isnan(df["score"].iloc[2])
    assert empty_picks().empty and list(empty_picks().columns) == list(df.columns)


def test_validate_picks_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match=r"known types: apo-ferritin, beta-amylase"):
        make_picks("A", "proteasome", [[0, 0, 0]], particles=default_particle_set())
    # without a set, a name outside the CZII set is kept (stripped); CZII aliases still resolve
    lenient = make_picks("A", [" proteasome ", "Ferritin_Complex"], [[0, 0, 0], [1, 1, 1]])
    assert lenient["particle_type"].tolist() == ["proteasome", "apo-ferritin"]
    with pytest.raises(InputError, match=r"1 pick\(s\) have no particle type"):
        validate_picks(
            pd.DataFrame(
                {"experiment": ["A"], "particle_type": [None], "x": [0], "y": [0], "z": [0]}
            )
        )
    bad = tmp_path / "bad.csv"
    bad.write_text("experiment,particle_type,x,y,z\nA,ribosome,1,2,3\nA,ribosome,1,nan,3\n")
    with pytest.raises(InputError, match=r"bad\.csv: 1 pick\(s\) have a non-finite .* y"):
        read_picks(bad)
    bad.write_text("experiment,particle_type,x,y\nA,ribosome,1,2\n")
    with pytest.raises(InputError, match=r"bad\.csv: picks table lacks column\(s\) z"):
        read_picks(bad)
    with pytest.raises(InputError, match="inf"):
        validate_picks(
            pd.DataFrame(
                {"experiment": ["A"], "particle_type": ["vlp"], "x": [np.inf], "y": [0], "z": [0]}
            )
        )
    # a matrix written to CSV by pandas comes back as text: a clear error, not numpy's
    text = pd.DataFrame(
        {
            "experiment": ["A"],
            "particle_type": ["vlp"],
            "x": [0],
            "y": [0],
            "z": [0],
            "transformation": [str(np.eye(4))],
        }
    )
    with pytest.raises(InputError, match=r"truth\.csv: a pick transformation is not a finite"):
        validate_picks(text, "truth.csv")


def test_csv_round_trip(tmp_path):
    df = sample_picks()
    path = write_picks(df, tmp_path / "out" / "picks.csv")
    assert path.read_text().splitlines()[0] == "experiment,particle_type,x,y,z,score"
    assert_same_picks(read_picks(path), df)
    assert [p.name for p in tmp_path.joinpath("out").iterdir()] == ["picks.csv"]  # no temp left


def test_csv_reads_back_every_float_exactly(tmp_path):
    # pandas < 3.1 read about one float in eight one unit in the last place off by default:
    # resumed or sharded predicts then differed from an uninterrupted one
    rng = np.random.default_rng(7)
    df = make_picks("TS_1", "ribosome", rng.uniform(0, 6300, (2000, 3)), rng.uniform(0, 1, 2000))
    coords = df[["x", "y", "z"]].to_numpy()
    path = write_picks(df, tmp_path / "picks.csv")
    back = read_picks(path)
    assert np.array_equal(back[["x", "y", "z"]].to_numpy(), coords)
    assert np.array_equal(back["score"].to_numpy(), df["score"].to_numpy())
    write_part(tmp_path, "TS_1", df, {"run": "TS_1"})
    assert np.array_equal(read_part(tmp_path, "TS_1")[["x", "y", "z"]].to_numpy(), coords)


def test_kaggle_csv_exact_columns_and_reader_ignores_id(tmp_path):
    df = sample_picks()
    path = write_picks(df, tmp_path / "submission.csv", format="kaggle")
    lines = path.read_text().splitlines()
    assert lines[0] == "id,experiment,particle_type,x,y,z"
    assert lines[1] == "0,TS_1,ribosome,300.125,200.25,100.5"
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2", "3"]
    back = read_picks(path)
    assert list(back.columns) == ["experiment", "particle_type", "x", "y", "z", "score"]
    assert_same_picks(back, df.assign(score=np.nan))


@pytest.mark.parametrize("shape_zyx", [(184, 630, 630), (5, 7, 9)])
def test_star_round_trip_and_centre_convention(tmp_path, shape_zyx):
    spacing_A = 10.0
    shapes = {"TS_1": (shape_zyx, spacing_A), "TS_2": ((100, 200, 300), 7.5)}
    df = sample_picks()
    path = write_picks(df, tmp_path / "picks.star", format="star", tomogram_shapes=shapes)
    back = read_picks(path, tomogram_shapes=shapes)
    assert_same_picks(back, df, atol=1e-6)
    import starfile

    raw = starfile.read(path)
    first = raw.iloc[0]
    centre_xyz_A = np.array(shape_zyx[::-1]) / 2.0 * spacing_A  # RELION-5: N / 2 (float)
    assert first["rlnTomoName"] == "TS_1"
    assert first["rlnClassNumber"] == 4  # ribosome's label
    np.testing.assert_allclose(
        [first[f"rlnCenteredCoordinate{a}Angst"] for a in "XYZ"],
        np.array([300.125, 200.25, 100.5]) - centre_xyz_A,
        atol=1e-6,
    )


def test_star_needs_shapes(tmp_path):
    df = sample_picks()
    with pytest.raises(InputError, match=r"p\.star: .*needs each run.s tomogram .*--tomograms"):
        write_picks(df, tmp_path / "p.star", format="star")
    shapes = {"TS_1": ((10, 10, 10), 10.0), "TS_2": ((10, 10, 10), 10.0)}
    path = write_picks(df, tmp_path / "p.star", format="star", tomogram_shapes=shapes)
    with pytest.raises(InputError, match=r"p\.star: .*needs each run's tomogram"):
        read_picks(path)
    with pytest.raises(InputError, match=r"run 'TS_2' has no tomogram among .*\(runs: TS_1\)"):
        read_picks(path, tomogram_shapes={"TS_1": ((10, 10, 10), 10.0)})


def test_copick_file_round_trip_keeps_transformation_and_score(tmp_path):
    df = make_picks(
        "TS_6_4",
        "virus-like-particle",
        [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
        score=[0.75, np.nan],
        transformation=[ROT, np.eye(4)],
    )
    paths = write_picks(
        df,
        tmp_path,
        format="copick",
        user_id="cryopick",
        session_id="7",
        voxel_spacing=10.0,
        particle_types=["vlp"],
    )
    expected = tmp_path / "ExperimentRuns/TS_6_4/Picks/cryopick_7_virus-like-particle.json"
    assert paths == [expected]
    data = json.loads(expected.read_text())
    assert data["pickable_object_name"] == "virus-like-particle"
    assert (data["user_id"], data["session_id"], data["run_name"]) == ("cryopick", "7", "TS_6_4")
    assert data["unit"] == "angstrom" and data["voxel_spacing"] == 10.0
    assert data["points"][0]["location"] == {"x": 3.0, "y": 2.0, "z": 1.0}
    assert data["points"][0]["transformation_"] == ROT.tolist()
    assert data["points"][0]["score"] == 0.75 and data["points"][1]["score"] is None
    back = read_picks(expected)
    assert_same_picks(back, df)
    np.testing.assert_array_equal(back["transformation"].iloc[0], ROT)
    np.testing.assert_array_equal(back["transformation"].iloc[1], np.eye(4))


def test_copick_writes_identity_when_no_transformation_and_empty_files(tmp_path):
    paths = write_copick_picks(sample_picks(), tmp_path, "me", "1", runs=["TS_9"])
    assert len(paths) == 3 * 6  # three runs x six types
    data = json.loads((tmp_path / "ExperimentRuns/TS_1/Picks/me_1_ribosome.json").read_text())
    assert data["points"][0]["transformation_"] == np.eye(4).tolist()
    empty = json.loads((tmp_path / "ExperimentRuns/TS_9/Picks/me_1_ribosome.json").read_text())
    assert empty["points"] == []
    with pytest.raises(InputError, match="must be non-empty without '_'"):
        write_copick_picks(sample_picks(), tmp_path, "my_user", "1")


def _kaggle_file(path, name, run, xyz_list):
    path.parent.mkdir(parents=True, exist_ok=True)
    identity = np.eye(4).tolist()
    points = [
        {"location": dict(zip("xyz", xyz, strict=True)), "transformation_": identity}
        for xyz in xyz_list
    ]
    path.write_text(
        json.dumps(
            {
                "pickable_object_name": name,
                "user_id": "curation",
                "session_id": "0",
                "run_name": run,
                "voxel_spacing": None,
                "unit": "angstrom",
                "points": points,
                "trust_orientation": True,
            }
        )
    )


def test_kaggle_root_and_overlay_folder(tmp_path):
    picks_dir = tmp_path / "train/overlay/ExperimentRuns/TS_5_4/Picks"
    _kaggle_file(picks_dir / "apo-ferritin.json", "apo-ferritin", "TS_5_4", [(1, 2, 3), (4, 5, 6)])
    _kaggle_file(picks_dir / "ribosome.json", "ribosome", "TS_5_4", [(7, 8, 9)])
    # the same picks under the copick name are read once, not twice
    _kaggle_file(picks_dir / "curation_0_ribosome.json", "ribosome", "TS_5_4", [(7, 8, 9)])
    (tmp_path / "train/static/ExperimentRuns/TS_5_4").mkdir(parents=True)
    for root in (tmp_path / "train", tmp_path / "train/overlay"):
        df = read_picks(root)
        assert sorted(df["particle_type"]) == ["apo-ferritin", "apo-ferritin", "ribosome"]
        assert set(df["experiment"]) == {"TS_5_4"}
        assert df["score"].isna().all()
    one = read_picks(picks_dir / "apo-ferritin.json")
    assert one[["x", "y", "z"]].to_numpy().tolist() == [[1, 2, 3], [4, 5, 6]]


def test_copick_project_other_users_untouched_and_filters(tmp_path):
    cfg = make_copick_config("test", tmp_path / "overlay")
    cfg["pickable_objects"][0]["name"] = "ferritin-complex"  # the portal's name
    config = tmp_path / "copick.json"
    config.write_text(json.dumps(cfg))
    theirs = tmp_path / "overlay/ExperimentRuns/TS_1/Picks/curation_0_ribosome.json"
    _kaggle_file(theirs, "ribosome", "TS_1", [(1.5, 2.5, 3.5)])
    before = theirs.read_bytes()
    ours = sample_picks()
    write_picks(ours, config, format="copick", user_id="cryopick", session_id="0")
    write_picks(ours, config, format="copick", user_id="cryopick", session_id="0")  # overwrite
    assert theirs.read_bytes() == before
    ferritin = tmp_path / "overlay/ExperimentRuns/TS_2/Picks/cryopick_0_ferritin-complex.json"
    assert ferritin.is_file()  # the project's object name is used
    assert_same_picks(read_picks(config, user_id="cryopick"), ours)
    truth = read_picks(config, user_id="curation", session_id="0")
    assert truth[["experiment", "particle_type", "x"]].values.tolist() == [
        ["TS_1", "ribosome", 1.5]
    ]
    assert len(read_picks(config)) == len(ours) + 1
    assert read_picks(config, user_id="nobody").empty


def test_read_picks_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_picks(tmp_path / "missing.csv")
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(InputError, match=r"unknown picks file type '\.txt'"):
        read_picks(tmp_path / "p.txt")
    (tmp_path / "TS_1.mrc").write_bytes(b"\0" * 1024)  # a tomogram given as training data
    with pytest.raises(InputError, match=r"TS_1\.mrc: is a tomogram, not picks"):
        read_picks(tmp_path / "TS_1.mrc")
    (tmp_path / "TS_2.mrc.gz").write_bytes(b"\x1f\x8b" + b"\0" * 64)  # compressed, too
    with pytest.raises(InputError, match=r"TS_2\.mrc\.gz: is a tomogram, not picks"):
        read_picks(tmp_path / "TS_2.mrc.gz")
    (tmp_path / "p.json").write_text('{"a": 1}')
    with pytest.raises(InputError, match="neither a copick config nor a copick pick file"):
        read_picks(tmp_path / "p.json")
    with pytest.raises(InputError, match="unknown picks format 'xml'"):
        write_picks(sample_picks(), tmp_path / "p.xml", format="xml")
    assert {f.name for f in PICKS_FORMATS} == {"csv", "kaggle", "star", "copick"}


def test_a_pick_without_a_number_is_named_by_its_place_and_value(tmp_path):
    rows = ["experiment,particle_type,x,y,z"] + [f"TS_1,ribosome,{i}0,10,10" for i in range(1, 4)]
    (tmp_path / "nan.csv").write_text("\n".join([*rows, "TS_1,ribosome,,10,10", ""]))
    with pytest.raises(InputError, match=r"nan\.csv: 1 pick\(s\) .* x coordinate .*pick 4.*'nan'"):
        read_picks(tmp_path / "nan.csv")
    (tmp_path / "text.csv").write_text("\n".join([*rows, "TS_1,ribosome,10,ten,10", ""]))
    with pytest.raises(InputError, match=r"y coordinate \(first in pick 4, .*: 'ten'\)"):
        read_picks(tmp_path / "text.csv")
