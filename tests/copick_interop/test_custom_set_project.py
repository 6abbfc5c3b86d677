"""A project of the user's own particle types, written by cryopick, opens in copick, and
picks that copick writes for those types read back in cryopick with the set's names."""

import json

import numpy as np
import pytest

copick = pytest.importorskip("copick")

from cryopick.core.particles_file import load_particles_file
from cryopick.io.layout import read_copick_config
from cryopick.io.mrc import write_mrc
from cryopick.io.picks import read_picks
from cryopick.io.picks.copick_config import read_particle_set
from cryopick.simulate import simulate_project


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    d = tmp_path_factory.mktemp("own")
    z, y, x = np.mgrid[:24, :24, :24] - 11.5
    write_mrc(d / "ball.mrc", (z**2 + y**2 + x**2 <= 64).astype(np.float32), 5.0)
    rod = (np.abs(x) <= 10) & (y**2 + z**2 <= 16)
    write_mrc(d / "rod.mrc", rod.astype(np.float32), 5.0)
    entries = [
        {"name": "ball", "map": "ball.mrc", "weight": 2},
        {"name": "rod", "map": "rod.mrc", "aliases": ["stick"]},
    ]
    (d / "particles.json").write_text(json.dumps({"particles": entries}))
    particles = load_particles_file(d / "particles.json")
    config = simulate_project(
        d / "sim", 1, seed=3, shape=(32, 64, 64), preset="easy", progress=False,
        particles=particles,
    )  # fmt: skip
    return config


def test_copick_reads_the_custom_objects_and_truth(project):
    root = copick.from_file(str(project))
    objects = {o.name: o for o in root.pickable_objects}
    assert list(objects) == ["ball", "rod"]
    assert [objects[n].label for n in objects] == [1, 2]
    assert objects["ball"].metadata["cryopick"]["weight"] == 2.0
    assert objects["rod"].metadata["cryopick"]["aliases"] == ["stick"]
    ours = read_particle_set(read_copick_config(project))
    assert ours.names == ("ball", "rod") and ours.radius_A("rod") == objects["rod"].radius
    picks = root.get_run("sim_0000").get_picks(user_id="simulation", session_id="0")
    assert sorted(p.pickable_object_name for p in picks) == ["ball", "rod"]


def test_picks_copick_writes_read_back_with_the_set(project):
    root = copick.from_file(str(project))
    run = root.get_run("sim_0000")
    new = run.new_picks("rod", session_id="1", user_id="annotator")
    new.from_numpy(np.array([[100.0, 200.0, 150.0]]))
    new.store()
    got = read_picks(project, user_id="annotator", session_id="1")
    assert list(got["particle_type"]) == ["rod"]
    np.testing.assert_allclose(got[["x", "y", "z"]].to_numpy(), [[100.0, 200.0, 150.0]])
