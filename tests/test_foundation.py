"""Particle table, coordinate convention, project layouts and atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cryopick.core.coords import angstrom_to_voxels, voxels_to_angstrom, xyz_to_zyx, zyx_to_xyz
from cryopick.core.errors import InputError
from cryopick.core.particles import UnknownParticleError, default_particle_set
from cryopick.io.atomic import atomic_path, write_text_atomic
from cryopick.io.layout import (
    make_copick_config,
    picks_filename,
    read_copick_config,
    resolve_layout,
    voxel_spacing_dirname,
)

CZII = default_particle_set()
PARTICLE_NAMES = CZII.names


def test_particle_table_matches_the_challenge():
    expected = {
        "apo-ferritin": (1, 60, 1, "4V1W"),
        "beta-amylase": (2, 65, 0, "1FA2"),
        "beta-galactosidase": (3, 90, 2, "6X1Q"),
        "ribosome": (4, 150, 1, "6EK0"),
        "thyroglobulin": (5, 130, 2, "6SCJ"),
        "virus-like-particle": (6, 135, 1, "6N4V"),
    }
    got = {p.name: (p.label, p.radius_A, p.weight, p.pdb_id) for p in CZII}
    assert got == expected
    assert CZII.total_weight == 7
    assert len({p.colour for p in CZII}) == 6


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("ferritin-complex", "apo-ferritin"),
        ("cytosolic-ribosome", "ribosome"),
        ("virus-like-capsid", "virus-like-particle"),
        ("Beta_Galactosidase", "beta-galactosidase"),
        ("thyroglobulin", "thyroglobulin"),
    ],
)
def test_portal_aliases_resolve(alias, name):
    assert CZII.resolve(alias) == name


def test_unknown_particle_lists_the_known_ones():
    with pytest.raises(UnknownParticleError) as err:
        CZII.get("proteasome")
    for name in PARTICLE_NAMES:
        assert name in str(err.value)
    assert CZII.by_label(4).name == "ribosome"
    with pytest.raises(UnknownParticleError):
        CZII.by_label(7)


def test_voxel_i_is_centred_at_i_times_spacing():
    spacing_A = 10.012
    idx_zyx = np.array([[0, 0, 0], [1, 2, 3], [183, 629, 629]])
    coords = voxels_to_angstrom(idx_zyx, spacing_A)
    assert coords[0].tolist() == [0.0, 0.0, 0.0]
    assert coords[1].tolist() == pytest.approx([10.012, 20.024, 30.036])
    assert angstrom_to_voxels(coords, spacing_A) == pytest.approx(idx_zyx)
    # x is the last array axis: a pick at x=30 Å is column 3 of the array
    volume = np.zeros((2, 5, 5))
    volume[0, 1, 3] = 1
    z, y, x = np.argwhere(volume)[0]
    assert xyz_to_zyx([[x * 10.0, y * 10.0, z * 10.0]]).tolist() == [[0.0, 10.0, 30.0]]
    assert zyx_to_xyz(xyz_to_zyx([[1.0, 2.0, 3.0]])).tolist() == [[1.0, 2.0, 3.0]]


def test_copick_config_round_trip_and_layout(tmp_path):
    cfg = make_copick_config("demo", tmp_path / "overlay", tmp_path / "static")
    assert [o["name"] for o in cfg["pickable_objects"]] == list(PARTICLE_NAMES)
    path = tmp_path / "copick.json"
    path.write_text(json.dumps(cfg))
    layout = read_copick_config(path)
    assert layout.overlay_root == (tmp_path / "overlay").resolve()
    assert layout.static_root == (tmp_path / "static").resolve()
    run_dir = tmp_path / "static" / "ExperimentRuns" / "TS_5_4"
    run_dir.mkdir(parents=True)
    assert resolve_layout(path).run_names() == ["TS_5_4"]
    assert layout.tomogram_write_path("TS_5_4", 10.012, "wbp") == (
        layout.static_root / "ExperimentRuns/TS_5_4/VoxelSpacing10.012/wbp.zarr"
    )
    assert voxel_spacing_dirname(10) == "VoxelSpacing10.000"
    assert picks_filename("curation", "0", "ribosome") == "curation_0_ribosome.json"


def test_kaggle_root_and_non_projects(tmp_path):
    (tmp_path / "train/static/ExperimentRuns/TS_1").mkdir(parents=True)
    (tmp_path / "train/overlay/ExperimentRuns/TS_1/Picks").mkdir(parents=True)
    layout = resolve_layout(tmp_path / "train")
    assert layout.run_names() == ["TS_1"]
    assert layout.picks_dir("TS_1") == tmp_path / "train/overlay/ExperimentRuns/TS_1/Picks"
    (tmp_path / "picks.json").write_text('{"points": []}')
    assert resolve_layout(tmp_path / "picks.json") is None
    # the competition root (train/ and test/): its one split with runs is read
    assert resolve_layout(tmp_path).overlay_root == tmp_path / "train/overlay"
    assert resolve_layout(tmp_path / "train/overlay/ExperimentRuns/TS_1") is None


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    target = tmp_path / "out.csv"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_atomic_folder_replaces_an_existing_folder_only_when_allowed(tmp_path):
    target = tmp_path / "store.zarr"
    for content in ("first", "second"):
        with atomic_path(target, replace_folder=True) as tmp:
            tmp.mkdir()
            (tmp / "data").write_text(content)
    assert (target / "data").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]
    with pytest.raises(InputError, match="is an existing folder"), atomic_path(target) as tmp:
        tmp.mkdir()
    assert (target / "data").read_text() == "second"
