"""Density templates of a user's particle types, from a density map or an atomic model.

:func:`density_for` turns a :class:`~cryopick.core.particles.ParticleSpec` into a
density on the simulation grid, prepared like the packaged library
(:mod:`cryopick.simulate.templates`): background removed, the protein interior scaled
to 1.0 (the 90th percentile of the voxels above the background level), the centre of
mass moved to the centre of a cube just large enough for any rotation
(:func:`~cryopick.simulate.templates._recentre`).

* ``map``: an MRC file, read with its header's voxel size, resampled to the grid (order-1
  zoom, Gaussian low-pass first when coarsening). Protein must be positive (as in EMDB
  maps). The background is the median of the border voxels; the surface level is the
  spec's ``threshold`` (map units) or, by default, :data:`~cryopick.simulate.templates.
  SUPPORT_LEVEL` of the interior level; voxels below ``threshold`` (or below 5 % of the
  maximum by default) are set to zero.
* ``model``: a PDB/mmCIF file read with gemmi; its first model is put in a P1 box with a
  margin and gemmi's :class:`gemmi.DensityCalculatorE` computes its electron-scattering
  density on the grid, blurred to a Gaussian of sigma = half a voxel (no aliasing at the
  grid's sampling), then prepared like a map.

The measured radius is that of the sphere with the volume of the support (the voxels
above the surface level, holes filled so hollow particles count whole), in Å.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from cryopick.core.errors import InputError, squeeze_error
from cryopick.simulate.templates import SUPPORT_LEVEL, _recentre

if TYPE_CHECKING:
    from cryopick.core.particles import ParticleSpec

BACKGROUND_FRACTION = 0.05  # default: voxels below this fraction of the maximum are background
MODEL_MARGIN_A = 30.0  # empty space around an atomic model in its P1 box


def density_for(spec: ParticleSpec, spacing_A: float) -> tuple[NDArray[np.float32], float]:
    """Return a spec's density template on a grid of ``spacing_A`` and its measured radius.

    Parameters
    ----------
    spec : ParticleSpec
        A spec with a ``map`` or ``model`` file.
    spacing_A : float
        Voxel size of the simulation grid in Å.

    Returns
    -------
    density : numpy.ndarray, shape (n, n, n), float32
        Protein interior 1, background 0, centre of mass at the box centre ``(n - 1) / 2``.
    radius_A : float
        Radius of the sphere with the support's volume, in Å.

    Raises
    ------
    InputError
        If the file is unreadable, or the map has no voxel above its surface level.
    """
    if spec.map is not None:
        return map_density(spec.map, spacing_A, spec.threshold)
    if spec.model is not None:
        return model_density(spec.model, spacing_A)
    raise InputError(None, f"particle '{spec.name}' has no map or model file")


def map_density(
    path: str | Path, spacing_A: float, threshold: float | None = None
) -> tuple[NDArray[np.float32], float]:
    """Density template and measured radius (Å) of an MRC map; see :func:`density_for`."""
    data, source_A = _read(path)
    data = _resample(data, source_A / spacing_A)
    return _prepare(data, spacing_A, threshold, path)


def measure_map(path: str | Path, threshold: float | None = None) -> float:
    """Measured radius (Å) of an MRC map at its own voxel size (no resampling, no centring).

    Raises
    ------
    InputError
        If the file is unreadable or has no voxel above its surface level.
    """
    data, source_A = _read(path)
    density, level = _normalise(data, threshold, path)
    return _support_radius(density, level, source_A)


def model_density(path: str | Path, spacing_A: float) -> tuple[NDArray[np.float32], float]:
    """Density template and measured radius (Å) of an atomic model; see :func:`density_for`."""
    import gemmi

    path = Path(path)
    try:
        st = gemmi.read_structure(str(path))
    except Exception as err:
        raise InputError(path, f"not a readable PDB/mmCIF file: {squeeze_error(err)}") from None
    st.remove_hydrogens()
    st.remove_waters()
    if len(st) == 0 or not any(True for ch in st[0] for res in ch for _ in res):
        raise InputError(path, "the model has no atoms")
    while len(st) > 1:  # keep the first model of an NMR ensemble
        del st[1]
    box = st.calculate_box(MODEL_MARGIN_A)
    lo, hi = box.minimum, box.maximum
    shift = gemmi.Transform()
    shift.vec.fromlist([-lo.x, -lo.y, -lo.z])
    st[0].transform_pos_and_adp(shift)
    st.cell = gemmi.UnitCell(hi.x - lo.x, hi.y - lo.y, hi.z - lo.z, 90, 90, 90)
    st.spacegroup_hm = "P 1"
    st.setup_cell_images()
    calc = gemmi.DensityCalculatorE()
    calc.d_min = 2 * spacing_A
    calc.rate = 1.0  # grid spacing d_min / (2 rate), rounded down to an FFT-friendly size
    calc.blur = 8 * math.pi**2 * (0.5 * spacing_A) ** 2  # B of a Gaussian of sigma spacing/2
    calc.set_grid_cell_and_spacegroup(st)
    calc.put_model_density_on_grid(st[0])
    grid = calc.grid
    data = np.array(grid, copy=True, dtype=np.float32).transpose(2, 1, 0)  # (x,y,z) -> zyx
    cell = (st.cell.c, st.cell.b, st.cell.a)
    factors = [c / n / spacing_A for c, n in zip(cell, data.shape, strict=True)]
    data = np.asarray(ndi.zoom(data, factors, order=1), dtype=np.float32)
    return _prepare(data, spacing_A, None, path)


def _read(path: str | Path) -> tuple[NDArray[np.float32], float]:
    from cryopick.io.mrc import read_mrc

    data, source_A = read_mrc(path)
    return np.asarray(data, dtype=np.float32), source_A


def _resample(data: NDArray[np.float32], zoom: float) -> NDArray[np.float32]:
    """Order-1 zoom; below 1 low-pass filtered first (as :func:`templates.rotate_template`)."""
    if abs(zoom - 1) < 1e-6:
        return data
    if zoom < 1:
        data = ndi.gaussian_filter(data, sigma=0.4 * (1 / zoom - 1))
    return np.asarray(ndi.zoom(data, zoom, order=1), dtype=np.float32)


def _normalise(
    data: NDArray[np.float32], threshold: float | None, path: str | Path
) -> tuple[NDArray[np.float32], float]:
    """Remove the background, scale the interior to 1; return it and the surface level."""
    border = np.concatenate([data[0].ravel(), data[-1].ravel(), data[:, 0].ravel()])
    background = 0.0 if threshold is not None else float(np.median(border))
    shifted = np.clip(data - background, 0, None)
    cut = threshold if threshold is not None else BACKGROUND_FRACTION * float(shifted.max())
    inside = shifted > cut
    if not inside.any() or shifted.max() <= 0:
        where = f"threshold {threshold:g}" if threshold is not None else "the background"
        raise InputError(path, f"empty map: no voxel above {where}")
    interior = float(np.percentile(shifted[inside], 90))
    density = np.where(inside, shifted / interior, 0).astype(np.float32)
    level = SUPPORT_LEVEL if threshold is None else min(cut / interior, 1.0)
    return density, level


def _support_radius(density: NDArray[np.float32], level: float, spacing_A: float) -> float:
    support = ndi.binary_fill_holes(density >= level)
    volume = float(np.count_nonzero(support)) * spacing_A**3
    return float((3 * volume / (4 * math.pi)) ** (1 / 3))


def _prepare(
    data: NDArray[np.float32], spacing_A: float, threshold: float | None, path: str | Path
) -> tuple[NDArray[np.float32], float]:
    density, level = _normalise(data, threshold, path)
    centred = _recentre(density)
    return centred, _support_radius(centred, level, spacing_A)
