"""The ``cryopick`` command line: thin Typer commands that call the library.

:data:`app` (the entry point ``cryopick.cli:app``) is defined in :mod:`cryopick.cli.app`;
importing the command modules registers the commands on it, in pipeline order (the order
of ``cryopick --help``).
"""

from importlib import import_module

from cryopick.cli.app import app

COMMAND_MODULES = (
    "particles", "simulate", "train", "learn", "combine", "predict", "tune", "evaluate",
    "report", "convert",
)  # fmt: skip

for _name in COMMAND_MODULES:
    import_module(f"cryopick.cli.{_name}")

__all__ = ["app"]
