import json

import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi
from typer.testing import CliRunner

from cryopick.cli import app
from cryopick.core.coords import angstrom_to_voxels
from cryopick.core.particles import default_particle_set
from cryopick.simulate import get_preset, simulate_run
from cryopick.simulate.imaging import (
    backprojection_matrix,
    dose_symmetric_order,
    electron_wavelength_A,
    interaction_constant,
    projection_matrix,
)
from cryopick.simulate.presets import (
    REAL_COUNTS_MEAN_STD,
    REAL_VOLUME_A3,
    draw_counts,
    draw_run_params,
)
from cryopick.simulate.reconstruct import reconstruct_wbp
from cryopick.simulate.templates import (
    load_templates,
    rotate_template,
    rotation_xyz_to_zyx,
    support_mask,
)

from shared_settings import SMALL_PROJECT

CZII = default_particle_set()
PARTICLE_NAMES = CZII.names
SHAPE = (64, 128, 128)


@pytest.fixture(scope="module")
def crowded_easy_run():
    config = get_preset("easy").model_copy(update={"count_scale": 25.0})
    return simulate_run(config, SHAPE, seed=11, name="sim_test")


def test_template_library_is_centred_and_complete():
    templates = load_templates()
    for name in PARTICLE_NAMES:
        tpl = templates[f"target/{name}"]
        centre = (np.array(tpl.density.shape) - 1) / 2
        np.testing.assert_allclose(ndi.center_of_mass(tpl.density), centre, atol=0.15)
        assert tpl.particle_type == name
    # beta-amylase is shipped as a tetramer: ~4x the monomer map's 1fa2 mass (~100 voxels)
    assert 350 < templates["target/beta-amylase"].density.sum() < 450
    assert templates["target/ribosome"].radius_vox > templates["target/apo-ferritin"].radius_vox


def test_rotate_template_quarter_turn_about_z_swaps_x_and_y():
    density = np.zeros((9, 9, 9), np.float32)
    density[4, 4, 6] = 1.0  # +2 voxels along x
    quarter = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], float)  # x -> y (x, y, z order)
    out = rotate_template(density, rotation_xyz_to_zyx(quarter))
    assert np.unravel_index(out.argmax(), out.shape) == (4, 6, 4)


def test_rotate_template_zoom_scales_the_support_volume():
    ribosome = load_templates()["target/ribosome"].density
    base = support_mask(rotate_template(ribosome, np.eye(3))).sum()
    double = rotate_template(ribosome, np.eye(3), zoom=2.0)
    assert double.shape == (4 * (ribosome.shape[0] // 2) + 1,) * 3  # odd, centre kept
    assert support_mask(double).sum() == pytest.approx(8 * base, rel=0.1)
    np.testing.assert_allclose(
        ndi.center_of_mass(double), (np.array(double.shape) - 1) / 2, atol=0.2
    )


def test_other_voxel_sizes_keep_particles_to_scale():
    run = simulate_run("easy", (32, 64, 64), spacing_A=12.0, seed=2)
    assert run.spacing_A == 12.0 and len(run.picks) > 0
    coords = run.picks[["z", "y", "x"]].to_numpy()
    assert np.all(coords >= 0) and np.all(coords < np.array([32, 64, 64]) * 12.0)
    vox = np.floor(coords / 12.0 + 0.5).astype(int)
    labels_at_picks = run.labels[tuple(vox.T)]
    expected = [CZII.get(n).label for n in run.picks["particle_type"]]
    np.testing.assert_array_equal(labels_at_picks, expected)
    with pytest.raises(ValueError, match="spacing_A"):
        simulate_run("easy", (32, 64, 64), spacing_A=40.0)


def test_microscope_constants_at_300_kV():
    assert electron_wavelength_A(300) == pytest.approx(0.019687, rel=1e-4)
    assert interaction_constant(300) == pytest.approx(6.526e-4, rel=2e-3)


def test_dose_symmetric_order_alternates_pairs():
    angles = np.arange(-9, 10, 3.0)  # -9 -6 -3 0 3 6 9
    order = dose_symmetric_order(angles)
    np.testing.assert_array_equal(angles[order], [0, 3, 6, -3, -6, 9, -9])


def test_projection_at_zero_tilt_is_the_z_sum_and_wbp_inverts_it():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(7, 12)).astype(np.float32)  # (Z, X)
    np.testing.assert_allclose(
        projection_matrix(7, 12, 0.0) @ plane.ravel(), plane.sum(0), atol=1e-5
    )
    # a point back-projected at 0 degrees smears along z only
    image = np.zeros(12, np.float32)
    image[5] = 1
    smear = (backprojection_matrix(7, 12, 0.0) @ image).reshape(7, 12)
    np.testing.assert_allclose(smear[:, 5], 1)
    assert smear[:, np.arange(12) != 5].max() == 0


def test_wbp_of_a_point_peaks_at_the_point():
    nz, ny, nx = 24, 4, 32
    volume = np.zeros((nz, ny, nx), np.float32)
    volume[9, :, 20] = 1.0
    flat = np.ascontiguousarray(volume.transpose(0, 2, 1)).reshape(nz * nx, ny)
    angles = np.arange(-60, 61, 3.0)
    images = np.stack([(projection_matrix(nz, nx, a) @ flat).T for a in angles])
    recon = reconstruct_wbp(images, angles, nz)
    assert np.unravel_index(recon[:, 2].argmax(), (nz, nx)) == (9, 20)


def test_counts_follow_the_real_data():
    config = get_preset("czii")
    rng = np.random.default_rng(0)
    draws = [draw_counts(config, REAL_VOLUME_A3, rng) for _ in range(400)]
    for name, (mean, std) in REAL_COUNTS_MEAN_STD.items():
        values = np.array([d[name] for d in draws])
        assert values.mean() == pytest.approx(mean, rel=0.12)
        assert std * 0.7 < values.std() < std * 1.6 + 3


def _radial_support(template, r):
    """Where the rotational average of a template is dense, on a (2r+1)^3 grid centred at r."""
    n = template.shape[0]
    radii = np.sqrt(((np.indices(template.shape) - (n - 1) / 2) ** 2).sum(0))
    bins = np.round(radii).astype(int).ravel()
    profile = np.bincount(bins, template.ravel()) / np.bincount(bins)
    grid = np.round(np.sqrt((np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1] ** 2).sum(0))).astype(int)
    padded = np.concatenate([profile, np.zeros(max(0, grid.max() + 1 - len(profile)))])
    return padded[grid] > 0.3 * profile.max(), grid


def _average_contrast(volume, centres_vox, template):
    """Average box at the centres; mean over the particle's radial support minus a shell outside."""
    r = template.shape[0] // 2 + 4
    inner, grid = _radial_support(template, r)
    shell = (grid > template.shape[0] // 2 + 1) & (grid <= r)
    padded = np.pad(volume, r)  # zero = the volume mean; reflecting would mirror particles
    boxes = [
        padded[tuple(slice(c, c + 2 * r + 1) for c in np.round(ctr).astype(int))]
        for ctr in centres_vox
    ]
    avg = np.mean(boxes, axis=0)
    return avg[inner].mean() - avg[shell].mean(), avg, inner


def _truth_voxels(run):
    """Truth centres of a simulated run as fractional voxel indices (z, y, x)."""
    return angstrom_to_voxels(run.picks[["z", "y", "x"]].to_numpy(), run.spacing_A)


def _centres_wholly_inside(run, coords, name, template):
    """Voxel centres of class ``name`` whose template box lies wholly inside the volume.

    A clipped particle's density is off-centre, so averages use only whole ones.
    """
    half = template.shape[0] // 2
    upper = np.array(run.tomograms["denoised"].shape) - 1 - half
    inside = np.all((coords >= half) & (coords <= upper), axis=1)
    return coords[(run.picks["particle_type"] == name).to_numpy() & inside]


def test_truth_centres_sit_on_dark_density(crowded_easy_run):
    run = crowded_easy_run
    tomo = run.tomograms["denoised"]
    coords = _truth_voxels(run)
    rng = np.random.default_rng(0)
    templates = load_templates()
    checked = 0
    for name in PARTICLE_NAMES:
        template = templates[f"target/{name}"].density
        centres = _centres_wholly_inside(run, coords, name, template)
        if len(centres) < 2:
            continue
        contrast, avg, inner = _average_contrast(tomo, centres, template)
        assert contrast < -0.5, name  # protein darker than solvent
        # the dark part of the average is centred on the box centre
        dark = np.clip(np.median(avg) - avg, 0, None) * inner
        r = avg.shape[0] // 2
        np.testing.assert_allclose(ndi.center_of_mass(dark), (r, r, r), atol=1.0, err_msg=name)
        random = rng.uniform(0, np.array(tomo.shape) - 1, size=(len(centres) * 4, 3))
        random_contrast, _, _ = _average_contrast(tomo, random, template)
        assert abs(random_contrast) < 0.25 * abs(contrast), name
        checked += 1
    assert checked >= 4


def test_supports_do_not_overlap_and_labels_match_the_truth(crowded_easy_run):
    run = crowded_easy_run
    templates = load_templates()
    count = np.zeros(SHAPE, np.int32)
    expected = np.zeros(SHAPE, np.uint8)
    coords = _truth_voxels(run)
    for (_, pick), centre in zip(run.picks.iterrows(), coords, strict=True):
        rot = rotation_xyz_to_zyx(np.asarray(pick["transformation"])[:3, :3])
        voxel = np.floor(centre + 0.5).astype(int)
        shift = centre - voxel
        # alternates are off in `easy`, so every pick uses the main target map
        mask = support_mask(
            rotate_template(templates[f"target/{pick['particle_type']}"].density, rot, shift)
        )
        half = mask.shape[0] // 2
        sl = tuple(
            slice(max(v - half, 0), min(v + half + 1, s)) for v, s in zip(voxel, SHAPE, strict=True)
        )
        msl = tuple(
            slice(s.start - (v - half), s.stop - (v - half)) for s, v in zip(sl, voxel, strict=True)
        )
        count[sl] += mask[msl]
        expected[sl][mask[msl]] = CZII.get(pick["particle_type"]).label
    assert len(run.picks) >= 10
    assert count.max() == 1
    np.testing.assert_array_equal(run.labels, expected)


def test_same_seed_gives_identical_runs():
    a = simulate_run("easy", (32, 64, 64), seed=5)
    b = simulate_run("easy", (32, 64, 64), seed=5)
    c = simulate_run("easy", (32, 64, 64), seed=6)
    for key in ("wbp", "ctfdeconvolved", "denoised"):
        np.testing.assert_array_equal(a.tomograms[key], b.tomograms[key])
        assert a.tomograms[key].dtype == np.float32
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.picks.drop(columns="transformation").equals(b.picks.drop(columns="transformation"))
    assert not np.array_equal(a.tomograms["wbp"], c.tomograms["wbp"])


def test_project_reads_back_through_cryopick_io(small_simulated_project):
    from cryopick.io.omezarr import read_ome_zarr, read_ome_zarr_levels
    from cryopick.io.picks import read_picks
    from cryopick.io.tomograms import read_tomograms

    config, root = small_simulated_project, small_simulated_project.parent
    seed, shape, n_runs = SMALL_PROJECT["seed"], SMALL_PROJECT["shape"], SMALL_PROJECT["n_runs"]
    runs = [f"sim_{i:04d}" for i in range(n_runs)]
    cfg = json.loads(config.read_text())
    assert [o["name"] for o in cfg["pickable_objects"]] == list(PARTICLE_NAMES)
    # run i of a project is simulated from SeedSequence([seed, i])
    run0 = simulate_run("easy", shape, seed=np.random.SeedSequence([seed, 0]), name="sim_0000")
    for tomo_type in ("wbp", "ctfdeconvolved", "denoised"):
        tomos = read_tomograms(config, tomo_type=tomo_type)
        assert [t.name for t in tomos] == runs
        assert tomos[0].spacing_A == pytest.approx(10.0)
        np.testing.assert_array_equal(tomos[0].to_numpy(), run0.tomograms[tomo_type])
    run_dir = root / "ExperimentRuns/sim_0000"
    store = run_dir / "VoxelSpacing10.000/wbp.zarr"
    z, y, x = shape
    levels = [(z, y, x), (z // 2, y // 2, x // 2), (z // 4, y // 4, x // 4)]
    assert [s for s, _ in read_ome_zarr_levels(store)] == levels
    picks = read_picks(config)
    mine = picks[picks["experiment"] == "sim_0000"].sort_values(["particle_type", "x"])
    truth = run0.picks.sort_values(["particle_type", "x"])
    np.testing.assert_allclose(mine[["x", "y", "z"]].to_numpy(), truth[["x", "y", "z"]].to_numpy())
    pick_files = sorted(p.name for p in (run_dir / "Picks").iterdir())
    assert pick_files == sorted(f"simulation_0_{n}.json" for n in PARTICLE_NAMES)
    seg = run_dir / "Segmentations/10.000_simulation_0_particles-multilabel.zarr"
    labels, spacing = read_ome_zarr(seg)
    assert spacing == pytest.approx(10.0)
    np.testing.assert_array_equal(np.asarray(labels[...]), run0.labels)
    record = json.loads((root / "simulation.json").read_text())
    assert record["seed"] == seed and set(record["runs"]) == set(runs)


def test_cli_simulate_writes_a_project(tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            str(out),
            "--runs",
            "1",
            "--shape",
            "32",
            "48",
            "48",
            "--preset",
            "easy",
            "--seed",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    store = zarr.open_group(
        str(out / "ExperimentRuns/sim_0000/VoxelSpacing10.000/denoised.zarr"), mode="r"
    )
    assert store["0"].shape == (32, 48, 48)
    # an earlier project's simulation.json reproduces it
    again = tmp_path / "again"
    args = ["--runs", "1", "--shape", "32", "48", "48", "--seed", "1"]
    result = CliRunner().invoke(
        app, ["simulate", str(again), *args, "--config", str(out / "simulation.json")]
    )
    assert result.exit_code == 0, result.output
    again_store = zarr.open_group(
        str(again / "ExperimentRuns/sim_0000/VoxelSpacing10.000/denoised.zarr"), mode="r"
    )
    np.testing.assert_array_equal(again_store["0"][...], store["0"][...])
    bad = CliRunner().invoke(app, ["simulate", str(tmp_path / "x"), "--preset", "nope"])
    assert bad.exit_code == 2 and "unknown preset" in bad.output


@pytest.mark.slow
def test_czii_preset_particles_are_dark_and_centred():
    config = get_preset("czii").model_copy(update={"count_scale": 8.0})
    run = simulate_run(config, (96, 192, 192), seed=3)
    tomo = run.tomograms["denoised"]
    coords = _truth_voxels(run)
    templates = load_templates()
    dark_classes = 0
    for name in PARTICLE_NAMES:
        template = templates[f"target/{name}"].density
        centres = _centres_wholly_inside(run, coords, name, template)
        if len(centres) >= 3:
            contrast, _, _ = _average_contrast(tomo, centres, template)
            dark_classes += contrast < -0.5
    assert dark_classes >= 4


def test_only_a_finished_simulation_counts_as_complete(tmp_path):
    from cryopick.simulate.project import is_complete_simulation

    (tmp_path / "copick_config.json").write_text("{}")
    assert not is_complete_simulation(tmp_path)  # no simulation.json
    (tmp_path / "simulation.json").write_text(json.dumps({"complete": False}))
    assert not is_complete_simulation(tmp_path)  # interrupted
    (tmp_path / "simulation.json").write_text(json.dumps({"complete": True}))
    assert is_complete_simulation(tmp_path)
    (tmp_path / "copick_config.json").unlink()
    assert not is_complete_simulation(tmp_path)
    (tmp_path / "simulation.json").write_text("not json")
    assert not is_complete_simulation(tmp_path)


def test_varied_preset_draws_each_runs_tilt_scheme_within_its_ranges():
    config = get_preset("varied")
    draws = [draw_run_params(config, np.random.default_rng(seed)) for seed in range(40)]
    lows = np.array([d["tilt_min_deg"] for d in draws])
    highs = np.array([d["tilt_max_deg"] for d in draws])
    assert np.all((lows <= -40.0) & (lows >= -70.0)) and np.all((highs >= 40) & (highs <= 70))
    assert not np.allclose(lows, -highs)  # the two sides are drawn independently
    assert {d["tilt_step_deg"] for d in draws} == {2.0, 3.0, 4.0}
    angles = config.tilt_angles_deg(draws[0])
    assert angles[0] == pytest.approx(draws[0]["tilt_min_deg"])
    assert angles[-1] == pytest.approx(draws[0]["tilt_max_deg"])
    assert np.diff(angles).mean() == pytest.approx(draws[0]["tilt_step_deg"], rel=0.1)


def test_fixed_tilt_presets_draw_the_same_stream_as_before_tilt_ranges_existed():
    # a czii run draws exactly one uniform per range field and the astigmatism angle, in
    # field order, so runs simulated before per-run tilts existed reproduce bit for bit
    config = get_preset("czii")
    params = draw_run_params(config, np.random.default_rng(5))
    assert "tilt_min_deg" not in params and "tilt_step_deg" not in params
    rng = np.random.default_rng(5)
    ranged = ["ice_thickness_fraction", "ice_tilt_deg", "ice_offset_fraction"]
    assert [params[k] for k in ranged] == [rng.uniform(*getattr(config, k)) for k in ranged]
    assert config.tilt_angles_deg(params).tolist() == np.arange(-45.0, 46.0, 3.0).tolist()
