"""Memory this process may still use: the system's available memory, or its job's limit.

:func:`measure_available_bytes` is the smaller of ``MemAvailable`` (``/proc/meminfo``) and
the headroom of the first memory cgroup with a limit (a SLURM job's, cgroup v2 or v1).
Predict (:mod:`cryopick.inference.memory`) and simulate check their estimated needs
against it before they allocate, so that a wrong size is one clear line instead of a
``MemoryError`` from inside numpy, or a job killed without a word.
"""

from __future__ import annotations

from pathlib import Path

_CGROUP_LIMITS = (
    ("memory.max", "memory.current"),  # cgroup v2
    ("memory.limit_in_bytes", "memory.usage_in_bytes"),  # cgroup v1
)
_NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_dirs() -> list[Path]:
    """Memory cgroup folders of this process: its own (v2 or v1 path), then the mount's root."""
    root = Path("/sys/fs/cgroup")
    dirs = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, rel = line.split(":", 2)
            if controllers == "":
                dirs.append(root / rel.lstrip("/"))
            elif "memory" in controllers.split(","):
                dirs.append(root / "memory" / rel.lstrip("/"))
    except (OSError, ValueError):
        pass
    return [*dirs, root, root / "memory"]


def _cgroup_headroom_bytes() -> int | None:
    """Limit minus usage of the first memory cgroup that has a limit (a SLURM job's)."""
    for folder in _cgroup_dirs():
        for limit_name, usage_name in _CGROUP_LIMITS:
            limit = _read_int(folder / limit_name)
            usage = _read_int(folder / usage_name)
            if limit is not None and usage is not None and limit < _NO_LIMIT:
                return max(0, limit - usage)
    return None


def measure_available_bytes() -> int | None:
    """Memory this process may still use: the smaller of the system's and its cgroup's.

    None where neither can be read (not Linux); then nothing is checked.
    """
    figures = [b for b in (_meminfo_available_bytes(), _cgroup_headroom_bytes()) if b is not None]
    return min(figures) if figures else None


def format_gb(n_bytes: int) -> str:
    """``2,119.5 GB``: bytes in GiB with one decimal, thousands separated."""
    return f"{n_bytes / 1024**3:,.1f} GB"
