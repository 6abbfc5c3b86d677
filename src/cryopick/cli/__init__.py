"""The ``cryopick`` command line: thin Typer commands that call the library."""

from cryopick.cli.app import app

__all__ = ["app"]
