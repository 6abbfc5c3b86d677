"""A project written by cryopick opens in copick, and copick's own files read in cryopick."""

import json

import numpy as np
import pytest

copick = pytest.importorskip("copick")

import zarr
from copick.util.ome import get_voxel_size_from_zarr

from cryopick.core.errors import InputError
from cryopick.core.picks import make_picks
from cryopick.io.layout import make_copick_config, read_copick_config
from cryopick.io.omezarr import read_ome_zarr
from cryopick.io.picks import read_picks
from cryopick.io.picks.copick_read import write_copick_picks
from cryopick.io.tomograms import read_tomograms, write_tomogram

SPACING_A = 10.012


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "copick.json"
    cfg = make_copick_config("interop", tmp_path / "overlay", tmp_path / "static")
    path.write_text(json.dumps(cfg))
    return path


def _volume(shape=(6, 8, 10), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_environment_has_zarr2():
    # the point of this venv: cryopick's io must work with copick's zarr-python 2
    assert int(zarr.__version__.split(".")[0]) == 2


def test_cryopick_project_opens_in_copick(config_path):
    vol = _volume()
    layout = read_copick_config(config_path)
    store = write_tomogram(layout, "TS_1", vol, SPACING_A, tomo_type="denoised", zarr_format=2)
    ours_level1, ours_level1_A = read_ome_zarr(store, level=1)

    root = copick.from_file(str(config_path))
    assert [r.name for r in root.runs] == ["TS_1"]
    run = root.get_run("TS_1")
    assert [vs.voxel_size for vs in run.voxel_spacings] == pytest.approx([SPACING_A])
    (tomo,) = run.get_voxel_spacing(SPACING_A).get_tomograms("denoised")
    np.testing.assert_array_equal(tomo.numpy(), vol)
    np.testing.assert_array_equal(tomo.numpy(zarr_group="1"), ours_level1[...])
    group = zarr.open(tomo.zarr(), mode="r")
    assert get_voxel_size_from_zarr(group) == pytest.approx(SPACING_A)
    assert ours_level1_A == pytest.approx(2 * SPACING_A)


def test_copick_tomogram_reads_in_cryopick(config_path):
    vol = _volume(seed=1)
    root = copick.from_file(str(config_path))
    vs = root.new_run("TS_9").new_voxel_spacing(SPACING_A)
    tomo = vs.new_tomogram("wbp")
    tomo.from_numpy(vol, levels=3)

    (ours,) = read_tomograms(config_path, tomo_type="wbp")
    assert (ours.name, ours.tomo_type) == ("TS_9", "wbp")
    assert ours.spacing_A == pytest.approx(SPACING_A)
    np.testing.assert_array_equal(ours.to_numpy(), vol)
    (level2,) = read_tomograms(config_path, tomo_type="wbp", level=2)
    assert level2.spacing_A == pytest.approx(4 * SPACING_A)
    np.testing.assert_allclose(level2.to_numpy(), tomo.numpy(zarr_group="2"), rtol=1e-6)
    with pytest.raises(ValueError, match=r"no 'denoised'.*wbp"):
        read_tomograms(config_path, tomo_type="denoised")


def test_copick_picks_read_in_cryopick_and_back(config_path):
    root = copick.from_file(str(config_path))
    run = root.new_run("TS_9")
    xyz_A = np.array([[100.0, 200.0, 300.0], [110.5, 220.25, 330.0]])
    picks = run.new_picks("ribosome", session_id="7", user_id="alice")
    picks.from_numpy(xyz_A, scores=np.array([0.5, 0.75]))

    df = read_picks(config_path, user_id="alice")
    df = df.sort_values("x").reset_index(drop=True)
    assert list(df["experiment"]) == ["TS_9", "TS_9"]
    assert list(df["particle_type"]) == ["ribosome", "ribosome"]
    np.testing.assert_allclose(df[["x", "y", "z"]].to_numpy(), xyz_A)

    # and the other way: cryopick writes, copick reads
    ours = make_picks("TS_9", "thyroglobulin", [[30.0, 20.0, 10.0]], score=0.9)
    write_copick_picks(ours, config_path, "cryopick", "1", voxel_spacing=SPACING_A)
    root = copick.from_file(str(config_path))
    (written,) = root.get_run("TS_9").get_picks("thyroglobulin", user_id="cryopick", session_id="1")
    points, _ = written.numpy()
    np.testing.assert_allclose(points, [[10.0, 20.0, 30.0]])  # copick stores x, y, z


def test_zarr_v3_store_under_zarr2_is_a_clear_error(tmp_path):
    store = tmp_path / "v3.zarr"
    store.mkdir()
    meta = {"zarr_format": 3, "node_type": "group", "attributes": {"ome": {"multiscales": []}}}
    (store / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="zarr-python >= 3") as err:
        read_ome_zarr(store)
    assert err.value.path == store


def test_objects_cryopick_declares_are_usable_in_copick(tmp_path):
    # a lab project that declares only its ribosome, under the portal's name
    cfg = make_copick_config("lab", tmp_path / "overlay")
    cfg["pickable_objects"] = [o for o in cfg["pickable_objects"] if o["name"] == "ribosome"]
    cfg["pickable_objects"][0]["name"] = "cytosolic-ribosome"
    path = tmp_path / "copick.config"  # the name the CZII notebooks use
    path.write_text(json.dumps(cfg, indent=4))
    root = copick.from_file(str(path))
    root.new_run("TS_1")
    ours = make_picks("TS_1", "apo-ferritin", [[30.0, 20.0, 10.0]], score=0.9)
    ribo = make_picks("TS_1", "ribosome", [[50.0, 60.0, 70.0]], score=0.8)
    import pandas as pd

    write_copick_picks(pd.concat([ours, ribo], ignore_index=True), path, "cryopick", "0")
    root = copick.from_file(str(path))
    assert {o.name for o in root.pickable_objects} == {"cytosolic-ribosome", "apo-ferritin"}
    run = root.get_run("TS_1")
    (apo,) = run.get_picks("apo-ferritin", user_id="cryopick", session_id="0")
    (rib,) = run.get_picks("cytosolic-ribosome", user_id="cryopick", session_id="0")
    np.testing.assert_allclose(apo.numpy()[0], [[10.0, 20.0, 30.0]])
    np.testing.assert_allclose(rib.numpy()[0], [[70.0, 60.0, 50.0]])
    # copick itself now accepts new picks of the declared object
    run.new_picks("apo-ferritin", session_id="1", user_id="alice")
