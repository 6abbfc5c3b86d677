"""``cryopick particles``: check a particles file and the densities it gives (issue 13)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cryopick.cli.app import app, report_input_errors
from cryopick.core.errors import InputError


@app.command()
@report_input_errors
def particles(
    file: Annotated[Path, typer.Argument(help="Particles file (JSON) naming maps or models.")],
    spacing_A: Annotated[
        float, typer.Option("--spacing-A", help="Voxel size (Å) of the simulation grid.")
    ] = 10.0,
    make_example: Annotated[
        bool,
        typer.Option(
            "--make-example",
            help="Write an example particles file at FILE (a map and an atomic model) first.",
        ),
    ] = False,
) -> None:
    """Load a particles file, build each density and print a table to check before use."""
    from cryopick.core.particles_file import (
        check_radius,
        describe_size_problems,
        load_particles_file,
    )
    from cryopick.simulate.user_maps import density_for

    if make_example:
        from cryopick.simulate.examples import write_example_particles

        typer.echo(f"wrote {write_example_particles(file)}")

    if not 1.0 <= spacing_A <= 50.0:
        raise InputError(None, f"--spacing-A must lie in 1..50 Å, got {spacing_A}")
    particle_set = load_particles_file(file)
    header = ("name", "label", "weight", "radius_A", "measured_A", "source", "box_vox")
    rows = [header]
    radii = {}
    for spec in particle_set:
        try:
            density, measured = density_for(spec, spacing_A)
        except InputError as err:
            raise InputError(file, f"particle '{spec.name}': {err}") from None
        check_radius(file, spec, measured)
        radii[spec.name] = measured  # used where the file gives no radius
        given = "-" if spec.radius_A is None else f"{spec.radius_A:g}"
        source = "map" if spec.map is not None else "model"
        name = spec.source.name if spec.source is not None else "-"
        box = "x".join(map(str, density.shape))
        row = (spec.name, str(spec.label), f"{spec.weight:g}", given, f"{measured:.0f}")
        rows.append((*row, f"{source} {name}", box))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    for problem in describe_size_problems(particle_set.with_radii(radii), spacing_A):
        typer.echo(f"warning: {file}: {problem}", err=True)
