"""Would the rescorer gain from seeing more of a candidate's surroundings?

The bundled rescorer reads the map within half a class radius of a candidate and the
tomogram's density in shells up to 1.5 radii. Most of the F4 still lost are
beta-galactosidase and thyroglobulin candidates on no particle of any type or on the
lysate's large complexes (``held_out_misses.py``). This measures whether wider context
tells them apart from true candidates, beyond the rescorer's own score. For every
candidate of the two types (the model's candidates, re-scored as ``predict`` scores them)
it computes groups of context features:

* ``wide_shells``: mean density in shells of 1.5-2, 2-2.5 and 2.5-3 class radii, and the
  spread over all three (a large complex continues past the radius, a lone particle does
  not);
* ``wide_map``: every class's highest probability within 1.5 radii (a larger particle or
  another particle next to the candidate);
* ``shape``: the three eigenvalues of the second moments of the particle-signed density
  within one radius, relative to their sum (elongated complexes against the two types);
* ``position``: distance from the slab's middle (median z of the confident candidates, in
  robust spreads) and from the nearest x/y border in radii;
* ``crowding``: confident candidates of any type within 2 radii.

Then, per group, a leave-one-run-out logistic regression on the logit of the model's score
plus that group's features re-scores the two types (fitted, and thresholds tuned, on the
other runs), against the same fit on the score alone; and the ROC AUC of each fit's held-out
scores for true candidates against the rest.

    python benchmarks/rescorer_context.py --project sim_test/copick_config.json \
        sim_test2/copick_config.json sim_ext/copick_config.json [--candidates cands.csv]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from _projects import add_held_out_arguments, held_out_projects, read_truth, rename_runs
from scipy.spatial import cKDTree
from template_ceiling import fit_logistic, label_sites, logit, roc_auc

from cryopick.core.coords import angstrom_to_voxels, input_to_strided_vox
from cryopick.core.particles import resolve_particle_set
from cryopick.evaluation.metric import score_picks, tune_thresholds
from cryopick.inference.picking import PickSettings, pick_particles
from cryopick.inference.pipeline import LoadedModel, PredictConfig, compute_probability_map
from cryopick.inference.rescoring import _ball_offsets, _gather, rescore_picks
from cryopick.io.tomograms import read_tomograms
from cryopick.model import load_model
from cryopick.model.bundled import bundled_model_dir

TYPES = ("beta-galactosidase", "thyroglobulin")
WIDE_EDGES = (1.5, 2.0, 2.5, 3.0)
CONFIDENT_RAW = 0.5
GROUPS = {
    "wide_shells": ["shell_1.5", "shell_2.0", "shell_2.5", "wide_spread"],
    "wide_map": [f"wide_max_{c}" for c in range(1, 7)],
    "shape": ["moment_0", "moment_1", "moment_2"],
    "position": ["z_from_middle", "border_radii"],
    "crowding": ["n_confident_near"],
}


def context_features(
    found: pd.DataFrame, probs: np.ndarray, volume: np.ndarray, spacing_A: float, stride: int
) -> pd.DataFrame:
    """The context feature columns (:data:`GROUPS`) for every candidate of :data:`TYPES`."""
    ps = resolve_particle_set(None)
    coords = found[["z", "y", "x"]].to_numpy(np.float64)
    confident = coords[found["raw"].to_numpy() >= CONFIDENT_RAW]
    z_mid = np.median(confident[:, 0]) if len(confident) else volume.shape[0] * spacing_A / 2
    z_spread = np.subtract(*np.percentile(confident[:, 0], [75, 25])) if len(confident) > 3 else 1
    tree = cKDTree(confident if len(confident) else np.zeros((1, 3)) + 1e12)
    extent_A = np.asarray(volume.shape[1:]) * spacing_A
    out = found[found["particle_type"].isin(TYPES)].copy()
    sign = _particle_sign(volume, found, spacing_A)
    for name, index in out.groupby("particle_type").indices.items():
        rows = out.index[index]
        radius_A = ps.radius_A(str(name))
        radius_vox = radius_A / spacing_A
        centres_vox = angstrom_to_voxels(coords[rows], spacing_A)
        centres = np.rint(centres_vox).astype(np.int64)
        offsets, shell = _ball_offsets(radius_vox, WIDE_EDGES)
        values = _gather(volume, centres, offsets)  # only offsets of the wide shells
        for s, edge in enumerate(WIDE_EDGES[:-1]):
            out.loc[rows, f"shell_{edge}"] = values[:, shell == s].mean(axis=1)
        out.loc[rows, "wide_spread"] = values.std(axis=1)
        map_centres = np.rint(input_to_strided_vox(centres_vox, stride)).astype(np.int64)
        map_offsets, _ = _ball_offsets(max(1.5 * radius_vox / stride, 1.0), (0.0, 1.0))
        wide_max = _gather(probs[1:], map_centres, map_offsets).max(axis=2).T
        for c in range(wide_max.shape[1]):
            out.loc[rows, f"wide_max_{c + 1}"] = wide_max[:, c]
        out.loc[rows, ["moment_0", "moment_1", "moment_2"]] = _moments(
            volume, centres, radius_vox, sign
        )
        z = coords[rows, 0]
        out.loc[rows, "z_from_middle"] = np.abs(z - z_mid) / max(z_spread, 1e-6)
        yx = coords[rows, 1:]
        out.loc[rows, "border_radii"] = np.minimum(yx, extent_A - yx).min(axis=1) / radius_A
        near = tree.query_ball_point(coords[rows], 2 * radius_A)
        out.loc[rows, "n_confident_near"] = [max(len(n) - 1, 0) for n in near]
    return out


def _particle_sign(volume: np.ndarray, found: pd.DataFrame, spacing_A: float) -> float:
    """+1 if confident candidates sit on density above the volume's mean, else -1."""
    best = found[found["raw"] >= CONFIDENT_RAW]
    if len(best) == 0:
        return 1.0
    centres = np.rint(angstrom_to_voxels(best[["z", "y", "x"]].to_numpy(), spacing_A))
    values = _gather(volume, centres.astype(np.int64), np.zeros((1, 3), np.int64))
    return 1.0 if float(values.mean()) >= float(volume.mean()) else -1.0


def _moments(volume: np.ndarray, centres: np.ndarray, radius_vox: float, sign: float) -> np.ndarray:
    """Sorted eigenvalues of the density's second moments within the radius, summing to 1."""
    offsets, _ = _ball_offsets(radius_vox, (0.0, 1.0))
    weights = np.clip(sign * _gather(volume, centres, offsets), 0, None) + 1e-6
    weights /= weights.sum(axis=1, keepdims=True)
    mean = weights @ offsets
    centred = offsets[None, :, :] - mean[:, None, :]
    cov = np.einsum("nk,nki,nkj->nij", weights, centred, centred)
    eig = np.linalg.eigvalsh(cov)
    return eig / eig.sum(axis=1, keepdims=True)


def candidates_of(model: LoadedModel, project: Path, tomo_type: str) -> pd.DataFrame:
    """Every re-scored candidate of ``project``'s runs with its context features."""
    network, card = model
    assert card.rescorer is not None
    settings = PickSettings.for_candidates(
        card.target, card.rescorer.candidate_floor, card.particle_set
    )
    frames = []
    for tomo in read_tomograms(project, tomo_type=tomo_type):
        prob_map, volume, _, spacing_A = compute_probability_map(
            tomo, network, card, PredictConfig()
        )
        grid = {"spacing_A": spacing_A, "stride": prob_map.stride}
        found = pick_particles(prob_map.probs, settings, experiment=tomo.name, **grid)
        found = rescore_picks(
            found.assign(raw=found["score"]), card.rescorer, prob_map.probs, volume, **grid
        )
        frames.append(
            context_features(found.reset_index(drop=True), prob_map.probs, volume, **grid)
        )
        print(f"{project.parent.name}/{tomo.name}: {len(frames[-1])} candidates", flush=True)
    return rename_runs(pd.concat(frames, ignore_index=True), project)


def design(frame: pd.DataFrame, columns: list[str], mean: pd.Series, std: pd.Series) -> np.ndarray:
    """Intercept, the score's logit, and the standardised context columns."""
    parts = [np.ones(len(frame)), logit(frame["score"].to_numpy())]
    parts += [((frame[c] - mean[c]) / std[c]).to_numpy(np.float64) for c in columns]
    return np.stack(parts, axis=1)


def rescore(train: pd.DataFrame, test: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``test`` with the two types' scores from a logistic fit on ``train``."""
    out = test.copy()
    for t in TYPES:
        fit_on = train[train["particle_type"] == t]
        mean, std = fit_on[columns].mean(), fit_on[columns].std().replace(0, 1)
        weights = fit_logistic(design(fit_on, columns, mean, std), fit_on["true"].to_numpy(float))
        rows = (test["particle_type"] == t).to_numpy()
        out.loc[rows, "score"] = 1 / (1 + np.exp(-design(test[rows], columns, mean, std) @ weights))
    return out


def leave_one_run_out(candidates: pd.DataFrame, truth: pd.DataFrame, columns: list[str]) -> dict:
    """Held-out F4 per type and AUCs when each run is re-scored and thresholded from the
    others. A run's thresholds are tuned on leave-one-run-out scores of other runs: every
    ``len(runs) // 6``-th run (all runs up to 11), so that 18 runs take 6 inner fits, not 17.
    """
    runs = sorted(candidates["experiment"].unique())
    kept, scored_all = [], []
    for run in runs:
        train = candidates[candidates["experiment"] != run]
        inner = [
            rescore(train[train["experiment"] != r], train[train["experiment"] == r], columns)
            for r in runs[:: max(len(runs) // 6, 1)]
            if r != run
        ]
        inner_runs = pd.concat(inner)["experiment"].unique()
        thresholds = tune_thresholds(truth[truth["experiment"].isin(inner_runs)], pd.concat(inner))
        scored = rescore(train, candidates[candidates["experiment"] == run], columns)
        scored_all.append(scored)
        kept.append(scored[scored["score"] >= scored["particle_type"].map(thresholds)])
    per_class = score_picks(truth, pd.concat(kept)).per_class.set_index("particle_type")
    scored = pd.concat(scored_all)
    out = {}
    for t in TYPES:
        of_type = scored[scored["particle_type"] == t]
        out[t] = {
            "f4": float(per_class.loc[t, "fbeta"]),
            "auc": roc_auc(of_type["true"].to_numpy(), of_type["score"].to_numpy()),
            "tp_fp_fn": [int(per_class.loc[t, k]) for k in ("tp", "fp", "fn")],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_held_out_arguments(parser, "/tmp/cryopick_rescorer_context")
    parser.add_argument("--candidates", type=Path, help="cache of the candidates (CSV)")
    args = parser.parse_args()
    projects = held_out_projects(args)
    truth = read_truth(projects)
    if args.candidates is not None and args.candidates.exists():
        candidates = pd.read_csv(args.candidates)
    else:
        model = load_model(args.model or bundled_model_dir())
        candidates = pd.concat([candidates_of(model, p, args.tomo_type) for p in projects])
        if args.candidates is not None:
            candidates.to_csv(args.candidates, index=False)
    candidates = label_sites(candidates.reset_index(drop=True), truth)
    arms = {"score only": [], **GROUPS, "all": [c for g in GROUPS.values() for c in g]}
    results = {}
    for arm, columns in arms.items():
        results[arm] = leave_one_run_out(candidates, truth, columns)
        cells = [
            f"{t[:4]} F4 {r['f4']:.3f} AUC {r['auc']:.3f} {r['tp_fp_fn']}"
            for t, r in results[arm].items()
        ]
        print(f"{arm:12s} " + " | ".join(cells), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "rescorer_context.json"
    path.write_text(json.dumps({"runs": candidates["experiment"].nunique(), **results}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
