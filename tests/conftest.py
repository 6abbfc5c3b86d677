"""Fixtures shared by several test modules: small simulated data and models, made once.

Everything here is session-scoped and read-only for the tests that use it: a test that
changes files copies them first (``shutil.copytree`` into its ``tmp_path``). Imports of
cryopick's heavy modules stay inside the fixtures: this file is also loaded by the copick
interop tests in their own environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from shared_settings import SMALL_PROJECT, TINY_MODEL_THRESHOLD

if TYPE_CHECKING:
    from cryopick.inference.pipeline import LoadedModel
    from cryopick.simulate.project import SimulatedRun
    from cryopick.training.sampling import TrainRun


@pytest.fixture(scope="session")
def small_simulated_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copick project of six small easy simulated runs (``sim_0000`` ...); its config JSON."""
    from cryopick.simulate import simulate_project

    root = tmp_path_factory.mktemp("small_simulated_project")
    return simulate_project(root, progress=False, **SMALL_PROJECT)


@pytest.fixture(scope="session")
def tiny_simulated_run() -> SimulatedRun:
    """One easy simulated run of 32 x 64 x 64 voxels at 10 Å (name ``tiny``), in memory."""
    from cryopick.simulate import simulate_run

    return simulate_run("easy", shape=(32, 64, 64), seed=0, name="tiny")


@pytest.fixture(scope="session")
def tiny_train_run(tiny_simulated_run: SimulatedRun) -> TrainRun:
    """:func:`tiny_simulated_run` as training data (all its tomogram types)."""
    from cryopick.training.sampling import run_from_simulation

    return run_from_simulation(tiny_simulated_run)


@pytest.fixture(scope="session")
def tiny_untrained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved, untrained 2-level U-Net (widths 4, 8; seeded) with low thresholds.

    Fast enough for end-to-end runs of every code path; its picks are arbitrary but
    deterministic, so paths are compared with each other, not with truth.
    """
    import torch

    from cryopick.core.particles import default_particle_set
    from cryopick.model import ModelCard, ModelConfig, build_model, save_model

    torch.manual_seed(0)
    arch = ModelConfig(widths=(4, 8))
    card = ModelCard(
        architecture=arch,
        patch_size=(32, 32, 32),
        thresholds=dict.fromkeys(default_particle_set().names, TINY_MODEL_THRESHOLD),
    )
    path = tmp_path_factory.mktemp("tiny_untrained_model") / "tiny"
    return save_model(path, build_model(arch), card)


@pytest.fixture(scope="session")
def bundled_model() -> LoadedModel:
    """The model shipped in ``cryopick/data/model``, loaded once: (network, card)."""
    from cryopick.model import bundled_model_dir, load_model

    return load_model(bundled_model_dir(), device="cpu")
