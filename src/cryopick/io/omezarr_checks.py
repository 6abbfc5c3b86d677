"""Checks on reading OME-Zarr levels: no silent zeros, no codec tracebacks, no hidden offset.

zarr reads a chunk whose file is missing as the array's fill value (usually 0), so an
interrupted copy would silently change the picks. :func:`checked_array` returns the same
``zarr.Array`` (a subclass, so ``isinstance`` checks and laziness are kept) whose
``__getitem__`` (and so ``numpy.asarray``) first checks that every chunk the selection
touches has its file, and turns a chunk that cannot be decoded (garbage bytes, truncated
file) into an :class:`~cryopick.core.errors.InputError` naming the store and the chunk instead
of a blosc/zstd traceback.

A missing chunk is always an error, also in foreign stores. zarr-python 3 by default does
not write chunks that equal the fill value (``write_empty_chunks=False``), so a missing
chunk may in principle be all-fill data; real tomograms essentially never hold a chunk of
exactly the fill value, so the error says that the chunk *file* is missing and how to
rewrite the store if that region really is empty. cryopick's own writer writes every
chunk. Inside a sharded (v3) array only whole shards are checked: a missing inner chunk is
recorded in the shard's index and cannot be told from an empty one.

The chunk files are listed once per array, on its first read; when none is missing,
reads cost nothing extra.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from cryopick.core.errors import InputError

log = logging.getLogger(__name__)

ZARR3 = int(zarr.__version__.split(".")[0]) >= 3
_METADATA_FILES = frozenset({".zarray", ".zattrs", ".zgroup", "zarr.json"})
_WARNED_TRANSLATION: set[str] = set()


@dataclass
class ChunkGrid:
    """Where the chunk files of one on-disk zarr array are and what they are called.

    Attributes
    ----------
    store : Path
        The OME-Zarr group, named first in errors.
    array_path : str
        The array's path inside the group.
    shape, chunk_shape : tuple of int
        Array and chunk (for sharded arrays: shard) shapes.
    prefix, separator : str
        Chunk key = ``prefix + separator.join(indices)`` (``c/1/0/2``, ``1.0.2``, ...).
    fill_value : Any
        What zarr would return for a missing chunk.
    """

    store: Path
    array_path: str
    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    prefix: str
    separator: str
    fill_value: Any
    _missing: frozenset[tuple[int, ...]] | None = field(default=None, repr=False)

    @property
    def array_dir(self) -> Path:
        """Folder holding the array's metadata and chunk files."""
        return self.store / self.array_path

    def key(self, coords: Sequence[int]) -> str:
        """Chunk key (file path relative to :attr:`array_dir`) of grid position ``coords``."""
        return self.prefix + self.separator.join(str(int(c)) for c in coords)

    def region(self, coords: Sequence[int]) -> tuple[slice, ...]:
        """Voxels covered by the chunk at grid position ``coords``."""
        return tuple(
            slice(c * n, min((c + 1) * n, s))
            for c, n, s in zip(coords, self.chunk_shape, self.shape, strict=True)
        )

    def missing(self) -> frozenset[tuple[int, ...]]:
        """Grid positions whose chunk file does not exist (listed once, then cached)."""
        if self._missing is None:
            present: set[str] = set()
            for folder, _, files in os.walk(self.array_dir):
                rel = os.path.relpath(folder, self.array_dir)
                stem = "" if rel == "." else rel.replace(os.sep, "/") + "/"
                present.update(stem + f for f in files if f not in _METADATA_FILES)
            grid = (
                range(math.ceil(s / c)) for s, c in zip(self.shape, self.chunk_shape, strict=True)
            )
            self._missing = frozenset(
                coords for coords in itertools.product(*grid) if self.key(coords) not in present
            )
        return self._missing

    def touched(self, selection: Any) -> list[set[int]]:
        """Chunk indices along each axis that ``array[selection]`` reads (a superset)."""
        sel = selection if isinstance(selection, tuple) else (selection,)
        n_ellipsis = sum(s is Ellipsis for s in sel)
        if n_ellipsis > 1 or any(s is None for s in sel):
            return self._all_chunks()
        if n_ellipsis:
            at = next(i for i, s in enumerate(sel) if s is Ellipsis)
            fill = (slice(None),) * (len(self.shape) - len(sel) + 1)
            sel = sel[:at] + fill + sel[at + 1 :]
        if len(sel) > len(self.shape):
            return self._all_chunks()
        sel = sel + (slice(None),) * (len(self.shape) - len(sel))
        return [
            _axis_chunks(s, n, c) for s, n, c in zip(sel, self.shape, self.chunk_shape, strict=True)
        ]

    def _all_chunks(self) -> list[set[int]]:
        return [
            set(range(math.ceil(s / c))) for s, c in zip(self.shape, self.chunk_shape, strict=True)
        ]

    def describe(self, coords: Sequence[int]) -> str:
        """Name a chunk for a message: its key and the voxels it covers."""
        spatial = self.region(coords)[-3:]  # after any time or channel axes
        voxels = ", ".join(
            f"{axis} {r.start}:{r.stop}" for axis, r in zip("zyx", spatial, strict=False)
        )
        return f"chunk file '{self.array_path}/{self.key(coords)}' (voxels {voxels})"


def _axis_chunks(sel: Any, n: int, chunk: int) -> set[int]:
    """Chunk indices along one axis of length ``n`` read by the index ``sel``."""
    if isinstance(sel, slice):
        idx = range(*sel.indices(n))
        if len(idx) == 0:
            return set()
        if idx.step == 1:
            return set(range(idx.start // chunk, (idx.stop - 1) // chunk + 1))
        return {i // chunk for i in idx}
    arr = np.asarray(sel)
    if arr.dtype == np.bool_ and arr.ndim == 1:
        arr = np.flatnonzero(arr)
    if arr.ndim > 1 or not np.issubdtype(arr.dtype, np.integer):
        return set(range(math.ceil(n / chunk)))
    arr = np.where(arr < 0, arr + n, arr).ravel()
    return {int(i) // chunk for i in arr if 0 <= i < n}


def read_chunk_grid(store: Path, array_path: str, array: Any) -> ChunkGrid | None:
    """Read the chunk layout of ``store/array_path`` from its metadata file.

    Returns None (no chunk checks) for layouts this module does not know: irregular chunk
    grids, unknown chunk key encodings, or unreadable metadata (zarr reports those).
    """
    array_dir = store / array_path
    try:
        if (array_dir / ".zarray").is_file():
            meta = json.loads((array_dir / ".zarray").read_text())
            chunks = meta["chunks"]
            prefix, separator = "", meta.get("dimension_separator") or "."
        else:
            meta = json.loads((array_dir / "zarr.json").read_text())
            grid = meta["chunk_grid"]
            if grid.get("name") != "regular":
                return None
            chunks = grid["configuration"]["chunk_shape"]
            encoding = meta.get("chunk_key_encoding", {"name": "default"})
            name = encoding.get("name")
            default_sep = {"default": "/", "v2": "."}.get(name)
            if default_sep is None:
                return None
            separator = encoding.get("configuration", {}).get("separator", default_sep)
            prefix = "c" + separator if name == "default" else ""
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    shape = tuple(int(s) for s in array.shape)
    if len(chunks) != len(shape) or separator not in ("/", "."):
        return None
    chunk_shape = tuple(max(1, int(c)) for c in chunks)
    return ChunkGrid(store, array_path, shape, chunk_shape, prefix, separator, array.fill_value)


class CheckedArray(zarr.Array):
    """A ``zarr.Array`` whose ``[...]`` reads fail clearly on missing or corrupt chunks.

    Made by :func:`checked_array`; everything else behaves as ``zarr.Array``.
    """

    _chunk_grid: ChunkGrid

    def __getitem__(self, selection: Any) -> Any:
        """Read ``selection`` after checking that its chunks exist; decode errors name them.

        Raises
        ------
        InputError
            If a chunk the selection touches has no file, or cannot be decoded.
        """
        grid = self._chunk_grid
        touched = grid.touched(selection)
        for coords in sorted(grid.missing()):
            if all(c in axis for c, axis in zip(coords, touched, strict=True)):
                raise InputError(
                    grid.store,
                    f"{grid.describe(coords)} is missing, so zarr would read fill value "
                    f"{grid.fill_value} there and silently change the picks; re-copy the store "
                    f"(if that region really is all {grid.fill_value}, rewrite the store with "
                    "write_empty_chunks=True)",
                )
        try:
            return super().__getitem__(selection)
        except Exception:
            bad = self._first_undecodable(touched)
            if bad is None:
                raise
            first_line = (str(bad[1]).splitlines() or [""])[0]
            raise InputError(
                grid.store,
                f"{grid.describe(bad[0])} is corrupt and cannot be decoded "
                f"({type(bad[1]).__name__}: {first_line}); re-copy the store",
            ) from None

    def _first_undecodable(self, touched: list[set[int]]) -> tuple[tuple, Exception] | None:
        """After a failed read: the first touched chunk that fails alone, and its error."""
        for coords in itertools.product(*(sorted(axis) for axis in touched)):
            try:
                super().__getitem__(self._chunk_grid.region(coords))
            except Exception as err:
                return coords, err
        return None

    if not ZARR3:  # zarr 2 pickles an Array as its constructor arguments only
        # (mypy checks against zarr 3, whose Array has no __setstate__)

        def __getstate__(self) -> tuple[Any, ChunkGrid]:
            return (super().__getstate__(), self._chunk_grid)

        def __setstate__(self, state: tuple[Any, ChunkGrid]) -> None:
            super().__setstate__(state[0])  # type: ignore[misc]
            self._chunk_grid = state[1]


def checked_array(store: Path, array_path: str, array: Any) -> Any:
    """Return ``array`` (a ``zarr.Array`` at ``store/array_path``) with chunk checks.

    Falls back to ``array`` itself when its chunk layout is not one this module knows.
    """
    grid = read_chunk_grid(store, array_path, array)
    if grid is None:
        return array
    if ZARR3:
        out = CheckedArray(array.async_array)
    else:
        out = CheckedArray(  # type: ignore[call-arg]  # zarr 2's constructor; mypy sees zarr 3
            array.store, path=array.path, read_only=True, chunk_store=array.chunk_store
        )
    out._chunk_grid = grid
    return out


# ---------------------------------------------------------------- translation


def warn_if_translated(
    store: Path, level: int, ms: dict, dataset: dict, unit_A: Sequence[float]
) -> None:
    """Warn once per store when a level declares an OME-NGFF ``translation``.

    cryopick gives picks in the array's voxel frame (voxel ``i`` at ``i * spacing`` Å) and
    does not add the translation; the warning says so, with the translation in Å.

    Parameters
    ----------
    store : Path
        The OME-Zarr group.
    level : int
        The level read.
    ms : dict
        ``multiscales[0]`` (its own ``coordinateTransformations`` apply after the level's).
    dataset : dict
        ``multiscales[0].datasets[level]``.
    unit_A : sequence of float
        Å per axis unit, for z, y, x.
    """
    own = _transform(dataset.get("coordinateTransformations"), "translation")
    outer = _transform(ms.get("coordinateTransformations"), "translation")
    outer_scale = _transform(ms.get("coordinateTransformations"), "scale")
    try:
        total = np.zeros(len(unit_A))
        if own is not None:
            total += np.asarray(own, float) * (
                1.0 if outer_scale is None else np.asarray(outer_scale, float)
            )
        if outer is not None:
            total += np.asarray(outer, float)
        total_A: Any = np.round(total * np.asarray(unit_A, float), 3).tolist()
    except (TypeError, ValueError):
        total_A = f"{own} / {outer} (unparsed)"
    if total_A == [0.0] * len(unit_A) or str(store) in _WARNED_TRANSLATION:
        return
    _WARNED_TRANSLATION.add(str(store))
    log.warning(
        "%s: level %d declares an OME-NGFF translation of (z, y, x) = %s Å that cryopick "
        "does not apply: picks are in the array's voxel frame (voxel i at i * voxel size Å); "
        "add the translation to the coordinates if your other tools expect it",
        store,
        level,
        total_A,
    )


def _transform(transforms: object, kind: str) -> Any:
    if not isinstance(transforms, list):
        return None
    for t in transforms:
        if isinstance(t, dict) and t.get("type") == kind:
            return t.get(kind)
    return None
