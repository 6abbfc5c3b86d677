"""Batched blob refinement and sizes against a plain one-peak-at-a-time reference."""

import math

import numpy as np
from scipy import ndimage

from cryopick.inference.blobs import find_blobs, measure_blob_radii, refine_peaks
from cryopick.inference.peaks import find_local_maxima


def _reference_blob(prob, centre, peak, radius_vox):
    """The blob of one peak, written the obvious way: label the whole map."""
    grid = np.indices(prob.shape, dtype=np.float64)
    inside = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius_vox**2
    mask = (prob >= prob.dtype.type(0.5 * peak)) & inside
    labels, _ = ndimage.label(mask)
    own = labels[tuple(np.round(centre).astype(int))]
    if own == 0:
        return np.zeros((0, 3))
    return np.argwhere(labels == own)


def _reference_refine(prob, start, peak, radius_vox, n_iter=5):
    centre = np.asarray(start, dtype=np.float64)
    for _ in range(n_iter):
        points = _reference_blob(prob, centre, peak, radius_vox)
        if len(points) == 0:
            break
        w = prob[tuple(points.T)].astype(np.float64) - 0.5 * peak
        if w.sum() <= 0:
            break
        new = (points * w[:, None]).sum(0) / w.sum()
        done = np.abs(new - centre).max() < 1e-3
        centre = new
        if done:
            break
    shift = centre - start
    norm = np.linalg.norm(shift)
    return start + (shift if norm <= radius_vox else shift * radius_vox / norm)


def _noisy_blobs(seed=0, shape=(24, 40, 40)):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), 2.0)
    field = (field - field.min()) / (field.max() - field.min())
    grid = np.indices(shape, dtype=np.float64)
    for centre in [(0.3, 5.2, 20.0), (12.4, 20.7, 38.6), (11.0, 9.0, 9.0)]:  # two at edges
        d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        field += 0.9 * np.exp(-d2 / (2 * 2.5**2))
    return (field / field.max()).astype(np.float16)


def test_refine_peaks_matches_one_peak_at_a_time_reference():
    prob = _noisy_blobs()
    coords, values = find_local_maxima(prob, 0.3)
    assert len(coords) >= 5
    batched = refine_peaks(prob, coords, values, 4.2)
    for coord, value, got in zip(coords, values, batched, strict=True):
        expected = _reference_refine(prob, coord.astype(np.float64), float(value), 4.2)
        np.testing.assert_allclose(got, expected, atol=1e-9)
    assert np.abs(batched - coords).max() > 0.1  # the peaks did move


def test_blob_radii_match_reference_counts():
    prob = _noisy_blobs(seed=3)
    coords, values = find_local_maxima(prob, 0.3)
    radii = measure_blob_radii(prob, coords, values, 6.5)
    for coord, value, radius in zip(coords, values, radii, strict=True):
        n = len(_reference_blob(prob, coord.astype(np.float64), float(value), 6.5))
        assert math.isclose(radius, (3 * n / (4 * math.pi)) ** (1 / 3), rel_tol=1e-12)


def test_a_ball_is_centred_and_measured_exactly():
    grid = np.indices((30, 30, 30), dtype=np.float64)
    centre = np.array([14.3, 15.0, 13.6])
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    prob = np.exp(-d2 / (2 * 3.0**2)).astype(np.float32)
    start = np.round(centre)[None]
    refined = refine_peaks(prob, start, prob[tuple(start[0].astype(int))][None], 6.0)
    np.testing.assert_allclose(refined[0], centre, atol=0.05)
    ball = (d2 <= 4.0**2).astype(np.float32)  # flat top: every voxel of it is in the blob
    radius = measure_blob_radii(ball, start, np.array([1.0]), 8.0)[0]
    assert math.isclose(radius, (3 * int(ball.sum()) / (4 * math.pi)) ** (1 / 3))


def test_blob_below_half_the_peak_at_the_centre_is_empty_and_does_not_move():
    prob = np.zeros((10, 10, 10), dtype=np.float32)
    prob[5, 5, 2] = 1.0  # the voxel at the centre is 0: below half the peak
    in_blob, _, _ = find_blobs(prob, np.array([[5.0, 5.0, 5.0]]), np.array([1.0]), 4.0)
    assert not in_blob.any()
    refined = refine_peaks(prob, np.array([[5.0, 5.0, 5.0]]), np.array([1.0]), 4.0)
    np.testing.assert_array_equal(refined, [[5.0, 5.0, 5.0]])


def test_cubes_of_different_peaks_are_not_connected():
    # all cubes are labelled in one call: a bar in the second cube must not join the two
    # pieces of the first cube's (which sit at the same places within their cubes)
    prob = np.zeros((9, 9, 21), dtype=np.float32)
    prob[4, 4, 3:6] = 1.0  # first cube (x 1..9): its blob, around the centre x=5
    prob[4, 4, 7:10] = 1.0  # a separate piece past the gap at x=6
    prob[4, 4, 11:20] = 1.0  # second cube (x 11..19): one bar over the whole cube
    centres = np.array([[4.0, 4.0, 5.0], [4.0, 4.0, 15.0]])
    in_blob, _, index = find_blobs(prob, centres, np.array([1.0, 1.0]), 4.0)
    assert in_blob[0].sum() == 3
    assert in_blob[1].sum() == 9
    np.testing.assert_array_equal(index[0, 2], np.arange(1, 10))
