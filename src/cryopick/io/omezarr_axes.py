"""The axes of an OME-Zarr level: which are z, y, x, their voxel size in Å, the rest dropped.

OME-NGFF images may carry time and channel axes before the spatial ones (``t, c, z, y, x``
as bioformats2raw and other converters write them). A tomogram is one volume, so a
level is read when every axis before ``z, y, x`` has length 1; :class:`SpatialView` then
shows it as the 3-D ``(z, y, x)`` array the rest of cryopick reads, lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cryopick.core.errors import InputError

AXES_ZYX = ("z", "y", "x")
# length units of OME-NGFF axes, in Å
_UNIT_TO_A = {
    "angstrom": 1.0,
    "nanometer": 10.0,
    "micrometer": 1e4,
    "picometer": 0.01,
    "millimeter": 1e7,
    "meter": 1e10,
}


def count_leading_axes(path: Path, ms: dict, shape: Sequence[int], level: int) -> int:
    """How many axes come before ``z, y, x`` in a level of ``shape`` (each must be 1 long).

    Raises
    ------
    InputError
        If the level has fewer than 3 axes, more than 3 without named axes saying which
        are spatial, or a leading axis longer than 1 (several channels or time points).
    """
    ndim = len(shape)
    if ndim == 3:
        return 0
    names, _ = _axes_names_units(path, ms.get("axes"), ndim, strict_length=False)
    if ndim < 3 or names is None or len(names) != ndim or tuple(names[-3:]) != AXES_ZYX:
        raise InputError(
            path, f"level {level}: expected a 3-D (z, y, x) volume, got shape {tuple(shape)}"
        )
    for name, length in zip(names[:-3], shape[:-3], strict=True):
        if length != 1:
            raise InputError(
                path,
                f"level {level}: axis {name!r} has {length} entries (shape {tuple(shape)}); "
                "cryopick reads one volume: save each channel or time point as its own "
                "OME-Zarr",
            )
    return ndim - 3


def read_spacing_A(
    path: Path, ms: dict, dataset: dict, level: int, n_leading: int = 0
) -> tuple[float, list[float]]:
    """Voxel size of a level in Å, and Å per axis unit (z, y, x).

    ``n_leading`` axes before ``z, y, x`` (from :func:`count_leading_axes`) are skipped.
    """
    scale = _scale_of(path, dataset.get("coordinateTransformations"), f"level {level}")
    if scale is None:
        raise InputError(path, f"level {level}: no voxel size ('scale' coordinateTransformation)")
    global_scale = _scale_of(path, ms.get("coordinateTransformations"), "multiscales")
    if global_scale is not None:
        scale = scale * global_scale
    names, units = _axes_names_units(path, ms.get("axes"), len(scale))
    scale, units = scale[n_leading:], units[n_leading:]
    if names is not None and tuple(names[n_leading:]) != AXES_ZYX:
        raise InputError(path, f"axes {names} are not (z, y, x)")
    factors = []
    for unit in units:
        if unit is not None and unit.lower() not in _UNIT_TO_A:
            raise InputError(path, f"unsupported axis unit {unit!r}")
        factors.append(1.0 if unit is None else _UNIT_TO_A[unit.lower()])
    if len(scale) != 3:
        raise InputError(path, f"level {level}: scale {scale.tolist()} is not 3-D")
    scale_A = scale * np.asarray(factors)
    if np.any(scale_A <= 0) or not np.all(np.isfinite(scale_A)):
        raise InputError(path, f"level {level}: invalid voxel size {scale_A.tolist()}")
    if not np.allclose(scale_A, scale_A[-1], rtol=1e-3):
        raise InputError(path, f"anisotropic voxels {scale_A.tolist()} Å are not supported")
    return float(scale_A[-1]), factors


def _scale_of(path: Path, transforms: object, where: str) -> NDArray[np.float64] | None:
    if transforms is None:
        return None
    if not isinstance(transforms, list):
        raise InputError(path, f"{where}: coordinateTransformations is not a list")
    for t in transforms:
        if isinstance(t, dict) and t.get("type") == "scale":
            if "scale" not in t:
                raise InputError(path, f"{where}: scale transformation without values")
            return np.asarray(t["scale"], dtype=np.float64)
    return None


def _axes_names_units(
    path: Path, axes: object, n: int, strict_length: bool = True
) -> tuple[list[str] | None, list[str | None]]:
    if axes is None:
        return None, [None] * n  # OME-NGFF < 0.3: implicit z, y, x; copick's unit is Å
    if not isinstance(axes, list) or (strict_length and len(axes) != n):
        raise InputError(path, f"axes {axes} do not match a {n}-D scale")
    if all(isinstance(a, str) for a in axes):  # OME-NGFF 0.3
        return list(axes), [None] * len(axes)
    if not all(isinstance(a, dict) and "name" in a for a in axes):
        raise InputError(path, f"malformed axes {axes}")
    return [a["name"] for a in axes], [a.get("unit") for a in axes]


class SpatialView:
    """A level with leading length-1 axes, read as its 3-D ``(z, y, x)`` volume, lazily.

    ``view[sel]`` reads ``array[0, ..., 0, *sel]``; ``shape``, ``ndim`` and ``dtype`` are
    those of the volume. Reads keep the array's own checks (missing or corrupt chunks).
    """

    def __init__(self, array: Any, n_leading: int) -> None:
        self.array = array
        self.n_leading = n_leading
        self.shape: tuple[int, ...] = tuple(int(s) for s in array.shape[n_leading:])
        self.ndim = len(self.shape)
        self.dtype = array.dtype

    def __getitem__(self, selection: Any) -> Any:
        """Read ``selection`` of the ``(z, y, x)`` volume."""
        selection = selection if isinstance(selection, tuple) else (selection,)
        return self.array[(0,) * self.n_leading + selection]

    def __array__(self, dtype: Any = None, copy: Any = None) -> NDArray:
        """Read the whole volume (``numpy.asarray(view)``)."""
        return np.asarray(self[...], dtype=dtype)


def drop_leading_axes(array: Any, n_leading: int) -> Any:
    """``array`` itself when it is 3-D, else a :class:`SpatialView` of it."""
    return array if n_leading == 0 else SpatialView(array, n_leading)
