"""Simulating a user's own particle set (issue 13): targets, config, truth, distractors."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cryopick.cli import app
from cryopick.core.coords import angstrom_to_voxels
from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet, ParticleSpec, default_particle_set
from cryopick.core.particles_file import load_particles_file
from cryopick.io.mrc import write_mrc
from cryopick.simulate import get_preset, simulate_project, simulate_run
from cryopick.simulate.distractors import distractor_pool, same_density
from cryopick.simulate.examples import proteasome_map
from cryopick.simulate.library import prepare_library
from cryopick.simulate.presets import cluster_fractions, count_mean_std, draw_counts
from cryopick.simulate.templates import rotate_template, rotation_xyz_to_zyx, support_mask
from cryopick.simulate.user_maps import density_for

SHAPE = (32, 64, 64)
# ~5 copies per type in SHAPE (the custom count rule gives 50 per real-size tomogram)
CROWDED = get_preset("easy").model_copy(update={"count_scale": 60.0})
RING_MAJOR_A, RING_MINOR_A = 55.0, 18.0
BALL_A, BALL_SEPARATION_A = 28.0, 80.0


def _grid(n, spacing_A):
    return (np.indices((n, n, n)) - (n - 1) / 2) * spacing_A


def ring_map(spacing_A=5.0, n=40):
    """A torus in the xy plane: major radius 55 Å, tube radius 18 Å (density 1 inside)."""
    z, y, x = _grid(n, spacing_A)
    return (np.hypot(np.hypot(x, y) - RING_MAJOR_A, z) <= RING_MINOR_A).astype(np.float32)


def dumbbell_map(spacing_A=10.0, n=20):
    """Two balls of radius 28 Å whose centres are 80 Å apart along x."""
    z, y, x = _grid(n, spacing_A)
    balls = [np.sqrt((x - s) ** 2 + y**2 + z**2) <= BALL_A for s in (-40.0, 40.0)]
    return (balls[0] | balls[1]).astype(np.float32)


def ball_map(radius_A, spacing_A=10.0):
    n = int(2 * radius_A / spacing_A) + 6
    z, y, x = _grid(n, spacing_A)
    return (np.sqrt(x**2 + y**2 + z**2) <= radius_A).astype(np.float32)


def write_particles(path, entries):
    path.write_text(json.dumps({"particles": entries}))
    return path


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    folder = tmp_path_factory.mktemp("maps")
    write_mrc(folder / "ring.mrc", ring_map(), 5.0)
    write_mrc(folder / "dumbbell.mrc", dumbbell_map(), 10.0)
    write_mrc(folder / "ball.mrc", ball_map(30.0), 10.0)
    write_mrc(folder / "big-ball.mrc", ball_map(120.0), 10.0)
    write_mrc(folder / "barrel.mrc", proteasome_map(5.0), 5.0)  # the packaged 3j9i map
    return folder


@pytest.fixture(scope="module")
def particles_file(maps):
    return write_particles(
        maps / "particles.json",
        [
            {"name": "ring", "map": "ring.mrc", "radius_A": 70, "weight": 2, "colour": "#123456"},
            {"name": "dumbbell", "map": "dumbbell.mrc", "aliases": ["db"]},
            {"name": "apo-ferritin"},  # a built-in CZII type: its packaged template
        ],
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory, particles_file):
    out = tmp_path_factory.mktemp("custom") / "project"
    particles = load_particles_file(particles_file)
    config = simulate_project(
        out, 1, seed=4, shape=SHAPE, preset=CROWDED, progress=False, particles=particles
    )
    run = simulate_run(
        CROWDED, SHAPE, seed=np.random.SeedSequence([4, 0]), name="sim_0000", particles=particles
    )
    return config, run


def test_config_declares_exactly_the_set(project, particles_file):
    config, run = project
    measured = density_for(load_particles_file(particles_file).get("dumbbell"), 10.0)[1]
    objects = json.loads(config.read_text())["pickable_objects"]
    assert [o["name"] for o in objects] == ["ring", "dumbbell", "apo-ferritin"]
    assert [o["label"] for o in objects] == [1, 2, 3]
    assert [o["radius"] for o in objects] == [70.0, pytest.approx(measured), 60.0]
    assert objects[0]["color"] == [0x12, 0x34, 0x56, 128]
    assert objects[2]["color"][:3] == [0x2C, 0xA0, 0x2C]  # palette colour of label 3
    meta = [o["metadata"]["cryopick"] for o in objects]
    assert [m["weight"] for m in meta] == [2.0, 1.0, 1.0]
    assert meta[1]["aliases"] == ["db"]
    assert run.particles.names == ("ring", "dumbbell", "apo-ferritin")
    record = json.loads((config.parent / "simulation.json").read_text())
    assert record["particles"] == run.particles.to_records()
    assert record["distractors"]["source"] == "default"


def test_measured_radius_fills_a_missing_radius(project, particles_file):
    _, run = project
    # two balls of 28 Å: the sphere of their volume has radius 28 * 2^(1/3) = 35.3 Å
    assert run.particles.radius_A("dumbbell") == pytest.approx(BALL_A * 2 ** (1 / 3), rel=0.1)
    assert run.particles.radius_A("ring") == 70.0  # a given radius is kept
    assert load_particles_file(particles_file).get("dumbbell").radius_A is None


def test_truth_picks_carry_the_set_names(project):
    config, run = project
    counts = run.picks["particle_type"].value_counts().to_dict()
    assert set(counts) == {"ring", "dumbbell", "apo-ferritin"}
    picks_dir = config.parent / "ExperimentRuns/sim_0000/Picks"
    for name in ("ring", "dumbbell", "apo-ferritin"):
        data = json.loads((picks_dir / f"simulation_0_{name}.json").read_text())
        assert data["pickable_object_name"] == name
        xs = sorted(p["location"]["x"] for p in data["points"])
        mine = sorted(run.picks.loc[run.picks["particle_type"] == name, "x"])
        np.testing.assert_allclose(xs, mine, atol=1e-3)
    assert sorted(p.name for p in picks_dir.iterdir()) == [
        "simulation_0_apo-ferritin.json",
        "simulation_0_dumbbell.json",
        "simulation_0_ring.json",
    ]


def test_segmentation_labels_are_the_set_labels(project):
    """Every truth particle's support, rebuilt from its pose, carries its type's label."""
    from cryopick.io.omezarr import read_ome_zarr

    config, run = project
    library = prepare_library(run.particles, 10.0)
    maps = {t.name: (t.maps[0].density, t.zoom) for t in library.targets}
    expected = np.zeros(SHAPE, np.uint8)
    centres = angstrom_to_voxels(run.picks[["z", "y", "x"]].to_numpy(), 10.0)
    for (_, pick), centre in zip(run.picks.iterrows(), centres, strict=True):
        density, zoom = maps[pick["particle_type"]]
        rot = rotation_xyz_to_zyx(np.asarray(pick["transformation"])[:3, :3])
        voxel = np.floor(centre + 0.5).astype(int)
        mask = support_mask(rotate_template(density, rot, centre - voxel, zoom))
        half = mask.shape[0] // 2
        lo = voxel - half
        sl = tuple(
            slice(max(a, 0), min(a + mask.shape[0], s)) for a, s in zip(lo, SHAPE, strict=True)
        )
        msl = tuple(slice(s.start - a, s.stop - a) for s, a in zip(sl, lo, strict=True))
        expected[sl][mask[msl]] = run.particles.label(pick["particle_type"])
    np.testing.assert_array_equal(run.labels, expected)
    assert set(np.unique(run.labels)) == {0, 1, 2, 3}
    seg = config.parent / (
        "ExperimentRuns/sim_0000/Segmentations/10.000_simulation_0_particles-multilabel.zarr"
    )
    np.testing.assert_array_equal(np.asarray(read_ome_zarr(seg)[0][...]), run.labels)


def test_default_distractors_add_the_czii_maps_not_simulated(project):
    _, run = project
    record = prepare_library(run.particles, 10.0).distractors.record()
    czii = [f"czii/{n}" for n in default_particle_set().names if n != "apo-ferritin"]
    assert record["maps"] == ["8vaf", "2uv8", "3ipm", "3j9i", "4cr2", "4v7r", "6utj", *czii]
    assert record["dropped"] == []
    # the CZII set itself gets exactly the packaged distractors, as before
    default = prepare_library(None, 10.0).distractors.record()
    assert default["maps"] == ["8vaf", "2uv8", "3ipm", "3j9i", "4cr2", "4v7r", "6utj"]


def test_a_target_is_never_also_a_distractor(maps):
    by_density = ParticleSet((ParticleSpec(name="barrel", map=maps / "barrel.mrc"),))
    assert prepare_library(by_density, 10.0).distractors.dropped == ("3j9i",)
    with_id = ParticleSet((ParticleSpec(name="ring", map=maps / "ring.mrc", pdb_id="6UTJ"),))
    assert prepare_library(with_id, 10.0).distractors.dropped == ("6utj",)
    # a distractors file: a copy of the ring under another name (density), an entry with
    # the target's file stem (id), a distinct ball (kept)
    write_mrc(maps / "copy-of-ring.mrc", ring_map(), 5.0)
    distractors = write_particles(
        maps / "distractors.json",
        [
            {"name": "copy", "map": "copy-of-ring.mrc"},
            {"name": "same-stem", "map": "ring.mrc"},
            {"name": "ball", "map": "ball.mrc"},
        ],
    )
    ring = ParticleSet((ParticleSpec(name="ring", map=maps / "ring.mrc"),))
    library = prepare_library(ring, 10.0, distractors).distractors
    assert library.dropped == ("copy", "same-stem")
    assert [m.key for m in library.maps] == ["ball"]


def test_same_density_tells_shapes_apart():
    ring = rotate_template(ring_map(), np.eye(3), zoom=0.5)
    assert same_density(ring, ring.copy())
    assert not same_density(ring, dumbbell_map())
    assert not same_density(ball_map(30.0), ball_map(36.0))  # same shape, 20 % larger


def test_no_distractors_and_a_distractors_file(maps):
    ring = ParticleSet((ParticleSpec(name="ring", map=maps / "ring.mrc"),))
    default = simulate_run("easy", SHAPE, seed=2, particles=ring)
    none = simulate_run("easy", SHAPE, seed=2, particles=ring, distractors="none")
    assert default.params["n_distractors"] > 0 and none.params["n_distractors"] == 0
    assert none.params["n_vesicles"] == default.params["n_vesicles"]  # vesicles stay
    distractors = write_particles(maps / "balls.json", [{"name": "ball", "map": "ball.mrc"}])
    library = prepare_library(ring, 10.0, distractors)
    assert [m.key for m in library.distractors.maps] == ["ball"]
    assert not library.distractors.maps[0].large  # 113,000 Å3: a lysate-sized protein
    small, large = distractor_pool(np.random.default_rng(0), 10.0, library.distractors)
    assert (len(small), len(large)) == (16 + 6, 0)  # blobs and 6 turns of the ball
    run = simulate_run("easy", SHAPE, seed=2, library=library)
    assert run.params["n_distractors"] > 0


def test_the_default_set_given_explicitly_changes_nothing():
    a = simulate_run(CROWDED, SHAPE, seed=3)
    b = simulate_run(CROWDED, SHAPE, seed=3, particles=default_particle_set())
    for key in ("wbp", "ctfdeconvolved", "denoised"):
        np.testing.assert_array_equal(a.tomograms[key], b.tomograms[key])
    np.testing.assert_array_equal(a.labels, b.labels)
    assert len(a.picks) > 0
    assert a.picks.drop(columns="transformation").equals(b.picks.drop(columns="transformation"))
    np.testing.assert_array_equal(
        np.stack(a.picks["transformation"]), np.stack(b.picks["transformation"])
    )


def test_counts_of_custom_types_follow_their_radius():
    assert count_mean_std("ribosome", 150.0) == (47.3, 18.5)  # real CZII statistics
    mean, std = count_mean_std("mine", 150.0, builtin=False)  # fills 1 % of the volume
    assert (mean, std) == (pytest.approx(50.0), pytest.approx(17.5))
    assert count_mean_std("mine", 250.0, builtin=False)[0] == pytest.approx(11.2, abs=0.1)
    assert count_mean_std("mine", 400.0, builtin=False)[0] == 10.0
    with pytest.raises(ValueError, match="radius"):
        count_mean_std("mine", None, builtin=False)
    big = ParticleSet((ParticleSpec(name="big", radius_A=250.0, model="x.cif"),))
    draws = [draw_counts(get_preset("czii"), 630 * 630 * 184 * 1e3, np.random.default_rng(i), big)
             for i in range(300)]  # fmt: skip
    assert np.mean([d["big"] for d in draws]) == pytest.approx(11.2, rel=0.12)


def test_cluster_settings_are_checked_against_the_set(maps):
    ring = ParticleSet((ParticleSpec(name="ring", radius_A=70.0, map=maps / "ring.mrc"),))
    config = get_preset("czii").model_copy(update={"cluster_fraction": {"Ring": 0.5}})
    assert cluster_fractions(config, ring) == {"ring": 0.5}
    assert cluster_fractions(get_preset("czii"), ring) == {}  # the CZII entries are ignored
    bad = get_preset("czii").model_copy(update={"cluster_fraction": {"rnig": 0.5}})
    with pytest.raises(InputError, match="cluster_fraction names 'rnig'"):
        cluster_fractions(bad, ring)
    with pytest.raises(InputError, match="rnig"):
        cluster_fractions(bad, None)


def test_radius_far_from_the_measured_one_is_an_error(maps):
    wrong = ParticleSet((ParticleSpec(name="ring", radius_A=200.0, map=maps / "ring.mrc"),))
    with pytest.raises(InputError, match="inconsistent"):
        prepare_library(wrong, 10.0)


def test_cli_simulates_a_particles_file(tmp_path, particles_file, maps):
    out = tmp_path / "cli"
    args = ["--runs", "1", "--shape", "32", "64", "64", "--preset", "easy"]
    result = CliRunner().invoke(
        app, ["simulate", str(out), *args, "--particles", str(particles_file),
              "--distractors", "none"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    objects = json.loads((out / "copick_config.json").read_text())["pickable_objects"]
    assert [o["name"] for o in objects] == ["ring", "dumbbell", "apo-ferritin"]
    record = json.loads((out / "simulation.json").read_text())
    assert record["distractors"]["source"] == "none"
    assert record["runs"]["sim_0000"]["n_distractors"] == 0


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--distractors", "nope.json"], "--distractors: expected 'default', 'none'"),
        (["--particles", "big.json"], "larger than the tomogram"),
        (["--particles", "missing.json"], "particles file does not exist"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, maps, option, message):
    write_particles(maps / "big.json", [{"name": "big", "map": "big-ball.mrc"}])
    option = [option[0], str(maps / option[1])]
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["simulate", str(out), "--shape", "16", "32", "32", "--preset", "easy", *option]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()  # checked before the project folder is made
