"""Particle positions of RELION / Warp STAR files in Å, in cryopick's frame.

Two conventions are read:

* RELION-5: ``rlnCenteredCoordinate{X,Y,Z}Angst``, Å from the tomogram centre
  (``N / 2 * spacing_A`` per axis, see :mod:`cryopick.io.picks.star_io`); needs each
  tomogram's shape and voxel size.
* RELION-4, Warp, pytom, Dynamo conversions: ``rlnCoordinate{X,Y,Z}`` in pixels from the
  corner, pixel ``i`` centred at ``i``, so ``position_A = coordinate * pixel_A``. The
  pixel is not the same in every tool (RELION-4: the unbinned tilt series'; Warp and
  pytom: the tomogram's they were picked in), so it is the caller's ``pixel_A``, else the
  file's ``rlnTomoTiltSeriesPixelSize`` (RELION's own statement of it), else an error.

Both subtract ``rlnOrigin{X,Y,Z}Angst`` when present: RELION's refined position of a
particle is its coordinate minus its origin shift. The tomogram of a row is
``rlnTomoName``, else the stem of ``rlnMicrographName`` (Warp's ``TS_01.tomostar``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from cryopick.core.errors import InputError

TomogramShapes = Mapping[str, tuple[Sequence[int], float]]
"""experiment -> (shape_zyx in voxels, spacing_A)."""

CENTERED = (
    "rlnCenteredCoordinateXAngst",
    "rlnCenteredCoordinateYAngst",
    "rlnCenteredCoordinateZAngst",
)
PIXELS = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
ORIGIN = ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")
TILT_SERIES_PIXEL = "rlnTomoTiltSeriesPixelSize"
_NAME_SUFFIXES = (".tomostar", ".mrc", ".rec", ".st", ".ali", ".mrcs", ".zarr")


def find_particle_block(
    blocks: Mapping[str, object], path: str
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Return the block holding 3-D particle positions, and the optics block if any."""
    tables = {k: b for k, b in blocks.items() if isinstance(b, pd.DataFrame)}
    table = next((b for b in tables.values() if CENTERED[0] in b), None)
    if table is None:
        table = next((b for b in tables.values() if set(PIXELS) <= set(b)), None)
    if table is None:
        raise InputError(
            path,
            "no particle block with 3-D positions: expected rlnCenteredCoordinate{X,Y,Z}Angst "
            "(RELION-5) or rlnCoordinate{X,Y,Z} (RELION-4, Warp; pixels)",
        )
    return table, tables.get("optics")


def tomogram_names(table: pd.DataFrame, path: str) -> np.ndarray:
    """Return every row's tomogram (run): ``rlnTomoName``, else ``rlnMicrographName``'s stem."""
    if "rlnTomoName" in table:
        return np.asarray(table["rlnTomoName"].astype(str).to_numpy())
    if "rlnMicrographName" in table:
        return np.asarray([_stem(str(n)) for n in table["rlnMicrographName"]])
    raise InputError(path, "the particle block names no tomogram (rlnTomoName)")


def _stem(name: str) -> str:
    """``tomograms/TS_01.tomostar`` -> ``TS_01`` (also ``x.st:mrc``, ``x.rec``, ...)."""
    stem = PurePosixPath(name.split(":")[0].replace("\\", "/")).name
    while stem.lower().endswith(_NAME_SUFFIXES):
        stem = stem[: stem.rfind(".")]
    return stem


def positions_xyz_A(
    table: pd.DataFrame,
    optics: pd.DataFrame | None,
    experiments: np.ndarray,
    path: str,
    shapes: TomogramShapes | None = None,
    pixel_A: float | None = None,
) -> np.ndarray:
    """Positions (x, y, z) in Å with voxel ``i`` at ``i * spacing_A``, origin shifts applied."""
    if CENTERED[0] in table:
        xyz = table[list(CENTERED)].to_numpy(dtype=np.float64)
        for exp in pd.unique(experiments):
            xyz[experiments == exp] += tomogram_centre_xyz_A(shapes, str(exp), path)
    else:
        xyz = table[list(PIXELS)].to_numpy(dtype=np.float64)
        xyz *= _pixel_sizes_A(table, optics, path, pixel_A)[:, None]
    if set(ORIGIN) <= set(table):
        xyz -= table[list(ORIGIN)].to_numpy(dtype=np.float64)
    return xyz


def tomogram_centre_xyz_A(
    shapes: TomogramShapes | None, experiment: str, path: str | None
) -> np.ndarray:
    """Return the tomogram's centre in Å, (x, y, z) order, in cryopick's frame."""
    if shapes is None:
        raise InputError(
            path,
            "RELION-5 STAR coordinates are relative to the tomogram centre: converting them "
            "needs each run's tomogram (its shape and voxel size): give the tomograms "
            "(evaluate, convert: --tomograms; in Python: tomogram_shapes)",
        )
    if experiment not in shapes:
        given = ", ".join(sorted(shapes)[:5]) or "none"
        raise InputError(
            path,
            f"run {experiment!r} has no tomogram among those given (runs: {given}): its "
            "RELION-5 positions are relative to that tomogram's centre",
        )
    shape_zyx, spacing_A = shapes[experiment]
    if len(shape_zyx) != 3:
        raise InputError(path, f"tomogram shape for {experiment!r} is not 3D: {shape_zyx!r}")
    return np.asarray(shape_zyx, dtype=np.float64)[::-1] / 2.0 * float(spacing_A)


def _pixel_sizes_A(
    table: pd.DataFrame, optics: pd.DataFrame | None, path: str, pixel_A: float | None
) -> np.ndarray:
    """Pixel size of every row's rlnCoordinate: ``pixel_A``, else the file's tilt series'."""
    if pixel_A is not None:
        if not pixel_A > 0:
            raise InputError(path, f"the coordinates' pixel size must be > 0, got {pixel_A}")
        return np.full(len(table), float(pixel_A))
    if TILT_SERIES_PIXEL in table:
        return table[TILT_SERIES_PIXEL].to_numpy(dtype=np.float64)
    if optics is not None and TILT_SERIES_PIXEL in optics and len(optics):
        sizes = optics[TILT_SERIES_PIXEL].to_numpy(dtype=np.float64)
        if np.allclose(sizes, sizes[0]):
            return np.full(len(table), sizes[0])
        if "rlnOpticsGroup" in optics and "rlnOpticsGroup" in table:
            by_group = dict(zip(optics["rlnOpticsGroup"].astype(int), sizes, strict=True))
            groups = table["rlnOpticsGroup"].astype(int).to_numpy()
            if missing := sorted(set(groups.tolist()) - set(by_group)):
                raise InputError(path, f"optics group(s) {missing} are not in the optics block")
            return np.asarray([by_group[int(g)] for g in groups])
    raise InputError(
        path,
        "positions are in pixels (rlnCoordinateX/Y/Z) and the file does not say of what "
        "size (no rlnTomoTiltSeriesPixelSize): give it (cryopick evaluate: --star-pixel-A); "
        "RELION-4 uses the unbinned tilt series' pixel, Warp and pytom the tomogram's",
    )
