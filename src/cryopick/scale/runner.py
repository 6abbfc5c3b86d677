"""Predict many tomograms as independent tasks, resumably, on one machine or a cluster.

One task = one run: read its tomogram, predict, find peaks, write that run's picks.
Tasks get the tomogram *by reference* (input path + run name) and load the model once
per worker process (:func:`load_model_cached`). Each task writes its result atomically
under a per-run name (``<output>.parts/<run>.csv`` + ``<run>.json``, see
:mod:`cryopick.scale.parts`), so a retried task (its worker died) cannot duplicate or
corrupt picks.

Re-running the same command skips runs whose ``<run>.json`` carries the current
fingerprint (model + parameters + version); ``overwrite=True`` re-predicts everything.
The merged output is written once, after the last task, from all parts.
Where the tasks run is :mod:`cryopick.scale.executors`'s business.
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

from cryopick.core.errors import InputError, one_line_error
from cryopick.core.picks import empty_picks
from cryopick.scale.executors import (
    ClusterConfig,
    cluster_config_from_options,
    format_run_table,
    map_in_process,
    map_on_client,
    open_client,
    track_runs,
)
from cryopick.scale.parts import (
    RunRef,
    append_task_log,
    build_manifest,
    is_run_done,
    list_run_refs,
    merge_parts,
    parse_shard,
    parts_dir_for,
    read_meta,
    remove_stale_temporaries,
    select_shard,
    update_manifest,
    write_part,
)

log = logging.getLogger(__name__)

PredictFn = Callable[..., pd.DataFrame]
WriteFn = Callable[[pd.DataFrame, Path, list[dict[str, Any]]], Any]


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
    predict_fn: PredictFn | None = None  # None: cryopick.inference.pipeline.predict_tomogram


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
            "shape_zyx": list(tomogram.shape),
            "spacing_A": tomogram.spacing_A,
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
            error=one_line_error(err)
            if isinstance(err, InputError)
            else f"{source}: {one_line_error(err)}",
            traceback=traceback.format_exc(),
        )
    return record


def _default_predict_fn() -> PredictFn:
    from cryopick.inference.pipeline import predict_tomogram

    return predict_tomogram


# ------------------------------------------------------------------ the batch


def run_batch(
    sources: Sequence[str | Path],
    model_dir: str | Path,
    output: str | Path,
    *,
    read_options: Mapping[str, Any] | None = None,
    predict_options: Mapping[str, Any] | None = None,
    write_output: WriteFn | None = None,
    runs: Sequence[str] | None = None,
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
        ``write_output(picks, output, metas)`` writes the merged table (default: CSV);
        ``metas`` are the merged runs' meta dicts (``run``, ``shape_zyx``, ``spacing_A``).
    runs : sequence of str, optional
        Only these runs (default: all).
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
        :func:`cryopick.inference.pipeline.predict_tomogram`.
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
    # runs of a project lacking the tomogram type are skipped with a warning, not failed
    all_refs = list_run_refs(sources, tomo_type=read_options.get("tomo_type"))
    if runs is not None:
        if missing := sorted(set(runs) - {r.run for r in all_refs}):
            raise InputError(Path(sources[0]), f"run(s) {missing} not found")
        all_refs = [r for r in all_refs if r.run in set(runs)]
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
        meta = read_meta(parts_dir, rec["run"])
        rec.update(n_picks=meta.get("n_picks"), seconds=meta.get("seconds"))
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
        (write_output or _write_csv)(picks, output, [read_meta(parts_dir, r) for r in done])
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
        "error": one_line_error(err),
        "pid": None,
        "model_loaded": False,
    }


def _write_csv(picks: pd.DataFrame, output: Path, metas: list[dict[str, Any]]) -> None:
    from cryopick.io.picks.csv_io import write_csv_picks

    write_csv_picks(picks, output)


def predict_batch(
    input_path: str | Path,
    model_dir: str | Path | None,
    output: str | Path | None,
    format: str,
    config: Any = None,
    *,
    tomo_type: str = "denoised",
    runs: Sequence[str] | None = None,
    cluster: ClusterConfig | dict[str, Any] | None = None,
    shard: tuple[int, int] | str | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    spacing_A: float | None = None,
) -> BatchResult:
    """Run ``cryopick predict`` as a batch: the same picks as the single-process path.

    See :func:`cryopick.inference.pipeline.predict`.

    Parameters
    ----------
    input_path, model_dir, output, format, config, tomo_type, runs, spacing_A
        As for :func:`cryopick.inference.pipeline.predict` (``config`` a ``PredictConfig``). For the
        ``copick`` format without ``output`` the parts go beside the input project.
    cluster : ClusterConfig or dict, optional
        Where to run; a dict holds the CLI's options (None = not given), validated by
        :func:`cryopick.scale.executors.cluster_config_from_options`.
    shard : (i, n) or str, optional
        ``--shard`` as a tuple or ``"I/N"``.
    overwrite, show_progress
        As for :func:`run_batch`.

    Returns
    -------
    BatchResult
        Per-run records; ``failed`` non-empty means some runs have no picks.
    """
    from types import SimpleNamespace

    from cryopick.inference.output import check_output_target, write_predictions
    from cryopick.inference.pipeline import PredictConfig, bundled_model_dir
    from cryopick.inference.runtime import resolve_device
    from cryopick.model import read_model_card

    check_output_target(output, format, input_path)  # before any work
    if isinstance(shard, str):
        shard = parse_shard(shard)
    if isinstance(cluster, dict):
        cluster = cluster_config_from_options(cluster, sharded=shard is not None)
    if cluster is None or not (cluster.scheduler or cluster.slurm):
        resolve_device(config.device if config else "auto")  # workers on this machine: check now
    model_dir = Path(model_dir) if model_dir else bundled_model_dir()
    model_spacing_A = read_model_card(model_dir).spacing_A
    config = config or PredictConfig()

    def write_output(picks: pd.DataFrame, _: Path, metas: list[dict[str, Any]]) -> None:
        # write_predictions needs names (copick), shapes and spacings (STAR) of the runs
        tomograms = [
            SimpleNamespace(name=m["run"], shape=tuple(m["shape_zyx"]), spacing_A=m["spacing_A"])
            for m in metas
        ]
        write_predictions(picks, tomograms, output, format, input_path, model_spacing_A)

    return run_batch(
        [input_path],
        model_dir,
        output if output is not None else input_path,
        read_options={"tomo_type": tomo_type, "spacing_A": spacing_A},
        predict_options=config.model_dump(mode="json"),
        write_output=write_output,
        runs=runs,
        cluster=cluster,
        shard=shard,
        overwrite=overwrite,
        progress=show_progress,
    )


def print_batch_report(result: BatchResult, output_label: str | Path | None = None) -> None:
    """Print the per-run table on stderr, then where the picks went and which runs failed."""
    from rich.console import Console

    console = Console(stderr=True)
    console.print(format_run_table(result.records, title=str(result.parts_dir)))
    if result.output is not None:
        n_runs = len(result.records) - len(result.failed)
        console.print(f"wrote picks of {n_runs} runs to {output_label or result.output}")
    for rec in result.failed:
        console.print(f"run {rec['run']} failed: {rec['error']}", style="red", highlight=False)
