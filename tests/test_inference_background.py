"""Column background flattening (a carbon film's offset) before the network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from numpy.typing import NDArray
from pydantic import ValidationError
from typer.testing import CliRunner

import cryopick.scale.predict as scale_predict
from cryopick.cli import app
from cryopick.inference.background import (
    MIN_RANGE,
    estimate_column_background,
    flatten_column_background,
)
from cryopick.inference.pipeline import PredictConfig
from cryopick.inference.preprocess import CLIP_SIGMA, prepare_volume
from cryopick.io.tomograms import Tomogram

SPACING_A = 10.0
STEP = 1.5  # offset of the "film" columns, in robust spreads (simulated films: 1-2)
EDGE_X = 50  # columns with x >= EDGE_X are on the film


def noisy_volume(seed: int = 0, shape: tuple[int, int, int] = (40, 96, 96)) -> NDArray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def with_film(volume: NDArray, step: float = STEP) -> NDArray:
    volume = volume.copy()
    volume[:, :, EDGE_X:] += step
    return volume


def column_means(volume: NDArray) -> NDArray:
    means: NDArray = volume.mean(axis=0)
    return means


def test_a_film_step_is_measured_and_subtracted_up_to_its_edge() -> None:
    volume = with_film(noisy_volume())
    background, spread = estimate_column_background(volume, SPACING_A)
    assert spread == pytest.approx(STEP, abs=0.2)
    # the median keeps the step sharp: within one 40 Å block of the edge on each side
    assert np.all(np.abs(background[:, : EDGE_X - 4]) < 0.15)
    assert np.all(np.abs(background[:, EDGE_X + 4 :] - STEP) < 0.15)
    assert flatten_column_background(volume, SPACING_A, "auto")
    means = column_means(volume)
    assert abs(means[:, : EDGE_X - 4].mean()) < 0.05
    assert abs(means[:, EDGE_X + 4 :].mean()) < 0.05


def test_a_flat_tomogram_is_left_as_it_is_in_auto_mode() -> None:
    volume = noisy_volume(1)
    volume[10:20, 30:40, 30:40] -= 3.0  # a dense particle
    before = volume.copy()
    _, spread = estimate_column_background(volume, SPACING_A)
    assert spread < MIN_RANGE / 2
    assert not flatten_column_background(volume, SPACING_A, "auto")
    np.testing.assert_array_equal(volume, before)


def test_off_never_subtracts_and_on_always_does() -> None:
    volume = with_film(noisy_volume(2))
    before = volume.copy()
    assert not flatten_column_background(volume, SPACING_A, "off")
    np.testing.assert_array_equal(volume, before)
    flat = noisy_volume(3)
    assert flatten_column_background(flat, SPACING_A, "on")
    assert not np.array_equal(flat, noisy_volume(3))


def test_a_large_particle_keeps_its_contrast() -> None:
    """A 200 Å particle is narrower than the median filter: the background does not eat it."""
    volume = noisy_volume(4, (60, 96, 96))
    z, y, x = np.ogrid[:60, :96, :96]
    inside = (z - 30) ** 2 + (y - 48) ** 2 + (x - 48) ** 2 <= 10**2
    volume[inside] -= 2.0
    centre_before = volume[25:36, 43:54, 43:54].mean()
    flatten_column_background(volume, SPACING_A, "on")
    assert volume[25:36, 43:54, 43:54].mean() == pytest.approx(centre_before, abs=0.15)


def test_the_result_is_clipped_again() -> None:
    volume = with_film(noisy_volume(5))
    volume[:, :EDGE_X] = np.clip(volume[:, :EDGE_X], -CLIP_SIGMA, CLIP_SIGMA)
    volume[0, 0, 0] = -CLIP_SIGMA  # off the film: stays where it is
    volume[0, 0, 90] = CLIP_SIGMA + STEP  # on the film: lands at the clip after flattening
    flatten_column_background(volume, SPACING_A, "auto", clip_sigma=CLIP_SIGMA)
    assert volume.min() >= -CLIP_SIGMA and volume.max() <= CLIP_SIGMA


def test_prepare_volume_flattens_a_tomogram_with_a_film_in_view() -> None:
    """The network's input has no step: before this, the film's offset reached the network."""
    # any scale and offset; the step is 1.4-1.6 robust spreads once normalised
    data = with_film(noisy_volume(6), step=2.5) * 3.0 + 100.0
    tomogram = Tomogram("film", data, SPACING_A, Path("film.mrc"), "denoised")
    volume, _ = prepare_volume(tomogram, SPACING_A)
    means = column_means(volume)
    assert abs(means[:, EDGE_X + 4 :].mean() - means[:, : EDGE_X - 4].mean()) < 0.1
    kept, _ = prepare_volume(tomogram, SPACING_A, background="off")
    step = column_means(kept)[:, EDGE_X + 4 :].mean() - column_means(kept)[:, : EDGE_X - 4].mean()
    assert step > 1.0


def test_predict_config_takes_only_known_background_modes() -> None:
    assert PredictConfig().flatten_background == "auto"
    assert PredictConfig(flatten_background="off").flatten_background == "off"
    with pytest.raises(ValidationError):
        PredictConfig(flatten_background="yes")  # type: ignore[arg-type]


def test_the_command_passes_the_mode_and_refuses_an_unknown_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, PredictConfig] = {}

    def fake_predict_runs(input_path, model, output, fmt, settings, **_):  # type: ignore[no-untyped-def]
        seen["settings"] = settings
        raise typer.Exit(0)

    monkeypatch.setattr(scale_predict, "predict_runs", fake_predict_runs)
    args = ["predict", str(tmp_path / "t.mrc"), "-o", str(tmp_path / "p.csv"), "-q"]
    runner = CliRunner()
    result = runner.invoke(app, [*args, "--flatten-background", "off"])
    assert result.exit_code == 0, result.output
    assert seen["settings"].flatten_background == "off"
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and seen["settings"].flatten_background == "auto"
    result = runner.invoke(app, [*args, "--flatten-background", "sideways"])
    assert result.exit_code == 2 and "flatten_background" in result.output
    assert not (tmp_path / "p.csv").exists()
