"""Errors raised where input enters cryopick.

The CLI prints these as one clear line (no traceback) and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


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


class RunsFailedError(RuntimeError):
    """Some runs of a multi-run command failed; the others' results were written.

    Parameters
    ----------
    failures : dict of str to str
        Run name -> one-line reason.
    written : str or Path or None
        Where the results of the good runs went (None: nothing was written).
    n_runs : int
        How many runs the command had.
    picks : object, optional
        The results of the good runs (e.g. their picks table).
    """

    def __init__(
        self,
        failures: dict[str, str],
        written: str | Path | None,
        n_runs: int,
        picks: object = None,
    ) -> None:
        self.failures = dict(failures)
        self.picks = picks
        self.written = written
        self.n_runs = n_runs
        where = f"picks of the other runs written to {written}" if written else "nothing written"
        super().__init__(f"{len(self.failures)} of {n_runs} run(s) failed ({where})")


def squeeze_error(err: BaseException | str, limit: int = 300) -> str:
    """Return an error's text on one line, cut at ``limit`` characters.

    A pydantic ``ValidationError`` becomes ``field: problem (got value); ...`` (its own text
    spans several lines under a header).
    """
    from pydantic import ValidationError

    if isinstance(err, ValidationError):
        err = "; ".join(map(_describe_validation_item, err.errors(include_url=False)))
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_validation_item(item: Any) -> str:
    got = item["input"]
    shown = "" if isinstance(got, dict | list) or len(repr(got)) > 40 else f" (got {got!r})"
    return f"{'.'.join(map(str, item['loc']))}: {item['msg']}{shown}".lstrip(": ")


def one_line_error(err: BaseException) -> str:
    """Describe an error in one line: an InputError's own text, else its type and text."""
    if isinstance(err, InputError):
        return squeeze_error(err)
    text = squeeze_error(err)
    return text if text == type(err).__name__ else f"{type(err).__name__}: {text}"
