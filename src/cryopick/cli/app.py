"""The ``cryopick`` command line: thin Typer commands that call library functions.

Each command parses and validates its options, imports its library module lazily
(keeps ``cryopick --help`` fast), and calls one function. Input errors
(:class:`cryopick.core.errors.InputError`) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cryopick.core.errors import InputError, RunsFailedError, squeeze_error

app = typer.Typer(
    name="cryopick",
    help="Find protein complexes in cryo-electron tomograms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def describe_os_error(err: OSError) -> str:
    """One line for a failed file operation: the file, the system's reason, what to do."""
    where = f"{err.filename}: " if err.filename else ""
    reason = err.strerror or str(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"{where}{reason}: the disk is full; free space and run again "
            "(outputs that were being written were not replaced)"
        )
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}{reason}: cryopick may not write or read here; check the permissions"
    return f"{where}{reason}"


def _report_input_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected failures into one line on stderr and an exit code, never a traceback.

    InputError and unknown particle names exit 2; a failed file operation (a full disk,
    no permission) exits 1; runs that failed in a multi-run command are listed, exit 1.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from cryopick.core.particles import UnknownParticleError

        try:
            return func(*args, **kwargs)
        except (InputError, UnknownParticleError) as err:
            typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
            raise typer.Exit(code=2) from None
        except RunsFailedError as err:
            for run, reason in sorted(err.failures.items()):
                typer.secho(f"run {run} failed: {reason}", err=True, fg=typer.colors.RED)
            typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
            raise typer.Exit(code=1) from None
        except OSError as err:
            typer.secho(f"error: {describe_os_error(err)}", err=True, fg=typer.colors.RED)
            raise typer.Exit(code=1) from None

    return wrapper


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )


# Commands are added below, one section per stage, in pipeline order.
# ---------------------------------------------------------------- simulate
@app.command()
@_report_input_errors
def simulate(
    out: Annotated[Path, typer.Argument(help="Folder of the copick project to write.")],
    runs: Annotated[int, typer.Option("--runs", min=1, help="Number of tomograms.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same data).")] = 0,
    shape: Annotated[
        tuple[int, int, int], typer.Option("--shape", help="Tomogram size Z Y X in voxels.")
    ] = (184, 630, 630),
    spacing_A: Annotated[float, typer.Option("--spacing-A", help="Voxel size in Å.")] = 10.0,
    preset: Annotated[
        str, typer.Option("--preset", help="czii (realistic) or easy (high SNR, fast tests).")
    ] = "czii",
    config: Annotated[
        Path | None,
        typer.Option("--config", help="JSON file of simulator settings overriding the preset."),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace an earlier cryopick simulation in OUT."),
    ] = False,
) -> None:
    """Simulate tomograms with ground-truth picks and labels as a copick project."""
    from cryopick.simulate.presets import load_config
    from cryopick.simulate.project import simulate_project

    settings = load_config(preset, config)
    if min(shape) < 16:
        raise InputError(None, f"--shape must be at least 16 voxels per axis, got {shape}")
    if not 4.0 <= spacing_A <= 25.0:
        raise InputError(None, f"--spacing-A must lie in 4..25 Å, got {spacing_A}")
    path = simulate_project(
        out, runs, seed=seed, shape=shape, spacing_A=spacing_A, preset=settings,
        overwrite=overwrite,
    )  # fmt: skip
    typer.echo(f"wrote {runs} simulated run(s): {path}")


# ---------------------------------------------------------------- train
def _train_config(config_file: Path | None, settings: list[str], **given: Any) -> Any:
    """TrainConfig from an optional JSON file, ``--set FIELD=VALUE`` items and the options given.

    Values of ``--set`` are parsed as JSON when they parse (numbers, lists, booleans), else
    taken as strings; dotted names reach nested settings (``architecture.widths=[8,16,32,64]``).
    """
    import json

    from cryopick.training.config import TrainConfig

    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = json.loads(config_file.read_text())
        except (OSError, ValueError) as err:
            raise InputError(
                config_file, f"not a valid training config: {squeeze_error(err)}"
            ) from None
    for item in settings:
        key, sep, text = item.partition("=")
        if not sep:
            raise InputError(None, f"--set expects FIELD=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        *parents, leaf = key.strip().split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    data.update({k: v for k, v in given.items() if v is not None})
    try:
        return TrainConfig.model_validate(data)
    except ValueError as err:
        raise InputError(config_file, f"invalid training settings: {squeeze_error(err)}") from None


@app.command()
@_report_input_errors
def train(
    out: Annotated[Path, typer.Option("--out", help="Output folder (model + checkpoint).")],
    data: Annotated[
        list[str] | None,
        typer.Option("--data", help="Training source (copick config, Kaggle root); repeatable."),
    ] = None,
    val: Annotated[
        list[str] | None,
        typer.Option("--val", help="Held-out validation source; repeatable."),
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Optimiser steps.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")] = None,
    simulate: Annotated[
        int | None, typer.Option("--simulate", help="Simulate N fresh training runs first.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt exactly.")
    ] = False,
    init_from: Annotated[
        str | None,
        typer.Option(
            "--init-from", help="Fine-tune: start from this model folder ('bundled': ours)."
        ),
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="TrainConfig JSON (e.g. a saved one).")
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any TrainConfig field: FIELD=VALUE (see --show-config)."),
    ] = None,
    show_config: Annotated[
        bool, typer.Option("--show-config", help="Print the resulting TrainConfig and exit.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a model already in OUT (else refused).")
    ] = False,
) -> None:
    """Train the 3D U-Net on annotated and/or simulated tomograms."""
    config = _train_config(
        config_file, settings or [], data=data or None, val=val or None, steps=steps,
        device=device, simulate=simulate, init_from=init_from,
    )  # fmt: skip
    if show_config:
        typer.echo(config.model_dump_json(indent=2))
        return
    if not config.data and not config.simulate and not resume:
        raise InputError(None, "no training data: give --data and/or --simulate N")
    from cryopick.training.trainer import train as run_training

    card = run_training(config, out, resume=resume, progress=progress, overwrite=overwrite)
    score = "n/a" if card.score is None else f"{card.score:.4f}"
    typer.echo(f"model written to {out} (step {card.steps}, validation F4 {score})")


# ---------------------------------------------------------------- predict / tune


_MODEL_HELP = "Trained model folder (model.pt + model.json); default: the bundled model."
_INPUT_HELP = "Copick config, Kaggle root, folder of MRC/OME-Zarr files, or one tomogram."


def _predict_config(config_file: Path | None, **overrides: Any) -> Any:
    """Build a PredictConfig from an optional JSON file plus the options that were given."""
    from cryopick.inference.pipeline import PredictConfig

    base = PredictConfig()
    if config_file is not None:
        try:
            base = PredictConfig.model_validate_json(config_file.read_text())
        except (OSError, ValueError) as err:
            raise InputError(
                config_file, f"not a valid prediction config: {squeeze_error(err)}"
            ) from None
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return PredictConfig.model_validate({**base.model_dump(), **given})
    except ValueError as err:
        raise InputError(
            config_file, f"invalid prediction settings: {squeeze_error(err)}"
        ) from None


def _print_summary(picks: Any, runs: list[str]) -> None:
    """Print picks per particle type (rows) and run (columns; min/median/max when many)."""
    from rich.console import Console
    from rich.table import Table

    from cryopick.inference.pipeline import summarise_picks

    counts = summarise_picks(picks, runs)  # rows: runs + total; columns: particle types
    per_run = counts.drop(index="total")
    table = Table(title="picks per particle type")
    table.add_column("particle type")
    if len(per_run) <= 6:
        columns = {str(run): per_run.loc[run] for run in per_run.index}
    else:
        columns = {"min/run": per_run.min(), "median": per_run.median(), "max/run": per_run.max()}
    columns["total"] = counts.loc["total"]
    for name in columns:
        table.add_column(name, justify="right")
    for ptype in counts.columns:
        table.add_row(ptype, *(f"{col[ptype]:g}" for col in columns.values()))
    Console(stderr=True).print(table)


@app.command()
@_report_input_errors
def predict(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help=_INPUT_HELP)],
    model: Annotated[Path | None, typer.Option("--model", help=_MODEL_HELP)] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output file (csv, kaggle, star) or project (copick)."),
    ] = None,
    format: Annotated[
        str, typer.Option("--format", help="csv, kaggle, copick (into the project) or star.")
    ] = "csv",
    tomo_type: Annotated[str, typer.Option(help="Reconstruction type in projects.")] = "denoised",
    runs: Annotated[
        list[str] | None, typer.Option("--run", help="Only this run (repeatable).")
    ] = None,
    spacing_A: Annotated[
        float | None,
        typer.Option("--spacing-A", min=0.5, help="Voxel size (Å) of MRCs whose header has none."),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    tta: Annotated[
        bool | None, typer.Option("--tta/--no-tta", help="Flip test-time augmentation (4x).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Windows per batch.")] = None,
    overlap: Annotated[
        float | None, typer.Option(min=0.0, max=0.95, help="Window overlap fraction.")
    ] = None,
    precision: Annotated[str | None, typer.Option(help="auto, fp32, bf16 or fp16.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="JSON file of PredictConfig settings.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    # scale-out options (docs/scale_out.md): any of them runs one task per run
    # (cryopick.scale.runner)
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Dask LocalCluster of N processes.", rich_help_panel="Scale out"),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Address of a running Dask scheduler.", rich_help_panel="Scale out"),
    ] = None,
    slurm: Annotated[
        bool,
        typer.Option("--slurm", help="Dask workers as SLURM jobs.", rich_help_panel="Scale out"),
    ] = False,
    slurm_partition: Annotated[
        str | None, typer.Option(help="SLURM partition (queue).", rich_help_panel="Scale out")
    ] = None,
    slurm_gpus: Annotated[
        int | None, typer.Option(min=0, help="GPUs per job.", rich_help_panel="Scale out")
    ] = None,
    slurm_cpus: Annotated[
        int | None, typer.Option(min=1, help="Cores per job.", rich_help_panel="Scale out")
    ] = None,
    slurm_memory: Annotated[
        str | None, typer.Option(help="Memory per job, e.g. 32GB.", rich_help_panel="Scale out")
    ] = None,
    slurm_walltime: Annotated[
        str | None, typer.Option(help="Walltime per job, HH:MM:SS.", rich_help_panel="Scale out")
    ] = None,
    slurm_jobs: Annotated[
        int | None,
        typer.Option(min=1, help="Number of jobs (one worker each).", rich_help_panel="Scale out"),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            metavar="I/N",
            help="Only runs k with k % N == I (sorted by name, I from 0); no Dask.",
            rich_help_panel="Scale out",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Redo runs already predicted (else resumed).",
            rich_help_panel="Scale out",
        ),
    ] = False,
) -> None:
    """Find particles in tomograms and write the picks (Å)."""
    from cryopick.inference.output import OUTPUT_FORMATS
    from cryopick.inference.pipeline import predict as run_predict

    if format not in OUTPUT_FORMATS:
        raise InputError(None, f"--format must be one of {', '.join(OUTPUT_FORMATS)}")
    if output is None and format != "copick":
        raise InputError(None, f"--output is needed for --format {format}")
    settings = _predict_config(
        config,
        device=device,
        tta=tta,
        batch_size=batch_size,
        overlap=overlap,
        precision=precision,
    )
    cluster_options = {
        "workers": workers,
        "scheduler": scheduler,
        "slurm": slurm or None,
        "slurm_partition": slurm_partition,
        "slurm_gpus": slurm_gpus,
        "slurm_cpus": slurm_cpus,
        "slurm_memory": slurm_memory,
        "slurm_walltime": slurm_walltime,
        "slurm_jobs": slurm_jobs,
    }
    if shard or overwrite or any(v is not None for v in cluster_options.values()):
        from cryopick.scale.runner import predict_batch, print_batch_report

        result = predict_batch(
            input_path, model, output, format, settings, tomo_type=tomo_type,
            runs=runs or None, cluster=cluster_options, shard=shard, overwrite=overwrite,
            show_progress=not quiet, spacing_A=spacing_A,
        )  # fmt: skip
        print_batch_report(result, output or input_path)
        if result.failed:
            raise typer.Exit(code=1)
        return
    try:
        picks = run_predict(
            input_path, model_dir=model, output=output, format=format, config=settings,
            tomo_type=tomo_type, runs=runs or None, show_progress=not quiet,
            spacing_A=spacing_A,
        )  # fmt: skip
    except RunsFailedError as err:  # the good runs' picks were written: show them first
        _print_summary(err.picks, sorted(set(err.picks["experiment"])))
        raise
    _print_summary(picks, sorted(set(picks["experiment"])) if len(picks) else [])
    typer.echo(f"wrote {len(picks)} picks ({format}) to {output or input_path}")


@app.command()
@_report_input_errors
def tune(
    model: Annotated[Path, typer.Option("--model", help="Trained model folder to tune.")],
    data: Annotated[
        Path, typer.Option("--data", help="Annotated runs: copick config or Kaggle root.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the tuned model copy.")],
    tomo_type: Annotated[str, typer.Option(help="Reconstruction type in projects.")] = "denoised",
    truth: Annotated[
        Path | None, typer.Option(help="Annotations if not the picks in --data.")
    ] = None,
    truth_user: Annotated[str | None, typer.Option(help="copick: annotation user_id.")] = None,
    truth_session: Annotated[
        str | None, typer.Option(help="copick: annotation session_id.")
    ] = None,
    beta: Annotated[float, typer.Option(min=0.0, help="F-beta's beta.")] = 4.0,
    tolerance: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Take the lowest threshold within this F-beta of the best [default: 0.02].",
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="JSON file of PredictConfig settings.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a model already in OUT (else refused).")
    ] = False,
) -> None:
    """Re-tune per-class thresholds for F-beta on annotated runs; write a tuned model copy."""
    from cryopick.evaluation.tuning import tune_model

    thresholds = tune_model(
        model,
        data,
        out,
        _predict_config(config, device=device),
        tomo_type=tomo_type,
        truth=truth,
        truth_user=truth_user,
        truth_session=truth_session,
        beta=beta,
        **({} if tolerance is None else {"tolerance": tolerance}),
        show_progress=not quiet,
        overwrite=overwrite,
    )
    for name, value in thresholds.items():
        typer.echo(f"{name:>20s}  {value:.4f}")
    typer.echo(f"tuned model written to {out}")


# ---------------------------------------------------------------- evaluate


_TRUTH_USER_HELP = "copick: truth user_id (needed when several users' picks are there)."
_TYPE_HELP = "Particle type of every pick of a {} STAR file not written by cryopick."
_PICKS_SOURCE_HELP = (
    "CSV (Kaggle submission or experiment,particle_type,x,y,z[,score] in Å), RELION-5 STAR "
    "(needs --tomograms), copick pick file or config JSON, or Kaggle root / overlay folder."
)


@app.command()
@_report_input_errors
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help=f"Ground truth: {_PICKS_SOURCE_HELP}")],
    picks: Annotated[Path, typer.Option("--picks", help=f"Picks to score: {_PICKS_SOURCE_HELP}")],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print machine-readable JSON only.")
    ] = False,
    beta: Annotated[float, typer.Option("--beta", min=0.0, help="F-beta's beta.")] = 4.0,
    tomograms: Annotated[
        Path | None,
        typer.Option(help="Tomograms (project, folder, file) giving shapes for STAR inputs."),
    ] = None,
    tomo_type: Annotated[
        str, typer.Option("--tomo-type", help="Tomogram type read from --tomograms projects.")
    ] = "denoised",
    truth_user: Annotated[str | None, typer.Option(help=_TRUTH_USER_HELP)] = None,
    truth_session: Annotated[str | None, typer.Option(help="copick: truth session_id.")] = None,
    picks_user: Annotated[str | None, typer.Option(help="copick: picks user_id.")] = None,
    picks_session: Annotated[str | None, typer.Option(help="copick: picks session_id.")] = None,
    particle_type: Annotated[
        str | None, typer.Option("--particle-type", help=_TYPE_HELP.format("--picks"))
    ] = None,
    truth_particle_type: Annotated[
        str | None, typer.Option("--truth-particle-type", help=_TYPE_HELP.format("--truth"))
    ] = None,
) -> None:
    """Score picks against ground truth with the CZII metric (per-type F-beta, weighted)."""
    import json

    from cryopick.evaluation.metric import format_score_table, score_picks
    from cryopick.io.picks import check_experiments, read_picks, read_truth

    shapes = None
    if tomograms is not None:
        from cryopick.io.tomograms import read_tomograms

        found = read_tomograms(tomograms, tomo_type=tomo_type)
        shapes = {t.name: (t.shape, t.spacing_A) for t in found}
    truth_df = read_truth(
        truth, tomogram_shapes=shapes, particle_type=truth_particle_type, user_id=truth_user,
        session_id=truth_session,
    )  # fmt: skip
    picks_df = read_picks(
        picks, tomogram_shapes=shapes, particle_type=particle_type, user_id=picks_user,
        session_id=picks_session, single_source=True,
    )  # fmt: skip
    if truth_df.empty:
        raise InputError(truth, "no ground-truth picks found")
    check_experiments(truth_df, picks_df, truth, picks)
    result = score_picks(truth_df, picks_df, beta=beta)
    if json_output:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        typer.echo(format_score_table(result), nl=False)


# ---------------------------------------------------------------- report


@app.command()
@_report_input_errors
def report(
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help="Tomograms: copick config JSON, Kaggle root, folder of MRC/Zarr, one file.",
        ),
    ],
    picks: Annotated[Path, typer.Option("--picks", help="Picks to show (any picks format).")],
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")],
    truth: Annotated[
        Path | None,
        typer.Option("--truth", help="Ground truth: adds the metric, TP/FP/miss styles, curves."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Model folder (model.json): card, learning curve."),
    ] = None,
    png_dir: Annotated[
        Path | None, typer.Option("--png-dir", help="Also write every figure here as PNG.")
    ] = None,
    tomo_type: Annotated[
        str | None, typer.Option("--tomo-type", help="Tomogram type (default: denoised).")
    ] = None,
    slices: Annotated[
        int | None,
        typer.Option("--slices", min=1, help="XY slices per tomogram, evenly spaced (default: 4)."),
    ] = None,
    z: Annotated[
        list[int] | None, typer.Option("--z", help="Show the XY slice at this z index (repeat).")
    ] = None,
    slab: Annotated[
        int | None,
        typer.Option("--slab", min=1, help="Average this many slices per panel (default: 1)."),
    ] = None,
    runs: Annotated[
        list[str] | None, typer.Option("--run", help="Only this run (repeat); default all.")
    ] = None,
    truth_user: Annotated[str | None, typer.Option(help=_TRUTH_USER_HELP)] = None,
    truth_session: Annotated[str | None, typer.Option(help="copick: truth session_id.")] = None,
    picks_user: Annotated[str | None, typer.Option(help="copick: picks user_id.")] = None,
    picks_session: Annotated[str | None, typer.Option(help="copick: picks session_id.")] = None,
) -> None:
    """Write one self-contained HTML page to check picks by eye (slices, metrics, model)."""
    from cryopick.report import ReportConfig, write_report

    options = {"tomo_type": tomo_type, "n_xy_slices": slices, "xy_slices": z or None,
               "slab_voxels": slab, "runs": runs or None, "truth_user": truth_user,
               "truth_session": truth_session, "picks_user": picks_user,
               "picks_session": picks_session}  # fmt: skip
    config = ReportConfig(**{k: v for k, v in options.items() if v is not None})
    path = write_report(input_path, picks, out, truth, model, png_dir, config)
    typer.echo(f"wrote {path}")


_ = Path  # used by the command sections
