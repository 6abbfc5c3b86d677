"""The rescorer: candidate features, the card's networks, picking with it, fitting it in tune."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from cryopick.core.coords import voxels_to_angstrom
from cryopick.core.errors import InputError
from cryopick.core.particles import default_particle_set
from cryopick.evaluation.metric import score_picks
from cryopick.evaluation.tuning import _calibrated_card, tune_model
from cryopick.inference.picking import (
    PickSettings,
    choose_calibration,
    choose_thresholds,
    pick_particles,
)
from cryopick.inference.pipeline import PredictConfig, predict_tomogram
from cryopick.inference.rescoring import candidate_features, count_features
from cryopick.io.layout import make_copick_config, read_copick_config
from cryopick.io.picks import make_picks, write_picks
from cryopick.io.tomograms import Tomogram, write_tomogram
from cryopick.model import (
    ModelCard,
    ModelConfig,
    ScoreCalibration,
    build_model,
    read_model_card,
    save_model,
)
from cryopick.model.rescorer import DenseLayer, Rescorer
from cryopick.training.rescorer import (
    Candidates,
    _runs_in_turn,
    describe_sources,
    fit_rescorer,
    label_candidates,
)

from shared_settings import DarkBlobDetector

CZII = default_particle_set()
APO = CZII.get("apo-ferritin")
N_MAP = count_features(7, "map")  # 14: logit, 7 channels, 6 neighbourhood maxima


def _card(**kw) -> ModelCard:
    tiny = ModelConfig(widths=(4, 8), output_stride=2)
    return ModelCard(architecture=tiny, patch_size=(16, 16, 16), spacing_A=10.0, **kw)


# ---------------------------------------------------------------- features


def test_candidate_features_read_the_map_and_the_density_shells_at_the_pick():
    probs = np.zeros((7, 20, 20, 20), np.float16)
    probs[0] = 0.5
    probs[APO.label, 10, 10, 10] = 0.75  # map voxel 10 at stride 2 = input voxel 20.5
    probs[CZII.label("ribosome"), 11, 10, 10] = 0.25  # a neighbour within half the radius
    volume = np.zeros((40, 40, 40), np.float32)
    zz, yy, xx = np.indices(volume.shape)
    radius_vox = APO.radius_A / 10.0  # 6 voxels
    distance = np.sqrt((zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2)
    volume[distance < radius_vox] = -1.0  # a dense particle of exactly the class radius
    picks = make_picks("r", "apo-ferritin", voxels_to_angstrom([[20.5, 20.5, 20.5]], 10.0))
    picks["score"] = 0.75
    row = candidate_features(picks, probs, volume, spacing_A=10.0, stride=2)[0]
    assert row.shape == (count_features(7),) and row[0] == pytest.approx(np.log(3.0), abs=1e-4)
    assert row[1 : 1 + 7] == pytest.approx([0.5, 0.75, 0, 0, 0, 0, 0])
    nearby = row[8:14]  # classes 1..6: apo-ferritin itself, ribosome at the next voxel
    assert nearby[APO.label - 1] == pytest.approx(0.75)
    assert nearby[CZII.label("ribosome") - 1] == pytest.approx(0.25)
    shells = row[14:20]  # 0-0.25, ..., 1.25-1.5 of the radius
    assert shells[:3] == pytest.approx([-1.0, -1.0, -1.0])
    assert shells[3] < -0.5 and shells[4] > -0.5 and shells[5] == pytest.approx(0.0)
    assert row[20] < 0.5  # the inside is uniform: a small spread (edge voxels only)
    map_only = candidate_features(picks, probs, None, spacing_A=10.0, stride=2, features="map")
    assert map_only.shape == (1, N_MAP) and np.array_equal(map_only[0], row[:N_MAP])


def test_label_candidates_uses_half_the_radius():
    truth = make_picks("r", "apo-ferritin", [[100.0, 100.0, 100.0]])
    near_far = [[100.0, 100.0, 129.0], [100.0, 100.0, 131.0]]  # apo radius 60 Å: match 30
    picks = pd.concat(
        [make_picks("r", "apo-ferritin", near_far), make_picks("r", "ribosome", [[100.0] * 3])]
    )
    labels = label_candidates(picks.reset_index(drop=True), truth, CZII)
    assert labels.tolist() == [True, False, False]


# ---------------------------------------------------------------- the card's networks


def _inverting_rescorer() -> Rescorer:
    """One hidden unit ReLU(-logit(raw)); every type's output 10 * unit - 5."""
    n_inputs = N_MAP + 6
    first = DenseLayer(weight=[[-1.0] + [0.0] * (n_inputs - 1)], bias=[0.0])
    last = DenseLayer(weight=[[10.0]] * 6, bias=[-5.0] * 6)
    return Rescorer(
        features="map",
        n_features=N_MAP,
        candidate_floor=0.1,
        class_names=list(CZII.names),
        mean=[0.0] * N_MAP,
        scale=[1.0] * N_MAP,
        members=[[first, last]],
    )


def test_rescorer_rejects_wrong_shapes_and_the_card_a_foreign_set():
    good = _inverting_rescorer()
    with pytest.raises(ValidationError, match="inputs"):
        Rescorer(
            **{
                **good.model_dump(),
                "n_features": N_MAP - 1,
                "mean": [0.0] * (N_MAP - 1),
                "scale": [1.0] * (N_MAP - 1),
            }
        )
    first, _ = good.members[0]
    five = DenseLayer(weight=[[1.0]] * 5, bias=[0.0] * 5)
    with pytest.raises(ValidationError, match="one per type"):
        Rescorer(**{**good.model_dump(), "members": [[first, five]]})
    other = good.model_copy(update={"class_names": list(reversed(CZII.names))})
    with pytest.raises(ValidationError, match="rescorer"):
        _card(rescorer=other)
    card = _card(rescorer=good)
    assert ModelCard.from_json(card.to_json()) == card
    old = json.loads(_card().to_json())
    del old["rescorer"]  # cards written before rescorers
    assert ModelCard.model_validate(old).rescorer is None


def test_picking_with_a_rescorer_thresholds_the_new_scores():
    probs = np.zeros((7, 24, 24, 24), np.float32)
    probs[0] = 1.0
    zz, yy, xx = np.indices(probs.shape[1:])
    for centre, peak in (((6, 6, 6), 0.9), ((16, 16, 16), 0.3)):
        d2 = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2
        probs[APO.label] = np.maximum(probs[APO.label], peak * np.exp(-d2 / (2 * 1.5**2)))
    plain = PickSettings(thresholds={"apo-ferritin": 0.5})
    found = pick_particles(probs, plain, spacing_A=10.0, stride=1, experiment="r")
    assert found[["z", "score"]].to_numpy().ravel() == pytest.approx([60.0, 0.9], abs=1e-3)
    rescored = PickSettings(thresholds={"apo-ferritin": 0.5}, rescorer=_inverting_rescorer())
    found = pick_particles(probs, rescored, spacing_A=10.0, stride=1, experiment="r")
    expected = 1.0 / (1.0 + np.exp(-(10.0 * -np.log(0.3 / 0.7) - 5.0)))  # the weak peak
    assert found[["z", "score"]].to_numpy().ravel() == pytest.approx([160.0, expected], abs=1e-3)


def test_fit_rescorer_learns_a_separable_rule():
    rng = np.random.default_rng(0)
    n = 3000
    features = rng.normal(size=(n, count_features(7))).astype(np.float32)
    labels = features[:, 17] > 0.3  # one density shell decides
    names = rng.choice(["apo-ferritin", "ribosome"], n)
    picks = pd.DataFrame({"particle_type": names})
    rescorer = fit_rescorer(
        Candidates(picks, features, labels), CZII, features="map+density", epochs=5, members=2
    )
    assert rescorer.n_candidates == n and len(rescorer.members) == 2
    test = rng.normal(size=(500, count_features(7)))
    scores = rescorer.score(test, np.array(["ribosome"] * 500))
    truth = test[:, 17] > 0.3
    assert ((scores > 0.5) == truth).mean() > 0.95
    with pytest.raises(ValueError, match="both true and false"):
        fit_rescorer(Candidates(picks, features, np.zeros(n, bool)), CZII)


def test_fit_rescorer_seeds_its_networks():
    """The same seed gives the same networks; another seed other ones, as good."""
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2000, count_features(7))).astype(np.float32)
    candidates = Candidates(
        pd.DataFrame({"particle_type": ["ribosome"] * 2000}), features, features[:, 17] > 0.3
    )
    fits = [
        fit_rescorer(candidates, CZII, features="map+density", epochs=3, members=1, seed=s)
        for s in (0, 0, 5)
    ]
    first = [layer.weight for layer in fits[0].members[0]]
    assert first == [layer.weight for layer in fits[1].members[0]]
    assert first != [layer.weight for layer in fits[2].members[0]]
    test = rng.normal(size=(500, count_features(7)))
    for fit in fits:
        scores = fit.score(test, np.array(["ribosome"] * 500))
        assert ((scores > 0.5) == (test[:, 17] > 0.3)).mean() > 0.9


# ---------------------------------------------------------------- fitted in tune, end to end

SHAPE = (32, 64, 64)


def _blob_volume(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Dark blobs, half of them in a bright ring (decoys); return volume, true centres (Å)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*(voxels_to_angstrom(np.arange(n), 10.0) for n in SHAPE), indexing="ij")
    volume = rng.normal(0.0, 0.1, size=SHAPE)
    corners = [(z, y, x) for z in (100, 210) for y in (120, 320, 520) for x in (120, 320, 520)]
    order = rng.permutation(len(corners))
    centres = np.array(corners, float)[order[:12]]
    for i, centre in enumerate(centres):
        d2 = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True))
        volume -= np.exp(-d2 / (2 * 20.0**2))
        if i % 2:  # a decoy: the same dark core in a bright shell at 60-90 Å
            volume += 1.5 * ((d2 > 60.0**2) & (d2 < 90.0**2))
    return volume.astype(np.float32), centres[0::2]


def _blob_project(root: Path, seeds: list[int]) -> Path:
    root.mkdir()
    config = root / "copick.json"
    config.write_text(json.dumps(make_copick_config("t", root / "overlay", root / "st")))
    layout = read_copick_config(config)
    truths = []
    for seed in seeds:
        volume, centres = _blob_volume(seed)
        write_tomogram(layout, f"TS_{seed}", volume, 10.0, n_levels=1)
        truths.append(make_picks(f"TS_{seed}", "apo-ferritin", centres))
    write_picks(pd.concat(truths), config, format="copick", user_id="curation", session_id="0")
    return config


def test_tune_fits_a_rescorer_that_drops_decoys_the_network_cannot_tell_apart(tmp_path):
    fit_on = _blob_project(tmp_path / "fit", [1, 2, 3, 4, 5, 6])
    tune_on = _blob_project(tmp_path / "tune", [7, 8])
    model_dir = save_model(tmp_path / "model", build_model(_card().architecture), _card())
    cpu = PredictConfig(device="cpu", fiducial_max_score=None, invert=False)
    loaded = (DarkBlobDetector(), _card())
    volume, centres = _blob_volume(9)
    tomogram = Tomogram("TS_9", volume, 10.0, Path("TS_9"))
    truth = make_picks("TS_9", "apo-ferritin", centres)
    plain = predict_tomogram(tomogram, *loaded, cpu, thresholds={"apo-ferritin": 0.3})
    before = score_picks(truth, plain).per_class.set_index("particle_type").loc["apo-ferritin"]
    assert before["tp"] == 6 and before["fp"] == 6  # the map sees no difference
    tune_model(
        model_dir,
        tune_on,
        tmp_path / "tuned",
        cpu,
        model=loaded,
        truth_user="curation",
        rescorer_data=[fit_on],
    )
    card = read_model_card(tmp_path / "tuned")
    assert card.rescorer is not None and card.rescorer.features == "map+density+shape"
    assert len(card.rescorer.members) == 9  # the default
    assert str(fit_on) in card.rescorer.training_data[0]
    assert re.search(r"\(\d+ runs?: denoised x\d+\)$", card.rescorer.training_data[0])
    # re-scored candidates are tuned with the probability rule: best F4 (1.0 here) / 17
    assert card.thresholds["apo-ferritin"] == pytest.approx(1.0 / 17)
    picks = predict_tomogram(tomogram, DarkBlobDetector(), card, cpu)
    after = score_picks(truth, picks).per_class.set_index("particle_type").loc["apo-ferritin"]
    assert after["tp"] == 6 and after["fp"] == 0
    # flip TTA is re-scored too (it used to drop the rescorer and keep every decoy)
    tta = predict_tomogram(tomogram, DarkBlobDetector(), card, cpu, tta=True)
    pd.testing.assert_frame_equal(tta[["x", "y", "z"]], picks[["x", "y", "z"]])
    # TTA tables tuned on raw peaks do not fit re-scored values: not used with a rescorer
    stale = card.model_copy(update={"thresholds_tta": {"apo-ferritin": 0.9999}})
    assert choose_thresholds(stale, tta=True) == choose_thresholds(stale) == card.thresholds
    marked = stale.model_copy(update={"tta_rescored": True})
    assert choose_thresholds(marked, tta=True)["apo-ferritin"] == 0.9999
    # tuned with TTA, a rescorer card gets TTA tables of re-scored candidates, marked so
    tta_config = cpu.model_copy(update={"tta": True})
    tune_model(
        tmp_path / "tuned",
        tune_on,
        tmp_path / "tuned_tta",
        tta_config,
        model=(DarkBlobDetector(), card),
        truth_user="curation",
    )
    tta_card = read_model_card(tmp_path / "tuned_tta")
    assert tta_card.tta_rescored and tta_card.thresholds_tta["apo-ferritin"] == pytest.approx(
        1 / 17
    )


def test_tune_fits_as_many_rescorer_networks_as_asked(tmp_path):
    fit_on = _blob_project(tmp_path / "fit", [1, 2])
    tune_on = _blob_project(tmp_path / "tune", [7])
    model_dir = save_model(tmp_path / "model", build_model(_card().architecture), _card())
    cpu = PredictConfig(device="cpu", fiducial_max_score=None, invert=False)
    common = {"model": (DarkBlobDetector(), _card()), "truth_user": "curation"}
    tune_model(
        model_dir,
        tune_on,
        tmp_path / "t3",
        cpu,
        rescorer_data=[fit_on],
        rescorer_members=3,
        **common,
    )
    rescorer = read_model_card(tmp_path / "t3").rescorer
    assert rescorer is not None and len(rescorer.members) == 3


def test_tune_sets_the_rescorer_floor_and_refuses_one_without_a_rescorer(tmp_path):
    tune_on = _blob_project(tmp_path / "tune", [7, 8])
    cpu = PredictConfig(device="cpu", fiducial_max_score=None, invert=False)
    card = _card(rescorer=_inverting_rescorer())
    model_dir = save_model(tmp_path / "model", build_model(card.architecture), card)
    common = {"model": (DarkBlobDetector(), card), "truth_user": "curation"}
    tune_model(model_dir, tune_on, tmp_path / "tuned", cpu, rescorer_floor=0.3, **common)
    tuned = read_model_card(tmp_path / "tuned").rescorer
    assert tuned is not None and tuned.candidate_floor == 0.3
    assert read_model_card(model_dir).rescorer.candidate_floor == 0.1  # input untouched
    plain = {**common, "model": (DarkBlobDetector(), _card())}
    with pytest.raises(InputError, match="no rescorer"):
        tune_model(model_dir, tune_on, tmp_path / "t2", cpu, rescorer_floor=0.3, **plain)
    assert not (tmp_path / "t2").exists()


def test_a_tta_calibration_of_a_rescorer_card_marks_it_and_drops_stale_tta_thresholds():
    half = ScoreCalibration(raw_scores=[0.5, 0.6], probabilities=[0.2, 0.4])
    stale = _card(rescorer=_inverting_rescorer(), thresholds_tta={"apo-ferritin": 0.9})
    assert not stale.uses_tta_tables
    card = _calibrated_card(stale, {"apo-ferritin": half}, tta=True)
    assert card.tta_rescored and card.uses_tta_tables and card.thresholds_tta == {}
    assert choose_calibration(card, tta=True) == {"apo-ferritin": half}
    plain = _calibrated_card(_card(thresholds_tta={"apo-ferritin": 0.9}), {}, tta=True)
    assert not plain.tta_rescored and plain.thresholds_tta == {"apo-ferritin": 0.9}


def test_rescorer_runs_take_the_reconstructions_in_turn_across_projects(tmp_path):
    def project(name: str, runs: list[str], kinds: tuple[str, ...]) -> Path:
        root = tmp_path / name
        root.mkdir()
        config = root / "copick.json"
        config.write_text(json.dumps(make_copick_config(name, root / "overlay", root / "st")))
        for run in runs:
            for kind in kinds:
                write_tomogram(read_copick_config(config), run, np.zeros((4, 8, 8)), 10.0, kind, 1)
        return config

    kinds = ("denoised", "wbp")
    first = project("a", ["TS_1", "TS_2", "TS_3"], kinds)
    second = project("b", ["TS_4", "TS_5"], kinds)
    read_a = _runs_in_turn(first, ("denoised", "wbp", "denoised"), first=0)
    read_b = _runs_in_turn(second, ("denoised", "wbp", "denoised"), first=3)
    assert [t.name for t in read_a + read_b] == ["TS_1", "TS_2", "TS_3", "TS_4", "TS_5"]
    assert [Path(t.source).stem for t in read_a + read_b] == [
        "denoised", "wbp", "denoised", "denoised", "wbp"
    ]  # fmt: skip
    assert [t.tomo_type for t in read_a + read_b] == [Path(t.source).stem for t in read_a + read_b]
    with pytest.raises(InputError, match="ctfdeconvolved"):
        _runs_in_turn(first, ("denoised", "ctfdeconvolved"), first=0)
    # a project of denoised tomograms only, in a tune whose list reads another as wbp
    only_denoised = project("c", ["TS_6", "TS_7"], ("denoised",))
    turns = ("denoised", "denoised", "wbp", "wbp")
    read_c = _runs_in_turn(only_denoised, turns, first=0)
    assert [(t.name, t.tomo_type) for t in read_c] == [("TS_6", "denoised"), ("TS_7", "denoised")]
    assert [t.tomo_type for t in _runs_in_turn(first, turns, first=2)] == ["wbp", "wbp", "denoised"]
    with pytest.raises(InputError, match="wbp"):  # when one of its runs is to be read as wbp
        _runs_in_turn(only_denoised, turns, first=1)


def test_rescorer_training_data_names_each_project_once_with_its_runs_reconstructions():
    sources = [("a.json", f"TS_{i}", "denoised") for i in range(3)]
    sources += [("b.json", "TS_1", "denoised")]
    sources += [("a.json", f"TS_{i}", kind) for i, kind in enumerate(["wbp", "ctf", "wbp"])]
    assert describe_sources(sources) == [
        "a.json (3 runs: denoised x3, wbp x2, ctf x1)",
        "b.json (1 run: denoised x1)",
    ]
    joined = Candidates.concat(
        [
            Candidates(pd.DataFrame({"x": [1.0]}), np.zeros((1, 2), np.float32),
                       np.ones(1, bool), [source])
            for source in sources[:2]
        ]
    )  # fmt: skip
    assert joined.sources == sources[:2] and len(joined.labels) == 2
