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
from cryopick.core.memory import format_gb, measure_available_bytes

log = logging.getLogger(__name__)

BYTES_PER_VOXEL = 16  # measured 13.2 per voxel of the grid; rounded up for candidate-rich maps
BASE_BYTES = 600 * 1024**2


def estimate_predict_bytes(grid_shape_zyx: Sequence[int]) -> int:
    """Estimated peak resident memory of picking a tomogram of this shape on the network's grid."""
    return BASE_BYTES + BYTES_PER_VOXEL * math.prod(int(n) for n in grid_shape_zyx)


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
            f"({format_gb(grid_bytes)} as float32), more than the {format_gb(available)} "
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
            format_gb(peak),
            format_gb(available),
        )
