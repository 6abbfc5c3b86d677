"""Warnings about tomograms that picking will handle badly: checked before the work starts.

Each names the run, what looks wrong and what to do; none stops the prediction (the
input may be unusual but right). :func:`warn_if_voxel_size_implausible` (a header that
kept the tilt series' pixel size), :func:`warn_if_smaller_than_window` and
:func:`warn_if_thickness_not_along_z` (an unrotated reconstruction). One check does stop
it: :func:`check_is_a_volume` refuses a 2-D image saved as a volume of one slice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from cryopick.core.errors import InputError

log = logging.getLogger(__name__)

MIN_AXIS_VOXELS = 4
"""An axis shorter than this holds no particle: the input is an image, not a tomogram."""


def check_is_a_volume(source: str | Path, shape_zyx: Sequence[int]) -> None:
    """Refuse a "tomogram" with an axis of fewer than :data:`MIN_AXIS_VOXELS` voxels.

    A slice or projection exported as an MRC of one (or a few) z slices is read as a volume;
    picking it finds nothing, without a word of why.
    """
    sizes = zip("zyx", shape_zyx, strict=True)
    thin = [f"{n} along {axis}" for axis, n in sizes if n < MIN_AXIS_VOXELS]
    if thin:
        raise InputError(
            source,
            f"is {' x '.join(map(str, shape_zyx))} voxels (z, y, x), only {', '.join(thin)}: "
            "an image or a slice, not a tomogram",
        )


PLAUSIBLE_SPACING_RATIO = (0.3, 3.0)
"""Voxel sizes within these multiples of the model's pass without a warning (3-30 Å for a
10 Å model): the robustness benchmark checks 7.84-13.48 Å, the resampler 5-13.48 Å."""


def warn_if_voxel_size_implausible(name: str, spacing_A: float, model_spacing_A: float) -> bool:
    """Warn when a tomogram's voxel size is far from the model's (a wrong header?).

    Much finer (below 0.3 x): the tomogram is shrunk several-fold before picking, which is
    right for an unbinned tomogram but is also what a binned one looks like when its
    header kept the tilt series' pixel size. Much coarser (above 3 x): particles are a few
    voxels across after resampling and picks are unreliable. Returns True when it warned.
    """
    ratio = float(spacing_A) / float(model_spacing_A)
    low, high = PLAUSIBLE_SPACING_RATIO
    if low <= ratio <= high:
        return False
    if ratio < low:
        what = (
            f"{1 / ratio:.3g}x finer than the model's {model_spacing_A:.4g} Å: it is shrunk "
            f"{1 / ratio:.3g}-fold before picking. If the tomogram is binned and the header "
            "gives the tilt series' pixel size"
        )
    else:
        what = (
            f"{ratio:.3g}x coarser than the model's {model_spacing_A:.4g} Å: particles are a "
            "few voxels across and picks are unreliable. If the header is wrong"
        )
    log.warning(
        "%s: voxel size %.4g Å is %s, give the right voxel size (MRC: --spacing-A)",
        name,
        spacing_A,
        what,
    )
    return True


def warn_if_smaller_than_window(
    name: str, shape_zyx: Sequence[int], patch_zyx: Sequence[int], spacing_A: float
) -> bool:
    """Warn when a tomogram is thinner than the network's training window on some axis.

    The network then sees mostly padding there; picks are unreliable and often none are
    found. Returns True when it warned.
    """
    small = [
        f"{axis} {n} < {p}"
        for axis, n, p in zip("zyx", shape_zyx, patch_zyx, strict=True)
        if int(n) < int(p)
    ]
    if small:
        log.warning(
            "%s: the tomogram (%s voxels at %.4g Å) is smaller than the network's %s-voxel "
            "window (%s): picks are unreliable and there may be none",
            name,
            "x".join(map(str, shape_zyx)),
            spacing_A,
            "x".join(map(str, patch_zyx)),
            ", ".join(small),
        )
    return bool(small)


def warn_if_thickness_not_along_z(name: str, shape_zyx: Sequence[int]) -> bool:
    """Warn when y or x, not z, is clearly the tomogram's thinnest axis.

    cryopick's networks expect the beam (the sample's thickness, and the missing wedge)
    along z. An IMOD reconstruction before ``trimvol -rx`` / ``clip rotx`` has its
    thickness along y; picks in it are unreliable. Returns True when it warned.
    """
    z, y, x = (int(n) for n in shape_zyx)
    thinnest = "y" if y < 0.5 * min(z, x) else "x" if x < 0.5 * min(z, y) else None
    if thinnest is not None:
        log.warning(
            "%s: the tomogram (%d x %d x %d voxels, z y x) is thinnest along %s, not z: it "
            "looks unrotated (IMOD: trimvol -rx or clip rotx); cryopick expects the beam "
            "along z, so its picks are unreliable until the volume is rotated",
            name,
            z,
            y,
            x,
            thinnest,
        )
    return thinnest is not None
