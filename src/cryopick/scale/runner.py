"""Predict many runs as independent tasks, resumably, on one machine or a cluster.

One task = one run: read its tomogram, predict, find peaks, write that run's picks.
Tasks get the tomogram *by reference* (input path + run name) and load the model once
per worker process (:func:`load_model_cached`). Each task writes its result atomically
under a per-run name (``<output>.parts/<run>.csv`` + ``<run>.json``, see
:mod:`cryopick.scale.parts`), so a retried task (its worker died) cannot duplicate or
corrupt picks.

Re-running the same command skips runs whose ``<run>.json`` carries the current
fingerprint (model + parameters + version); ``overwrite=True`` re-predicts everything.
The merged output is written once, after the last task, from all parts.
Where the tasks run is :mod:`cryopick.scale.executors`'s business;
:func:`cryopick.scale.predict.predict_runs` (``cryopick predict``) decides whether runs
become tasks at all.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cryopick.core.errors import InputError, one_line_error
from cryopick.core.picks import empty_picks
from cryopick.io.atomic import remove_stale_temporaries
from cryopick.io.runs import RunRef, RunResult, list_run_refs
from cryopick.scale.executors import ClusterConfig, map_in_process, map_on_client, open_client
from cryopick.scale.parts import (
    append_task_log,
    build_manifest,
    is_run_done,
    merge_parts,
    parts_dir_for,
    read_meta,
    select_shard,
    update_manifest,
    write_part,
)
from cryopick.scale.results import RunsResult

log = logging.getLogger(__name__)

__all__ = ["TaskSpec", "load_model_cached", "predict_run", "run_predict_tasks"]

PredictFn = Callable[..., pd.DataFrame]
WriteFn = Callable[[pd.DataFrame, Path, list[dict[str, Any]]], Any]


@dataclass(frozen=True)
class TaskSpec:
    """What every task of one attempt shares (small, pickled once per task).

    ``batch_id`` names the attempt (a new one per call) in ``tasks.jsonl``; the field keeps
    its name so that parts folders of earlier versions stay readable.
    """

    model_dir: str
    parts_dir: str
    fingerprint: str
    batch_id: str
    read_options: dict[str, Any]
    predict_options: dict[str, Any]
    device: str = "cpu"
    predict_fn: PredictFn | None = None  # None: cryopick.inference.pipeline.predict_tomogram


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


def predict_run(ref: RunRef, spec: TaskSpec) -> RunResult:
    """Predict one run and write its part (the task); never raises.

    Returns
    -------
    RunResult
        ``done`` with the pick count and seconds, or ``failed`` with a one-line ``error``
        and the ``traceback``; ``pid`` and ``model_loaded`` say where it ran.
    """
    start = time.perf_counter()
    source, model_loaded = ref.source, False
    try:
        from cryopick.io.tomograms import read_tomogram

        model, card, model_loaded = load_model_cached(spec.model_dir, spec.device)
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
        return RunResult(
            ref.run, "done", len(picks), seconds, pid=os.getpid(), model_loaded=model_loaded
        )
    except Exception as err:
        # InputError names its file; anything else (a bad zarr chunk) gets the source
        reason = one_line_error(err)
        return RunResult(
            ref.run,
            "failed",
            0,
            time.perf_counter() - start,
            error=reason if isinstance(err, InputError) else f"{source}: {reason}",
            pid=os.getpid(),
            model_loaded=model_loaded,
            traceback=traceback.format_exc(),
        )


def _default_predict_fn() -> PredictFn:
    from cryopick.inference.pipeline import predict_tomogram

    return predict_tomogram


# ------------------------------------------------------------------ all runs


def run_predict_tasks(
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
) -> RunsResult:
    """Predict every run of ``sources`` as one task per run and merge the picks into ``output``.

    Parameters
    ----------
    sources, model_dir, output : path
        Inputs (as :func:`cryopick.io.tomograms.read_tomograms` takes them); the trained
        model folder (loaded once per worker); the merged picks file (per-run parts go to
        ``<output>.parts/``).
    read_options, predict_options : mapping
        Keyword arguments of ``read_tomogram`` (``tomo_type``, ``level``, ``spacing_A``)
        and of the predict function; both enter the fingerprint.
    write_output : callable, optional
        ``write_output(picks, output, metas)`` writes the merged table (default: CSV);
        ``metas`` are the merged runs' meta dicts (``run``, ``shape_zyx``, ``spacing_A``).
    runs : sequence of str, optional
        Only these runs (default: all).
    cluster, client : ClusterConfig or distributed.Client, optional
        Where to run (LocalCluster, scheduler address, SLURM), or an open client to use.
    shard, overwrite, device : (i, n) or None, bool, str
        Process only shard ``i`` of ``n`` in this process, without Dask; re-predict runs
        whose parts are up to date; torch device for the model in each worker.
    predict_fn : callable, optional
        ``predict_fn(tomogram, model, card, **predict_options) -> picks`` (default
        :func:`cryopick.inference.pipeline.predict_tomogram`).
    progress : bool
        Show a progress bar over runs.

    Returns
    -------
    RunsResult
        Per-run results; ``missing`` lists runs without picks (failed, or in shards not
        finished yet). ``output`` is None when nothing was merged (a shard before the rest).
    """
    read_options = dict(read_options or {})
    predict_options = dict(predict_options or {})
    all_refs = _select_runs(sources, read_options.get("tomo_type"), runs)
    refs = select_shard(all_refs, shard) if shard else all_refs
    output = Path(output)
    parts_dir = _prepare_parts_dir(output, clear_temporaries=not shard)
    manifest = build_manifest(model_dir, read_options, predict_options)
    fingerprint = manifest["fingerprint"]
    update_manifest(parts_dir, manifest)

    todo = [r for r in refs if overwrite or not is_run_done(parts_dir, r.run, fingerprint)]
    results = [_skipped_result(parts_dir, r.run) for r in refs if r not in todo]
    if results:
        log.info("%d of %d runs already done (--overwrite redoes them)", len(results), len(refs))
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
    results += _execute(todo, spec, cluster, client, shard, progress)
    results.sort(key=lambda r: r.run)
    result = RunsResult(runs=results, parts_dir=parts_dir)
    _merge_output(result, [r.run for r in all_refs], fingerprint, output, write_output, shard)
    return result


def _select_runs(
    sources: Sequence[str | Path], tomo_type: str | None, runs: Sequence[str] | None
) -> list[RunRef]:
    """List the runs of ``sources`` (only ``runs`` when given), by reference, sorted by name."""
    # runs of a project lacking the tomogram type are skipped with a warning, not failed
    refs = list_run_refs(sources, tomo_type=tomo_type)
    if runs is not None:
        if missing := sorted(set(runs) - {r.run for r in refs}):
            raise InputError(Path(sources[0]), f"run(s) {missing} not found")
        refs = [r for r in refs if r.run in set(runs)]
    return refs


def _prepare_parts_dir(output: Path, clear_temporaries: bool) -> Path:
    """Create ``<output>.parts``; remove temporaries of killed tasks unless shards may run."""
    parts_dir = parts_dir_for(output)
    parts_dir.mkdir(parents=True, exist_ok=True)
    if clear_temporaries:  # shards may run concurrently: their temporaries are not stale
        remove_stale_temporaries(parts_dir)
    return parts_dir


def _skipped_result(parts_dir: Path, run: str) -> RunResult:
    meta = read_meta(parts_dir, run)
    return RunResult(run, "skipped", meta.get("n_picks"), meta.get("seconds"))


def _merge_output(
    result: RunsResult,
    all_runs: list[str],
    fingerprint: str,
    output: Path,
    write_output: WriteFn | None,
    shard: tuple[int, int] | None,
) -> None:
    """Write the merged picks of the done runs into ``output``; record what is missing."""
    parts_dir = result.parts_dir
    assert parts_dir is not None
    result.missing = [run for run in all_runs if not is_run_done(parts_dir, run, fingerprint)]
    # a shard merges only once every shard is done; a whole attempt writes what it has
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


def _execute(
    todo: list[RunRef],
    spec: TaskSpec,
    cluster: ClusterConfig | None,
    client: Any,
    shard: tuple[int, int] | None,
    progress: bool,
) -> list[RunResult]:
    from cryopick.console import RunProgress

    if not todo:
        return []
    with RunProgress(len(todo), enabled=progress) as bar:

        def on_done(result: RunResult) -> None:
            if result.status == "failed":
                log.error("run %s failed: %s", result.run, result.error)
            bar.advance()

        def on_dask(dask_client: Any) -> list[RunResult]:
            keys = [f"cryopick-predict-{r.run}-{spec.batch_id}" for r in todo]
            return map_on_client(
                dask_client,
                predict_run,
                todo,
                spec,
                keys=keys,
                on_done=on_done,
                on_error=_failed_task_result,
            )

        # a shard runs in this process, without Dask (see predict_runs)
        if not shard and client is not None:
            return on_dask(client)
        if not shard and cluster is not None:
            with open_client(cluster) as own_client:
                return on_dask(own_client)
        return map_in_process(predict_run, todo, spec, on_done=on_done)


def _failed_task_result(ref: RunRef, err: BaseException) -> RunResult:
    """Describe a task that raised in Dask (e.g. its workers kept dying)."""
    return RunResult(ref.run, "failed", 0, float("nan"), error=one_line_error(err))


def _write_csv(picks: pd.DataFrame, output: Path, metas: list[dict[str, Any]]) -> None:
    from cryopick.io.picks.csv_io import write_csv_picks

    write_csv_picks(picks, output)
