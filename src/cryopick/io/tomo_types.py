"""Which reconstruction types (``denoised``, ``wbp`` ...) the runs of a project hold.

Copick and Kaggle projects keep a run's tomograms as ``<tomo_type>.zarr`` stores in its
``VoxelSpacing<spacing>`` folders (static and overlay). These functions look only at folder
and store names, opening no tomogram: :func:`list_tomo_types` lists a run's types,
:func:`runs_with_tomo_type` splits runs by whether they have one, and
:func:`select_runs_with_tomo_type` keeps those that do, warning about the others or
raising :class:`MissingTomoTypeError` when none does.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryopick.core.errors import InputError
from cryopick.io.layout import ProjectLayout

log = logging.getLogger(__name__)

_SPACING_DIR = re.compile(r"^VoxelSpacing(\d+(?:\.\d*)?)$")


class MissingTomoTypeError(InputError):
    """No run asked for has a tomogram of the requested type (the message lists those it has).

    Raised for ``read_tomogram(path, run=X)`` when run ``X`` lacks the type, so a caller
    handling many runs one by one can skip that run and fail on anything else.
    """


def list_tomo_types(layout: ProjectLayout, run: str) -> dict[str, list[float]]:
    """Reconstruction types of ``run`` mapped to the folder voxel spacings that hold them."""
    types: dict[str, set[float]] = {}
    for spacing_dir, folder_A in _spacing_dirs(layout, run):
        for store in spacing_dir.glob("*.zarr"):
            if not store.stem.endswith("_features"):  # copick feature maps, not tomograms
                types.setdefault(store.stem, set()).add(folder_A)
    return {t: sorted(s) for t, s in sorted(types.items())}


def _spacing_dirs(layout: ProjectLayout, run: str) -> list[tuple[Path, float]]:
    """``VoxelSpacing*`` folders of a run with the spacing in their name, overlay first."""
    found = []
    for run_dir in layout.run_dirs(run):
        for d in sorted(run_dir.iterdir()):
            if d.is_dir() and (m := _SPACING_DIR.match(d.name)):
                found.append((d, float(m.group(1))))
    return found


def runs_with_tomo_type(
    layout: ProjectLayout, runs: Sequence[str], tomo_type: str
) -> tuple[list[str], dict[str, dict[str, list[float]]]]:
    """Split ``runs`` into those that have a ``tomo_type`` tomogram and those that do not.

    Only folder names are looked at; no tomogram is opened.

    Returns
    -------
    kept : list of str
        Runs with a ``<tomo_type>.zarr`` in some ``VoxelSpacing`` folder, in input order.
    skipped : dict
        The other runs, each mapped to the types it has (:func:`list_tomo_types`).
    """
    kept, skipped = [], {}
    for run in runs:
        if tomo_type_stores(layout, run, tomo_type):
            kept.append(run)
        else:
            skipped[run] = list_tomo_types(layout, run)
    return kept, skipped


def select_runs_with_tomo_type(
    source: str | Path, layout: ProjectLayout, runs: Sequence[str], tomo_type: str
) -> list[str]:
    """Keep the runs that have ``tomo_type``, warning about (and listing) the others.

    Raises
    ------
    MissingTomoTypeError
        If none of ``runs`` has ``tomo_type``; the message lists the types they have.
    """
    kept, skipped = runs_with_tomo_type(layout, runs, tomo_type)
    if not skipped:
        return kept
    if not kept:
        if len(skipped) == 1:
            run, types = next(iter(skipped.items()))
            raise MissingTomoTypeError(
                layout.run_dirs(run)[0],
                f"run {run!r} has no {tomo_type!r} tomogram; available: "
                f"{_describe_types(types) or 'none'}" + _choose_hint(types),
            )
        counts: dict[str, int] = {}
        for types in skipped.values():
            for t in types:
                counts[t] = counts.get(t, 0) + 1
        listing = ", ".join(f"{t} ({n} of {len(skipped)} runs)" for t, n in sorted(counts.items()))
        raise MissingTomoTypeError(
            source,
            f"no run has a {tomo_type!r} tomogram; available: {listing or 'none'}"
            + _choose_hint(counts),
        )
    shown = [f"{r} (has: {_describe_types(t) or 'none'})" for r, t in list(skipped.items())[:20]]
    more = f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""
    log.warning(
        "%s: skipping %d of %d runs without a %r tomogram: %s%s",
        source,
        len(skipped),
        len(runs),
        tomo_type,
        "; ".join(shown),
        more,
    )
    return kept


def _choose_hint(types: Mapping[str, object]) -> str:
    """``; choose one with --tomo-type (e.g. --tomo-type wbp)``, or nothing when none."""
    if not types:
        return ""
    return f"; choose one with --tomo-type (e.g. --tomo-type {sorted(types)[0]})"


def _describe_types(types: dict[str, list[float]]) -> str:
    return ", ".join(f"{t} ({'/'.join(f'{s:g}' for s in sp)} Å)" for t, sp in types.items())


def tomo_type_stores(layout: ProjectLayout, run: str, tomo_type: str) -> dict[float, Path]:
    """``<tomo_type>.zarr`` stores of a run by folder voxel spacing, overlay first."""
    candidates: dict[float, Path] = {}
    for spacing_dir, folder_A in _spacing_dirs(layout, run):
        store = spacing_dir / f"{tomo_type}.zarr"
        if store.is_dir():
            candidates.setdefault(folder_A, store)  # overlay before static
    return candidates
