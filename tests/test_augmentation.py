"""Intensity augmentations that imitate imaging conditions: coarser voxels, more noise."""

import numpy as np
import pytest
from scipy import ndimage

from cryopick.training.augmentation import (
    AugmentConfig,
    augment_intensity,
    background_step,
    coarsen_patch,
)

# only the transform under test: no scale, offset, blur or noise unless a test turns it on
PLAIN = AugmentConfig(
    scale_range=(1.0, 1.0), offset_sigma=0.0, noise_probability=0.0, blur_probability=0.0
)


def _blob(centre_zyx: tuple[float, float, float], shape=(32, 32, 32), sigma=2.5) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float32)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre_zyx, strict=True))
    return np.exp(-d2 / (2 * sigma**2)).astype(np.float32)


@pytest.mark.parametrize("factor", [1.2, 1.348, 1.5])
def test_coarsening_keeps_shape_and_position_and_removes_fine_detail(factor: float) -> None:
    centre = (12.3, 15.7, 9.2)
    out = coarsen_patch(_blob(centre), factor)
    assert out.shape == (32, 32, 32) and out.dtype == np.float32
    np.testing.assert_allclose(ndimage.center_of_mass(out), centre, atol=0.05)
    # a one-voxel checkerboard is above the coarse grid's Nyquist frequency: mostly gone
    # (0.26-0.36 of its spread is left: the way back is Lanczos-3, which keeps what the
    # coarse grid holds; trilinear both ways left under 0.3)
    checker = (np.indices((32, 32, 32)).sum(axis=0) % 2 * 2 - 1).astype(np.float32)
    assert coarsen_patch(checker, factor)[4:-4, 4:-4, 4:-4].std() < 0.4
    # a linear ramp is (away from the far edge) reproduced: exactly on the way down
    # (trilinear), within 0.05 voxel on the way back (Lanczos-3's normalised weights)
    ramp = np.broadcast_to(np.arange(32, dtype=np.float32)[None, None, :], (32, 32, 32))
    np.testing.assert_allclose(
        coarsen_patch(ramp.copy(), factor)[..., 2:-3], ramp[..., 2:-3], atol=0.05
    )


def test_coarsening_augmentation_keeps_the_spread_and_smooths() -> None:
    vol = np.random.default_rng(0).standard_normal((24, 24, 24)).astype(np.float32)
    config = PLAIN.model_copy(update={"coarsen_probability": 1.0, "coarsen_factor_max": 1.5})
    outs = [augment_intensity(vol, np.random.default_rng(seed), config) for seed in range(6)]
    changed = [o for o in outs if not np.array_equal(o, vol)]
    assert len(changed) >= 5  # a factor <= 1.02 (1 draw in 25) leaves the patch alone
    for out in changed:
        assert out.std() == pytest.approx(vol.std(), rel=1e-4)
        # white noise loses its voxel-to-voxel independence: neighbours correlate
        assert np.corrcoef(out[:, :, 1:].ravel(), out[:, :, :-1].ravel())[0, 1] > 0.2
    off = augment_intensity(vol, np.random.default_rng(0), PLAIN)
    assert np.array_equal(off, vol)


@pytest.mark.parametrize("keep", [False, True])
def test_noise_augmentation_keeps_the_spread_when_asked(keep: bool) -> None:
    vol = np.random.default_rng(1).standard_normal((24, 24, 24)).astype(np.float32)
    config = PLAIN.model_copy(
        update={"noise_probability": 1.0, "noise_sigma_max": 1.0, "noise_keep_spread": keep}
    )
    out = augment_intensity(vol, np.random.default_rng(2), config)
    added = out.std() ** 2 - vol.std() ** 2
    if keep:  # same spread, less of the original signal
        assert out.std() == pytest.approx(vol.std(), rel=1e-4)
        assert np.corrcoef(out.ravel(), vol.ravel())[0, 1] < 0.99
    else:
        assert added > 0.01


def test_background_step_is_a_vertical_edge_of_the_drawn_height() -> None:
    rng = np.random.default_rng(4)
    for _ in range(10):
        step = background_step((6, 40, 40), rng, offset_max=1.5)
        assert step.shape == (6, 40, 40)
        assert np.array_equal(step, np.broadcast_to(step[0], step.shape))  # same in every z
        low, high = float(step.min()), float(step.max())
        assert -1.5 <= low < high <= 1.5 and (low >= 0 or high <= 0)  # from 0 towards one sign
        # monotonic across the edge: along the steepest direction the values only rise
        gy, gx = np.gradient(step[0])
        direction = np.array([gy.sum(), gx.sum()])
        assert np.all(gy * direction[0] + gx * direction[1] >= -1e-6)


def test_background_step_augmentation_adds_the_step_to_the_patch() -> None:
    vol = np.random.default_rng(3).standard_normal((8, 24, 24)).astype(np.float32)
    config = PLAIN.model_copy(update={"edge_probability": 1.0, "edge_offset_max": 1.0})
    out = augment_intensity(vol, np.random.default_rng(7), config)
    added = out - vol
    np.testing.assert_allclose(added, np.broadcast_to(added[0], added.shape), atol=1e-6)
    assert 0.05 < np.abs(added).max() <= 1.0
