"""Gaussian blending of overlapping windows (cryopick.inference.blending)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cryopick.inference.blending import (
    blend_windows,
    gaussian_weights,
    read_windows,
    window_starts,
)
from cryopick.inference.window import choose_window_steps, count_windows


def test_window_starts_step_evenly_and_end_flush():
    starts = window_starts((10, 100, 40), (16, 40, 40), (8, 30, 30))
    assert sorted({z for z, _, _ in starts}) == [0]  # side shorter than the window: one
    assert sorted({y for _, y, _ in starts}) == [0, 30, 60]  # 60 + 40 = 100: flush
    assert sorted({x for _, _, x in starts}) == [0]
    assert sorted({y for _, y, _ in window_starts((1, 101, 1), (1, 40, 1), (1, 30, 1))}) == [
        0,
        30,
        60,
        61,  # the last window ends at the side
    ]
    steps = choose_window_steps((184, 630, 630), (192, 160, 160), 0.25, 2)
    shape, patch = (192, 630, 630), (192, 160, 160)
    assert len(window_starts(shape, patch, steps)) == count_windows(shape, patch, steps)


def test_gaussian_weights_peak_in_the_centre_and_never_vanish():
    for side in (5, 8):
        w = gaussian_weights(side, 0.125)
        assert w.shape == (side,) and w.dtype == torch.float32
        assert float(w[(side - 1) // 2]) == pytest.approx(float(w.max()))
        torch.testing.assert_close(w, w.flip(0))  # symmetric about the centre
        assert float(w.min()) > 0
    # sigma = 1 voxel for side 8: the edge voxel (3.5 from the centre) weighs exp(-3.5**2 / 2)
    assert float(gaussian_weights(8, 0.125)[0]) == pytest.approx(np.exp(-(3.5**2) / 2), rel=1e-5)


def test_read_windows_fills_zeros_past_the_end():
    volume = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(4, 5, 6)
    windows = read_windows(volume, [(0, 0, 0), (2, 3, 0)], (4, 4, 4))
    assert windows.shape == (2, 1, 4, 4, 4)
    torch.testing.assert_close(windows[0, 0], volume[:4, :4, :4])
    window = windows[1, 0]
    torch.testing.assert_close(window[:2, :2, :4], volume[2:4, 3:5, 0:4])
    assert not window[2:].any() and not window[:, 2:].any()


def test_blending_a_predictor_that_echoes_its_window_gives_back_the_volume():
    volume = torch.from_numpy(np.random.default_rng(0).normal(size=(20, 37, 29)).astype("f4"))
    padded, patch = (24, 38, 30), (16, 16, 16)
    steps = choose_window_steps(padded, patch, 0.25, 2)

    def echo(windows):  # one channel: the input itself, and its square
        return torch.cat([windows, windows**2], dim=1)

    blended = blend_windows(volume, padded, patch, steps, echo, batch_size=3)
    assert blended.shape == (2, *padded)
    torch.testing.assert_close(blended[0, :20, :37, :29], volume)  # every voxel in place
    torch.testing.assert_close(blended[1, :20, :37, :29], volume**2)
    assert not blended[:, 20:].any()  # the virtual padding is zeros


def test_blending_on_a_strided_grid_keeps_each_output_voxel_over_its_inputs():
    volume = torch.from_numpy(np.random.default_rng(1).normal(size=(16, 40, 24)).astype("f4"))
    padded, patch = (16, 40, 24), (16, 16, 16)
    steps = choose_window_steps(padded, patch, 0.25, 2)

    def pool(windows):  # stride 2: output voxel j covers inputs 2j, 2j + 1
        return F.avg_pool3d(windows, 2)

    blended = blend_windows(volume, padded, patch, steps, pool, stride=2)
    torch.testing.assert_close(blended[0], F.avg_pool3d(volume[None, None], 2)[0, 0])


def test_the_window_predictor_feeds_the_network_on_its_device():
    # the blending reads windows on the CPU; a CUDA network must get them on its device
    # ("meta" stands in for it here: a tensor left on the CPU would show as "cpu")
    from cryopick.inference.window import _WindowPredictor

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(x.device.type)
            return torch.zeros((x.shape[0], 3, *x.shape[2:]), device=x.device)

    predictor = _WindowPredictor(
        Recorder(), torch.device("meta"), False, torch.contiguous_format, None
    )
    out = predictor(torch.zeros((2, 1, 4, 4, 4)))
    assert seen == ["meta"] and out.shape == (2, 3, 4, 4, 4)
