"""Bookkeeping of resumable predictions: which shard, and the on-disk state of the results.

Runs are listed by name only (:func:`cryopick.io.runs.list_run_refs`, never opening a
tomogram) and referred to by :class:`cryopick.io.runs.RunRef` (input path + run name), so
tasks carry references, not arrays.

Layout beside the merged output ``<output>``::

    <output>.parts/
        manifest.json     model hash, parameters, cryopick version of the last attempt
        <run>.csv         the run's picks (written first, atomically)
        <run>.json        the run's meta: fingerprint, pick count, seconds (the commit mark)
        tasks.jsonl       one line per finished task: run, batch id (one per attempt: the
                          field keeps its name for older parts folders), pid, seconds

A part counts as done only when its meta exists and carries the current fingerprint, so a
task killed half-way leaves at most a temporary that is ignored and later removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cryopick import __version__
from cryopick.core.errors import InputError
from cryopick.core.picks import PICKS_COLUMNS, empty_picks, validate_picks
from cryopick.io.atomic import atomic_path, write_text_atomic
from cryopick.io.picks.csv_io import read_csv_exactly
from cryopick.io.runs import RunRef, list_run_refs

log = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_NAME",
    "TASK_LOG_NAME",
    "RunRef",
    "append_task_log",
    "build_manifest",
    "hash_model_dir",
    "is_run_done",
    "list_run_refs",
    "merge_parts",
    "parse_shard",
    "parts_dir_for",
    "read_meta",
    "read_part",
    "read_task_log",
    "select_shard",
    "update_manifest",
    "write_part",
]

MANIFEST_NAME = "manifest.json"
TASK_LOG_NAME = "tasks.jsonl"


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``--shard I/N`` (0-based ``I``, e.g. ``$SLURM_ARRAY_TASK_ID/8``) into ``(I, N)``.

    Raises
    ------
    InputError
        If ``text`` is not two integers ``I/N`` with ``0 <= I < N``.
    """
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise InputError(None, f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if not 0 <= i < n:
        raise InputError(None, f"--shard {text}: need 0 <= I < N (I counts from 0)")
    return i, n


def select_shard(refs: Sequence[RunRef], shard: tuple[int, int]) -> list[RunRef]:
    """Select shard ``i`` of ``n``: run ``k`` (in name order) goes to shard ``k % n``."""
    i, n = shard
    if not 0 <= i < n:
        raise InputError(None, f"--shard {i}/{n}: need 0 <= I < N")
    ordered = sorted(refs, key=lambda r: r.run)
    return [r for k, r in enumerate(ordered) if k % n == i]


# ------------------------------------------------------------------ manifest and parts


def hash_model_dir(model_dir: str | Path) -> str:
    """SHA-256 over the names and bytes of the files of a model folder."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        digest.update(path.relative_to(model_dir).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build_manifest(
    model_dir: str | Path, read_options: Mapping[str, Any], predict_options: Mapping[str, Any]
) -> dict[str, Any]:
    """Describe a prediction: model hash, parameters, cryopick version and their fingerprint.

    Two predictions with the same fingerprint produce the same picks for a run, so parts
    carrying it can be reused.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError(model_dir, "model folder does not exist")
    identity = {
        "model_sha256": hash_model_dir(model_dir),
        "read_options": _jsonable(read_options),
        "predict_options": _jsonable(predict_options),
        "cryopick_version": __version__,
    }
    blob = json.dumps(identity, sort_keys=True).encode()
    return {
        **identity,
        "fingerprint": hashlib.sha256(blob).hexdigest()[:16],
        "model_dir": str(model_dir.resolve()),
        "model_mtime": max((p.stat().st_mtime for p in model_dir.iterdir()), default=0.0),
    }


def parts_dir_for(output: str | Path) -> Path:
    """Folder of per-run results beside ``output``: ``<output>.parts``."""
    output = Path(output)
    return output.with_name(output.name + ".parts")


def is_run_done(parts_dir: Path, run: str, fingerprint: str) -> bool:
    """Tell whether ``run``'s part exists and was made with ``fingerprint``."""
    meta_path = parts_dir / f"{run}.json"
    if not (meta_path.is_file() and (parts_dir / f"{run}.csv").is_file()):
        return False
    try:
        meta = json.loads(meta_path.read_text())
        return isinstance(meta, dict) and meta.get("fingerprint") == fingerprint
    except (OSError, json.JSONDecodeError):
        return False


def write_part(parts_dir: Path, run: str, picks: pd.DataFrame, meta: Mapping[str, Any]) -> None:
    """Write one run's picks, then its meta (the mark that the part is complete), atomically."""
    with atomic_path(parts_dir / f"{run}.csv") as tmp:
        picks.loc[:, list(PICKS_COLUMNS)].to_csv(tmp, index=False)
    write_text_atomic(parts_dir / f"{run}.json", json.dumps(dict(meta), indent=2))


def read_part(parts_dir: Path, run: str) -> pd.DataFrame:
    """Read one run's picks back exactly (floats round-trip)."""
    path = parts_dir / f"{run}.csv"
    df = read_csv_exactly(path, dtype={"experiment": str, "particle_type": str})
    return validate_picks(df, source=path) if len(df) else empty_picks()


def merge_parts(parts_dir: Path, runs: Sequence[str]) -> pd.DataFrame:
    """Concatenate the parts of ``runs`` in the given order into one picks table."""
    frames = [read_part(parts_dir, run) for run in runs]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else empty_picks()


def append_task_log(parts_dir: Path, meta: Mapping[str, Any]) -> None:
    """Append one line (run, batch id of the attempt, pid, picks, seconds) to ``tasks.jsonl``."""
    # one short O_APPEND write per line: lines from concurrent workers do not interleave
    line = json.dumps({k: meta[k] for k in ("run", "batch_id", "pid", "n_picks", "seconds")})
    fd = os.open(parts_dir / TASK_LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_task_log(parts_dir: str | Path) -> list[dict[str, Any]]:
    """Lines of ``tasks.jsonl``: which runs were processed, by which attempt and process."""
    path = Path(parts_dir) / TASK_LOG_NAME
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _jsonable(options: Mapping[str, Any]) -> dict[str, Any]:
    plain: dict[str, Any] = json.loads(json.dumps(dict(options), sort_keys=True, default=str))
    return plain


def read_meta(parts_dir: Path, run: str) -> dict[str, Any]:
    """Read the meta of a finished run: fingerprint, picks, seconds, tomogram shape/spacing."""
    meta: dict[str, Any] = json.loads((parts_dir / f"{run}.json").read_text())  # is_run_done's
    return meta


def update_manifest(parts_dir: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` (atomically), logging when the fingerprint changed."""
    path = parts_dir / MANIFEST_NAME
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
        if old.get("fingerprint") not in (None, manifest["fingerprint"]):
            log.info("model or parameters changed since the last attempt: runs are re-predicted")
    write_text_atomic(path, json.dumps(manifest, indent=2, sort_keys=True))
