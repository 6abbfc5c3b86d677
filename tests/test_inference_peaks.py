import numpy as np
import pandas as pd
import pytest

from cryopick.core.coords import angstrom_to_voxels, voxels_to_angstrom
from cryopick.core.particles import default_particle_set
from cryopick.inference.peaks import find_local_maxima, find_peaks, suppress_non_maxima
from cryopick.inference.picking import PickSettings, choose_thresholds, pick_particles
from cryopick.model import ModelCard, TargetSpec

CZII = default_particle_set()
SPACING_A = 10.0
SHAPE = (40, 64, 64)
GRID = np.indices(SHAPE, dtype=np.float64)


def _gaussian(centre_vox, sigma_vox, height=0.9):
    d2 = sum((g - c) ** 2 for g, c in zip(GRID, centre_vox, strict=True))
    return height * np.exp(-d2 / (2 * sigma_vox**2))


def _sphere(centre_vox, radius_vox, height=0.9):
    d2 = sum((g - c) ** 2 for g, c in zip(GRID, centre_vox, strict=True))
    return height * (d2 <= radius_vox**2)


def _maps(*blobs):
    """Probability maps with (label, field) blobs added; background = 1 - sum."""
    probs = np.zeros((7, *SHAPE))
    for label, field in blobs:
        probs[label] += field
    probs[0] = np.clip(1 - probs[1:].sum(0), 0, 1)
    return probs.astype(np.float16)


def _xyz_to_zyx_vox(df):
    return angstrom_to_voxels(df[["z", "y", "x"]].to_numpy(), SPACING_A)


def test_gaussian_blobs_are_found_with_sub_voxel_accuracy():
    # half-maximum radius 1.18 sigma = the expected blob radius (0.5 * particle radius)
    rib, apo = CZII.get("ribosome"), CZII.get("apo-ferritin")
    rib_sigma = 0.5 * rib.radius_A / SPACING_A / 1.177
    apo_sigma = 0.5 * apo.radius_A / SPACING_A / 1.177
    truth = {
        "ribosome": np.array([[12.3, 20.7, 30.45], [25.6, 40.2, 15.85]]),
        "apo-ferritin": np.array([[20.4, 10.6, 50.2]]),
    }
    probs = _maps(
        *((rib.label, _gaussian(c, rib_sigma)) for c in truth["ribosome"]),
        (apo.label, _gaussian(truth["apo-ferritin"][0], apo_sigma, height=0.7)),
    )
    picks = find_peaks(probs, SPACING_A, "TS_1")
    assert list(picks.columns) == ["experiment", "particle_type", "x", "y", "z", "score"]
    assert (picks["experiment"] == "TS_1").all()
    assert sorted(picks["particle_type"]) == ["apo-ferritin", "ribosome", "ribosome"]
    for name, centres in truth.items():
        found = _xyz_to_zyx_vox(picks[picks["particle_type"] == name])
        for c in centres:
            assert np.linalg.norm(found - c, axis=1).min() < 0.2
    apo_pick = picks[picks["particle_type"] == "apo-ferritin"]
    assert apo_pick["score"].iloc[0] == pytest.approx(0.7, abs=0.05)


def test_positions_are_in_angstrom_with_origin():
    probs = _maps((4, _gaussian((10.0, 20.0, 30.0), 3.2)))
    picks = find_peaks(probs, 20.0, "r", origin_A=5.0)
    np.testing.assert_allclose(
        picks[["z", "y", "x"]].to_numpy()[0], voxels_to_angstrom([10, 20, 30], 20.0) + 5.0, atol=1
    )


def test_nms_suppresses_a_duplicate_but_keeps_two_particles():
    rib = CZII.get("ribosome")  # radius 15 voxels; nms at 0.6 * 15 = 9 voxels
    sigma = 0.5 * rib.radius_A / SPACING_A / 1.177
    # a weaker shoulder 5 voxels from the main peak: one particle
    dup = _maps((4, _gaussian((20, 20, 20), sigma) + _gaussian((20, 20, 25.5), 1.0, 0.35)))
    coords, _ = find_local_maxima(dup[4], 0.3)
    assert len(coords) == 2  # two local maxima before suppression
    assert len(find_peaks(dup, SPACING_A, "r")) == 1
    # two touching particles, 2 radii (30 voxels) apart: both kept
    two = _maps((4, _gaussian((20, 32, 17), sigma) + _gaussian((20, 32, 47), sigma)))
    assert len(find_peaks(two, SPACING_A, "r")) == 2


def test_suppress_non_maxima_is_greedy_by_score():
    coords = np.array([[0, 0, 0], [0, 0, 3], [0, 0, 6]])
    kept = suppress_non_maxima(coords, np.array([0.5, 0.9, 0.8]), radius_vox=3.5)
    # 0.9 wins and removes both neighbours at distance 3
    np.testing.assert_array_equal(kept, [1])
    kept = suppress_non_maxima(coords, np.array([0.9, 0.5, 0.8]), radius_vox=3.5)
    np.testing.assert_array_equal(kept, [0, 2])


def test_blob_of_the_wrong_size_is_rejected():
    rib = CZII.get("ribosome")
    expected_vox = 0.5 * rib.radius_A / SPACING_A  # 7.5 voxels
    right = _maps((4, _sphere((20, 20, 20), expected_vox)))
    assert len(find_peaks(right, SPACING_A, "r")) == 1
    spike = _maps((4, _sphere((20, 20, 20), 1.5)))  # a 1.5-voxel speck for a 7.5-voxel target
    assert len(find_peaks(spike, SPACING_A, "r")) == 0
    assert len(find_peaks(spike, SPACING_A, "r", blob_ratio_range=None)) == 1
    apo = CZII.get("apo-ferritin")  # expects 3 voxels; a ribosome-sized blob is wrong
    big = _maps((apo.label, _sphere((20, 32, 32), 12.0)))
    assert len(find_peaks(big, SPACING_A, "r")) == 0


def test_thresholds_per_class():
    probs = _maps((4, _gaussian((20, 20, 20), 6.4, 0.4)), (5, _gaussian((20, 45, 45), 5.5, 0.4)))
    assert len(find_peaks(probs, SPACING_A, "r")) == 0  # default threshold 0.5
    picks = find_peaks(probs, SPACING_A, "r", thresholds={"ribosome": 0.3})
    assert list(picks["particle_type"]) == ["ribosome"]
    picks = find_peaks(probs, SPACING_A, "r", thresholds={"ribosome": 0.3}, min_score=0.45)
    assert picks.empty


def test_ring_shaped_blob_is_kept_and_centred():
    # a torus: the refined centre lies in its hole, below half the peak; the blob-size
    # check must measure around the maximum, or it would find an empty blob and reject it
    z, y, x = GRID
    rho = np.hypot(y - 32.0, x - 32.0)
    ring = 0.9 * np.exp(-((rho - 5.0) ** 2 + (z - 20.0) ** 2) / (2 * 2.0**2))
    assert ring[20, 32, 32] < 0.45 * ring.max()
    picks = find_peaks(_maps((4, ring)), SPACING_A, "r", thresholds={"ribosome": 0.3})
    assert len(picks) == 1
    assert np.linalg.norm(_xyz_to_zyx_vox(picks)[0] - [20, 32, 32]) < 0.5


def test_detections_of_two_classes_at_one_place():
    sigma = 6.0
    same = _maps((4, _gaussian((20, 30, 30), sigma, 0.6)), (5, _gaussian((20, 31, 32), sigma, 0.8)))
    both = dict.fromkeys(["ribosome", "thyroglobulin"], 0.3)
    # default: no cross-class resolution, both labels are kept (F4 favours recall)
    kept_both = find_peaks(same, SPACING_A, "r", thresholds=both)
    assert sorted(kept_both["particle_type"]) == ["ribosome", "thyroglobulin"]
    # resolution on: the stronger wins at one place, not when apart
    picks = find_peaks(same, SPACING_A, "r", thresholds=both, cross_class_fraction=0.5)
    assert list(picks["particle_type"]) == ["thyroglobulin"]
    apart = _maps(
        (4, _gaussian((20, 15, 15), sigma, 0.6)), (5, _gaussian((20, 48, 48), sigma, 0.8))
    )
    picks = find_peaks(apart, SPACING_A, "r", thresholds=both, cross_class_fraction=0.5)
    assert sorted(picks["particle_type"]) == ["ribosome", "thyroglobulin"]
    # with a ratio, 0.6 is not dominated by 0.8 at ratio 0.7 (0.6 > 0.56) but is at 0.8
    ratio = dict(thresholds=both, cross_class_fraction=0.5)
    assert len(find_peaks(same, SPACING_A, "r", cross_class_ratio=0.7, **ratio)) == 2
    assert len(find_peaks(same, SPACING_A, "r", cross_class_ratio=0.8, **ratio)) == 1


def test_no_peaks_gives_an_empty_table():
    picks = find_peaks(_maps(), SPACING_A, "r")
    assert picks.empty and list(picks.columns)[:6] == [
        "experiment",
        "particle_type",
        "x",
        "y",
        "z",
        "score",
    ]
    assert isinstance(picks, pd.DataFrame)


def test_max_peaks_per_class_keeps_the_strongest():
    rib = CZII.get("ribosome")
    sigma = 0.5 * rib.radius_A / SPACING_A / 1.177
    probs = _maps((4, _gaussian((20, 15, 15), sigma, 0.6) + _gaussian((20, 48, 48), sigma, 0.9)))
    picks = find_peaks(probs, SPACING_A, "r", max_peaks_per_class=1)
    assert len(picks) == 1 and picks["score"].iloc[0] == pytest.approx(0.9, abs=0.01)


def test_pick_particles_places_a_strided_map_and_uses_the_target():
    apo = CZII.get("apo-ferritin")
    r_vox = apo.radius_A / (2 * SPACING_A)  # the map is at stride 2
    probs = _maps((apo.label, _gaussian((20.0, 30.0, 31.0), 0.3 * r_vox)))
    settings = PickSettings(target=TargetSpec(kind="gaussian", fraction=0.3))
    picks = pick_particles(probs, settings, spacing_A=SPACING_A, stride=2, experiment="TS")
    expected = find_peaks(
        probs, 2 * SPACING_A, "TS", blob_radius_fraction=0.3 * 1.1774100225154747, origin_A=5.0
    )
    pd.testing.assert_frame_equal(picks, expected)
    # map voxel j of a stride-2 grid is centred at input voxel 2j + 0.5
    np.testing.assert_allclose(picks[["z", "y", "x"]].to_numpy(), [[405.0, 605.0, 625.0]], atol=1.0)
    # a sphere target expects a smaller blob than this Gaussian: validation rejects it
    small = PickSettings(target=TargetSpec(kind="sphere", fraction=0.1))
    assert pick_particles(probs, small, spacing_A=SPACING_A, stride=2, experiment="TS").empty


def test_choose_thresholds_prefers_tta_ones_for_tta_and_applies_overrides():
    card = ModelCard(
        thresholds={"ribosome": 0.5, "apo-ferritin": 0.4}, thresholds_tta={"ribosome": 0.3}
    )
    assert choose_thresholds(card) == {"ribosome": 0.5, "apo-ferritin": 0.4}
    assert choose_thresholds(card, tta=True) == {"ribosome": 0.3}
    assert choose_thresholds(card, False, {"ribosome": 0.9}) == {
        "ribosome": 0.9,
        "apo-ferritin": 0.4,
    }
    plain = ModelCard(thresholds={"ribosome": 0.5})
    assert choose_thresholds(plain, tta=True) == {"ribosome": 0.5}
    floor = PickSettings.for_candidates(TargetSpec(), 0.05)
    assert (floor.default_threshold, floor.min_score, dict(floor.thresholds)) == (0.05, 0.05, {})
