"""Gold fiducials: found by density, weak picks in their streaks dropped."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryopick.core.coords import voxels_to_angstrom
from cryopick.inference.fiducials import (
    Fiducials,
    drop_fiducial_streak_picks,
    find_fiducials,
    in_fiducial_streaks,
)
from cryopick.inference.pipeline import predict_tomogram
from cryopick.inference.preprocess import normalise_volume, prepare_volume
from cryopick.io.tomograms import Tomogram
from cryopick.model import ModelCard, ModelConfig

from shared_settings import DarkBlobDetector

SHAPE = (40, 48, 56)


def _ball(centre_vox, radius_vox, value):
    grids = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    inside = sum((g - c) ** 2 for g, c in zip(grids, centre_vox, strict=True)) <= radius_vox**2
    return np.where(inside, np.float32(value), np.float32(0.0))


def _noise(seed=0):
    return np.random.default_rng(seed).normal(0.0, 1.0, size=SHAPE).astype(np.float32)


@pytest.mark.parametrize("sign", [-1.0, 1.0])  # gold is found in either polarity
def test_find_fiducials_returns_dense_beads_not_protein_or_specks(sign):
    volume = _noise() + _ball((10, 12, 14), 3, sign * 40.0) + _ball((30, 30, 40), 4, sign * 40.0)
    volume += _ball((20, 40, 10), 5, -4.0)  # protein: dense, but not gold
    volume[5, 5, 50] = sign * 40.0  # a single hot voxel
    found = find_fiducials(normalise_volume(volume, clip_sigma=None), 10.0)
    assert len(found) == 2
    order = np.argsort(found.radii_A)
    np.testing.assert_allclose(
        found.centres_zyx_A[order], voxels_to_angstrom(np.array([[10, 12, 14], [30, 30, 40]]), 10.0)
    )
    # a ball of radius 3 (4) voxels holds 123 (257) voxels: equivalent radius 3.09 (3.94)
    np.testing.assert_allclose(found.radii_A[order], [30.9, 39.4], atol=0.1)
    assert len(find_fiducials(normalise_volume(_noise(), clip_sigma=None), 10.0)) == 0


def test_streak_fan_lies_across_the_tilt_axis_y():
    bead = Fiducials(np.array([[500.0, 500.0, 500.0]]), np.array([50.0]))
    points = np.array(
        [
            [900.0, 510.0, 600.0],  # above the bead, same y: in its rays
            [500.0, 510.0, 900.0],  # same y and z, far along x: beyond the +-60 degree fan
            [900.0, 600.0, 500.0],  # above it but 100 A off in y (> 50 + 25)
            [500.0, 520.0, 520.0],  # at the bead
        ]
    )
    assert in_fiducial_streaks(points, bead).tolist() == [True, False, False, True]


def test_only_weak_picks_in_the_streaks_are_dropped():
    bead = Fiducials(np.array([[500.0, 500.0, 500.0]]), np.array([50.0]))
    picks = pd.DataFrame(
        {
            "experiment": "TS_1",
            "particle_type": "apo-ferritin",
            "x": [600.0, 600.0, 600.0],
            "y": [510.0, 510.0, 900.0],
            "z": [900.0, 900.0, 900.0],
            "score": [0.3, 0.8, 0.3],
        }
    )
    kept = drop_fiducial_streak_picks(picks, bead, max_score=0.5)
    assert kept["score"].tolist() == [0.8, 0.3] and kept["y"].tolist() == [510.0, 900.0]
    pd.testing.assert_frame_equal(
        drop_fiducial_streak_picks(picks, Fiducials(np.zeros((0, 3)), np.zeros(0))), picks
    )


def test_prepare_volume_clips_and_reports_the_bead():
    volume = 0.1 * _noise() + _ball((10, 24, 28), 3, -40.0)
    tomogram = Tomogram(name="TS_1", data=volume, spacing_A=10.0, source=Path("TS_1.mrc"))
    prepared, beads = prepare_volume(tomogram, 10.0)
    assert prepared.min() == -5.0 and prepared.max() <= 5.0
    assert len(beads) == 1
    unsearched, none = prepare_volume(tomogram, 10.0, find_beads=False)
    assert len(none) == 0
    np.testing.assert_array_equal(unsearched, prepared)  # the same input for the network


def test_predict_drops_a_weak_particle_in_a_beads_streak_only():
    # two dark blobs (particles, DarkBlobDetector scores ~0.55) and a gold bead 200 A above
    # the first in z, at the same y and x: the first lies in the bead's streaks, the second
    # 200 A away in y does not
    volume = 0.1 * _noise() + _ball((30, 20, 20), 2, -1.0) + _ball((30, 40, 44), 2, -1.0)
    volume += _ball((10, 20, 20), 3, -40.0)
    tomogram = Tomogram(name="TS_1", data=volume, spacing_A=10.0, source=Path("TS_1.mrc"))
    tiny = ModelConfig(widths=(4, 8), output_stride=2)
    card = ModelCard(architecture=tiny, patch_size=(16, 16, 16), spacing_A=10.0)
    detector = DarkBlobDetector()
    everything = predict_tomogram(tomogram, detector, card, device="cpu", fiducial_max_score=None)
    particles = everything[everything["z"] > 200]  # not the bead itself
    assert len(particles) == 2 and particles["score"].between(0.5, 0.6).all()
    kept = predict_tomogram(tomogram, detector, card, device="cpu", fiducial_max_score=0.7)
    kept_particles = kept[kept["z"] > 200]
    assert len(kept_particles) == 1 and kept_particles["x"].iloc[0] == pytest.approx(440, abs=10)


def test_a_large_dense_region_is_not_taken_for_gold():
    volume = _noise()
    volume[:, :, :10] -= 40.0  # a sixth of the volume: not beads in ice
    assert len(find_fiducials(normalise_volume(volume, clip_sigma=None), 10.0)) == 0
