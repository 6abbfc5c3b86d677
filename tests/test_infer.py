from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from cryopick.inference.runtime import (
    choose_batch_size,
    map_in_threads,
    runs_lone_window_as_pair,
)
from cryopick.inference.window import (
    choose_patch_size,
    choose_window_steps,
    count_windows,
    pad_shape_to_windows,
    predict_probabilities,
    predict_probability_map,
    prepare_network,
    upsample_probabilities,
)
from cryopick.model import ModelConfig, build_model

N_OUT = 7


class PointwiseNet(nn.Module):
    """Logits depend on each voxel only: any window gives the whole-volume answer."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(N_OUT, generator=gen) * 2)
        self.bias = nn.Parameter(torch.randn(N_OUT, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.view(1, -1, 1, 1, 1)
        return torch.sin(3 * x) * w + self.bias.view(1, -1, 1, 1, 1)


class StridedPointwiseNet(PointwiseNet):
    """Native output at stride 2: mean over 2x2x2 blocks, then pointwise."""

    output_stride = 2

    def forward_native(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(nn.functional.avg_pool3d(x, 2))


class AsymmetricConv(nn.Module):
    """A zero-padded conv with a lopsided kernel: flips change its output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, N_OUT, 3, padding=1)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen))
            self.conv.bias.copy_(torch.randn(N_OUT, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _whole(model: nn.Module, volume: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(volume)[None, None]), 1)[0].numpy()


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(37, 50, 45)).astype(np.float32)


@pytest.mark.parametrize("tta", [False, True])
def test_sliding_window_equals_whole_volume(volume, tta):
    model = PointwiseNet()
    probs = predict_probabilities(
        model,
        volume,
        patch_size=(16, 24, 16),
        overlap=0.3,
        batch_size=3,
        device="cpu",
        precision="fp32",
        tta=tta,
    )
    assert probs.dtype == np.float16
    assert probs.shape == (N_OUT, *volume.shape)
    np.testing.assert_allclose(probs, _whole(model, volume), atol=1e-3)  # float16 rounding
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=4e-3)


def test_volume_smaller_than_the_patch_is_padded(volume):
    model = PointwiseNet()
    small = volume[:10, :7, :30]
    probs = predict_probabilities(
        model, small, patch_size=(16, 16, 16), device="cpu", precision="fp32"
    )
    assert probs.shape == (N_OUT, 10, 7, 30)
    np.testing.assert_allclose(probs, _whole(model, small), atol=1e-3)


def test_tta_averages_the_three_flips(volume):
    model = AsymmetricConv()
    v = volume[:8, :12, :16]
    probs = predict_probabilities(
        model, v, patch_size=v.shape, device="cpu", precision="fp32", tta=True
    )
    expected = np.zeros_like(_whole(model, v))
    for axes in [(), (2,), (1,), (1, 2)]:  # x, y, xy flips; never z
        flipped = np.flip(v, axes).copy() if axes else v
        out = _whole(model, flipped)
        expected += np.flip(out, tuple(a + 1 for a in axes)) if axes else out
    np.testing.assert_allclose(probs, expected / 4, atol=1e-3)
    assert np.abs(probs - _whole(model, v)).max() > 1e-2  # the flips do change the answer


def test_strided_network_is_blended_at_its_stride_and_upsampled(volume):
    model = StridedPointwiseNet()
    v = volume[:20, :32, :28]
    native = predict_probabilities(
        model, v, (8, 16, 8), device="cpu", precision="fp32", upsample=False
    )
    with torch.no_grad():
        x = torch.from_numpy(v)[None, None]
        expected = torch.softmax(model.forward_native(x), 1)[0].numpy()
    assert native.shape == (N_OUT, 10, 16, 14)
    np.testing.assert_allclose(native, expected, atol=1e-3)
    full = predict_probabilities(model, v, (8, 16, 8), device="cpu", precision="fp32")
    assert full.shape == (N_OUT, *v.shape)
    # output voxel j sits at input 2j + 0.5: input voxel 2j+1 reads 3/4 of j and 1/4 of j+1
    n = native.astype(np.float32)
    expected_voxel = sum(
        wz * wy * wx * n[:, 1 + dz, 2 + dy, 3 + dx]
        for dz, wz in ((0, 0.75), (1, 0.25))
        for dy, wy in ((0, 0.75), (1, 0.25))
        for dx, wx in ((0, 0.75), (1, 0.25))
    )
    np.testing.assert_allclose(full[:, 3, 5, 7], expected_voxel, atol=2e-3)


def test_upsample_maps_centres_to_input_voxels():
    coarse = np.zeros((1, 4, 4, 4), dtype=np.float16)
    coarse[0, 1, 2, 3] = 1.0
    up = upsample_probabilities(coarse, 2, (8, 8, 7))
    assert up.shape == (1, 8, 8, 7)
    # coarse voxel (1,2,3) is centred at input (2.5, 4.5, 6.5): equal halves on voxels 2,3 etc.
    assert up[0, 2, 4, 6] == up[0, 3, 5, 6] == pytest.approx(0.75**2 * 0.75, abs=1e-3)


def test_unet_runs_natively_at_stride_two():
    model = build_model(ModelConfig(widths=(4, 8), output_stride=2))
    gen = torch.Generator().manual_seed(2)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm3d)):
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
    net, stride = prepare_network(model, torch.device("cpu"))
    assert stride == 2
    assert not any(isinstance(m, nn.BatchNorm3d) for m in net.modules())  # folded
    assert any(isinstance(m, nn.BatchNorm3d) for m in model.modules())  # caller's untouched
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():  # the prepared copy (batch norm folded) computes forward_native
        model.eval()
        np.testing.assert_allclose(net(x), model.forward_native(x), atol=1e-4)
    v = np.random.default_rng(1).normal(size=(20, 18, 24)).astype(np.float32)
    native = predict_probabilities(
        model, v, (16, 16, 16), device="cpu", precision="fp32", upsample=False
    )
    assert native.shape == (N_OUT, 10, 9, 12)
    np.testing.assert_allclose(native.astype(np.float32).sum(0), 1.0, atol=4e-3)


def test_window_steps_are_even_keep_the_overlap_and_the_output_grid():
    # 630 voxels, 192-voxel windows, >= 25 % overlap: 5 windows, 110 apart (<= 144), even
    steps = choose_window_steps((184, 630, 630), (192, 192, 192), 0.25, 2)
    assert steps[1:] == (110, 110) and count_windows((184, 630, 630), (192,) * 3, steps) == 25
    # 48 * (1 - 0.45) = 26.4 caps the step at 16 (a multiple of 16), so overlap >= 45 %
    assert choose_window_steps((100, 100, 16), (48, 48, 16), 0.45, 16) == (16, 16, 16)
    assert choose_window_steps((128, 64, 64), (64, 64, 64), 0.0, 16) == (64, 64, 64)
    assert count_windows((16, 16, 16), (16, 16, 16), (8, 8, 8)) == 1


def test_windows_cover_a_padded_shape_of_stride_multiples():
    # at least a window; sides a multiple of the stride
    assert pad_shape_to_windows((10, 20, 33), (16, 16, 16), 2) == (16, 20, 34)
    assert pad_shape_to_windows((184, 630, 630), (192, 160, 160), 2) == (192, 630, 630)


def test_same_input_gives_identical_output(volume):
    model = AsymmetricConv()
    a = predict_probabilities(model, volume, (16, 16, 16), device="cpu", precision="fp32")
    b = predict_probabilities(model, volume, (16, 16, 16), device="cpu", precision="fp32")
    np.testing.assert_array_equal(a, b)


def test_choose_patch_size_rounds_up_and_caps():
    assert choose_patch_size((184, 630, 630), 16) == (192, 192, 192)
    assert choose_patch_size((20, 33, 64), 16) == (32, 48, 64)
    assert choose_patch_size((500, 100, 7), 8, max_edge=100) == (96, 96, 8)


def _windows_along(length, side, overlap, stride=2):
    padded = max(-(-length // stride) * stride, side)
    steps = choose_window_steps((padded,), (side,), overlap, stride)
    return count_windows((padded,), (side,), steps)


@pytest.mark.parametrize("overlap", [0.0, 0.125, 0.25])
def test_windows_shrink_to_the_smallest_side_that_needs_no_more_windows(overlap):
    # a full CZII tomogram: 5 x 5 windows of 192 at overlap 0.25, and 5 x 5 of 160 too
    if overlap == 0.25:
        assert choose_patch_size((184, 630, 630), 16, overlap=0.25, step_multiple=2) == (
            192,
            160,
            160,
        )
    for length in (100, 184, 300, 384, 450, 630, 928):
        side = choose_patch_size((length,) * 3, 16, overlap=overlap, step_multiple=2)[0]
        largest = choose_patch_size((length,) * 3, 16)[0]
        needed = _windows_along(length, largest, overlap)
        assert side <= largest and side % 16 == 0
        assert _windows_along(length, side, overlap) <= needed
        if side > 16:  # one step smaller would need more windows
            assert _windows_along(length, side - 16, overlap) > needed


def test_default_window_is_the_whole_small_volume(volume):
    model = AsymmetricConv()  # not pointwise: windows would show at their borders
    probs = predict_probabilities(model, volume, device="cpu", precision="fp32")
    np.testing.assert_allclose(probs, _whole(model, volume), atol=1e-3)


def test_precision_auto_avoids_emulated_bf16_on_cpu(monkeypatch):
    import cryopick.inference.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: False)
    assert runtime.resolve_precision("auto", torch.device("cpu")) is None
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: True)
    assert runtime.resolve_precision("auto", torch.device("cpu")) == torch.bfloat16
    assert runtime.resolve_precision("fp32", torch.device("cpu")) is None
    with pytest.raises(ValueError, match="precision"):
        runtime.resolve_precision("int8", torch.device("cpu"))


def test_precision_auto_is_fp32_where_bf16_is_reported_but_runs_slow(monkeypatch):
    # a CPU with AVX512-BF16 whose oneDNN is limited to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2)
    # ran bf16 convolutions 41x slower than fp32: the flag alone would pick bf16
    import cryopick.inference.runtime as runtime

    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "_cpu_flags", lambda: "flags : fpu avx2 avx512f avx512_bf16")
    monkeypatch.setattr(runtime, "measure_bf16_slowdown", lambda: 8.0)
    assert runtime.resolve_precision("auto", cpu) is None
    assert runtime.resolve_precision("bf16", cpu) == torch.bfloat16  # asked for, given
    monkeypatch.setattr(runtime, "measure_bf16_slowdown", lambda: 1.2)  # noisy but native
    assert runtime.resolve_precision("auto", cpu) == torch.bfloat16


def test_bf16_slowdown_is_measured_once_per_process(monkeypatch):
    import cryopick.inference.runtime as runtime

    runtime.measure_bf16_slowdown.cache_clear()
    calls = []
    real_conv3d = torch.nn.Conv3d.forward

    def counted(self, x):
        calls.append(x.shape)
        return real_conv3d(self, x)

    monkeypatch.setattr(torch.nn.Conv3d, "forward", counted)
    first = runtime.measure_bf16_slowdown()
    assert runtime.measure_bf16_slowdown() == first and first > 0
    assert len(calls) == 8  # (1 set-up + 3 timed) x (fp32, bf16), then the cached value
    runtime.measure_bf16_slowdown.cache_clear()


def test_bf16_path_matches_fp32_within_bf16_rounding(volume):
    # "auto" picks bf16 on CPUs with AVX512-BF16/AMX; either way bf16 must run and agree
    model = AsymmetricConv()
    fp32 = predict_probabilities(model, volume, (16, 24, 16), device="cpu", precision="fp32")
    bf16 = predict_probabilities(model, volume, (16, 24, 16), device="cpu", precision="bf16")
    diff = np.abs(bf16.astype(np.float32) - fp32).max()
    assert 0 < diff < 0.05  # bf16 really ran, and agrees
    np.testing.assert_allclose(bf16.astype(np.float32).sum(0), 1.0, atol=4e-3)


def test_training_channels_last_follows_the_cpu(monkeypatch):
    import cryopick.inference.runtime as runtime

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(runtime, "_cpu_flags", lambda: "flags : fpu avx2 avx512f avx512_bf16")
    monkeypatch.setattr(runtime, "measure_bf16_slowdown", lambda: 0.4)
    assert runtime.resolve_training_channels_last(None, cpu) is True
    assert runtime.resolve_training_channels_last(None, cuda) is False
    assert runtime.resolve_training_channels_last(False, cpu) is False
    assert runtime.cpu_has_fast_bf16() is True
    monkeypatch.setattr(runtime, "_cpu_flags", lambda: "flags : fpu avx2 fma")
    assert runtime.resolve_training_channels_last(None, cpu) is False
    assert runtime.resolve_training_channels_last(True, cpu) is True
    assert runtime.cpu_has_fast_bf16() is False


def test_progress_reports_every_window(volume):
    calls = []
    predict_probabilities(
        PointwiseNet(),
        volume,
        (16, 24, 16),
        batch_size=4,
        device="cpu",
        precision="fp32",
        progress=lambda done, total: calls.append((done, total)),
    )
    steps = choose_window_steps(volume.shape, (16, 24, 16), 0.25, 1)
    n = count_windows(volume.shape, (16, 24, 16), steps)
    assert steps == (11, 13, 10) and n == 3 * 3 * 4  # 37 x 50 x 45 voxels
    assert calls[-1] == (n, n)
    assert [c[0] for c in calls] == sorted({c[0] for c in calls})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(volume):
    model = build_model(ModelConfig(widths=(4, 8), output_stride=2))
    cpu = predict_probabilities(
        model, volume, (16, 16, 16), device="cpu", precision="fp32", upsample=False
    )
    gpu = predict_probabilities(
        model, volume, (16, 16, 16), device="cuda", precision="fp32", upsample=False
    )
    np.testing.assert_allclose(gpu, cpu, atol=2e-3)


def test_probability_map_carries_its_stride(volume):
    model = StridedPointwiseNet()
    v = volume[:20, :32, :28]
    native = predict_probability_map(model, v, (8, 16, 8), device="cpu", upsample=False)
    assert native.stride == 2 and native.probs.shape == (N_OUT, 10, 16, 14)
    full = predict_probability_map(model, v, (8, 16, 8), device="cpu")
    assert full.stride == 1 and full.probs.shape == (N_OUT, *v.shape)
    flat = predict_probability_map(PointwiseNet(), v, (8, 16, 8), device="cpu", upsample=False)
    assert flat.stride == 1 and flat.probs.shape == (N_OUT, *v.shape)


class BatchRecorder(PointwiseNet):
    """PointwiseNet that records the batch size of every call (in a class attribute: the
    predictor runs a deep copy of the model)."""

    batches: ClassVar[list[int]] = []

    def __init__(self) -> None:
        super().__init__()
        BatchRecorder.batches = []

    output_stride = 1  # run natively: no probe of the stride

    def forward_native(self, x: torch.Tensor) -> torch.Tensor:
        BatchRecorder.batches.append(int(x.shape[0]))
        return super().forward(x)


@pytest.mark.parametrize(
    ("precision", "expected"),
    [("bf16", [1] * 9), ("fp32", [2] * 5), ("fp16", [2] * 5)],
)
def test_default_batches_on_cpu_single_windows_in_bf16_pairs_otherwise(volume, precision, expected):
    model = BatchRecorder()
    v = volume[:16, :48, :32]  # 1 x 3 x 3 windows of 16 x 24 x 16; in pairs the last one twice
    probs = predict_probabilities(model, v, (16, 24, 16), device="cpu", precision=precision)
    assert BatchRecorder.batches == expected
    reference = predict_probabilities(
        PointwiseNet(), v, (16, 24, 16), batch_size=2, device="cpu", precision=precision
    )
    np.testing.assert_array_equal(probs, reference)  # the batching changes no value


@pytest.mark.parametrize(("precision", "lone"), [("bf16", 1), ("fp32", 2)])
def test_a_lone_window_runs_as_a_pair_only_outside_bf16_on_cpu(volume, precision, lone):
    model = BatchRecorder()
    v = volume[:16, :24, :16]
    predict_probabilities(model, v, (16, 24, 16), batch_size=1, device="cpu", precision=precision)
    assert BatchRecorder.batches == [lone]
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_batch_size(cpu, torch.bfloat16) == 1 and choose_batch_size(cpu, None) == 2
    assert choose_batch_size(cuda, torch.bfloat16) == 2
    assert not runs_lone_window_as_pair(cuda, None)


def test_map_in_threads_keeps_the_order_and_uses_torch_threads(monkeypatch):
    import threading

    seen: set[int] = set()
    barrier = threading.Barrier(2, timeout=5)

    def work(i: int) -> int:
        seen.add(threading.get_ident())
        if i < 2:
            barrier.wait()  # the first two items must run at the same time
        return i * i

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert map_in_threads(work, range(7)) == [i * i for i in range(7)]
    assert len(seen) == 2
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    seen.clear()
    assert map_in_threads(work, [5, 3, 4]) == [25, 9, 16]
    assert seen == {threading.get_ident()}  # one thread: called in place, in order
