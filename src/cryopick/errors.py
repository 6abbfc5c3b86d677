"""Errors raised where input enters cryopick.

The CLI prints these as one clear line (no traceback) and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input: a file that is missing, malformed, or inconsistent.

    Parameters
    ----------
    path : str or Path or None
        The file or folder at fault; named first in the message.
    problem : str
        What is wrong with it, in words a user can act on.
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)
