"""cryopick: find protein complexes in cryo-electron tomograms.

The main functions, importable from here::

    import cryopick

    tomograms = cryopick.read_tomograms("copick_config.json")
    picks = cryopick.predict("copick_config.json", output="picks.csv")
    score = cryopick.evaluate(cryopick.read_picks("truth.csv"), picks).score

They are loaded on first use, so ``import cryopick`` (and ``cryopick --help``) stays fast
and imports neither PyTorch nor the other heavy libraries.

============================  ==========================================================
name                          function
============================  ==========================================================
``predict``                   :func:`cryopick.inference.pipeline.predict`
``simulate_project``          :func:`cryopick.simulate.project.simulate_project`
``train``                     :func:`cryopick.training.trainer.train`
``evaluate``                  :func:`cryopick.evaluation.metric.score_picks`
``read_picks``                :func:`cryopick.io.picks.read_picks`
``write_picks``               :func:`cryopick.io.picks.write_picks`
``read_tomograms``            :func:`cryopick.io.tomograms.read_tomograms`
============================  ==========================================================

The simulator is ``simulate_project``, not ``simulate``: ``cryopick.simulate`` is its
subpackage, and Python rebinds that name to the subpackage whenever it is imported.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("cryopick")  # one place: pyproject.toml
except PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
    __version__ = "0+unknown"

#: Public name -> (module, attribute), imported on first access.
LAZY_EXPORTS: dict[str, tuple[str, str]] = {
    "predict": ("cryopick.inference.pipeline", "predict"),
    "simulate_project": ("cryopick.simulate.project", "simulate_project"),
    "train": ("cryopick.training.trainer", "train"),
    "evaluate": ("cryopick.evaluation.metric", "score_picks"),
    "read_picks": ("cryopick.io.picks", "read_picks"),
    "write_picks": ("cryopick.io.picks", "write_picks"),
    "read_tomograms": ("cryopick.io.tomograms", "read_tomograms"),
}

__all__ = [
    "__version__",
    "evaluate",
    "predict",
    "read_picks",
    "read_tomograms",
    "simulate_project",
    "train",
    "write_picks",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports them
    from cryopick.evaluation.metric import score_picks as evaluate
    from cryopick.inference.pipeline import predict
    from cryopick.io.picks import read_picks, write_picks
    from cryopick.io.tomograms import read_tomograms
    from cryopick.simulate.project import simulate_project
    from cryopick.training.trainer import train


def __getattr__(name: str) -> Any:
    """Import a public function on first access (PEP 562)."""
    try:
        module, attribute = LAZY_EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'cryopick' has no attribute {name!r}") from None
    value = getattr(import_module(module), attribute)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *LAZY_EXPORTS})
