"""Simulator domain randomisation (issue 14): gold, carbon film, contamination, crowders."""

import hashlib
import json

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import ndimage as ndi
from scipy.spatial.distance import pdist

from cryopick.core.errors import InputError
from cryopick.simulate import get_preset, simulate_run
from cryopick.simulate.artefacts import (
    Canvas,
    CarbonFilm,
    GoldBeads,
    IceContamination,
    SpecimenExtras,
    add_artefacts,
    add_carbon_film,
    add_gold_beads,
    add_ice_contamination,
)
from cryopick.simulate.crowders import (
    ProceduralCrowders,
    crowder_pool,
    gyration_radius,
    imitated_targets,
    make_crowder,
)
from cryopick.simulate.distractors import SIMILAR_CORRELATION, axis_view_correlation
from cryopick.simulate.library import prepare_library
from cryopick.simulate.presets import SimulationConfig, draw_run_params
from cryopick.simulate.sample import build_sample
from cryopick.simulate.settings_file import load_config
from cryopick.simulate.templates import support_mask

PROTEIN_V, ICE_V = 2.0, 4.5
SLAB_Z = (12, 28)  # flat ice from z = 12 to 28 (surfaces at 11.5 and 28.5)
ALL_ON = SpecimenExtras(
    gold=GoldBeads(probability=1.0, per_um2=(400.0, 400.0)),
    carbon=CarbonFilm(probability=1.0),
    contamination=IceContamination(probability=1.0, count=(2, 2), diameter_A=(300.0, 500.0)),
    crowders=ProceduralCrowders(fraction=(0.5, 0.5), hard_negative_fraction=0.3),
)
# fingerprints of runs made before the extras existed (czii, tiny volume); unchanged while
# off. Labels and truth exactly; the tomograms (imaging uses FFTs, whose last bits differ
# between numpy/scipy releases: max 5e-6 of a unit spread between numpy 1.26 / scipy 1.12
# and numpy 2.4 / scipy 1.17) by three fixed random projections, to 0.01
CZII_TRUTH_SHA256 = "3bc605b39342bede096835087535c5bfe0e8448c58e4c70db5f3e7e9ab419665"
CZII_TOMOGRAM_PROJECTIONS = {
    "wbp": (-443.41, -607.2359, 331.4804),
    "ctfdeconvolved": (-843.8293, -858.0325, -559.1621),
    "denoised": (-847.2914, -797.318, -869.6898),
}
CZII_SAMPLE_SHA256 = {
    4242: "f8555d8d7274caf0cd388f41b3b5e2637a650cf3914f93b26c565afabe08636b",
    5151: "0effa3962c73e047dfdc46d5fa96374069f345b0e3f81f78c4d8f8d984661ffc",
}


def make_canvas(shape=(40, 120, 120), spacing_A=10.0):
    """A flat ice slab with nothing in it yet."""
    slab = np.zeros(shape, np.float32)
    slab[SLAB_Z[0] : SLAB_Z[1] + 1] = 1.0
    surfaces = np.stack([np.full(shape[1:], SLAB_Z[0] - 0.5), np.full(shape[1:], SLAB_Z[1] + 0.5)])
    return Canvas(
        np.zeros(shape, np.float32), np.zeros(shape, bool), slab, surfaces, spacing_A,
        PROTEIN_V, ICE_V,
    )  # fmt: skip


def test_czii_runs_are_bit_identical_to_those_made_before_the_extras():
    run = simulate_run("czii", shape=(48, 96, 96), spacing_A=10.0, seed=4242)
    truth = run.labels.tobytes() + run.picks[["x", "y", "z"]].to_numpy().tobytes()
    assert hashlib.sha256(truth).hexdigest() == CZII_TRUTH_SHA256
    weights = np.random.default_rng(0).standard_normal((3, *run.labels.shape))
    for kind, expected in CZII_TOMOGRAM_PROJECTIONS.items():
        volume = run.tomograms[kind].astype(np.float64)
        projections = [float((w * volume).sum()) for w in weights]
        np.testing.assert_allclose(projections, expected, rtol=0, atol=0.01, err_msg=kind)
    config = get_preset("czii")
    for seed, expected in CZII_SAMPLE_SHA256.items():
        rng = np.random.default_rng(seed)
        sample = build_sample(config, draw_run_params(config, rng), (48, 96, 96), 10.0, rng)
        data = sample.potential.tobytes() + sample.labels.tobytes()
        assert hashlib.sha256(data + sample.centres_zyx.tobytes()).hexdigest() == expected


def test_extras_that_are_off_draw_nothing():
    canvas, rng = make_canvas(), np.random.default_rng(0)
    state = rng.bit_generator.state
    info = add_artefacts(canvas, SpecimenExtras(), rng)
    assert rng.bit_generator.state == state and not canvas.potential.any()
    assert info == {"carbon_edge": 0.0, "gold_beads": 0.0, "contamination_blobs": 0.0}
    assert not SpecimenExtras().artefacts_enabled and not SpecimenExtras().crowders.enabled


def test_extras_round_trip_through_json_and_reject_bad_ranges(tmp_path):
    config = get_preset("czii").model_copy(update={"extras": ALL_ON})
    assert SimulationConfig.model_validate_json(config.model_dump_json()) == config
    path = tmp_path / "simulation.json"
    path.write_text(json.dumps({"config": json.loads(config.model_dump_json())}))
    assert load_config("czii", path) == config
    assert "extras" not in draw_run_params(config, np.random.default_rng(0))
    with pytest.raises(ValidationError):
        GoldBeads(diameter_A=(150.0, 50.0))
    with pytest.raises(ValidationError):
        ProceduralCrowders(fraction=(0.2, 1.5))
    path.write_text(json.dumps({"extras": {"carbon": {"probability": 2}}}))
    with pytest.raises(InputError, match=r"extras\.carbon\.probability"):
        load_config("czii", path)


def test_gold_beads_sit_at_the_surfaces_far_above_protein_in_poisson_numbers():
    canvas = make_canvas()
    gold = GoldBeads(probability=1.0, per_um2=(1000.0, 1000.0), surface_fraction=1.0)
    placed = add_gold_beads(canvas, gold, np.random.default_rng(3))
    expected = 1000.0 * 120 * 120 * 1e-6  # 14.4 beads per 0.0144 µm²
    assert expected - 3 * expected**0.5 < placed <= expected + 3 * expected**0.5
    cores, n = ndi.label(canvas.potential > 0.5 * gold.contrast * PROTEIN_V)
    assert n == placed
    # a full voxel of gold is 10x protein's contrast above ice (20 V; 24.5 V in vacuum)
    assert canvas.potential.max() == pytest.approx(gold.contrast * PROTEIN_V + ICE_V, rel=0.01)
    assert min(ndi.maximum(canvas.potential, cores, range(1, n + 1))) >= 20.0 - 1e-3
    for z, _, _ in ndi.center_of_mass(cores > 0, cores, range(1, n + 1)):
        gap = min(abs(z - (SLAB_Z[0] - 0.5)), abs(z - (SLAB_Z[1] + 0.5)))
        assert gap <= 7.5 + 1  # within a radius of a surface (diameters <= 15 nm)
    assert canvas.occupied.sum() == (canvas.potential > 0).sum()


def test_carbon_covers_one_side_of_a_straight_edge_on_one_ice_surface():
    canvas = make_canvas((60, 120, 120))  # room for the film above the ice only
    carbon = CarbonFilm(probability=1.0, thickness_A=(150.0, 150.0), edge_radius_A=(1e7, 1e7))
    add_carbon_film(canvas, carbon, np.random.default_rng(5))
    covered = canvas.potential.sum(axis=0) > 0
    assert 0.1 < covered.mean() < 0.9
    for rows in (covered, covered.T):  # a half-plane: each row's cover is one end of it
        for row in rows:
            run = np.flatnonzero(row)
            assert len(run) == 0 or (np.ptp(run) + 1 == len(run) and (row[0] or row[-1]))
    inside = canvas.potential[:, covered]  # (z, covered columns)
    full = inside > 0.99 * inside.max()
    fully_covered = full.any(axis=0)  # away from the soft edge
    assert fully_covered.mean() > 0.9
    assert np.all(full.sum(axis=0)[fully_covered] == 15)  # 150 Å, from the surface at 28.5
    assert inside.max() == pytest.approx(carbon.contrast * PROTEIN_V + ICE_V, rel=1e-5)
    assert not canvas.potential[SLAB_Z[0] : SLAB_Z[1] + 1].any()  # the ice is untouched
    assert np.flatnonzero(full.any(axis=1)).tolist() == list(range(29, 44))  # above the ice


def test_carbon_edge_moves_with_the_seed():
    covers = []
    for seed in (1, 2):
        canvas = make_canvas()
        add_carbon_film(canvas, CarbonFilm(probability=1.0), np.random.default_rng(seed))
        covers.append(canvas.potential.sum(axis=0) > 0)
    assert (covers[0] != covers[1]).mean() > 0.05


def test_contamination_blobs_are_large_and_rest_on_a_surface():
    canvas = make_canvas((60, 120, 120))
    canvas.slab_fraction[:] = 0
    canvas.slab_fraction[22:39] = 1
    canvas.surfaces_z[:] = np.array([21.5, 38.5])[:, None, None]
    contamination = IceContamination(probability=1.0, count=(3, 3), diameter_A=(300.0, 600.0))
    placed = add_ice_contamination(canvas, contamination, np.random.default_rng(7))
    assert placed == 3
    blobs, n = ndi.label(canvas.potential > 0)
    assert n == 3
    for index in range(1, 4):
        zyx = np.argwhere(blobs == index)
        width = np.ptp(zyx[:, 1:], axis=0).max() + 1
        assert 15 <= width <= 61  # 30-60 nm wide (lobes within the drawn diameter)
        z = zyx[:, 0]
        assert z.min() <= 38.5 <= z.max() or z.min() <= 21.5 <= z.max()  # on a surface
        assert (canvas.slab_fraction[tuple(zyx.T)] == 0).mean() > 0.4  # mostly outside
    assert ICE_V <= canvas.potential.max() <= ICE_V + PROTEIN_V * 1.0 + 1e-4


def test_artefacts_never_enter_occupied_space():
    canvas = make_canvas()
    canvas.occupied[SLAB_Z[0] : SLAB_Z[1] + 1, 30:90, 30:90] = True  # placed particles
    canvas.blocked[:] = canvas.occupied & (canvas.slab_fraction > 0)
    add_artefacts(canvas, ALL_ON, np.random.default_rng(11))
    assert not canvas.potential[SLAB_Z[0] : SLAB_Z[1] + 1, 30:90, 30:90].any()


def test_built_sample_with_all_extras_keeps_targets_clear_and_is_reproducible():
    config = get_preset("easy").model_copy(update={"extras": ALL_ON, "solvent_noise": 0.0})
    library = prepare_library(None, 10.0)
    samples = []
    for seed in (3, 3, 4):
        rng = np.random.default_rng(seed)
        params = draw_run_params(config, rng)
        samples.append(build_sample(config, params, (40, 96, 96), 10.0, rng, library))
    first, again, other = samples
    np.testing.assert_array_equal(first.potential, again.potential)
    assert not np.array_equal(first.potential, other.potential)
    extras = first.info["extras"]
    assert extras["carbon_edge"] == 1 and extras["gold_beads"] > 0
    assert extras["procedural_crowders"] > 0 and extras["hard_negatives"] > 0
    assert len(first.particle_types) > 0
    # targets are protein (<= ice + ~1.3 x protein contrast), never gold (10x in its cores)
    protein_V = config.protein_contrast_V
    assert first.potential[first.labels > 0].max() < config.ice_potential_V + 1.6 * protein_V
    assert first.potential.max() > config.ice_potential_V + 9.9 * protein_V


def test_procedural_crowders_span_the_configured_sizes_and_shapes():
    for shape in ("globular", "elongated", "branched", "shell", "ring"):
        config = ProceduralCrowders(fraction=(0.5, 0.5), size_A=(150.0, 150.0), shapes=(shape,))
        rng = np.random.default_rng(0)
        for _ in range(6):
            density = make_crowder(config, 10.0, rng)
            extent = pdist(np.argwhere(density > 0.35)).max() + 1
            assert 0.7 * 15 <= extent <= 15 + 1.5  # overall diameter 150 Å = 15 voxels
            assert density.max() == pytest.approx(1.0)
    config = ProceduralCrowders(fraction=(0.5, 0.5), size_A=(30.0, 300.0))
    rng = np.random.default_rng(1)
    extents = [
        pdist(np.argwhere(make_crowder(config, 10.0, rng) > 0.35)).max() + 1 for _ in range(40)
    ]
    assert min(extents) < 8 and max(extents) > 18 and max(extents) <= 31.5
    shell = ProceduralCrowders(
        fraction=(0.5, 0.5), size_A=(200.0, 200.0), shapes=("shell",), max_blobs=1
    )
    hollow = make_crowder(shell, 10.0, np.random.default_rng(2))
    assert hollow[tuple(np.array(hollow.shape) // 2)] == 0
    assert support_mask(hollow).sum() > 1.3 * (hollow > 0.35).sum()  # the lumen is filled


def test_rings_of_subunits_leave_their_centre_empty():
    # subunits on a circle: a ring of 4 or more blobs has a hole where a lump has density
    hollow = {}
    for shape in ("ring", "globular"):
        config = ProceduralCrowders(fraction=(0.5, 0.5), size_A=(200.0, 200.0), shapes=(shape,))
        rng = np.random.default_rng(3)
        centres = [make_crowder(config, 10.0, rng) for _ in range(20)]
        hollow[shape] = sum(c[tuple(np.array(c.shape) // 2)] < 0.35 for c in centres)
    assert hollow["ring"] >= 5 and hollow["globular"] == 0
    assert "ring" not in ProceduralCrowders().shapes  # asked for by name: old seeds unchanged


def test_hard_negatives_take_a_targets_size_but_not_its_shape():
    library = prepare_library(None, 10.0)
    config = ProceduralCrowders(
        fraction=(0.5, 0.5), hard_negative_fraction=0.5, n_shapes=1, n_hard_negative_shapes=3,
        hard_negative_types=("beta-galactosidase", "thyroglobulin"),
    )  # fmt: skip
    targets = imitated_targets(config, library)
    assert [t.name for t in targets] == ["beta-galactosidase", "thyroglobulin"]
    _, hard = crowder_pool(config, library, 10.0, np.random.default_rng(0))
    assert len(hard) == 6
    for i, target in enumerate(targets):
        reference = target.on_grid()[0]
        for negative in hard[3 * i : 3 * i + 3]:
            assert gyration_radius(negative) == pytest.approx(gyration_radius(reference), rel=0.05)
            volume = support_mask(negative).sum() / support_mask(reference).sum()
            assert 0.7 < volume < 1.45
            assert axis_view_correlation(negative, reference) < SIMILAR_CORRELATION
        assert axis_view_correlation(np.flip(reference, 0), reference) > 0.9  # the test can tell
    everyone = ProceduralCrowders(fraction=(0.5, 0.5), hard_negative_fraction=0.5)
    assert len(imitated_targets(everyone, library)) == 6
    with pytest.raises(InputError, match="hard_negative_types"):
        imitated_targets(everyone.model_copy(update={"hard_negative_types": ("nope",)}), library)


def test_no_procedural_crowder_resembles_a_target():
    # apo-ferritin-sized hollow shells: several of them would pass for apo-ferritin
    library = prepare_library(None, 10.0)
    apo = library.targets[0].on_grid()[0]
    shells = ProceduralCrowders(
        fraction=(0.5, 0.5), size_A=(130.0, 140.0), shapes=("shell",), max_blobs=1, n_shapes=6
    )
    rng = np.random.default_rng(0)
    raw = [axis_view_correlation(make_crowder(shells, 10.0, rng), apo) for _ in range(6)]
    assert max(raw) > SIMILAR_CORRELATION  # what the pool must leave out
    kept, _ = crowder_pool(shells, library, 10.0, np.random.default_rng(0))
    for density in kept:
        similar = abs(gyration_radius(density) / gyration_radius(apo) - 1) <= 0.1
        assert not similar or axis_view_correlation(density, apo) <= SIMILAR_CORRELATION


def test_a_settings_file_switches_one_extra_on_and_keeps_the_presets_others(tmp_path):
    path = tmp_path / "gold.json"
    path.write_text(json.dumps({"extras": {"gold": {"probability": 1.0}}}))
    varied = load_config("varied")
    config = load_config("varied", path)
    assert config.extras.gold.probability == 1.0
    assert config.extras.gold.per_um2 == varied.extras.gold.per_um2  # kept, not reset
    assert config.extras.carbon == varied.extras.carbon
    assert config.extras.crowders == varied.extras.crowders
    assert config.defocus_um == varied.defocus_um
