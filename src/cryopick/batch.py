"""Predict many tomograms as independent tasks, resumably, on one machine or a cluster.

One task = one run: read its tomogram, predict, find peaks, write that run's picks.
Tasks get the tomogram *by reference* (input path + run name) and load the model once
per worker process (:func:`load_model_cached`). Each task writes its result atomically
under a per-run name (``<output>.parts/<run>.csv`` + ``<run>.json``, see
:mod:`cryopick.batch_parts`), so a retried task (its worker died) cannot duplicate or
corrupt picks.

Re-running the same command skips runs whose ``<run>.json`` carries the current
fingerprint (model + parameters + version); ``overwrite=True`` re-predicts everything.
The merged output is written once, after the last task, from all parts.
Where the tasks run is :mod:`cryopick.distributed`'s business.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cryopick.batch_parts import (
    append_task_log,
    build_manifest,
    is_run_done,
    merge_parts,
    parts_dir_for,
    read_meta_summary,
    remove_stale_temporaries,
    update_manifest,
    write_part,
)
from cryopick.distributed import (
    ClusterConfig,
    map_in_process,
    map_on_client,
    open_client,
    track_runs,
)
from cryopick.errors import InputError
from cryopick.io.picks_table import empty_picks

log = logging.getLogger(__name__)

PredictFn = Callable[..., pd.DataFrame]


@dataclass(frozen=True)
class RunRef:
    """A run by reference: where its tomogram is and its name (never the array)."""

    source: str
    run: str


@dataclass(frozen=True)
class TaskSpec:
    """What every task of one batch shares (small, pickled once per task)."""

    model_dir: str
    parts_dir: str
    fingerprint: str
    batch_id: str
    read_options: dict[str, Any]
    predict_options: dict[str, Any]
    device: str = "cpu"
    predict_fn: PredictFn | None = None  # None: cryopick.predict.predict_tomogram


@dataclass
class BatchResult:
    """Outcome of :func:`run_batch`: one record per run (``status`` done/skipped/failed)."""

    records: list[dict[str, Any]]
    parts_dir: Path
    output: Path | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every run (of every shard) has up-to-date picks."""
        return not self.missing

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Records of runs whose task failed, with their ``error``."""
        return [r for r in self.records if r["status"] == "failed"]

    @property
    def processed(self) -> list[str]:
        """Runs predicted by this batch (not skipped)."""
        return [r["run"] for r in self.records if r["status"] == "done"]

    @property
    def skipped(self) -> list[str]:
        """Runs whose parts were already up to date."""
        return [r["run"] for r in self.records if r["status"] == "skipped"]


# ------------------------------------------------------------------ listing runs


def list_run_refs(sources: Sequence[str | Path]) -> list[RunRef]:
    """List the runs of every input, sorted by name, without opening any tomogram.

    A corrupt tomogram must fail its own task, not the listing, so only names are read
    here (project layouts: run folders; folders of volumes: file stems).

    Raises
    ------
    InputError
        If an input does not exist, holds no volumes, or two inputs share a run name.
    """
    from cryopick.io.layout import resolve_layout
    from cryopick.io.mrc import MRC_SUFFIXES

    suffixes = (*MRC_SUFFIXES, ".zarr")
    refs: dict[str, RunRef] = {}
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise InputError(path, "does not exist")
        layout = None if path.suffix.lower() in suffixes else resolve_layout(path)
        if layout is not None:
            names = layout.run_names()
        elif path.suffix.lower() in suffixes:
            names = [path.stem]
        elif path.is_dir():
            names = sorted(
                p.stem
                for p in path.iterdir()
                if p.suffix.lower() in suffixes and not p.name.startswith(".")
            )
        else:
            names = []
        if not names:
            raise InputError(path, "no runs found (copick config, Kaggle root, MRC/zarr files)")
        for name in names:
            if name in refs:
                raise InputError(path, f"run {name!r} is also in {refs[name].source}")
            refs[name] = RunRef(str(path), name)
    return [refs[name] for name in sorted(refs)]


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


# ------------------------------------------------------------------ the task

_MODEL_CACHE: dict[tuple[str, float, str], tuple[Any, Any]] = {}


def load_model_cached(model_dir: str | Path, device: str = "cpu") -> tuple[Any, Any, bool]:
    """Load a model once per process (keyed by path, mtime and device).

    Returns
    -------
    (model, card, loaded)
        ``loaded`` is True when this call read the model from disk.
    """
    from cryopick.model import CARD_FILENAME, WEIGHTS_FILENAME, load_model

    path = Path(model_dir).resolve()
    mtime = max((path / f).stat().st_mtime for f in (WEIGHTS_FILENAME, CARD_FILENAME))
    key = (str(path), mtime, device)
    if key in _MODEL_CACHE:
        return (*_MODEL_CACHE[key], False)
    _MODEL_CACHE.clear()  # one model per worker: a newer one replaces the old
    _MODEL_CACHE[key] = load_model(path, device=device)
    return (*_MODEL_CACHE[key], True)


def predict_run(ref: RunRef, spec: TaskSpec) -> dict[str, Any]:
    """Predict one run and write its part (the task); never raises.

    Returns
    -------
    dict
        ``run``, ``status`` ("done" or "failed"), ``n_picks``, ``seconds``, ``pid``,
        ``model_loaded`` and, on failure, ``error`` (one line) and ``traceback``.
    """
    start = time.perf_counter()
    record: dict[str, Any] = {"run": ref.run, "pid": os.getpid(), "model_loaded": False}
    source = ref.source
    try:
        from cryopick.io.tomograms import read_tomogram

        model, card, record["model_loaded"] = load_model_cached(spec.model_dir, spec.device)
        tomogram = read_tomogram(ref.source, run=ref.run, **spec.read_options)
        source = str(tomogram.source)
        predict_fn = spec.predict_fn or _default_predict_fn()
        picks = predict_fn(tomogram, model, card, **spec.predict_options)
        picks = picks.assign(experiment=ref.run) if len(picks) else empty_picks()
        seconds = time.perf_counter() - start
        meta = {
            "run": ref.run,
            "source": ref.source,
            "fingerprint": spec.fingerprint,
            "batch_id": spec.batch_id,
            "n_picks": len(picks),
            "seconds": round(seconds, 3),
            "pid": os.getpid(),
        }
        parts_dir = Path(spec.parts_dir)
        write_part(parts_dir, ref.run, picks, meta)
        append_task_log(parts_dir, meta)
        record.update(status="done", n_picks=len(picks), seconds=seconds)
    except Exception as err:  # noqa: BLE001 - one bad run must not stop the batch
        record.update(
            status="failed",
            n_picks=0,
            seconds=time.perf_counter() - start,
            # InputError names its file; anything else (a bad zarr chunk) gets the source
            error=_one_line(err) if isinstance(err, InputError) else f"{source}: {_one_line(err)}",
            traceback=traceback.format_exc(),
        )
    return record


def _default_predict_fn() -> PredictFn:
    from cryopick.predict import predict_tomogram

    return predict_tomogram


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


# ------------------------------------------------------------------ the batch


def run_batch(
    sources: Sequence[str | Path],
    model_dir: str | Path,
    output: str | Path,
    *,
    read_options: Mapping[str, Any] | None = None,
    predict_options: Mapping[str, Any] | None = None,
    write_output: Callable[[pd.DataFrame, Path], Any] | None = None,
    cluster: ClusterConfig | None = None,
    client: Any = None,
    shard: tuple[int, int] | None = None,
    overwrite: bool = False,
    device: str = "cpu",
    predict_fn: PredictFn | None = None,
    progress: bool = True,
) -> BatchResult:
    """Predict every run of ``sources`` as one task per run and merge the picks into ``output``.

    Parameters
    ----------
    sources : sequence of path
        Inputs as accepted by :func:`cryopick.io.tomograms.read_tomograms`.
    model_dir : path
        Trained model folder (loaded once per worker).
    output : path
        Merged picks file; per-run parts go to ``<output>.parts/``.
    read_options, predict_options : mapping
        Keyword arguments of ``read_tomogram`` (``tomo_type``, ``level``, ``spacing_A``)
        and of the predict function; both enter the fingerprint.
    write_output : callable, optional
        ``write_output(picks, output)`` writes the merged table (default: CSV).
    cluster : ClusterConfig, optional
        Where to run (LocalCluster, scheduler address, SLURM). Ignored if ``client`` given.
    client : distributed.Client, optional
        An open client to submit to.
    shard : (i, n), optional
        Process only shard ``i`` of ``n`` in this process, without Dask.
    overwrite : bool
        Re-predict runs whose parts are up to date.
    device : str
        Torch device for the model in each worker.
    predict_fn : callable, optional
        ``predict_fn(tomogram, model, card, **predict_options) -> picks``; default
        :func:`cryopick.predict.predict_tomogram`.
    progress : bool
        Show a progress bar over runs.

    Returns
    -------
    BatchResult
        Per-run records; ``missing`` lists runs without picks (failed, or in shards not
        finished yet). ``output`` is None when nothing was merged (a shard before the rest).
    """
    read_options = dict(read_options or {})
    predict_options = dict(predict_options or {})
    all_refs = list_run_refs(sources)
    refs = select_shard(all_refs, shard) if shard else all_refs
    output = Path(output)
    parts_dir = parts_dir_for(output)
    parts_dir.mkdir(parents=True, exist_ok=True)
    if not shard:  # shards may run concurrently: their temporaries are not stale
        remove_stale_temporaries(parts_dir)
    manifest = build_manifest(model_dir, read_options, predict_options)
    fingerprint = manifest["fingerprint"]
    update_manifest(parts_dir, manifest)

    todo = [r for r in refs if overwrite or not is_run_done(parts_dir, r.run, fingerprint)]
    records = [{"run": r.run, "status": "skipped"} for r in refs if r not in todo]
    for rec in records:
        rec.update(read_meta_summary(parts_dir, rec["run"]))
    if records:
        log.info(
            "%d of %d runs already done (use --overwrite to redo them)", len(records), len(refs)
        )
    spec = TaskSpec(
        model_dir=str(Path(model_dir).resolve()),
        parts_dir=str(parts_dir.resolve()),
        fingerprint=fingerprint,
        batch_id=uuid.uuid4().hex[:12],
        read_options=read_options,
        predict_options=predict_options,
        device=device,
        predict_fn=predict_fn,
    )
    records += _execute(todo, spec, cluster, client, shard, progress)
    records.sort(key=lambda r: r["run"])

    result = BatchResult(records=records, parts_dir=parts_dir)
    all_runs = [r.run for r in all_refs]
    result.missing = [run for run in all_runs if not is_run_done(parts_dir, run, fingerprint)]
    # a shard merges only once every shard is done; a whole batch writes what it has
    if not result.missing or not shard:
        done = [run for run in all_runs if run not in result.missing]
        picks = merge_parts(parts_dir, done)
        (write_output or _write_csv)(picks, output)
        result.output = output
        log.info("wrote %d picks of %d runs to %s", len(picks), len(done), output)
    if result.missing:
        log.warning(
            "%d of %d runs have no picks (%s%s): re-run the same command to retry them",
            len(result.missing),
            len(all_runs),
            ", ".join(result.missing[:5]),
            " ..." if len(result.missing) > 5 else "",
        )
    return result


def _execute(
    todo: list[RunRef],
    spec: TaskSpec,
    cluster: ClusterConfig | None,
    client: Any,
    shard: tuple[int, int] | None,
    progress: bool,
) -> list[dict[str, Any]]:
    if not todo:
        return []
    with track_runs(len(todo), progress) as advance:
        if shard or (client is None and cluster is None):
            return map_in_process(predict_run, todo, spec, on_done=advance)
        keys = [f"cryopick-predict-{r.run}-{spec.batch_id}" for r in todo]
        kwargs = {"keys": keys, "on_done": advance, "on_error": _record_task_error}
        if client is not None:
            return map_on_client(client, predict_run, todo, spec, **kwargs)
        with open_client(cluster) as own_client:
            return map_on_client(own_client, predict_run, todo, spec, **kwargs)


def _record_task_error(ref: RunRef, err: BaseException) -> dict[str, Any]:
    return {
        "run": ref.run,
        "status": "failed",
        "n_picks": 0,
        "seconds": float("nan"),
        "error": _one_line(err),
        "pid": None,
        "model_loaded": False,
    }


def format_batch_table(result: BatchResult) -> Any:
    """Build a rich table: one row per run with status, pick count, seconds and error."""
    from rich.table import Table

    table = Table(title=f"{len(result.records)} runs ({result.parts_dir})")
    for col in ("run", "status", "picks", "seconds", "error"):
        table.add_column(col, justify="right" if col in ("picks", "seconds") else "left")
    for rec in result.records:
        seconds = rec.get("seconds")
        table.add_row(
            rec["run"],
            rec["status"],
            str(rec.get("n_picks", "")),
            "" if seconds is None or seconds != seconds else f"{seconds:.1f}",
            rec.get("error", ""),
        )
    return table


def _write_csv(picks: pd.DataFrame, output: Path) -> None:
    from cryopick.io.picks_csv import write_csv_picks

    write_csv_picks(picks, output)
