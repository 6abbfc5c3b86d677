"""Atomic file and folder writes: write to a temporary sibling, then rename.

Temporaries are named ``.<name>.cryopick-<host>-<pid>-<random>.tmp`` beside the output, so
a later write of the same output can tell its own stale leftovers (a process that was
killed, a full disk) from a write in progress and remove them; nothing else is removed.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from cryopick.core.errors import InputError

# a temporary on another host (a shared filesystem) counts as stale only after this long
FOREIGN_TEMP_MAX_AGE_S = 24 * 3600.0
_TEMP_PATTERN = re.compile(r"\.cryopick-(?P<host>[^-]*)-(?P<pid>\d+)-[^.]*\.(tmp|old)$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40] or "host"


def temp_prefix(name: str) -> str:
    """Prefix of this process's temporaries for an output called ``name``."""
    return f".{name}.cryopick-{_host()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale_temporary(path: Path, now: float | None = None) -> bool:
    """Tell whether ``path`` is a cryopick temporary whose writer is gone.

    On this host: its process no longer runs. On another host (shared filesystem): it is
    older than :data:`FOREIGN_TEMP_MAX_AGE_S`.
    """
    match = _TEMP_PATTERN.search(path.name)
    if match is None or not path.name.startswith("."):
        return False
    if match["host"] == _host():
        return int(match["pid"]) != os.getpid() and not _pid_alive(int(match["pid"]))
    try:
        age_s = (time.time() if now is None else now) - path.lstat().st_mtime
    except OSError:
        return False
    return age_s > FOREIGN_TEMP_MAX_AGE_S


def remove_stale_temporaries(folder: str | Path, name: str | None = None) -> int:
    """Remove cryopick's stale temporaries in ``folder`` (of output ``name`` only, if given).

    Returns
    -------
    int
        How many were removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    prefix = f".{name}." if name is not None else "."
    removed = 0
    for entry in folder.iterdir():
        if entry.name.startswith(prefix) and is_stale_temporary(entry):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
    return removed


@contextmanager
def atomic_path(path: str | Path, *, replace_folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    Works for files and for folders (e.g. a zarr store). On an exception the
    temporary is removed and ``path`` is left as it was, so a reader never sees
    a half-written output. Stale temporaries of earlier writes of ``path`` (a killed
    process) are removed first.

    Parameters
    ----------
    path : str or Path
        Final destination. Its parent folder is created if missing.
    replace_folder : bool
        Allow replacing an existing folder at ``path`` (the caller has checked it is its
        own kind of output, e.g. a zarr store). Without it an existing folder is an error:
        a file output never replaces a folder.

    Yields
    ------
    Path
        Where to write. It does not exist yet.

    Raises
    ------
    InputError
        If ``path`` is an existing folder and ``replace_folder`` is False.
    """
    path = Path(path)
    if path.is_dir() and not (replace_folder and not path.is_symlink()):
        raise InputError(
            path, "is an existing folder: give a file name to write to (folders are never replaced)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    tmp_dir = tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_dir) / path.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp}")
        if path.is_dir():
            # a folder cannot be replaced atomically onto a non-empty folder: swap via a rename
            old = Path(
                tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".old", dir=path.parent)
            )
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


# files cryopick reads as data, never writes as a picks table or report
DATA_SUFFIXES = (".mrc", ".rec", ".map", ".st", ".ali", ".zarr", ".json", ".pt", ".star", ".csv")


def check_output_file(
    output: str | Path, inputs: Iterable[str | Path | None] = (), suffixes: Sequence[str] = ()
) -> Path:
    """Refuse an output file that would replace an input or a data file of another kind.

    Parameters
    ----------
    output : str or Path
        The file a command is about to write.
    inputs : iterable of path
        The command's inputs (None entries ignored): the output may be none of them.
    suffixes : sequence of str
        Suffixes this output may have among :data:`DATA_SUFFIXES` (e.g. ``(".csv",)`` for a
        CSV); any other data suffix (``.mrc``, a copick ``.json``, ...) is refused.

    Raises
    ------
    InputError
        If ``output`` is an existing folder, one of ``inputs``, or has another data suffix.
    """
    output = Path(output)
    if output.is_dir():
        raise InputError(
            output, "is an existing folder: give a file name (folders are never replaced)"
        )
    for source in inputs:
        if source is not None and output.resolve() == Path(source).resolve():
            raise InputError(output, "is an input of this command: give another output file name")
    suffix = output.suffix.lower()
    if suffix in DATA_SUFFIXES and suffix not in suffixes:
        raise InputError(
            output,
            f"a {suffix} file is not what this command writes (expected "
            f"{' or '.join(suffixes) or 'another suffix'}): give another output file name",
        )
    return output
