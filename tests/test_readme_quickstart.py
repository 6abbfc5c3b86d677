"""Every command of the README's quick start runs as written (issue 11, item 20).

The commands are read from the ```bash block after "## Quick start" in README.md and run
in order, in a temporary folder, through the CLI (typer's CliRunner). Two changes keep it
fast (about 10 s on 2 cores), both to ``cryopick simulate`` only: ``--runs N`` becomes
``--runs 1`` and ``--shape 64 128 128`` is added (the default is 184 x 630 x 630). The
``make install && source ...`` line sets up the environment the test already runs in and
is skipped. Every other command and option is used exactly as the README prints it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cryopick.cli import app

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL_SIMULATION = ["--shape", "64", "128", "128"]


def quickstart_commands(text: str) -> list[list[str]]:
    """The commands of the quick-start bash block, one argument list each."""
    section = text.split("\n## Quick start", 1)[1]
    block = section.split("```bash\n", 1)[1].split("\n```", 1)[0]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("make install"):
            continue
        commands.append(shlex.split(line))
    return commands


def small(command: list[str]) -> list[str]:
    """The command at test size: simulate one small run (see the module docstring)."""
    if command[1] != "simulate":
        return command
    out = list(command)
    if "--runs" in out:
        out[out.index("--runs") + 1] = "1"
    return out + SMALL_SIMULATION


def test_quickstart_block_is_the_four_pipeline_steps() -> None:
    commands = quickstart_commands(README.read_text())
    assert [c[:2] for c in commands] == [
        ["cryopick", "simulate"],
        ["cryopick", "predict"],
        ["cryopick", "evaluate"],
        ["cryopick", "report"],
    ]


def test_quickstart_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    outputs = {}
    for command in quickstart_commands(README.read_text()):
        result = runner.invoke(app, small(command)[1:])
        assert result.exit_code == 0, f"{shlex.join(command)} failed:\n{result.output}"
        outputs[command[1]] = result.output
    score = float(re.search(r"score: ([0-9.]+)", outputs["evaluate"]).group(1))
    assert 0.0 < score <= 1.0  # the bundled model finds something on the simulated run
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and f"{score:.4f}" in page
