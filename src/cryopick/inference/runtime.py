"""Where and how computations run: devices, precision, CPU features, hardware description.

One place answers "which device", "which autocast dtype" and "what is this machine" for
training, inference and the model card; choices are made by measured capability (e.g. bf16
only where the CPU reports native bf16 instructions and a bf16 convolution, timed once,
runs at their speed), never by a fixed list of machines.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import torch

from cryopick.core.errors import InputError

Item = TypeVar("Item")
Result = TypeVar("Result")
log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the torch device for ``auto`` (CUDA if available), ``cpu``, ``cuda``, ``cuda:N``.

    An unknown device or a GPU this machine lacks is a one-line InputError.
    """
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        kind, index = torch.device(name).type, torch.device(name).index
    except (RuntimeError, ValueError):  # torch: "Expected one of cpu, cuda, ... device type"
        kind, index = None, None
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind not in ("cpu", "cuda"):
        problem = "unknown device; use auto, cpu, cuda or cuda:N"
    elif kind == "cuda" and n_gpus == 0:
        problem = "no CUDA GPU is available (torch.cuda.is_available() is False); use "
        problem += "--device cpu or auto"
    elif kind == "cuda" and (index or 0) >= n_gpus:
        problem = f"no such GPU; this machine has {n_gpus} (cuda:0 to cuda:{n_gpus - 1})"
    else:
        return torch.device(name)
    raise InputError(None, f"--device {device}: {problem}")


@lru_cache(maxsize=1)
def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_fast_bf16() -> bool:
    """Whether bf16 runs fast on this CPU: native bf16 instructions that PyTorch uses.

    The CPU must report AVX512-BF16 or AMX, and a bf16 3D convolution, measured once per
    process, must not run more than :data:`BF16_SLOWDOWN_LIMIT` times slower than fp32.
    Without the instructions, or where oneDNN is kept from them (``ONEDNN_MAX_CPU_ISA``,
    a hypervisor), bf16 falls back to slow reference kernels (measured: ~0.2 GFLOP/s bf16
    vs ~80 GFLOP/s fp32 on a 2-core AVX2 EPYC; 41x slower than fp32 on an AMX Xeon limited
    to AVX2, 8x with the cores busy).
    """
    flags = _cpu_flags()
    if "avx512_bf16" not in flags and "amx_bf16" not in flags:
        return False
    slowdown = measure_bf16_slowdown()
    if slowdown > BF16_SLOWDOWN_LIMIT:
        log.info("the CPU reports bf16 but it runs %.1fx slower than fp32 here: fp32", slowdown)
        return False
    return True


# bf16 at most this many times slower than fp32 still counts as native: the fast kernels
# run 1.5-10x faster than fp32, the fallback 8-400x slower, so noise cannot flip the choice
BF16_SLOWDOWN_LIMIT = 2.0


@lru_cache(maxsize=1)
def measure_bf16_slowdown(repeats: int = 3) -> float:
    """Time of a bf16 3D convolution over that of fp32 on this CPU (best of ``repeats``).

    The convolution (16 -> 8 channels, 3^3 kernel, 24 x 56 x 56 voxels) is large enough
    that PyTorch sends it to oneDNN in either precision, as the networks' levels are; the
    measurement takes ~50 ms where bf16 is native (1 s where it falls back).
    """
    conv = torch.nn.Conv3d(16, 8, 3, padding=1, bias=False).eval()
    x = torch.randn(1, 16, 24, 56, 56, generator=torch.Generator().manual_seed(0))
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        best = float("inf")
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, dtype != torch.float32):
            for _ in range(repeats + 1):  # the first call sets up the kernel
                start = time.perf_counter()
                conv(x)
                best = min(best, time.perf_counter() - start)
        seconds[dtype] = best
    return seconds[torch.bfloat16] / max(seconds[torch.float32], 1e-9)


def resolve_training_channels_last(channels_last: bool | None, device: torch.device) -> bool:
    """Whether training uses ``channels_last_3d``; ``None`` decides by the hardware.

    Measured per training step on 2 cores: with AVX512, channels_last is faster (0.068 vs
    0.125 s fp32, 0.050 vs 0.070 s bf16); on an AVX2-only CPU it was slower (5.0 vs 3.6 s).
    ``None`` therefore means on for CPUs with AVX512, off otherwise (CUDA: not measured, off).
    """
    if channels_last is not None:
        return channels_last
    return device.type == "cpu" and "avx512f" in _cpu_flags()


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``precision`` in ``{"auto", "fp32", "bf16", "fp16"}`` (None: fp32).

    ``"auto"`` means bf16 on CUDA when supported (else fp16), bf16 on a CPU with native bf16
    instructions, and fp32 otherwise.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision != "auto":
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def choose_batch_size(device: torch.device, amp_dtype: torch.dtype | None) -> int:
    """Windows per forward pass by default: 1 on a CPU running bf16, otherwise 2.

    Measured with the bundled two-network model on 192 x 160 x 160 windows (2 cores of an
    AMD EPYC with AVX512-BF16, torch 2.13): in bf16 one window at a time takes 0.20 s per
    window against 0.23 s in pairs (a full tomogram's networks 5.7-6.0 s against
    6.8-7.8 s); in fp32 pairs are the faster (0.47 against 0.50 s), and on CPUs without
    native bf16 a lone fp32 window can fall to PyTorch's slow 3D convolution
    (:func:`runs_lone_window_as_pair`). On a GPU, pairs.
    """
    return 1 if device.type == "cpu" and amp_dtype == torch.bfloat16 else 2


def runs_lone_window_as_pair(device: torch.device, amp_dtype: torch.dtype | None) -> bool:
    """Whether a batch of one window is run as two copies of it (fp32 or fp16 on a CPU).

    PyTorch sends a batch-1 3D convolution to oneDNN only when ``N*C*D*H > 20480``; the
    coarse levels of a U-Net fall below that and take ``slow_conv3d``, ~3x slower on a
    2-core AVX2 CPU in fp32. A copy costs less. In bf16 the lone window is the faster.
    """
    return device.type == "cpu" and amp_dtype != torch.bfloat16


def describe_hardware(device: str | torch.device = "cpu") -> str:
    """One line naming the processor (or GPU) and thread count used."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def map_in_threads(function: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
    """Return ``[function(item) for item in items]``, computed on torch's number of threads.

    For per-class work on numpy arrays (peaks, rescoring features): numpy and scipy release
    the GIL in their loops, so two threads on 2 cores take ~0.7x the time of one (peaks of a
    full tomogram's six classes 1.2 -> 0.9 s). Results keep the items' order.
    """
    items = list(items)
    workers = min(len(items), max(1, torch.get_num_threads()))
    if workers <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(function, items))
