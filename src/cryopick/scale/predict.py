"""Predict every run of an input and write the picks: the library behind ``cryopick predict``.

:func:`predict_runs` is the one entry point. Without scale-out options it predicts the runs
one after the other in this process (:func:`cryopick.inference.pipeline.predict`; nothing
is written but the output). With any of them (a Dask cluster, ``shard``, ``overwrite``)
each run becomes a resumable task (:func:`cryopick.scale.runner.run_predict_tasks`) whose
result is kept in ``<output>.parts/`` until the merged output is written
(docs/scale_out.md). Both give the same picks and report every run in a
:class:`cryopick.scale.results.RunsResult`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryopick.core.errors import RunsFailedError
from cryopick.inference.output import OutputFormat, RunShape
from cryopick.io.runs import RunResult
from cryopick.io.tomograms import DEFAULT_TOMO_TYPE
from cryopick.scale.executors import (
    ClusterConfig,
    check_cluster_libraries,
    cluster_config_from_options,
)
from cryopick.scale.parts import parse_shard
from cryopick.scale.results import RunsResult
from cryopick.scale.runner import run_predict_tasks

if TYPE_CHECKING:
    import pandas as pd

    from cryopick.inference.pipeline import PredictConfig

ClusterOptions = ClusterConfig | Mapping[str, Any] | None
"""A ClusterConfig, or the command line's options by name (None or False: not given)."""


def is_cluster_given(cluster: ClusterOptions) -> bool:
    """Tell whether ``cluster`` asks for Dask (a ClusterConfig, or any option given)."""
    if isinstance(cluster, ClusterConfig):
        return True
    return any(v is not None and v is not False for v in (cluster or {}).values())


def predict_runs(
    input_path: str | Path,
    model_dir: str | Path | None = None,
    output: str | Path | None = None,
    format: OutputFormat | str = OutputFormat.CSV,
    config: PredictConfig | None = None,
    *,
    tomo_type: str = DEFAULT_TOMO_TYPE,
    runs: Sequence[str] | None = None,
    spacing_A: float | None = None,
    cluster: ClusterOptions = None,
    shard: tuple[int, int] | str | None = None,
    overwrite: bool = False,
    show_progress: bool = False,
) -> RunsResult:
    """Predict every run at ``input_path`` and write the picks; failed runs are reported.

    Parameters
    ----------
    input_path, model_dir, output, format, config, tomo_type, spacing_A
        As for :func:`cryopick.inference.pipeline.predict`. For the ``copick`` format
        without ``output`` the picks (and the parts of tasks) go into / beside the input.
    runs : sequence of str, optional
        Only these runs.
    cluster : ClusterConfig or mapping, optional
        Run the tasks on Dask; a mapping holds the command line's options (None = not
        given), validated by :func:`cryopick.scale.executors.cluster_config_from_options`.
    shard : (i, n) or str, optional
        Only shard ``i`` of ``n`` (``"I/N"``), in this process, as resumable tasks.
    overwrite : bool
        As resumable tasks, re-predicting runs whose parts are up to date.
    show_progress : bool
        Show progress bars (per tomogram in this process, over runs for tasks).

    Returns
    -------
    RunsResult
        One result per run; ``failed`` non-empty means those runs have no picks (the
        others' picks were written). ``parts_dir`` is None without scale-out options.

    Raises
    ------
    InputError
        If the input, model, output or options are wrong (checked before any work), or
        the input has a single run, predicted in this process, and it failed.
    """
    if not (shard or overwrite or is_cluster_given(cluster)):
        return _predict_in_process(
            input_path,
            model_dir,
            output,
            format,
            config,
            tomo_type=tomo_type,
            runs=list(runs) if runs is not None else None,
            spacing_A=spacing_A,
            show_progress=show_progress,
        )
    return _predict_as_tasks(
        input_path,
        model_dir,
        output,
        format,
        config,
        tomo_type=tomo_type,
        runs=runs,
        spacing_A=spacing_A,
        cluster=cluster,
        shard=shard,
        overwrite=overwrite,
        show_progress=show_progress,
    )


def _predict_in_process(
    input_path: str | Path,
    model_dir: str | Path | None,
    output: str | Path | None,
    format: OutputFormat | str,
    config: PredictConfig | None,
    **options: Any,
) -> RunsResult:
    """Predict the runs one after the other here, without parts (``options``: of predict)."""
    from cryopick.inference.output import check_output_target
    from cryopick.inference.pipeline import predict

    results: list[RunResult] = []
    picks: pd.DataFrame | None
    written: str | Path | None = check_output_target(output, format, input_path)  # or None
    try:
        picks = predict(
            input_path, model_dir, output, format, config, on_run_done=results.append, **options
        )
    except RunsFailedError as err:  # the other runs' picks were written
        import pandas as pd

        picks = err.picks if isinstance(err.picks, pd.DataFrame) else None
        written = err.written
    results.sort(key=lambda r: r.run)
    return RunsResult(
        runs=results,
        output=None if written is None else Path(written),
        missing=[r.run for r in results if r.status == "failed"],
        picks=picks,
    )


def _predict_as_tasks(
    input_path: str | Path,
    model_dir: str | Path | None,
    output: str | Path | None,
    format: OutputFormat | str,
    config: PredictConfig | None,
    *,
    tomo_type: str,
    runs: Sequence[str] | None,
    spacing_A: float | None,
    cluster: ClusterOptions,
    shard: tuple[int, int] | str | None,
    overwrite: bool,
    show_progress: bool,
) -> RunsResult:
    """Predict each run as a resumable task (:func:`run_predict_tasks`), then merge."""
    from cryopick.inference.output import check_output_target, write_predictions
    from cryopick.inference.pipeline import PredictConfig, check_config_for_model
    from cryopick.inference.runtime import resolve_device
    from cryopick.model import bundled_model_dir, read_model_card

    check_output_target(output, format, input_path)  # before any work
    if isinstance(shard, str):
        shard = parse_shard(shard)
    if cluster is not None and not isinstance(cluster, ClusterConfig):
        cluster = cluster_config_from_options(dict(cluster), sharded=shard is not None)
    if cluster is not None:
        check_cluster_libraries(cluster)  # before the parts folder is made
    if cluster is None or not (cluster.scheduler or cluster.slurm):
        resolve_device(config.device if config else "auto")  # workers on this machine: check now
    model_dir = Path(model_dir) if model_dir else bundled_model_dir()
    card = read_model_card(model_dir)
    particles = check_config_for_model(config, card, format)  # tasks read their card's set
    config = config or PredictConfig()

    def write_output(picks: pd.DataFrame, _: Path, metas: list[dict[str, Any]]) -> None:
        # the writers need the runs' names (copick), shapes and voxel sizes (STAR)
        shapes = [RunShape(m["run"], tuple(m["shape_zyx"]), m["spacing_A"]) for m in metas]
        write_predictions(
            picks, shapes, output, format, input_path, card.spacing_A, particles=particles
        )

    return run_predict_tasks(
        [input_path],
        model_dir,
        output if output is not None else input_path,
        read_options={
            "tomo_type": tomo_type,
            "spacing_A": spacing_A,
            "prefer_spacing_A": float(card.spacing_A),
        },
        predict_options=config.model_dump(mode="json"),
        write_output=write_output,
        runs=runs,
        cluster=cluster,
        shard=shard,
        overwrite=overwrite,
        progress=show_progress,
    )
