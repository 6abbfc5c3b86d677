"""Orientation-free shape descriptors of a candidate's density crop."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from cryopick.core.coords import voxels_to_angstrom
from cryopick.inference.rescoring import candidate_features, count_features
from cryopick.inference.shape_features import (
    CROP_HALF_VOX,
    N_SHELLS,
    POWER_BAND_EDGES,
    count_shape_features,
    crop_offsets,
    gather_crops,
    median_reference_power,
    reference_centres,
    shape_features,
)
from cryopick.io.picks import make_picks

SIDE = 2 * CROP_HALF_VOX
N_PROFILE = N_SHELLS + N_SHELLS - 1  # shell means, then spreads
AXES = slice(N_PROFILE, N_PROFILE + 3)  # principal lengths, largest first
N_BANDS = len(POWER_BAND_EDGES) - 1


def _ellipsoid(semi_axes_zyx: tuple[float, float, float]) -> np.ndarray:
    """A dark (-1) uniform ellipsoid centred in a crop of zeros."""
    z, y, x = np.meshgrid(*[np.arange(-CROP_HALF_VOX, CROP_HALF_VOX)] * 3, indexing="ij")
    a, b, c = semi_axes_zyx
    inside = (z / a) ** 2 + (y / b) ** 2 + (x / c) ** 2 <= 1.0
    return -inside.astype(np.float32)


def test_principal_lengths_of_an_ellipsoid_follow_its_axes_in_any_orientation():
    crop = _ellipsoid((4.0, 6.0, 10.0))
    half_turn = np.roll(crop[::-1, :, ::-1], 1, axis=(0, 2))  # offset o -> -o about the centre
    rotated = [crop, crop.transpose(2, 1, 0), crop.transpose(1, 2, 0), half_turn]
    rows = shape_features(np.stack(rotated), radius_vox=9.5)
    assert rows.shape == (4, count_shape_features())
    # a uniform solid ellipsoid has variance semi_axis**2 / 5 along each axis
    expected = np.sqrt(np.array([10.0, 6.0, 4.0]) ** 2 / 5.0)
    assert rows[0, AXES] == pytest.approx(expected, rel=0.05)
    for row in rows[1:]:  # the same numbers whichever way the particle lies
        np.testing.assert_allclose(row, rows[0], rtol=1e-4, atol=1e-4)
    ratios = rows[0, N_PROFILE + 3 : N_PROFILE + 5]
    assert ratios == pytest.approx([0.6, 0.4], rel=0.05)
    assert rows[0, N_PROFILE + 5] == pytest.approx(0.0, abs=1e-3)  # centred


def test_shell_profile_finds_a_sphere_edge_and_power_tells_smooth_from_grainy():
    sphere = _ellipsoid((5.0, 5.0, 5.0))
    noise = np.random.default_rng(0).normal(size=(SIDE, SIDE, SIDE)).astype(np.float32)
    sphere_row, noise_row = shape_features(np.stack([sphere, noise]), radius_vox=5.0)
    means = sphere_row[:N_SHELLS]
    assert (means[:4] > 0).all() and (means[6:] < 0).all()  # dark inside (positive), then out
    assert means[0] == pytest.approx(means[3], abs=1e-5)  # uniform interior
    wide = np.stack([sphere_row, noise_row])[:, -2 * N_BANDS : -N_BANDS]
    # a smooth blob puts its power at low frequencies; white noise spreads it evenly
    assert wide[0, 0] - wide[0, -1] > 4.0
    assert abs(wide[1, 0] - wide[1, -1]) < 1.0
    # under the class mask (1.3 x 5 voxels) the noise crop keeps less power than under
    # the wide one (less volume); the sphere, inside both, keeps its low frequencies
    own = np.stack([sphere_row, noise_row])[:, -N_BANDS:]
    assert (own[1] < wide[1] - 1.0).all()
    assert own[0, 0] == pytest.approx(wide[0, 0], abs=0.3)


def test_shape_features_refuse_crops_of_another_size():
    with pytest.raises(ValueError, match="voxels"):
        shape_features(np.zeros((2, 10, 10, 10), np.float32), radius_vox=5.0)


def test_crops_stay_centred_and_repeat_the_edge_beyond_the_volume():
    volume = np.arange(30 * 31 * 32, dtype=np.float32).reshape(30, 31, 32)
    centres = np.array([[15, 15, 15], [0, 30, 2]])
    crops = gather_crops(volume, centres)
    h = CROP_HALF_VOX
    assert crops[0, h, h, h] == volume[15, 15, 15] and crops[1, h, h, h] == volume[0, 30, 2]
    np.testing.assert_array_equal(crops[0], volume[15 - h : 15 + h, 15 - h : 15 + h, 3:27])
    assert (crops[1, :h, h, h] == volume[0, 30, 2]).all()  # above z = 0: the edge repeated
    assert (crops[1, h, h:, h] == volume[0, 30, 2]).all()  # beyond y = 30 too


def test_crops_match_the_edge_padded_volume_and_the_crop_offsets_everywhere():
    rng = np.random.default_rng(5)
    volume = rng.normal(size=(26, 33, 40)).astype(np.float32)
    h = CROP_HALF_VOX
    padded = np.pad(volume, h, mode="edge")
    centres = np.stack([rng.integers(0, n, 300) for n in volume.shape], axis=1)
    centres[:3] = [[0, 0, 0], [25, 32, 39], [13, 16, 20]]  # both corners and the middle
    crops = gather_crops(volume, centres)
    assert crops.shape == (300, SIDE, SIDE, SIDE) and crops.dtype == np.float32
    for crop, (z, y, x) in zip(crops, centres, strict=True):
        np.testing.assert_array_equal(crop, padded[z : z + SIDE, y : y + SIDE, x : x + SIDE])
    clipped = np.clip(centres[:, None, :] + crop_offsets()[None], 0, np.array(volume.shape) - 1)
    np.testing.assert_array_equal(crops.reshape(300, -1), volume[tuple(clipped.transpose(2, 0, 1))])


def test_candidate_features_add_the_shape_columns_of_each_pick():
    probs = np.full((7, 20, 20, 20), 0.1, np.float16)
    volume = np.zeros((40, 40, 40), np.float32)
    volume[20 - 3 : 20 + 4, 20 - 5 : 20 + 6, 20 - 9 : 20 + 10] = -1.0  # a dark box
    picks = make_picks("r", "apo-ferritin", voxels_to_angstrom([[20, 20, 20]], 10.0))
    picks["score"] = 0.5
    full = candidate_features(
        pd.concat([picks]), probs, volume, spacing_A=10.0, stride=2, features="map+density+shape"
    )
    density = candidate_features(picks, probs, volume, spacing_A=10.0, stride=2)
    n_density = count_features(7, "map+density")
    assert full.shape == (1, count_features(7, "map+density+shape"))
    assert count_features(7, "map+density+shape") == n_density + count_shape_features()
    np.testing.assert_array_equal(full[:, :n_density], density)
    crop = volume[20 - 12 : 20 + 12, 20 - 12 : 20 + 12, 20 - 12 : 20 + 12]
    reference = gather_crops(volume, reference_centres(volume.shape))
    expected = shape_features(crop[None], 6.0, median_reference_power(reference, 6.0))
    np.testing.assert_allclose(full[:, n_density:], expected, rtol=1e-5)
    lengths = full[0, n_density + N_PROFILE : n_density + N_PROFILE + 3]
    assert lengths[0] > lengths[1] > lengths[2]  # x longest, then y, then z


def test_power_relative_to_the_tomogram_ignores_its_gain_and_most_of_its_filter():
    rng = np.random.default_rng(3)
    volume = rng.normal(size=(48, 64, 64)).astype(np.float32)
    volume[24 - 4 : 24 + 5, 32 - 4 : 32 + 5, 32 - 4 : 32 + 5] -= 2.0  # a dark cube
    centre = np.array([[24, 32, 32]])

    def power_columns(vol: np.ndarray, relative: bool) -> np.ndarray:
        crops = gather_crops(vol, centre)
        reference = gather_crops(vol, reference_centres(vol.shape))
        row = shape_features(
            crops, 5.0, median_reference_power(reference, 5.0) if relative else None
        )[0]
        return row[-2 * N_BANDS :]

    brighter = 3.0 * volume  # another gain: log power + log 9 in every band
    np.testing.assert_allclose(
        power_columns(brighter, True), power_columns(volume, True), atol=1e-4
    )
    assert power_columns(brighter, False) - power_columns(volume, False) == pytest.approx(
        np.full(2 * N_BANDS, np.log(9.0)), abs=1e-3
    )
    smoothed = ndimage.gaussian_filter(volume, 1.0)  # as if resampled from coarser voxels
    raw_shift = np.abs(power_columns(smoothed, False) - power_columns(volume, False)).mean()
    relative_shift = np.abs(power_columns(smoothed, True) - power_columns(volume, True)).mean()
    assert relative_shift < 0.3 * raw_shift
    assert (reference_centres(volume.shape) == reference_centres(volume.shape)).all()


def test_reference_crops_in_a_constant_fill_are_left_out():
    rng = np.random.default_rng(4)
    volume = rng.normal(size=(48, 64, 64)).astype(np.float32)
    volume[24 - 4 : 24 + 5, 32 - 4 : 32 + 5, 32 - 4 : 32 + 5] -= 2.0
    padded = np.zeros((48, 64, 256), np.float32)  # three quarters constant fill
    padded[:, :, :64] = volume
    centre = np.array([[24, 32, 32]])

    def power_columns(vol: np.ndarray) -> np.ndarray:
        reference = gather_crops(vol, reference_centres(vol.shape))
        reference_power = median_reference_power(reference, 5.0)
        row = shape_features(gather_crops(vol, centre), 5.0, reference_power)[0]
        return row[-2 * N_BANDS :]

    # most reference crops of the padded volume are constant: left out, the median is
    # that of the data's crops (other positions, so not exactly the same numbers)
    np.testing.assert_allclose(power_columns(padded), power_columns(volume), atol=0.3)


def test_power_bands_are_the_mean_power_of_the_full_spectrum_in_each_band():
    from cryopick.inference.shape_features import _geometry, _power_bands

    rng = np.random.default_rng(11)
    density = rng.normal(size=(5, SIDE**3)).astype(np.float32)
    mask = rng.uniform(0.0, 1.0, SIDE**3).astype(np.float32)
    power = np.abs(np.fft.fftn((density * mask).reshape(5, SIDE, SIDE, SIDE), axes=(1, 2, 3)))
    frequency = np.fft.fftfreq(SIDE) * SIDE
    fz, fy, fx = np.meshgrid(frequency, frequency, frequency, indexing="ij")
    radius = np.sqrt(fz**2 + fy**2 + fx**2)
    expected = np.stack(
        [
            (power**2)[:, (radius >= a) & (radius < b)].mean(axis=1)
            for a, b in itertools.pairwise(POWER_BAND_EDGES)
        ],
        axis=1,
    )
    found = _power_bands(density, _geometry(), mask)
    np.testing.assert_allclose(found, np.log(expected + 1e-6), rtol=1e-5, atol=1e-5)
