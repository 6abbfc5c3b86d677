"""topcup (the Kaggle CZII challenge's winning U-Net, on PyPI) in ``benchmarks/peers.py``.

It is benchmarked only if it can run here: on the CPU wheel ``torch==2.13.0`` and
without a GPU. :func:`check_topcup` fetches its wheel (about 40 kB, no dependencies),
reads the torch versions it accepts and looks for unconditional ``.cuda()`` calls.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from _peers_env import TORCH_PIN
from packaging.requirements import Requirement

CUDA_CALL = re.compile(r"\.cuda\(\)")


def check_topcup() -> dict:
    """Whether topcup can run on this CPU; a results record (status ``skipped`` and why).

    Returns
    -------
    dict
        ``tool``, ``status`` (``skipped`` or ``runnable``), ``version`` and ``reasons``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, "topcup"],
            capture_output=True,
            text=True,
        )
        wheels = sorted(Path(tmp).glob("topcup-*.whl"))
        if done.returncode != 0 or not wheels:
            reason = done.stderr.strip().splitlines()[-1:] or ["no wheel"]
            return {
                "tool": "topcup",
                "status": "skipped",
                "reasons": [f"not installable: {reason[0]}"],
            }
        return _inspect_wheel(wheels[0])


def _calls_cuda(source: str) -> bool:
    """Whether any line calls ``.cuda()`` outside a comment."""
    return any(CUDA_CALL.search(line.split("#", 1)[0]) for line in source.splitlines())


def _inspect_wheel(wheel: Path) -> dict:
    version = wheel.name.split("-")[1]
    reasons = []
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [
            Requirement(line.split(":", 1)[1].strip())
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
        torch_pin = TORCH_PIN.split("==")[1]
        for req in requires:
            if req.name == "torch" and not req.specifier.contains(torch_pin):
                reasons.append(
                    f"requires torch{req.specifier} (a CUDA build from PyPI, several GB); "
                    f"only {TORCH_PIN} (CPU) is installable here"
                )
        cuda_files = sorted(
            name
            for name in archive.namelist()
            if name.endswith(".py") and _calls_cuda(archive.read(name).decode())
        )
    if cuda_files:
        reasons.append(
            "moves the network and tensors to the GPU unconditionally (`.cuda()`) in "
            + ", ".join(cuda_files)
            + ": its validation and inference cannot run on a CPU"
        )
    status = "skipped" if reasons else "runnable"
    return {"tool": "topcup", "status": status, "version": version, "reasons": reasons}
