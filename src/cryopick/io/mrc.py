"""MRC/REC volumes: memory-mapped reading with the voxel size from the header, atomic writing.

gzip- or bzip2-compressed files (EMDB distributes maps as ``.map.gz``) are read too, into
memory (a compressed file cannot be memory-mapped).

Modes read: 0 (int8; uint8 when IMOD's header flags say the bytes are unsigned),
1 (int16), 2 (float32), 6 (uint16) and 12 (float16). The data are returned as a
read-only ``numpy.memmap`` indexed (z, y, x), so a large tomogram is read only where used.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import mrcfile
import numpy as np
from numpy.typing import ArrayLike, NDArray

from cryopick.core.errors import InputError
from cryopick.io._checks import as_volume_to_write
from cryopick.io.atomic import atomic_path

logger = logging.getLogger(__name__)

MRC_SUFFIXES = (".mrc", ".rec", ".map")
"""Suffixes of MRC volumes read as tomograms."""
TILT_SERIES_SUFFIXES = (".st", ".ali", ".mrcs")
"""MRC stacks of 2-D images (IMOD's raw and aligned tilt series, RELION's stacks): never
read as tomograms (a tilt series must be reconstructed first)."""
COMPRESSED_SUFFIXES = (".gz", ".bz2")
"""Compression suffixes read after a volume suffix (``TS_1.mrc.gz``, ``emd_1234.map.bz2``)."""
ANISOTROPY_TOLERANCE = 0.01
"""Relative difference between the header's axis voxel sizes read as cubic voxels."""
_SUPPORTED_DTYPES = ("int8", "uint8", "int16", "uint16", "float16", "float32")
# IMOD marks its files with this stamp; bit 0 of its flags set means bytes are signed
_IMOD_STAMP = 1146047817
_IMOD_OFFSET = 152  # header bytes 152..159: imodStamp, imodFlags (int32 each)


def read_mrc(path: str | Path, spacing_A: float | None = None) -> tuple[np.memmap, float]:
    """Open an MRC volume memory-mapped, with its voxel size.

    Parameters
    ----------
    path : str or Path
        An MRC/REC file holding one 3-D volume.
    spacing_A : float, optional
        Voxel size in Å overriding the header (needed when the header has none).

    Returns
    -------
    data : numpy.memmap, shape (Z, Y, X)
        Read-only view of the file's voxels in their stored dtype (an in-memory array,
        read-only too, for a compressed file).
    spacing_A : float
        Voxel size in Å.

    Raises
    ------
    InputError
        If the file is missing or not a readable MRC, is not 3-D, has an unsupported
        mode, or has no voxel size in its header (or one differing between axes) and
        ``spacing_A`` is not given.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "does not exist or is not a file")
    if path.stat().st_size == 0:
        raise InputError(path, "the file is empty (0 bytes): an interrupted copy or write?")
    # gzip / bzip2 (EMDB's .map.gz) cannot be memory-mapped: read those into memory
    compressed = _is_compressed(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # permissive mode warns about header quirks
            opener = mrcfile.open if compressed else mrcfile.mmap
            mrc = opener(path, mode="r", permissive=True)
    except Exception as err:
        raise InputError(path, f"not a readable MRC file: {err}") from None
    # closing the file leaves the (read-only) memmap valid: it holds its own mapping
    with mrc:
        data = mrc.data
        if data is None:
            raise InputError(
                path, f"not a readable MRC file: {_why_no_data(mrc, path, compressed)}"
            )
        if data.ndim != 3:
            raise InputError(path, f"expected a 3-D volume, got shape {data.shape}")
        if _is_unsigned_imod_bytes(mrc):
            data = data.view(np.uint8)
        header_zyx_A = _header_spacing_A(mrc)
        data = _to_zyx(data, mrc, path)
    if data.dtype.name not in _SUPPORTED_DTYPES:
        raise InputError(path, f"unsupported MRC data type {data.dtype}")
    return data, _choose_spacing_A(path, header_zyx_A, spacing_A)


def split_volume_name(path: str | Path) -> tuple[str, str]:
    """Return a volume file's run name and its volume suffix, lower-case.

    A compression suffix is looked through: ``TS_1.mrc.gz`` gives ``("TS_1", ".mrc")``,
    ``TS_1.mrc`` gives ``("TS_1", ".mrc")``, ``TS_1.zarr`` gives ``("TS_1", ".zarr")``.
    """
    path = Path(path)
    if path.suffix.lower() in COMPRESSED_SUFFIXES and Path(path.stem).suffix:
        inner = Path(path.stem)
        if inner.suffix.lower() in (*MRC_SUFFIXES, *TILT_SERIES_SUFFIXES):
            return inner.stem, inner.suffix.lower()
    return path.stem, path.suffix.lower()


def _is_compressed(path: Path) -> bool:
    """Tell whether ``path`` starts with the gzip or bzip2 magic bytes."""
    with path.open("rb") as f:
        head = f.read(3)
    return head[:2] == b"\x1f\x8b" or head == b"BZh"


def _why_no_data(mrc: mrcfile.mrcfile.MrcFile, path: Path, compressed: bool) -> str:
    """Say why mrcfile found no data block: a truncated file, or a mode it does not know."""
    header = mrc.header
    try:
        dtype = mrcfile.utils.data_dtype_from_header(header)
    except ValueError:
        return f"unknown data mode {int(header.mode)}"
    shape = (int(header.nz), int(header.ny), int(header.nx))
    expected = 1024 + int(header.nsymbt) + int(np.prod(shape)) * dtype.itemsize
    size = path.stat().st_size
    if size < expected and not compressed:
        return (
            f"the file is truncated: its header describes {shape[0]} x {shape[1]} x "
            f"{shape[2]} voxels ({expected:,} bytes) but it has {size:,} bytes "
            "(an interrupted copy or write?)"
        )
    return "no data block"


def _choose_spacing_A(
    path: Path, header_zyx_A: NDArray[np.float64] | None, given_A: float | None
) -> float:
    """Return the caller's voxel size (warning if the header disagrees), else the header's.

    Raises InputError naming ``path`` when neither is usable: no size in the header, or
    sizes that differ between axes by more than :data:`ANISOTROPY_TOLERANCE` (the picks'
    positions would be wrong along an axis whatever single size were taken).
    """
    if given_A is not None:
        if not given_A > 0:
            raise InputError(path, f"spacing_A must be > 0, got {given_A}")
        if header_zyx_A is not None and not np.allclose(header_zyx_A, given_A, rtol=1e-3):
            sizes = _format_sizes_A(header_zyx_A)
            msg = "%s: header voxel size %s overridden by %.3f Å"
            logger.warning(msg, path, sizes, given_A)
        return float(given_A)
    if header_zyx_A is None:
        raise InputError(path, "the header has no voxel size (0 or 1 Å); pass it with --spacing-A")
    x_A = float(header_zyx_A[-1])
    if not np.allclose(header_zyx_A, x_A, rtol=ANISOTROPY_TOLERANCE, atol=0.0):
        raise InputError(
            path,
            f"the header's voxel size differs between axes ({_format_sizes_A(header_zyx_A)}); "
            "cryopick needs cubic voxels: resample the tomogram to one voxel size "
            "(e.g. IMOD's squeezevol), or, if the header is wrong, pass the true size "
            "with --spacing-A",
        )
    return x_A


def _format_sizes_A(zyx_A: NDArray[np.float64]) -> str:
    """Format per-axis sizes as ``z 20.00, y 10.00, x 10.00 Å``."""
    return ", ".join(f"{axis} {size:.2f}" for axis, size in zip("zyx", zyx_A, strict=True)) + " Å"


def write_mrc(path: str | Path, volume: ArrayLike, spacing_A: float) -> Path:
    """Write a 3-D volume (z, y, x) to an MRC file atomically.

    float64 is stored as float32; uint8 as mode 0 with IMOD's unsigned-bytes flag
    (read back as uint8 by :func:`read_mrc`, IMOD and most viewers).

    Parameters
    ----------
    path : str or Path
        Destination; replaced if it exists.
    volume : array_like, shape (Z, Y, X)
        int8, uint8, int16, uint16, float16, float32 or float64 voxels.
    spacing_A : float
        Voxel size in Å, stored in the header.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    vol = as_volume_to_write(volume, spacing_A)
    if vol.dtype == np.float64:
        vol = vol.astype(np.float32)
    if vol.dtype.name not in _SUPPORTED_DTYPES:
        raise ValueError(f"cannot write dtype {vol.dtype} to MRC; use one of {_SUPPORTED_DTYPES}")
    unsigned_bytes = vol.dtype == np.uint8
    with atomic_path(path) as tmp, mrcfile.new(tmp, overwrite=True) as mrc:
        mrc.set_data(vol.view(np.int8) if unsigned_bytes else vol)
        mrc.voxel_size = float(spacing_A)
        if unsigned_bytes:
            _set_imod_flags(mrc, signed_bytes=False)
        mrc.update_header_stats()
    return path


def _header_spacing_A(mrc: mrcfile.mrcfile.MrcFile) -> NDArray[np.float64] | None:
    """Return the header's voxel size per axis (z, y, x) in Å, or None when unset."""
    vs = mrc.voxel_size
    zyx = np.array([vs.z, vs.y, vs.x], dtype=np.float64)
    # 0 is "unset"; 1 is what many programs write when cell == grid, i.e. also unset
    if not np.all(np.isfinite(zyx)) or np.any(zyx <= 0) or np.allclose(zyx, 1.0):
        return None
    return zyx


def _to_zyx(data: np.memmap, mrc: mrcfile.mrcfile.MrcFile, path: Path) -> np.memmap:
    """Put the volume's axes in (z, y, x) order, by the header's ``mapc, mapr, maps``.

    The file stores sections, rows, columns; ``maps, mapr, mapc`` say which of the
    physical axes (1 = x, 2 = y, 3 = z) each is. Nearly every tomogram has (3, 2, 1) in
    that order; any other permutation is transposed (a view, nothing read), with a warning.
    """
    header = mrc.header
    stored = [int(header.maps), int(header.mapr), int(header.mapc)]  # axes of data[0], [1], [2]
    if stored == [3, 2, 1] or stored == [0, 0, 0]:  # standard, or left unset by the writer
        return data
    if sorted(stored) != [1, 2, 3]:
        raise InputError(
            path, f"invalid axis order in the header: mapc, mapr, maps = {stored[::-1]}"
        )
    order = tuple(stored.index(axis) for axis in (3, 2, 1))
    logger.warning(
        "%s: the header stores the axes as mapc, mapr, maps = %s; read as z, y, x",
        path,
        stored[::-1],
    )
    transposed: np.memmap = data.transpose(order)
    return transposed


def _imod_fields(mrc: mrcfile.mrcfile.MrcFile) -> tuple[int, int]:
    raw = mrc.header.tobytes()[_IMOD_OFFSET : _IMOD_OFFSET + 8]
    stamp, flags = np.frombuffer(raw, dtype=mrc.header.mode.dtype)
    return int(stamp), int(flags)


def _is_unsigned_imod_bytes(mrc: mrcfile.mrcfile.MrcFile) -> bool:
    if int(mrc.header.mode) != 0:
        return False
    stamp, flags = _imod_fields(mrc)
    return stamp == _IMOD_STAMP and not flags & 1


def _set_imod_flags(mrc: mrcfile.mrcfile.MrcFile, signed_bytes: bool) -> None:
    extra2 = bytearray(mrc.header.extra2.tobytes())
    start = _IMOD_OFFSET - 112  # extra2 starts at header byte 112
    fields = np.array([_IMOD_STAMP, int(signed_bytes)], dtype=mrc.header.mode.dtype)
    extra2[start : start + 8] = fields.tobytes()
    mrc.header.extra2 = bytes(extra2)
