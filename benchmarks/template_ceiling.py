"""Can a matched filter tell beta-galactosidase from thyroglobulin where the network cannot?

The bundled model confuses the two (about 40 % of its false beta-galactosidase picks sit on
thyroglobulins, ``held_out_misses.py``). This measures the ceiling the simulated tomograms
allow: at every held-out candidate of the two types (the model's candidates, re-scored as
``predict`` scores them), the best normalised cross-correlation over orientations and small
shifts with each type's density map, the very maps the simulator placed, blurred and cut by
the missing wedge as the ``denoised`` tomograms are. Reported:

* how well the difference of the two correlations separates candidates on true
  beta-galactosidases from candidates on true thyroglobulins (ROC AUC), and how well the
  own type's correlation separates true candidates from candidates on no particle at all,
  each against the model's own score on the same candidates;
* held-out weighted F4 when a logistic regression on the model's score plus the two
  correlations re-scores the candidates of the two types, against the score alone, both
  leave-one-run-out (fitted, and thresholds tuned, on the other runs);
* what a perfect filter could gain: the same leave-one-run-out F4 after removing, knowing
  the truth, the candidates on the other type (the confusion), or those on no particle.

Using the simulator's own maps makes this an upper bound ("inverse crime"): on real data the
maps are only models of the proteins. ``--bin 2`` measures at 20 Å (the network's first
level), ``--maps alternate`` uses only the second beta-galactosidase model.

    python benchmarks/template_ceiling.py --project sim_test/copick_config.json \
        sim_test2/copick_config.json [--candidates cands.csv] [--n-rotations 2000] [--bin 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _projects import add_held_out_arguments, held_out_projects, read_truth
from held_out_misses import rescore_candidates
from scipy import ndimage as ndi
from scipy.optimize import minimize
from scipy.spatial.transform import Rotation
from scipy.stats import rankdata

from cryopick.core.particles import resolve_particle_set
from cryopick.evaluation.metric import score_picks, tune_thresholds
from cryopick.io.tomograms import read_tomogram
from cryopick.model import load_model
from cryopick.model.bundled import bundled_model_dir
from cryopick.simulate.templates import load_templates, rotate_template, rotation_xyz_to_zyx
from cryopick.training.rescorer import label_candidates

TYPES = ("beta-galactosidase", "thyroglobulin")
MAPS = {
    "both": {TYPES[0]: ["target", "alternate"], TYPES[1]: ["target"]},
    "alternate": {TYPES[0]: ["alternate"], TYPES[1]: ["target"]},
}
"""Library models per type (the thyroglobulin alternate is the same map in a smaller box)."""

BOX = 33
MASK_RADIUS_VOX = 15
DENOISE_SIGMA_VOX = 1.0
TILT_MAX_DEG = 45.0


def sphere_mask(bin_factor: int) -> np.ndarray:
    """Voxels of the box inside the mask radius, every ``bin_factor``-th along each axis."""
    grid = np.mgrid[:BOX, :BOX, :BOX] - BOX // 2
    inside = (grid**2).sum(axis=0) <= MASK_RADIUS_VOX**2
    return np.asarray(inside & np.all(grid % bin_factor == 0, axis=0))


def fit_box(density: np.ndarray) -> np.ndarray:
    """Crop or zero-pad a centred cube to the box."""
    n = density.shape[0]
    if n >= BOX:
        s = (n - BOX) // 2
        return density[s : s + BOX, s : s + BOX, s : s + BOX]
    p = (BOX - n) // 2
    return np.pad(density, [(p, BOX - n - p)] * 3)


def normalise_rows(rows: np.ndarray) -> torch.Tensor:
    """Zero mean, unit norm per row (so a dot product is a correlation coefficient)."""
    rows = rows - rows.mean(axis=1, keepdims=True)
    return torch.from_numpy(rows / np.linalg.norm(rows, axis=1, keepdims=True))


def template_bank(
    keys: list[str], n_rotations: int, mask: np.ndarray, blur_vox: float
) -> torch.Tensor:
    """Every map in every orientation, as the denoised tomogram shows it: (n, mask voxels).

    Rotated, Gaussian-blurred, the missing wedge of a ±45° tilt about Y removed, contrast
    negated (protein is dark in the simulated tomograms), masked and normalised.
    """
    k = [np.fft.fftfreq(BOX)[:, None, None], np.fft.fftfreq(BOX)[None, :, None]]
    k.append(np.fft.fftfreq(BOX)[None, None, :])
    wedge = np.abs(k[0]) <= np.abs(k[2]) * np.tan(np.radians(TILT_MAX_DEG))
    wedge = wedge | ((k[0] == 0) & (k[2] == 0))
    transfer = wedge * np.exp(-2 * (np.pi * blur_vox) ** 2 * (k[0] ** 2 + k[1] ** 2 + k[2] ** 2))
    library = load_templates()
    rotations = Rotation.random(n_rotations, random_state=7).as_matrix()
    rows = []
    for key in keys:
        for rotation in rotations:
            rotated = fit_box(rotate_template(library[key].density, rotation_xyz_to_zyx(rotation)))
            seen = np.real(np.fft.ifftn(np.fft.fftn(rotated) * transfer))
            rows.append(-seen[mask])
    return normalise_rows(np.asarray(rows, np.float32))


def match_run(
    volume: np.ndarray, centres_vox: np.ndarray, banks: dict, mask: np.ndarray, bin_factor: int
) -> np.ndarray:
    """Best correlation per candidate and bank, over orientations and shifts of ±1 binned voxel."""
    half = BOX // 2 + bin_factor
    padded = np.pad(volume, half, mode="reflect")
    steps = (-bin_factor, 0, bin_factor)
    shifts = np.array([(a, b, c) for a in steps for b in steps for c in steps])
    out = np.zeros((len(centres_vox), len(banks)), np.float32)
    for i, centre in enumerate(np.rint(centres_vox).astype(int) + half):
        crops = []
        for shift in shifts:
            lo = centre + shift - BOX // 2
            cube = padded[lo[0] : lo[0] + BOX, lo[1] : lo[1] + BOX, lo[2] : lo[2] + BOX]
            crops.append(cube[mask])
        x = normalise_rows(np.asarray(crops, np.float32))
        out[i] = [float((x @ bank.T).max()) for bank in banks.values()]
    return out


def add_correlations(
    candidates: pd.DataFrame, projects: list[Path], args: argparse.Namespace
) -> pd.DataFrame:
    """Columns ``cc_<type>``: the best correlation with each type's maps (NaN for other types)."""
    mask = sphere_mask(args.bin)
    blur = DENOISE_SIGMA_VOX if args.bin == 1 else 1.4
    banks = {
        t: template_bank([f"{m}/{t}" for m in MAPS[args.maps][t]], args.n_rotations, mask, blur)
        for t in TYPES
    }
    by_folder = {p.parent.name: p for p in projects}
    columns = np.full((len(candidates), len(TYPES)), np.nan, np.float32)
    chosen = candidates["particle_type"].isin(TYPES).to_numpy()
    for experiment, index in candidates[chosen].groupby("experiment").indices.items():
        folder, run = str(experiment).split("/")
        tomo = read_tomogram(by_folder[folder], args.tomo_type, run=run)
        volume = np.asarray(tomo.data, np.float32)
        if args.bin > 1:
            volume = ndi.gaussian_filter(volume, 1.0)
        rows = np.flatnonzero(chosen)[index]
        centres = candidates.iloc[rows][["z", "y", "x"]].to_numpy() / tomo.spacing_A
        start = time.perf_counter()
        columns[rows] = match_run(volume, centres, banks, mask, args.bin)
        print(f"{experiment}: {len(rows)} candidates, {time.perf_counter() - start:.1f} s")
    return candidates.assign(**{f"cc_{t}": columns[:, i] for i, t in enumerate(TYPES)})


def label_sites(candidates: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Columns ``true`` (a particle of its type within the match radius), ``on_<type>`` for
    every type of the set (such a particle within that type's match radius) and ``on_any``."""
    ps = resolve_particle_set(None)
    names = [spec.name for spec in ps.specs]
    flags = {c: np.zeros(len(candidates), bool) for c in ("true", *names)}
    for run, index in candidates.groupby("experiment").indices.items():
        in_run, run_truth = candidates.iloc[index], truth[truth["experiment"] == run]
        flags["true"][index] = label_candidates(in_run, run_truth, ps)
        for name in names:
            flags[name][index] = label_candidates(in_run.assign(particle_type=name), run_truth, ps)
    on_any = np.any([flags[name] for name in names], axis=0)
    columns = {f"on_{name}": flags[name] for name in names}
    return candidates.assign(true=flags["true"], on_any=on_any, **columns)


def roc_auc(positive: np.ndarray, values: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney), ties counted half."""
    ranks = rankdata(values)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def measure_separation(candidates: pd.DataFrame) -> dict:
    """ROC AUCs per candidate type, the model's score against the correlations.

    ``beta_galactosidase_vs_thyroglobulin``: candidates on exactly one of the two, the
    difference of the two correlations (the model's score negated for thyroglobulin
    candidates, where a high score says thyroglobulin). ``true_vs_nothing``: true candidates
    against candidates on no particle of any type, the correlation with the own type's maps.
    """
    out = {}
    difference = candidates[f"cc_{TYPES[0]}"] - candidates[f"cc_{TYPES[1]}"]
    one_of_two = candidates[f"on_{TYPES[0]}"] ^ candidates[f"on_{TYPES[1]}"]
    for t in TYPES:
        sign = 1.0 if t == TYPES[0] else -1.0
        of_type = candidates["particle_type"] == t
        chosen = (of_type & one_of_two).to_numpy()
        positive = candidates.loc[chosen, f"on_{TYPES[0]}"].to_numpy()
        score = candidates.loc[chosen, "score"].to_numpy()
        apart = (of_type & (candidates["true"] | ~candidates["on_any"])).to_numpy()
        true = candidates.loc[apart, "true"].to_numpy()
        out[t] = {
            "beta_galactosidase_vs_thyroglobulin": {
                "candidates": int(chosen.sum()),
                "on_beta_galactosidase": int(positive.sum()),
                "auc_model_score": roc_auc(positive, sign * score),
                "auc_correlation_difference": roc_auc(positive, difference[chosen].to_numpy()),
            },
            "true_vs_nothing": {
                "candidates": int(apart.sum()),
                "true": int(true.sum()),
                "auc_model_score": roc_auc(true, candidates.loc[apart, "score"].to_numpy()),
                "auc_own_correlation": roc_auc(true, candidates.loc[apart, f"cc_{t}"].to_numpy()),
            },
        }
    return out


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-4, 1 - 1e-4)
    return np.asarray(np.log(p / (1 - p)))


def design(frame: pd.DataFrame, use_correlation: bool) -> np.ndarray:
    """Intercept, logit of the model's score, and optionally the two correlations."""
    columns = [np.ones(len(frame)), logit(frame["score"].to_numpy())]
    if use_correlation:
        columns += [frame[f"cc_{t}"].to_numpy(np.float64) for t in TYPES]
    return np.stack(columns, axis=1)


def fit_logistic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weights of an L2-regularised (1e-3) logistic regression."""

    def loss(w: np.ndarray) -> float:
        z = x @ w
        return float(np.sum(np.logaddexp(0, z) - y * z) + 1e-3 * w @ w)

    return np.asarray(minimize(loss, np.zeros(x.shape[1]), method="L-BFGS-B").x)


def rescore(train: pd.DataFrame, test: pd.DataFrame, use_correlation: bool) -> pd.DataFrame:
    """``test`` with the two types' scores replaced by a logistic fit on ``train``."""
    out = test.copy()
    for t in TYPES:
        fit_on = train[train["particle_type"] == t]
        weights = fit_logistic(design(fit_on, use_correlation), fit_on["true"].to_numpy(float))
        rows = (test["particle_type"] == t).to_numpy()
        out.loc[rows, "score"] = 1 / (1 + np.exp(-design(test[rows], use_correlation) @ weights))
    return out


def leave_one_run_out(candidates: pd.DataFrame, truth: pd.DataFrame, use_cc: bool) -> dict:
    """Weighted F4 of all held-out runs, each re-scored and thresholded from the others.

    The thresholds of a run come from the other runs' own leave-one-run-out scores (so
    they are tuned on scores fitted without the run they are tuned on, as at prediction).
    """
    runs = sorted(candidates["experiment"].unique())
    kept = []
    for run in runs:
        train = candidates[candidates["experiment"] != run]
        inner = [
            rescore(train[train["experiment"] != r], train[train["experiment"] == r], use_cc)
            for r in runs
            if r != run
        ]
        thresholds = tune_thresholds(truth[truth["experiment"] != run], pd.concat(inner))
        scored = rescore(train, candidates[candidates["experiment"] == run], use_cc)
        kept.append(scored[scored["score"] >= scored["particle_type"].map(thresholds)])
    return score_picks(truth, pd.concat(kept)).to_dict()


def remove_by_oracle(candidates: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Leave-one-run-out F4 (score only) after removing, knowing the truth, the candidates
    of the two types that sit on a particle of the other one only (``confusion``), or on no
    particle of any type (``on_nothing``): what a perfect filter of either kind could gain."""
    on = {t: candidates[f"on_{t}"] for t in TYPES}
    of = {t: candidates["particle_type"] == t for t in TYPES}
    confused = (of[TYPES[0]] & on[TYPES[1]] & ~on[TYPES[0]]) | (
        of[TYPES[1]] & on[TYPES[0]] & ~on[TYPES[1]]
    )
    on_nothing = (of[TYPES[0]] | of[TYPES[1]]) & ~candidates["on_any"]
    return {
        name: leave_one_run_out(candidates[~drop], truth, use_cc=False)
        for name, drop in (("confusion", confused), ("on_nothing", on_nothing))
    }


def read_candidates(args: argparse.Namespace, projects: list[Path]) -> pd.DataFrame:
    """The model's re-scored candidates of every held-out run (or the ``--candidates`` cache)."""
    if args.candidates is not None and args.candidates.exists():
        return pd.read_csv(args.candidates)
    model = load_model(args.model or bundled_model_dir())
    candidates = pd.concat([rescore_candidates(model, p, args.tomo_type) for p in projects])
    if args.candidates is not None:
        candidates.to_csv(args.candidates, index=False)
    return candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_held_out_arguments(parser, "/tmp/cryopick_template_ceiling")
    parser.add_argument("--candidates", type=Path, help="CSV cache of the model's candidates")
    parser.add_argument("--n-rotations", type=int, default=2000)
    parser.add_argument("--bin", type=int, choices=(1, 2), default=1)
    parser.add_argument("--maps", choices=sorted(MAPS), default="both")
    parser.add_argument("--name", default="template_ceiling", help="result file name stem")
    args = parser.parse_args()
    projects = held_out_projects(args)
    truth = read_truth(projects).drop(columns="transformation", errors="ignore")
    candidates = label_sites(read_candidates(args, projects), truth)
    start = time.perf_counter()
    candidates = add_correlations(candidates, projects, args)
    seconds = time.perf_counter() - start
    result: dict = {
        "settings": {k: str(v) for k, v in vars(args).items()},
        "correlation_seconds": round(seconds, 1),
        "separation": measure_separation(candidates),
        "f4_score_only": leave_one_run_out(candidates, truth, use_cc=False),
        "f4_score_and_correlation": leave_one_run_out(candidates, truth, use_cc=True),
        "f4_oracle_removed": remove_by_oracle(candidates, truth),
    }
    print(json.dumps(result["separation"], indent=1))
    figures = {k: result[k] for k in ("f4_score_only", "f4_score_and_correlation")}
    figures |= {f"oracle_{k}": v for k, v in result["f4_oracle_removed"].items()}
    for key, figure in figures.items():
        per_class = {t: round(figure["per_class"][t]["fbeta"], 3) for t in TYPES}
        print(f"{key}: weighted F4 {figure['score']:.4f} {per_class}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
