"""Helpers of ``benchmarks/peers.py``: the peers' own virtual environments and measured runs.

Each peer lives in ``benchmarks/.venvs/NAME`` (git-ignored), made by :func:`ensure_venv`
with ``torch==2.13.0`` installed first (the CPU wheel served locally; any other version
would pull a multi-GB CUDA build), then the peer. A stamp file records what was
installed, so a second run reuses the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

TORCH_PIN = "torch==2.13.0"
VENVS = Path(__file__).resolve().parent / ".venvs"


def ensure_venv(name: str, packages: list[str], *, pip_args: list[str] | None = None) -> Path:
    """The Python of the peer's virtual environment, made (or reused) with ``packages``.

    Parameters
    ----------
    name
        Folder name under ``benchmarks/.venvs``.
    packages
        Requirements given to pip after torch (e.g. ``["octopi==1.7.0"]``); torch is
        pinned again in that command so that no requirement can swap it.
    pip_args
        Extra pip options of the second command (e.g. ``["--no-deps"]``).

    Returns
    -------
    Path
        ``benchmarks/.venvs/NAME/bin/python``.
    """
    venv = VENVS / name
    python = venv / "bin" / "python"
    stamp = venv / ".installed.json"
    wanted = {"torch": TORCH_PIN, "packages": packages, "pip_args": pip_args or []}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return python
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, TORCH_PIN], check=True)
    subprocess.run([*pip, *(pip_args or []), TORCH_PIN, *packages], check=True)
    stamp.write_text(json.dumps(wanted))
    return python


def package_version(python: Path, package: str) -> str | None:
    """The installed version of ``package`` in the environment of ``python`` (None: absent)."""
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def thread_env(threads: int) -> dict[str, str]:
    """Environment limiting a child process (and its data loader workers) to ``threads``."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(threads)
    # octopi sizes its DataLoader workers from SLURM's allocation first
    env["SLURM_CPUS_PER_TASK"] = str(threads)
    env["MPLBACKEND"] = "Agg"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Measured:
    """Wall time and peak memory (PSS, summed over the process tree) of one child process."""

    seconds: float
    peak_GB: float
    returncode: int
    timed_out: bool


def _tree_memory(proc: psutil.Process) -> int:
    """Bytes of the process and its children: their PSS (shared pages split), else RSS."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            info = p.memory_full_info()
            total += getattr(info, "pss", info.rss)
    return total


def _sample_tree_memory(proc: psutil.Process, peak: list[int], done: threading.Event) -> None:
    while not done.is_set():
        try:
            peak[0] = max(peak[0], _tree_memory(proc))
        except psutil.Error:
            return
        done.wait(0.25)


def run_measured(
    command: list[str],
    *,
    log: Path,
    env: dict[str, str] | None = None,
    timeout_s: float | None = None,
    cwd: Path | None = None,
) -> Measured:
    """Run ``command`` and measure its wall time and peak memory (process tree summed).

    Output goes to ``log``. With ``timeout_s``, the process tree gets SIGINT at the
    deadline (a Python trainer then stops as after Ctrl-C), and SIGKILL 60 s later.
    The memory is the proportional set size (PSS: each shared page split between the
    processes sharing it) of the process and its children, summed, sampled every 0.25 s:
    forked data-loader workers are not counted twice.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    peak = [0]
    done = threading.Event()
    t0 = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
        with contextlib.suppress(psutil.Error):  # unless it has already ended
            proc = psutil.Process(child.pid)
            threading.Thread(target=_sample_tree_memory, args=(proc, peak, done)).start()
        try:
            timed_out = _wait(child, timeout_s)
        except BaseException:  # e.g. Ctrl-C: the child has its own session, end it too
            _signal_group(child.pid, signal.SIGKILL)
            raise
        finally:
            done.set()
    return Measured(time.perf_counter() - t0, peak[0] / 1e9, child.returncode, timed_out)


def _wait(child: subprocess.Popen, timeout_s: float | None) -> bool:
    """Wait for ``child``; at ``timeout_s`` interrupt it (then kill it). True if timed out."""
    try:
        child.wait(timeout=timeout_s)
        return False
    except subprocess.TimeoutExpired:
        _signal_group(child.pid, signal.SIGINT)
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            _signal_group(child.pid, signal.SIGKILL)
            child.wait()
        return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def describe_cpu() -> str:
    """``lscpu``'s model name and the number of usable cores."""
    done = subprocess.run(["lscpu"], capture_output=True, text=True)
    model = next(
        (ln.split(":", 1)[1].strip() for ln in done.stdout.splitlines() if "Model name" in ln),
        "unknown CPU",
    )
    return f"{model}, {len(os.sched_getaffinity(0))} cores"
