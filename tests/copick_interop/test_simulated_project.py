"""A project written by `cryopick simulate` opens in the copick library."""

import numpy as np
import pytest

copick = pytest.importorskip("copick")

from cryopick.core.particles import default_particle_set
from cryopick.simulate import simulate_project, simulate_run

CZII = default_particle_set()
PARTICLE_NAMES = CZII.names

SHAPE = (32, 64, 64)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    config = simulate_project(out, 1, seed=7, shape=SHAPE, preset="easy", progress=False)
    run = simulate_run("easy", SHAPE, seed=np.random.SeedSequence([7, 0]), name="sim_0000")
    return config, run


def test_copick_lists_runs_objects_and_tomograms(project):
    config, truth = project
    root = copick.from_file(str(config))
    assert [o.name for o in root.pickable_objects] == list(PARTICLE_NAMES)
    assert [o.label for o in root.pickable_objects] == [CZII.get(n).label for n in PARTICLE_NAMES]
    run = root.get_run("sim_0000")
    vs = run.get_voxel_spacing(10.0)
    assert sorted(t.tomo_type for t in vs.tomograms) == ["ctfdeconvolved", "denoised", "wbp"]
    (tomo,) = vs.get_tomograms("denoised")
    np.testing.assert_array_equal(tomo.numpy(), truth.tomograms["denoised"])
    assert tomo.numpy(zarr_group="2").shape == tuple(s // 4 for s in SHAPE)


def test_copick_reads_truth_picks_with_orientations(project):
    config, truth = project
    run = copick.from_file(str(config)).get_run("sim_0000")
    picks = run.get_picks(user_id="simulation", session_id="0")
    assert sorted(p.pickable_object_name for p in picks) == sorted(PARTICLE_NAMES)
    n_total = 0
    for p in picks:
        points, transforms = p.numpy()  # (N, 3) x/y/z in Å, (N, 4, 4)
        mine = truth.picks[truth.picks["particle_type"] == p.pickable_object_name]
        np.testing.assert_allclose(np.sort(points[:, 0]), np.sort(mine["x"].to_numpy()), atol=1e-3)
        for tf in transforms:
            np.testing.assert_allclose(tf[:3, :3] @ tf[:3, :3].T, np.eye(3), atol=1e-6)
        n_total += len(points)
    assert n_total == len(truth.picks) > 0


def test_copick_reads_the_multilabel_segmentation(project):
    config, truth = project
    run = copick.from_file(str(config)).get_run("sim_0000")
    (seg,) = run.get_segmentations(user_id="simulation", is_multilabel=True)
    assert seg.name == "particles" and seg.voxel_size == pytest.approx(10.0)
    np.testing.assert_array_equal(seg.numpy(), truth.labels)
