"""The bundled model, end to end on small simulated tomograms (issue: cryopick predict).

These use the model shipped in ``cryopick/data/model`` on a small tomogram of the
realistic ``czii`` simulator preset it was trained on (other seed): the particles must be
found (score clearly above chance), results must be identical for identical input, and
the same physical particles must be found whether the tomogram comes as MRC, as OME-Zarr,
or resampled to 2x finer voxels.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from cryopick.evaluation.metric import score_picks
from cryopick.inference.pipeline import LoadedModel, PredictConfig, predict
from cryopick.io.mrc import write_mrc
from cryopick.io.omezarr import ZARR3, write_ome_zarr
from cryopick.io.tomograms import read_tomograms

pytestmark = pytest.mark.integration

SHAPE = (128, 256, 256)
SPACING_A = 10.0


@cache
def _simulated():
    from cryopick.simulate import simulate_run

    return simulate_run(preset="czii", shape=SHAPE, spacing_A=SPACING_A, seed=7, name="tomo")


def _predict_file(path: Path, model: LoadedModel) -> pd.DataFrame:
    return predict(path, model=model)


def _matched_fraction(a: pd.DataFrame, b: pd.DataFrame, tol_A: float) -> float:
    """Fraction of picks in ``a`` with a pick of the same type in ``b`` within ``tol_A``."""
    hits = 0
    for ptype, group in a.groupby("particle_type"):
        other = b[b.particle_type == ptype]
        if other.empty:
            continue
        d, _ = cKDTree(other[["x", "y", "z"]].to_numpy()).query(group[["x", "y", "z"]].to_numpy())
        hits += int((d <= tol_A).sum())
    return hits / max(len(a), 1)


def test_bundled_model_recovers_simulated_particles(tmp_path):
    run = _simulated()
    path = write_mrc(tmp_path / "tomo.mrc", run.tomograms["denoised"], SPACING_A)
    picks = predict(path)  # no model given: the bundled one
    result = score_picks(run.picks, picks)
    # chance level (random picks of the same count) is ~0.0x; a working picker is far above
    assert result.score > 0.4, result.per_class
    assert (result.per_class.fbeta > 0.5).sum() >= 3, result.per_class


def test_same_input_gives_identical_picks(tmp_path, bundled_model):
    run = _simulated()
    path = write_mrc(tmp_path / "tomo.mrc", run.tomograms["denoised"], SPACING_A)
    first = _predict_file(path, bundled_model)
    second = _predict_file(path, bundled_model)
    pd.testing.assert_frame_equal(first, second)


def test_mrc_zarr_and_finer_voxels_find_the_same_particles(tmp_path, bundled_model):
    run = _simulated()
    volume = run.tomograms["denoised"]
    from_mrc = _predict_file(write_mrc(tmp_path / "tomo.mrc", volume, SPACING_A), bundled_model)
    from_zarr = _predict_file(
        write_ome_zarr(tmp_path / "tomo.zarr", volume, SPACING_A, zarr_format=3 if ZARR3 else 2),
        bundled_model,
    )
    pd.testing.assert_frame_equal(
        from_mrc.drop(columns="experiment"), from_zarr.drop(columns="experiment")
    )

    # 2x finer voxels: voxel i of the fine grid is at i * 5 Å, so the same Å positions
    # sample the same density (linear interpolation, grid aligned at 0 Å)
    fine_shape = tuple(2 * n - 1 for n in volume.shape)
    grid = np.indices(fine_shape, dtype=np.float32) / 2.0
    fine = ndimage.map_coordinates(volume, grid, order=1).astype(np.float32)
    tomo = read_tomograms(write_mrc(tmp_path / "fine.mrc", fine, SPACING_A / 2))[0]
    assert tomo.spacing_A == pytest.approx(SPACING_A / 2)
    from_fine = _predict_file(tomo.source, bundled_model)
    strong = from_mrc[from_mrc.score >= from_mrc.score.median()]
    assert len(strong) > 5
    # the same physical particles, coordinates within one (10 Å) voxel
    assert _matched_fraction(strong, from_fine, tol_A=SPACING_A) >= 0.8


def test_inverted_contrast_is_detected_and_gives_the_same_picks(tmp_path, caplog):
    # before polarity detection an inverted tomogram (particles bright) scored ~0; plain
    # WBP (no CTF correction) can be too weak to tell: it is kept, never inverted wrongly
    run = _simulated()
    with caplog.at_level("WARNING"):
        predict(write_mrc(tmp_path / "wbp" / "tomo.mrc", run.tomograms["wbp"], SPACING_A))
    assert "contrast looks inverted" not in caplog.text
    caplog.clear()
    for tomo_type in ("denoised", "ctfdeconvolved"):
        volume = run.tomograms[tomo_type]
        plain = predict(write_mrc(tmp_path / "tomo.mrc", volume, SPACING_A))
        inverted_path = write_mrc(tmp_path / "bright" / "tomo.mrc", -volume, SPACING_A)
        with caplog.at_level("WARNING"):
            inverted = predict(inverted_path)
        assert "contrast looks inverted" in caplog.text
        caplog.clear()
        assert len(plain) > 20 and _matched_fraction(plain, inverted, 1.0) > 0.98
        kept = predict(inverted_path, config=PredictConfig(invert=False))  # the user decides
        assert score_picks(run.picks, kept).score < 0.3 < score_picks(run.picks, plain).score


def test_padding_with_a_constant_changes_no_pick_in_the_data(tmp_path, bundled_model):
    # a rotated or masked tomogram holds regions of one value (here below every voxel, as
    # IMOD's fill of a rotated volume can be); before, such a region made the robust spread
    # so wide that a padded held-out tomogram gave no picks at all
    run = _simulated()
    volume = run.tomograms["denoised"]
    plain = _predict_file(write_mrc(tmp_path / "tomo.mrc", volume, SPACING_A), bundled_model)
    padded_volume = np.pad(volume, ((0, 0), (0, 0), (0, 96)), constant_values=volume.min() - 1)
    padded = _predict_file(
        write_mrc(tmp_path / "padded" / "tomo.mrc", padded_volume, SPACING_A), bundled_model
    )
    assert padded.x.max() < volume.shape[2] * SPACING_A  # nothing picked in the fill
    strong = plain[plain.score >= plain.score.median()]
    assert len(strong) > 5
    # another window layout alone (the same padding with mirrored data) matches 0.89 here
    assert _matched_fraction(strong, padded, tol_A=SPACING_A) >= 0.85
    plain_score = score_picks(run.picks, plain).score  # 0.65; padded 0.62 (before: 0 picks)
    assert score_picks(run.picks, padded).score > plain_score - 0.06
