"""The Typer app of the ``cryopick`` command line, its error handling and shared options.

Each command lives in its own module (:mod:`cryopick.cli.simulate`, ``train``, ``predict``,
``tune``, ``evaluate``, ``report``), registered on :data:`app` when :mod:`cryopick.cli`
is imported. A command parses and validates its options, imports its library module
lazily (keeps ``cryopick --help`` fast), and calls one function. Input errors
(:class:`cryopick.core.errors.InputError`) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import atexit
import errno
import functools
import gc
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cryopick.core.errors import InputError, RunsFailedError, squeeze_error


def skip_final_garbage_collection() -> None:
    """Leave the objects still alive at exit out of the interpreter's last collections.

    Python's shutdown walks every object graph once more; with torch loaded that is most
    of the ~0.45 s a ``cryopick`` process spends after its command (0.12 s with this,
    measured on 2 cores). Registered when the CLI is imported, so it runs after every
    other exit handler (they run last-in, first-out): outputs are written and closed, and
    log handlers flushed, before it.
    """
    gc.freeze()


atexit.register(skip_final_garbage_collection)

app = typer.Typer(
    name="cryopick",
    help="Find protein complexes in cryo-electron tomograms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# ---------------------------------------------------------------- options of several commands
MODEL_HELP = "Trained model folder (model.pt + model.json); default: the bundled model."
INPUT_HELP = "Copick config, Kaggle root, folder of MRC/OME-Zarr files, or one tomogram."
TRUTH_USER_HELP = "copick: truth user_id (needed when several users' picks are there)."

DeviceOption = Annotated[str | None, typer.Option(help="auto, cpu or cuda.")]
TomoTypeOption = Annotated[str, typer.Option(help="Reconstruction type in projects.")]
PredictConfigOption = Annotated[
    Path | None, typer.Option("--config", help="JSON file of PredictConfig settings.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
OverwriteModelOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace a model already in OUT (else refused).")
]
TruthSessionOption = Annotated[str | None, typer.Option(help="copick: truth session_id.")]
PicksUserOption = Annotated[str | None, typer.Option(help="copick: picks user_id.")]
PicksSessionOption = Annotated[str | None, typer.Option(help="copick: picks session_id.")]
SpacingOption = Annotated[
    float | None,
    typer.Option(
        "--spacing-A",
        min=0.5,
        help="Voxel size (Å) of MRCs whose header has none, and of plain zarr arrays.",
    ),
]
StarPixelOption = Annotated[
    float | None,
    typer.Option(
        "--star-pixel-A",
        min=0.01,
        help="Pixel size (Å) of STAR positions in pixels (rlnCoordinateX/Y/Z: RELION-4 uses "
        "the unbinned tilt series', Warp the tomogram's); default the file's "
        "rlnTomoTiltSeriesPixelSize.",
    ),
]


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


INTERRUPTED_MESSAGE = (
    "interrupted: every output is written whole or not at all, so none was left half-written "
    "(train: --resume continues from the last checkpoint)"
)


def report_input_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected failures into one line on stderr and an exit code, never a traceback.

    InputError and unknown particle names exit 2; a failed file operation (a full disk,
    no permission) exits 1; runs that failed in a multi-run command are listed, exit 1;
    Ctrl-C says that no output was left half-written, exit 130.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from cryopick.core.particles import ParticleSetError, UnknownParticleError

        try:
            return func(*args, **kwargs)
        except (InputError, UnknownParticleError, ParticleSetError) as err:
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
        except KeyboardInterrupt:
            typer.secho(INTERRUPTED_MESSAGE, err=True, fg=typer.colors.RED)
            raise typer.Exit(code=130) from None

    return wrapper


def load_predict_config(config_file: Path | None, **overrides: Any) -> Any:
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


VERSIONED_PACKAGES = ("numpy", "scipy", "torch", "zarr", "mrcfile", "pandas", "starfile")
"""Libraries whose versions ``--version`` prints (for bug reports)."""


def describe_versions() -> str:
    """Return cryopick's version, then Python's and its main libraries' (one line each)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from cryopick import __version__

    found = []
    for package in VERSIONED_PACKAGES:
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} (not installed)")
    return f"cryopick {__version__}\npython {platform.python_version()}, " + ", ".join(found)


def _print_version(show: bool) -> None:
    if show:
        typer.echo(describe_versions())
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the versions of cryopick, Python and its libraries, and exit.",
        ),
    ] = False,
) -> None:
    # cryopick's own messages from INFO (DEBUG with -v); other libraries' (torch logs its
    # cache statistics at exit) only from WARNING
    from cryopick.console import LOG_FORMAT

    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    logging.getLogger("cryopick").setLevel(logging.DEBUG if verbose else logging.INFO)
