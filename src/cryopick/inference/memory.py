"""Memory a tomogram's picking will need, checked against what the machine (or job) has.

Picking holds the tomogram on the network's grid (float32), the network's map and the
candidates' crops: peak resident memory grows by about :data:`BYTES_PER_VOXEL` per voxel
of that grid above :data:`BASE_BYTES` for the process, PyTorch and the model (measured:
1.47 GB for 184 x 630 x 630 voxels, 2.43 GB for 368 x 630 x 630; docs/benchmarks.md).
:func:`check_memory` refuses a tomogram whose grid alone would not fit, which is almost
always a wrong voxel size (a 1000 Å header read at 10 Å is 100³ times larger), and warns
when the estimated peak exceeds the memory available, so that a SLURM job killed for
memory has the reason in its log.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

from cryopick.core.errors import InputError

log = logging.getLogger(__name__)

BYTES_PER_VOXEL = 16  # measured 13.2 per voxel of the grid; rounded up for candidate-rich maps
BASE_BYTES = 600 * 1024**2
_CGROUP_LIMITS = (
    ("memory.max", "memory.current"),  # cgroup v2
    ("memory.limit_in_bytes", "memory.usage_in_bytes"),  # cgroup v1
)
_NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_dirs() -> list[Path]:
    """Memory cgroup folders of this process: its own (v2 or v1 path), then the mount's root."""
    root = Path("/sys/fs/cgroup")
    dirs = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, rel = line.split(":", 2)
            if controllers == "":
                dirs.append(root / rel.lstrip("/"))
            elif "memory" in controllers.split(","):
                dirs.append(root / "memory" / rel.lstrip("/"))
    except (OSError, ValueError):
        pass
    return [*dirs, root, root / "memory"]


def _cgroup_headroom_bytes() -> int | None:
    """Limit minus usage of the first memory cgroup that has a limit (a SLURM job's)."""
    for folder in _cgroup_dirs():
        for limit_name, usage_name in _CGROUP_LIMITS:
            limit = _read_int(folder / limit_name)
            usage = _read_int(folder / usage_name)
            if limit is not None and usage is not None and limit < _NO_LIMIT:
                return max(0, limit - usage)
    return None


def measure_available_bytes() -> int | None:
    """Memory this process may still use: the smaller of the system's and its cgroup's.

    None where neither can be read (not Linux); then nothing is checked.
    """
    figures = [b for b in (_meminfo_available_bytes(), _cgroup_headroom_bytes()) if b is not None]
    return min(figures) if figures else None


def estimate_predict_bytes(grid_shape_zyx: Sequence[int]) -> int:
    """Estimated peak resident memory of picking a tomogram of this shape on the network's grid."""
    return BASE_BYTES + BYTES_PER_VOXEL * math.prod(int(n) for n in grid_shape_zyx)


def _gb(n_bytes: int) -> str:
    return f"{n_bytes / 1024**3:,.1f} GB"


def check_memory(
    source: str | Path,
    grid_shape_zyx: Sequence[int],
    grid_spacing_A: float,
    available_bytes: int | None = None,
) -> None:
    """Refuse a tomogram whose grid cannot fit in memory; warn when its peak may not.

    Parameters
    ----------
    source : str or Path
        The tomogram's file, named in the error and the warning.
    grid_shape_zyx : sequence of int
        Its shape on the network's grid (after resampling).
    grid_spacing_A : float
        That grid's voxel size.
    available_bytes : int, optional
        Memory available; default :func:`measure_available_bytes`.

    Raises
    ------
    InputError
        When the grid alone, as float32, is larger than the memory available.
    """
    available = measure_available_bytes() if available_bytes is None else available_bytes
    if available is None:
        return
    shape = " x ".join(str(int(n)) for n in grid_shape_zyx)
    grid_bytes = 4 * math.prod(int(n) for n in grid_shape_zyx)
    if grid_bytes > available:
        raise InputError(
            source,
            f"at the network's {grid_spacing_A:.4g} Å voxels the tomogram is {shape} voxels "
            f"({_gb(grid_bytes)} as float32), more than the {_gb(available)} "
            "of memory available; check its voxel size (MRC: --spacing-A), or bin or crop it",
        )
    peak = estimate_predict_bytes(grid_shape_zyx)
    if peak > available:
        log.warning(
            "%s: picking this tomogram (%s voxels at %.4g Å) needs about %s of memory, "
            "more than the %s available: it may be killed for memory; bin or crop it, or "
            "run it where there is more",
            source,
            shape,
            grid_spacing_A,
            _gb(peak),
            _gb(available),
        )
