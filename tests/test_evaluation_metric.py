import math

import numpy as np
import pandas as pd
import pytest

from cryopick.console import format_score_table
from cryopick.core.errors import InputError
from cryopick.core.particles import default_particle_set
from cryopick.evaluation.metric import (
    ScoreResult,
    fbeta_curve,
    score_picks,
    tune_thresholds,
)
from cryopick.evaluation.thresholds import probability_thresholds, select_picks, tune_and_score
from cryopick.io.picks import make_picks

PARTICLES = default_particle_set().specs  # the CZII six, the default set


def f4(tp, fp, fn, beta=4.0):
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return (1 + beta**2) * p * r / (beta**2 * p + r) if p + r else 0.0


def picks(rows):
    """rows: (experiment, type, x, y, z[, score])."""
    cols = ["experiment", "particle_type", "x", "y", "z", "score"]
    rows = [tuple(r) + (math.nan,) * (6 - len(r)) for r in rows]
    return pd.DataFrame(rows, columns=cols)


def row_of(result: ScoreResult, name: str) -> dict:
    return result.per_class.set_index("particle_type").loc[name].to_dict()


def test_pick_at_exactly_half_radius_counts_and_just_beyond_does_not():
    truth = picks([("A", "apo-ferritin", 1000.0, 1000.0, 1000.0)])
    at = score_picks(truth, picks([("A", "apo-ferritin", 1030.0, 1000.0, 1000.0)]))
    assert row_of(at, "apo-ferritin") == {
        "tp": 1,
        "fp": 0,
        "fn": 0,
        "precision": 1.0,
        "recall": 1.0,
        "fbeta": 1.0,
        "weight": 1.0,
    }
    assert at.score == pytest.approx(1.0 / 7.0)
    # 3-4-5 triangle: (18, 24) is 30 Å away too
    diag = score_picks(truth, picks([("A", "apo-ferritin", 1000.0, 1018.0, 1024.0)]))
    assert row_of(diag, "apo-ferritin")["tp"] == 1
    beyond = score_picks(truth, picks([("A", "apo-ferritin", 1030.001, 1000.0, 1000.0)]))
    r = row_of(beyond, "apo-ferritin")
    assert (r["tp"], r["fp"], r["fn"], r["fbeta"]) == (0, 1, 1, 0.0)
    assert beyond.score == 0.0


def test_two_picks_on_one_truth_are_one_tp_and_one_fp():
    truth = picks([("A", "ribosome", 0.0, 0.0, 0.0), ("A", "ribosome", 1000.0, 0.0, 0.0)])
    sub = picks([("A", "ribosome", 10.0, 0.0, 0.0), ("A", "ribosome", 0.0, 20.0, 0.0)])
    r = row_of(score_picks(truth, sub), "ribosome")
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 1)
    assert r["precision"] == 0.5 and r["recall"] == 0.5
    assert r["fbeta"] == pytest.approx(17 * 0.25 / (16 * 0.5 + 0.5))


def test_wrong_type_does_not_match():
    truth = picks([("A", "thyroglobulin", 500.0, 500.0, 500.0)])
    r = score_picks(truth, picks([("A", "ribosome", 500.0, 500.0, 500.0)])).per_class
    r = r.set_index("particle_type")
    assert r.loc["thyroglobulin", ["tp", "fn"]].tolist() == [0, 1]
    assert r.loc["ribosome", ["tp", "fp", "fn"]].tolist() == [0, 1, 0]


def test_hand_computed_weighted_score_over_two_experiments():
    truth = picks(
        [
            ("A", "apo-ferritin", 0, 0, 0),
            ("A", "apo-ferritin", 500, 0, 0),
            ("B", "apo-ferritin", 0, 0, 0),
            ("A", "beta-galactosidase", 0, 1000, 0),
            ("B", "beta-galactosidase", 0, 1000, 0),
            ("B", "thyroglobulin", 3000, 3000, 3000),
            ("A", "beta-amylase", 2000, 0, 0),
        ]
    )
    sub = picks(
        [
            ("A", "apo-ferritin", 10, 10, 10),  # TP
            ("A", "apo-ferritin", 560, 0, 0),  # 60 Å > 30 Å: FP
            ("B", "apo-ferritin", 0, 0, 29),  # TP
            ("A", "beta-galactosidase", 0, 1044, 0),  # 44 Å <= 45 Å: TP
            ("B", "beta-galactosidase", 0, 1046, 0),  # 46 Å > 45 Å: FP
            ("B", "beta-galactosidase", 4000, 0, 0),  # FP
            ("A", "thyroglobulin", 3000, 3000, 3000),  # A has no thyroglobulin: FP
            ("C", "ribosome", 0, 0, 0),  # experiment C has no truth: ignored
            ("A", "beta-amylase", 2000, 0, 0),  # TP, weight 0
        ]
    )
    result = score_picks(truth, sub)
    expected = {
        "apo-ferritin": (2, 1, 1),
        "beta-galactosidase": (1, 2, 1),
        "thyroglobulin": (0, 1, 1),
        "ribosome": (0, 0, 0),
        "beta-amylase": (1, 0, 0),
        "virus-like-particle": (0, 0, 0),
    }
    for name, (tp, fp, fn) in expected.items():
        r = row_of(result, name)
        assert (r["tp"], r["fp"], r["fn"]) == (tp, fp, fn), name
        assert r["fbeta"] == pytest.approx(f4(tp, fp, fn)), name
    # apo: P=2/3, R=2/3 -> F=2/3; b-gal: P=1/3, R=1/2 -> F = 17*(1/6)/(16/3+1/2)
    f_apo, f_bgal = 2 / 3, (17 / 6) / (16 / 3 + 1 / 2)
    assert result.score == pytest.approx((1 * f_apo + 2 * f_bgal) / 7)
    assert row_of(result, "beta-amylase")["fbeta"] == 1.0  # but weight 0


def test_type_without_truth_contributes_zero_and_counts_in_denominator():
    truth = picks([("A", "virus-like-particle", 0, 0, 0)])
    sub = picks([("A", "virus-like-particle", 0, 0, 0)])
    assert score_picks(truth, sub).score == pytest.approx(1 / 7)


def test_only_beta_amylase_perfect_scores_zero():
    truth = picks([("A", "beta-amylase", 0, 0, 0)])
    result = score_picks(truth, truth)
    assert row_of(result, "beta-amylase")["fbeta"] == 1.0
    assert result.score == 0.0


def test_aliases_are_canonicalised_and_unknown_types_rejected():
    truth = picks([("A", "ferritin-complex", 0, 0, 0)])
    sub = picks([("A", "apo_ferritin", 5, 0, 0)])
    assert row_of(score_picks(truth, sub), "apo-ferritin")["tp"] == 1
    with pytest.raises(InputError, match="known types: apo-ferritin"):
        score_picks(truth, picks([("A", "proteasome", 0, 0, 0)]))


def test_one_pick_near_two_truth_points_is_one_match():
    # one-to-one matching: one pick finds at most one truth point (the challenge's code
    # counted both, making FP = picks - TP negative and precision above 1)
    truth = picks([("A", "ribosome", 0, 0, 0), ("A", "ribosome", 100, 0, 0)])
    r = row_of(score_picks(truth, picks([("A", "ribosome", 50, 0, 0)])), "ribosome")
    assert (r["tp"], r["fp"], r["fn"]) == (1, 0, 1)


def _brute_force_score(truth: pd.DataFrame, sub: pd.DataFrame, beta: float = 4.0) -> dict:
    """Independent re-implementation: explicit distance matrices, no KD-tree."""
    exps = set(truth["experiment"])
    total, counts = 0.0, {}
    for p in PARTICLES:
        tp = fp = fn = 0
        for e in exps:
            t = truth[(truth.experiment == e) & (truth.particle_type == p.name)]
            s = sub[(sub.experiment == e) & (sub.particle_type == p.name)]
            t_xyz, s_xyz = t[["x", "y", "z"]].to_numpy(), s[["x", "y", "z"]].to_numpy()
            if len(t_xyz) and len(s_xyz):
                d = np.sqrt(((t_xyz[:, None, :] - s_xyz[None, :, :]) ** 2).sum(-1))
                found = int((d <= 0.5 * p.radius_A).any(axis=1).sum())
            else:
                found = 0
            tp, fp, fn = tp + found, fp + len(s_xyz) - found, fn + len(t_xyz) - found
        counts[p.name] = (tp, fp, fn)
        total += p.weight * f4(tp, fp, fn, beta)
    return {"score": total / 7.0, "counts": counts}


def _random_tables(seed: int, n_truth: int = 120, n_picks: int = 150):
    rng = np.random.default_rng(seed)
    names = [p.name for p in PARTICLES]
    t_type = rng.choice(names, n_truth)
    t_exp = rng.choice(["a", "b", "c"], n_truth)
    t_xyz = rng.uniform(0, 1500, (n_truth, 3))
    truth = pd.DataFrame({"experiment": t_exp, "particle_type": t_type})
    truth[["x", "y", "z"]] = t_xyz
    src = rng.integers(0, n_truth, n_picks)
    jitter = rng.normal(scale=40.0, size=(n_picks, 3))
    sub = pd.DataFrame(
        {
            "experiment": np.where(rng.uniform(size=n_picks) < 0.1, "d", t_exp[src]),
            "particle_type": np.where(rng.uniform(size=n_picks) < 0.1, "ribosome", t_type[src]),
            "score": np.round(rng.uniform(size=n_picks), 2),  # rounded: ties happen
        }
    )
    sub[["x", "y", "z"]] = t_xyz[src] + jitter
    return truth, sub


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_picks_matches_brute_force(seed):
    truth, sub = _random_tables(seed)
    result = score_picks(truth, sub)
    expected = _brute_force_score(truth, sub)
    assert result.score == pytest.approx(expected["score"], abs=1e-12)
    for name, counts in expected["counts"].items():
        r = row_of(result, name)
        assert (r["tp"], r["fp"], r["fn"]) == counts
    assert 0.0 < result.score < 1.0


def test_fbeta_curve_matches_scoring_thresholded_picks():
    truth, sub = _random_tables(3)
    for name in ("ribosome", "thyroglobulin"):
        curve = fbeta_curve(truth, sub, name)
        assert np.all(np.diff(curve.thresholds) < 0)
        for i in (0, len(curve.thresholds) // 2, len(curve.thresholds) - 1):
            kept = sub[sub["score"] >= curve.thresholds[i]]
            r = row_of(score_picks(truth, kept), name)
            assert curve.precision[i] == pytest.approx(r["precision"])
            assert curve.recall[i] == pytest.approx(r["recall"])
            assert curve.fbeta[i] == pytest.approx(r["fbeta"])


def _hand_case(weakest_score: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two ribosomes; candidates TP 0.9, FP 0.8, TP 0.7, FP ``weakest_score``."""
    truth = picks([("A", "ribosome", 0, 0, 0), ("A", "ribosome", 1000, 0, 0)])
    sub = picks(
        [
            ("A", "ribosome", 0, 0, 10, 0.9),  # TP
            ("A", "ribosome", 3000, 0, 0, 0.8),  # FP
            ("A", "ribosome", 1000, 10, 0, 0.7),  # TP
            ("A", "ribosome", 5000, 0, 0, weakest_score),  # FP
            ("B", "ribosome", 0, 0, 0, 0.99),  # experiment without truth: ignored
            ("A", "apo-ferritin", 0, 0, 0, 0.3),  # no apo-ferritin truth: keep nothing
        ]
    )
    return truth, sub


def test_tune_thresholds_hand_case():
    truth, sub = _hand_case(0.6)
    curve = fbeta_curve(truth, sub, "ribosome")
    np.testing.assert_allclose(curve.thresholds, [0.9, 0.8, 0.7, 0.6])
    np.testing.assert_allclose(curve.recall, [0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(curve.precision, [1.0, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(curve.fbeta, [f4(1, 0, 1), f4(1, 1, 1), f4(2, 1, 0), f4(2, 2, 0)])
    thresholds = tune_thresholds(truth, sub)
    # keep down to 0.7; the threshold lies mid-way (in log-odds) to the next score, 0.6
    midway = 1.0 / (1.0 + np.exp(-0.5 * (np.log(0.7 / 0.3) + np.log(0.6 / 0.4))))
    assert thresholds["ribosome"] == pytest.approx(midway) and 0.6 < midway < 0.7
    # F4 at 0.6 is 0.027 below the best: a tolerance of 0.03 takes the lower threshold
    assert f4(2, 1, 0) - f4(2, 2, 0) == pytest.approx(0.0270, abs=1e-4)
    assert tune_thresholds(truth, sub, tolerance=0.03)["ribosome"] == 0.6  # none below
    assert tune_thresholds(truth, sub, tolerance=0.0)["ribosome"] == pytest.approx(midway)
    assert thresholds["apo-ferritin"] > 0.3  # best F is 0: keep nothing
    assert thresholds["virus-like-particle"] == 1.0  # no candidates
    assert set(thresholds) == {p.name for p in PARTICLES}


def test_probability_rule_puts_the_threshold_at_best_fbeta_over_one_plus_beta_squared():
    truth, sub = _hand_case(0.1)
    # best F4 on these candidates is at 0.7 (2 TP, 1 FP); for probabilities the expected-F4
    # threshold is F*/17 = 0.057, which here also keeps the 0.1 candidate
    for beta in (4.0, 1.0):
        best = max(f4(2, 1, 0, beta), f4(1, 0, 1, beta), f4(2, 2, 0, beta))
        found = probability_thresholds(truth, sub, beta=beta)
        assert found["ribosome"] == pytest.approx(best / (1 + beta**2))
    found = probability_thresholds(truth, sub)
    assert found["ribosome"] == pytest.approx(f4(2, 1, 0) / 17) and found["ribosome"] < 0.1
    assert found["apo-ferritin"] > 0.3  # best F is 0: keep nothing, as tune_thresholds
    assert found["virus-like-particle"] == 1.0  # no candidates
    tuned = tune_and_score(truth, sub, rule="probability")
    assert tuned.thresholds == found
    ribosome = next(m for m in tuned.per_class if m.particle_type == "ribosome")
    assert (ribosome.tp, ribosome.fp, ribosome.fn) == (2, 2, 0)
    assert tune_and_score(truth, sub).thresholds["ribosome"] > 0.1  # best-fbeta: not the 0.1


def test_tuned_threshold_sits_mid_way_in_a_wide_gap():
    # re-scored candidates: true ones near 1, false ones near 0; the weakest true one of
    # the tuning runs (0.98) is no threshold to carry to new runs
    truth = picks([("A", "ribosome", 0, 0, 0), ("A", "ribosome", 1000, 0, 0)])
    sub = picks(
        [
            ("A", "ribosome", 0, 0, 10, 0.99),
            ("A", "ribosome", 1000, 10, 0, 0.98),
            ("A", "ribosome", 3000, 0, 0, 0.01),
        ]
    )
    threshold = tune_thresholds(truth, sub, tolerance=0.0)["ribosome"]
    expected = 1.0 / (1.0 + np.exp(-0.5 * (np.log(0.98 / 0.02) + np.log(0.01 / 0.99))))
    assert threshold == pytest.approx(expected) and 0.3 < threshold < 0.5


def test_tied_scores_are_kept_together():
    truth = picks([("A", "ribosome", 0, 0, 0)])
    sub = picks([("A", "ribosome", 0, 0, 0, 0.5), ("A", "ribosome", 900, 0, 0, 0.5)])
    curve = fbeta_curve(truth, sub, "ribosome")
    assert curve.thresholds.tolist() == [0.5]
    assert curve.precision.tolist() == [0.5]


def test_fbeta_curve_rejects_unscored_picks():
    truth = picks([("A", "ribosome", 0, 0, 0)])
    with pytest.raises(ValueError, match="scored"):
        fbeta_curve(truth, truth, "ribosome")


def test_to_dict_and_table_text():
    truth = picks([("A", "ribosome", 0, 0, 0), ("A", "ribosome", 1000, 0, 0)])
    result = score_picks(truth, picks([("A", "ribosome", 0, 0, 0)]))
    d = result.to_dict()
    assert d["per_class"]["ribosome"] == {
        "tp": 1,
        "fp": 0,
        "fn": 1,
        "precision": 1.0,
        "recall": 0.5,
        "fbeta": pytest.approx(f4(1, 0, 1)),
        "weight": 1.0,
    }
    assert d["score"] == pytest.approx(f4(1, 0, 1) / 7)
    text = format_score_table(result)
    line = next(x for x in text.splitlines() if "ribosome" in x)
    assert [c.strip() for c in line.strip("│ ").split("│")] == [
        "ribosome",
        "1",
        "0",
        "1",
        "1.000",
        "0.500",
        f"{f4(1, 0, 1):.3f}",
        "1",
    ]
    assert f"score: {d['score']:.4f}" in text


def test_make_picks_input_is_zyx():
    df = make_picks("A", "ribosome", [[1.0, 2.0, 3.0]])
    truth = picks([("A", "ribosome", 3.0, 2.0, 1.0)])
    assert df[["x", "y", "z"]].to_numpy().tolist() == [[3.0, 2.0, 1.0]]
    assert row_of(score_picks(truth, df), "ribosome")["tp"] == 1


def test_tune_and_score_scores_the_picks_the_tuned_thresholds_keep():
    rng = np.random.default_rng(4)
    truth = make_picks("A", "ribosome", rng.uniform(0, 3000, (6, 3)))
    near = truth[["z", "y", "x"]].to_numpy() + 10.0
    candidates = pd.concat(
        [
            make_picks("A", "ribosome", near, score=np.linspace(0.5, 0.9, 6)),
            make_picks("A", "ribosome", rng.uniform(0, 3000, (4, 3)), score=[0.95, 0.2, 0.1, 0.3]),
            make_picks("A", "thyroglobulin", rng.uniform(0, 3000, (2, 3)), score=[0.6, 0.7]),
        ],
        ignore_index=True,
    )
    tuned = tune_and_score(truth, candidates)
    assert tuned.thresholds == tune_thresholds(truth, candidates)
    kept = select_picks(candidates, tuned.thresholds)
    assert (kept["score"] >= kept["particle_type"].map(tuned.thresholds)).all()
    expected = score_picks(truth, kept)
    assert tuned.score == expected.score
    ribosome = next(m for m in tuned.per_class if m.particle_type == "ribosome")
    assert (ribosome.tp, ribosome.fn) == (6, 0) and ribosome.fbeta == row_of(expected, "ribosome")[
        "fbeta"
    ]
    assert [m.particle_type for m in tuned.per_class] == [p.name for p in PARTICLES]
    assert select_picks(candidates, {"ribosome": 0.0}).particle_type.eq("ribosome").all()
