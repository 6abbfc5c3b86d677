"""Where the simulator puts its distractors: recorded per run, written and read back."""

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from cryopick.simulate import get_preset, read_simulated_distractors, simulate_project
from cryopick.simulate.artefacts import SpecimenExtras
from cryopick.simulate.crowders import ProceduralCrowders
from cryopick.simulate.distractors import distractor_pool
from cryopick.simulate.library import prepare_library
from cryopick.simulate.presets import draw_run_params
from cryopick.simulate.sample import build_sample

SHAPE = (40, 96, 96)
CROWDERS_ON = SpecimenExtras(
    crowders=ProceduralCrowders(fraction=(0.3, 0.3), hard_negative_fraction=0.3)
)


def build_crowded_sample(seed: int = 5):
    """A czii-preset sample without vesicles or solvent noise, procedural crowders on."""
    config = get_preset("czii").model_copy(
        update={"extras": CROWDERS_ON, "solvent_noise": 0.0, "vesicles_per_um2": (0.0, 0.0)}
    )
    rng = np.random.default_rng(seed)
    params = draw_run_params(config, rng)
    library = prepare_library(None, 10.0)
    return config, build_sample(config, params, SHAPE, 10.0, rng, library)


def test_distractor_pool_names_its_members():
    library = prepare_library(None, 10.0).distractors
    small, large = distractor_pool(np.random.default_rng(1), 10.0, library)
    assert [n for n, _ in small[:16]] == ["blob"] * 16
    small_keys = [m.key for m in library.maps if not m.large for _ in range(6)]
    assert [n for n, _ in small[16:]] == small_keys  # 6 turns of each small map, in order
    large_keys = {m.key for m in library.maps if m.large}
    assert {n for n, _ in large} == large_keys


def test_recorded_centres_are_where_the_distractors_density_is():
    config, sample = build_crowded_sample()
    names = sample.distractor_names
    assert len(names) == sample.n_distractors == len(sample.distractor_centres_zyx) > 20
    assert set(sample.distractor_kinds) == {"small", "large", "procedural", "hard"}
    excess = sample.potential - config.ice_potential_V * sample.slab_fraction
    excess[sample.labels > 0] = 0.0  # the targets' density is not a distractor's
    everything = np.concatenate([sample.centres_zyx, sample.distractor_centres_zyx])
    tree = cKDTree(everything)
    grid = np.stack(np.mgrid[-3:4, -3:4, -3:4], axis=-1).reshape(-1, 3)
    errors = []
    for centre in sample.distractor_centres_zyx:
        if len(tree.query_ball_point(centre, 9.0)) > 1:  # a neighbour's density nearby
            continue
        voxels = np.rint(centre).astype(int) + grid
        inside = np.all((voxels >= 0) & (voxels < SHAPE), axis=1)
        weights = excess[tuple(voxels[inside].T)].clip(min=0)
        assert weights.sum() > 0
        centroid = (weights[:, None] * voxels[inside]).sum(axis=0) / weights.sum()
        errors.append(np.linalg.norm(centroid - centre))
    # a box corner instead of its centre would be 3-15 voxels off; the rest of a large
    # neighbour or an asymmetric crowder moves a few centroids by a voxel or two
    assert len(errors) >= 5 and np.median(errors) < 0.3 and max(errors) < 2.5


def test_simulated_project_writes_its_distractors_and_reads_them_back(tmp_path):
    config = get_preset("easy").model_copy(update={"extras": CROWDERS_ON})
    out = tmp_path / "sim"
    simulate_project(out, n_runs=2, seed=11, shape=(32, 64, 64), preset=config)
    table = read_simulated_distractors(out / "copick_config.json")
    record = pd.read_json(out / "simulation.json", typ="series")["runs"]
    for run in ("sim_0000", "sim_0001"):
        rows = table[table["experiment"] == run]
        assert len(rows) == record[run]["n_distractors"] > 0
        assert set(rows["kind"]) <= {"small", "large", "procedural", "hard"}
        for axis, n_vox in zip("zyx", (32, 64, 64), strict=True):
            assert rows[axis].between(0.0, (n_vox - 1) * 10.0).all()
    assert read_simulated_distractors(out).equals(table)  # the folder works as well
    (out / "ExperimentRuns" / "sim_0001" / "simulation_distractors.csv").unlink()
    older = read_simulated_distractors(out)
    assert set(older["experiment"]) == {"sim_0000"}  # runs made before the record: no rows
