"""``cryopick predict``: find particles in tomograms and write the picks (Å).

The command calls one library function, :func:`cryopick.scale.predict.predict_runs`: the
runs are predicted one after the other in this process, or, with any scale-out option
(:class:`ScaleOutOptions`, docs/scale_out.md), as resumable tasks. Runs that failed are
listed and the command exits 1; the others' picks are written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cryopick.cli.app import (
    INPUT_HELP,
    MODEL_HELP,
    DeviceOption,
    PredictConfigOption,
    QuietOption,
    SpacingOption,
    TomoTypeOption,
    app,
    load_predict_config,
    report_input_errors,
)
from cryopick.core.errors import InputError, RunsFailedError
from cryopick.inference.output import OutputFormat

if TYPE_CHECKING:
    from cryopick.core.particles import ParticleSet
    from cryopick.inference.pipeline import PredictConfig
    from cryopick.scale.results import RunsResult

# ---------------------------------------------------------------- options
_FORMAT_HELP = "csv, kaggle, copick (into the project) or star."
_OUTPUT_HELP = "Output file (csv, kaggle, star) or project (copick)."
_PANEL = "Scale out"  # any of these options runs one resumable task per run

InputArgument = Annotated[Path, typer.Argument(metavar="INPUT", help=INPUT_HELP)]
ModelOption = Annotated[Path | None, typer.Option("--model", help=MODEL_HELP)]
OutputOption = Annotated[Path | None, typer.Option("--output", "-o", help=_OUTPUT_HELP)]
FormatOption = Annotated[OutputFormat, typer.Option("--format", help=_FORMAT_HELP)]
RunOption = Annotated[list[str] | None, typer.Option("--run", help="Only this run (repeatable).")]
TtaOption = Annotated[
    bool | None, typer.Option("--tta/--no-tta", help="Flip test-time augmentation (4x).")
]
InvertOption = Annotated[
    bool | None,
    typer.Option(
        "--invert/--no-invert",
        help="Particles bright in the input: invert (default: detect from the grey values).",
    ),
]
FlattenOption = Annotated[
    str | None,
    typer.Option(
        "--flatten-background",
        metavar="auto|on|off",
        help=(
            "Subtract a grey level drifting across x/y (a carbon film in view): auto "
            "(default: only when it drifts by > 1.25 spreads), on or off."
        ),
    ),
]
BatchSizeOption = Annotated[int | None, typer.Option(min=1, help="Windows per batch.")]
OverlapOption = Annotated[
    float | None, typer.Option(min=0.0, max=0.95, help="Window overlap fraction.")
]
PrecisionOption = Annotated[str | None, typer.Option(help="auto, fp32, bf16 or fp16.")]
ThresholdOption = Annotated[
    list[str] | None,
    typer.Option(
        "--threshold",
        metavar="NAME=VALUE",
        help="Threshold of one of the model's particle types, instead of the card's (repeat).",
    ),
]
MinPrecisionOption = Annotated[
    float | None,
    typer.Option(
        "--min-precision",
        metavar="P",
        help=(
            "Instead of the card's thresholds, keep per type the strongest picks whose mean "
            "calibrated score (expected precision) is at least P, 0 < P <= 1; needs a "
            "model with calibrated scores."
        ),
    ),
]

Workers = Annotated[
    int | None,
    typer.Option(min=1, help="Dask LocalCluster of N processes.", rich_help_panel=_PANEL),
]
Scheduler = Annotated[
    str | None, typer.Option(help="Address of a running Dask scheduler.", rich_help_panel=_PANEL)
]
Slurm = Annotated[
    bool, typer.Option("--slurm", help="Dask workers as SLURM jobs.", rich_help_panel=_PANEL)
]
SlurmPartition = Annotated[
    str | None, typer.Option(help="SLURM partition (queue).", rich_help_panel=_PANEL)
]
SlurmGpus = Annotated[int | None, typer.Option(min=0, help="GPUs per job.", rich_help_panel=_PANEL)]
SlurmCpus = Annotated[
    int | None, typer.Option(min=1, help="Cores per job.", rich_help_panel=_PANEL)
]
SlurmMemory = Annotated[
    str | None, typer.Option(help="Memory per job, e.g. 32GB.", rich_help_panel=_PANEL)
]
SlurmWalltime = Annotated[
    str | None, typer.Option(help="Walltime per job, HH:MM:SS.", rich_help_panel=_PANEL)
]
SlurmJobs = Annotated[
    int | None,
    typer.Option(min=1, help="Number of jobs (one worker each).", rich_help_panel=_PANEL),
]
Shard = Annotated[
    str | None,
    typer.Option(
        metavar="I/N",
        help="Only runs k with k % N == I (sorted by name, I from 0); no Dask.",
        rich_help_panel=_PANEL,
    ),
]
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite", help="Redo runs already predicted (else resumed).", rich_help_panel=_PANEL
    ),
]


@dataclass(frozen=True)
class ScaleOutOptions:
    """The scale-out options of ``cryopick predict`` as given (None or False: not given)."""

    workers: int | None = None
    scheduler: str | None = None
    slurm: bool = False
    slurm_partition: str | None = None
    slurm_gpus: int | None = None
    slurm_cpus: int | None = None
    slurm_memory: str | None = None
    slurm_walltime: str | None = None
    slurm_jobs: int | None = None
    shard: str | None = None
    overwrite: bool = False

    def cluster_options(self) -> dict[str, Any]:
        """Return the Dask options by name, for :func:`cryopick.scale.predict.predict_runs`."""
        return {k: v for k, v in asdict(self).items() if k not in ("shard", "overwrite")}


# ---------------------------------------------------------------- the command
@app.command()
@report_input_errors
def predict(
    input_path: InputArgument,
    model: ModelOption = None,
    output: OutputOption = None,
    format: FormatOption = OutputFormat.CSV,
    tomo_type: TomoTypeOption = "denoised",
    runs: RunOption = None,
    spacing_A: SpacingOption = None,
    device: DeviceOption = None,
    tta: TtaOption = None,
    invert: InvertOption = None,
    flatten_background: FlattenOption = None,
    batch_size: BatchSizeOption = None,
    overlap: OverlapOption = None,
    precision: PrecisionOption = None,
    threshold: ThresholdOption = None,
    min_precision: MinPrecisionOption = None,
    config: PredictConfigOption = None,
    quiet: QuietOption = False,
    workers: Workers = None,
    scheduler: Scheduler = None,
    slurm: Slurm = False,
    slurm_partition: SlurmPartition = None,
    slurm_gpus: SlurmGpus = None,
    slurm_cpus: SlurmCpus = None,
    slurm_memory: SlurmMemory = None,
    slurm_walltime: SlurmWalltime = None,
    slurm_jobs: SlurmJobs = None,
    shard: Shard = None,
    overwrite: Overwrite = False,
) -> None:
    """Find particles in tomograms and write the picks (Å)."""
    from cryopick.scale.predict import predict_runs

    if output is None and format is not OutputFormat.COPICK:
        raise InputError(None, f"--output is needed for --format {format}")
    settings = load_predict_config(
        config,
        device=device,
        tta=tta,
        invert=invert,
        flatten_background=flatten_background,
        batch_size=batch_size,
        overlap=overlap,
        precision=precision,
        min_precision=min_precision,
    )
    if threshold:
        settings = with_thresholds(settings, parse_thresholds(threshold))
    scale = ScaleOutOptions(
        workers=workers,
        scheduler=scheduler,
        slurm=slurm,
        slurm_partition=slurm_partition,
        slurm_gpus=slurm_gpus,
        slurm_cpus=slurm_cpus,
        slurm_memory=slurm_memory,
        slurm_walltime=slurm_walltime,
        slurm_jobs=slurm_jobs,
        shard=shard,
        overwrite=overwrite,
    )
    result = predict_runs(
        input_path,
        model,
        output,
        format,
        settings,
        tomo_type=tomo_type,
        runs=runs or None,
        spacing_A=spacing_A,
        cluster=scale.cluster_options(),
        shard=scale.shard,
        overwrite=scale.overwrite,
        show_progress=not quiet,
    )
    from cryopick.model import bundled_model_dir, read_model_card

    particles = read_model_card(model or bundled_model_dir()).particle_set
    show_predict_result(result, output or input_path, format, particles)


def parse_thresholds(items: list[str]) -> dict[str, float]:
    """Parse ``--threshold NAME=VALUE`` options into ``{NAME: VALUE}``.

    The names are checked against the model's particle set when predicting.

    Raises
    ------
    InputError
        For an item that is not ``NAME=VALUE`` with a number, or a name given twice.
    """
    thresholds: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not name or number != number:
            raise InputError(None, f"--threshold {item!r}: expected NAME=VALUE, e.g. ribosome=0.4")
        if name in thresholds:
            raise InputError(None, f"--threshold: {name!r} is given twice")
        thresholds[name] = number
    return thresholds


def with_thresholds(settings: PredictConfig, thresholds: dict[str, float]) -> PredictConfig:
    """Return ``settings`` with ``thresholds`` replacing those of the same names.

    Raises
    ------
    InputError
        For a value outside [0, 1].
    """
    from cryopick.core.errors import squeeze_error

    merged = {**(settings.thresholds or {}), **thresholds}
    try:
        return type(settings).model_validate({**settings.model_dump(), "thresholds": merged})
    except ValueError as err:
        raise InputError(None, f"--threshold: {squeeze_error(err)}") from None


def show_predict_result(
    result: RunsResult,
    output_label: Path,
    format: OutputFormat,
    particles: ParticleSet | None = None,
) -> None:
    """Print what ``predict`` did; failed runs end the command with status 1.

    ``particles`` (the model's set) gives the rows of the picks table.

    In this process: picks per particle type and run, then the number written. As
    resumable tasks: the table of runs, then where the picks went.

    Raises
    ------
    RunsFailedError
        If some runs failed (the command line lists them and exits 1).
    """
    from cryopick.console import print_pick_summary, print_run_report

    if result.parts_dir is not None:
        print_run_report(result, output_label)
    elif result.picks is not None:
        picks = result.picks
        runs = sorted(set(picks["experiment"])) if len(picks) else []
        print_pick_summary(picks, runs, particles)
    if result.failed:
        written = output_label if result.output is not None else None
        raise RunsFailedError(result.failures, written, len(result.runs))
    if result.parts_dir is None and result.picks is not None:
        typer.echo(f"wrote {len(result.picks)} picks ({format}) to {output_label}")
