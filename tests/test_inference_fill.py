"""Constant fill (padding, masks, rotated corners) in tomograms: found, left out, blanked."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from cryopick.inference.fill import FILL_RIM_VOXELS, find_fill_values, flat_in_plane, mark_fill
from cryopick.inference.preprocess import normalise_volume

SHAPE = (24, 96, 96)


def _noise(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=SHAPE) * 3.0 + 50.0).astype(np.float32)


@pytest.mark.parametrize("fill", ["min", "zero", "max"])
def test_fill_is_left_out_of_the_normalisation_and_set_to_the_median(fill, caplog):
    # before: a quarter of the voxels at the minimum widened the robust spread ~6-fold and a
    # held-out tomogram padded so gave no picks; now the data normalise as without the fill
    data = _noise()
    value = {"min": data.min() - 1.0, "zero": 0.0, "max": data.max() + 1.0}[fill]
    padded = data.copy()
    padded[:, :, 72:] = value
    padded[:, :20, :] = value
    alone = normalise_volume(data[:, 20:, :72])
    with caplog.at_level(logging.INFO):
        result = normalise_volume(padded, source="padded.mrc")
    assert "padded.mrc" in caplog.text and "constant value" in caplog.text
    rim = FILL_RIM_VOXELS - 1  # voxels of data beyond the fill's edge
    np.testing.assert_array_equal(result[:, :, 72 - rim :], 0.0)
    np.testing.assert_array_equal(result[:, : 20 + rim, :], 0.0)
    inside = result[:, 20 + rim :, : 72 - rim]
    expected = alone[:, rim:, : 72 - rim]
    # the same median and spread up to sampling: within 3 % of the spread
    assert np.abs(inside - expected).max() < 0.03 * 5
    assert abs(float(np.std(inside)) - float(np.std(expected))) < 0.03


def test_noisy_integer_data_have_no_fill():
    # int8 data repeat values all the time; only flat patches count as fill
    rng = np.random.default_rng(1)
    coarse = np.clip(np.round(rng.normal(size=SHAPE) * 2.0), -128, 127).astype(np.int8)
    sample = coarse[::2, ::2, ::2].astype(np.float32)
    assert len(find_fill_values(sample[flat_in_plane(sample)], sample.ravel())) == 0
    result = normalise_volume(coarse)
    assert np.count_nonzero(result == 0.0) == np.count_nonzero(coarse == np.median(coarse))
    # data quantised to a few levels: the commonest value is flat in ~3 % of the sample,
    # but only where it happens to repeat (a tenth of its voxels): still no fill
    few = np.clip(np.round(rng.normal(size=SHAPE) * 0.5), -128, 127).astype(np.int8)
    sample = few[::2, ::2, ::2].astype(np.float32)
    flat = sample[flat_in_plane(sample)]
    assert len(flat) > 0.01 * sample.size
    assert len(find_fill_values(flat, sample.ravel())) == 0
    np.testing.assert_array_equal(normalise_volume(few) != 0.0, few != np.median(few))


def test_fill_marks_only_flat_voxels_of_the_fill_value():
    block = _noise()[:4]
    block[:, 10:30, 10:30] = 7.0
    block[0, 50, 50] = 7.0  # a lone voxel of the fill value inside the data is data
    mask = mark_fill(block, np.array([7.0], np.float32))
    assert not mask[0, 50, 50]
    assert mask[:, 11:29, 11:29].all()  # the patch's inside; its edge is caught by widening
    assert mask.sum() == 4 * 18 * 18
    # at the block's edge the neighbours inside count: a fill along the border is flat there
    block[:, :, 90:] = 7.0
    assert mark_fill(block, np.array([7.0], np.float32))[:, 1:-1, 91:].all()


def test_a_fill_below_one_percent_is_ignored():
    data = _noise(2)
    data[:, :4, :4] = 0.0  # 0.2 % of the voxels
    assert np.count_nonzero(normalise_volume(data) == 0.0) < 16 * SHAPE[0]
