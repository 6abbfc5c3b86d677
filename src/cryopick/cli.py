"""The ``cryopick`` command line: thin Typer commands that call library functions.

Each command parses and validates its options, imports its library module lazily
(keeps ``cryopick --help`` fast), and calls one function. Input errors
(:class:`cryopick.errors.InputError`) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cryopick.errors import InputError

app = typer.Typer(
    name="cryopick",
    help="Find protein complexes in cryo-electron tomograms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _report_input_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn InputError (and unknown particle names) into a one-line message and exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from cryopick.particles import UnknownParticleError

        try:
            return func(*args, **kwargs)
        except (InputError, UnknownParticleError) as err:
            typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
            raise typer.Exit(code=2) from None

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

# ---------------------------------------------------------------- train

# ---------------------------------------------------------------- predict / tune

# ---------------------------------------------------------------- evaluate

# ---------------------------------------------------------------- report


_ = Path  # used by the command sections
