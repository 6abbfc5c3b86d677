"""The public API: ``import cryopick`` is light and its functions load on first use."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

import cryopick


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_import_cryopick_does_not_import_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import cryopick, sys; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "False"


def test_the_command_line_starts_without_torch_or_pandas() -> None:
    loaded = _modules_after("import cryopick.cli")
    assert "typer" in loaded and "cryopick.cli.predict" in loaded
    assert "torch" not in loaded and "pandas" not in loaded


def test_lazy_names_resolve_to_the_library_functions() -> None:
    from cryopick.evaluation.metric import score_picks
    from cryopick.inference.pipeline import predict
    from cryopick.io.picks import read_picks, write_picks
    from cryopick.io.tomograms import read_tomograms
    from cryopick.simulate.project import simulate_project
    from cryopick.training.trainer import train

    assert cryopick.predict is predict
    assert cryopick.evaluate is score_picks
    assert cryopick.simulate_project is simulate_project
    assert cryopick.train is train
    assert cryopick.read_picks is read_picks and cryopick.write_picks is write_picks
    assert cryopick.read_tomograms is read_tomograms
    assert set(cryopick.__all__) <= set(dir(cryopick))
    for name in cryopick.__all__:
        assert getattr(cryopick, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        cryopick.nothing  # noqa: B018 - the attribute access is the test


def test_version_comes_from_the_package_metadata() -> None:
    assert cryopick.__version__ == version("cryopick")


def test_the_command_line_freezes_the_heap_after_every_other_exit_handler() -> None:
    # the CLI's handler runs last: a handler registered after importing it still sees an
    # unfrozen heap, and the process ends with every object frozen (no final collections)
    code = (
        "import atexit, gc, sys\n"
        "import cryopick.cli\n"
        "atexit.register(lambda: print('later handler sees', gc.get_freeze_count()))\n"
        "atexit._run_exitfuncs()\n"
        "print('after all', gc.get_freeze_count() > 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:2] == ["later handler sees 0", "after all True"]
