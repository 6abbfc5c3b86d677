"""Training patches centred on hard negatives: the distractors a simulation recorded."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from cryopick.core.errors import InputError
from cryopick.simulate import read_simulated_distractors, simulate_project
from cryopick.training.config import TrainConfig
from cryopick.training.sampling import PatchSampler, TrainRun, load_runs
from cryopick.training.sources import attach_hard_negatives

SHAPE = (96, 96, 96)
PATCH = (32, 32, 32)
NEGATIVE_VOX = np.array([48.0, 60.0, 30.0])


def make_run(negatives_vox: np.ndarray) -> TrainRun:
    """A blank 96^3 run at 10 Å with one ribosome in a corner and the given negatives."""
    picks = pd.DataFrame(
        {"experiment": "r", "particle_type": ["ribosome"], "x": [50.0], "y": [50.0], "z": [50.0]}
    )
    volumes = {"denoised": np.zeros(SHAPE, np.float16)}
    return TrainRun("r", volumes, picks, 10.0, negatives_zyx_A=negatives_vox * 10.0)


def origins(run: TrainRun, particle_fraction: float, negative_fraction: float) -> np.ndarray:
    sampler = PatchSampler(
        [run], PATCH, 2, "sphere", 0.5, particle_fraction, None, np.random.default_rng(3),
        negative_fraction=negative_fraction,
    )  # fmt: skip
    return np.array([sampler._choose_origin()[1] for _ in range(40)])


def test_negative_patches_hold_the_negative_well_inside():
    starts = origins(make_run(NEGATIVE_VOX[None]), 0.0, 1.0)
    margin = 8 - 2  # the sampler's margin, less the alignment to the stride-2 grid
    assert np.all(starts + margin <= NEGATIVE_VOX) and np.all(starts + 32 - margin > NEGATIVE_VOX)
    assert len({tuple(s) for s in starts}) > 10  # the negative lies anywhere inside
    uniform = origins(make_run(NEGATIVE_VOX[None]), 0.0, 0.0)
    holding = np.all((uniform <= NEGATIVE_VOX) & (uniform + 32 > NEGATIVE_VOX), axis=1)
    assert holding.mean() < 0.5


def test_runs_without_negatives_draw_as_before():
    with_negatives = origins(make_run(NEGATIVE_VOX[None]), 0.5, 0.0)
    without = origins(make_run(np.zeros((0, 3))), 0.5, 0.0)
    np.testing.assert_array_equal(with_negatives, without)
    # asked for, but no run has any: the particle and uniform draws are unchanged too
    np.testing.assert_array_equal(origins(make_run(np.zeros((0, 3))), 0.5, 0.5), without)


def test_fractions_may_not_exceed_one():
    with pytest.raises(ValueError, match="exceeds 1"):
        origins(make_run(NEGATIVE_VOX[None]), 0.8, 0.3)
    with pytest.raises(ValidationError, match="must not exceed 1"):
        TrainConfig(particle_fraction=0.8, hard_negative_fraction=0.3)
    with pytest.raises(ValidationError, match=r"kind/name: \['larg'\]"):
        TrainConfig(hard_negative_kinds=["large/3j9i", "larg"])


def test_runs_get_their_own_projects_negatives(tmp_path):
    projects = []
    for seed in (1, 2):  # both projects have a run called sim_0000
        out = tmp_path / f"p{seed}"
        simulate_project(out, n_runs=1, seed=seed, shape=(32, 64, 64), preset="easy")
        projects.append(str(out / "copick_config.json"))
    runs = [run for p in projects for run in load_runs(p)]
    attach_hard_negatives(runs, projects, ["small"])
    for run, project in zip(runs, projects, strict=True):
        table = read_simulated_distractors(project)
        small = table[table["kind"] == "small"][["z", "y", "x"]].to_numpy()
        assert len(small) > 0
        np.testing.assert_allclose(run.negatives_zyx_A, small)
    assert not np.array_equal(runs[0].negatives_zyx_A, runs[1].negatives_zyx_A)
    with pytest.raises(InputError, match="hard_negative_fraction needs recorded distractors"):
        attach_hard_negatives(runs, projects, ["large/no-such-map"])


def test_runs_within_one_percent_of_the_models_voxel_size_keep_their_voxels(tmp_path):
    # a project at the CZII portal's 10.012 Å trains a 10 Å model on its own voxels, with
    # its own voxel size for the picks; 10.3 Å is resampled to 10 Å
    runs = {}
    for spacing_A in (10.0, 10.012, 10.3):
        out = tmp_path / f"p{spacing_A}"
        simulate_project(out, n_runs=1, seed=1, shape=(32, 64, 64), preset="easy", spacing_A=10.0)
        if spacing_A != 10.0:  # the same voxels, declared at another voxel size
            _relabel_voxel_size(out, spacing_A)
        (runs[spacing_A],) = load_runs(str(out / "copick_config.json"), spacing_A=10.0)
    assert runs[10.012].spacing_A == 10.012 and runs[10.3].spacing_A == 10.0
    np.testing.assert_array_equal(runs[10.012].volumes["denoised"], runs[10.0].volumes["denoised"])
    assert runs[10.3].volumes["denoised"].shape != runs[10.0].volumes["denoised"].shape


def _relabel_voxel_size(project: Path, spacing_A: float) -> None:
    """Make every OME-Zarr of ``project`` declare ``spacing_A`` per voxel at full resolution."""
    for attrs_path in project.glob("ExperimentRuns/*/VoxelSpacing*/*.zarr/.zattrs"):
        attrs = json.loads(attrs_path.read_text())
        for level in attrs["multiscales"][0]["datasets"]:
            for transform in level["coordinateTransformations"]:
                if transform["type"] == "scale":
                    factor = spacing_A / 10.0
                    transform["scale"] = [s * factor for s in transform["scale"]]
        attrs_path.write_text(json.dumps(attrs))


def test_training_picks_outside_their_tomogram_are_named(tmp_path, caplog):
    # picks in nm read as Å land inside; in Å but ten times too large (a tool that wrote
    # 0.1 nm units, or a unit mix-up) land outside: training learnt from empty targets
    import json
    import logging

    out = tmp_path / "p"
    simulate_project(out, n_runs=1, seed=1, shape=(32, 64, 64), preset="easy")
    for pick_file in out.rglob("Picks/*.json"):
        record = json.loads(pick_file.read_text())
        for point in record["points"]:
            point["location"] = {k: 10.0 * v for k, v in point["location"].items()}
        pick_file.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING):
        (run,) = load_runs(str(out / "copick_config.json"))
    warned = [r.getMessage() for r in caplog.records if "outside the tomogram" in r.getMessage()]
    assert len(warned) == 1 and "run sim_0000" in warned[0]
    assert f"of {len(run.picks)} picks lie outside the tomogram (630 x 630 x 310 Å" in warned[0]


def test_position_problems_of_one_run():
    from cryopick.io.picks import make_picks
    from cryopick.io.picks.checks import describe_position_problems

    rng = np.random.default_rng(0)
    zyx_A = rng.uniform([100.0, 0.0, 0.0], [1700.0, 6290.0, 6290.0], size=(40, 3))
    in_A = make_picks("TS_1", "ribosome", zyx_A)
    shape, spacing_A = (184, 630, 630), 10.0
    assert describe_position_problems(in_A, shape, spacing_A) is None
    in_pixels = make_picks("TS_1", "ribosome", zyx_A / 10.0)
    problem = describe_position_problems(in_pixels, shape, spacing_A)
    assert problem is not None and problem.startswith("all 40 picks lie within")
    assert "are the positions in pixels?" in problem
    few = make_picks("TS_1", "ribosome", zyx_A[:5] / 10.0)  # too few to tell
    assert describe_position_problems(few, shape, spacing_A) is None
    one_out = make_picks("TS_1", "ribosome", np.vstack([zyx_A, [[100.0, 7000.0, 100.0]]]))
    assert describe_position_problems(one_out, shape, spacing_A) is None  # 1 of 41: 2.4 %
