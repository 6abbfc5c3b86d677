"""Training data: runs loaded from any source, and a seeded patch sampler.

A :class:`TrainRun` is one tomogram (one or more reconstruction types, normalised, held
in memory as float16 at the model's voxel size) with its picks and the particle set they
belong to (labels, radii). Sources are anything
:func:`cryopick.io.tomograms.read_tomograms` and :func:`cryopick.io.picks.read_picks`
read (copick configs, Kaggle roots, simulated projects) or in-memory simulated runs.

:class:`PatchSampler` draws training patches biased to particles with the rare types
balanced: with probability ``particle_fraction`` it picks a particle type uniformly among
those present, then one of its particles, and places the patch so that the particle lies
anywhere inside it; with probability ``negative_fraction`` it is placed the same way
around a hard negative recorded with the run (``TrainRun.negatives_zyx_A``: where a
simulation put the distractors that networks mistake for particles); otherwise the patch
is placed uniformly. The reconstruction type is
drawn per patch (mixing wbp / denoised / ctfdeconvolved is an augmentation). All
randomness comes from one ``numpy.random.Generator``, whose state is the sampler state.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cryopick.core.coords import angstrom_to_voxels, input_to_strided_vox
from cryopick.core.errors import InputError
from cryopick.core.particles import (
    ParticleSet,
    UnknownParticleError,
    default_particle_set,
    resolve_particle_set,
)
from cryopick.training.augmentation import AugmentConfig, augment_geometry, augment_intensity
from cryopick.training.targets import TargetKind, render_targets

log = logging.getLogger(__name__)


@dataclass
class TrainRun:
    """One annotated tomogram ready for training or validation.

    Attributes
    ----------
    name : str
        Run (experiment) name.
    volumes : dict of str to numpy.ndarray
        Reconstruction type -> normalised volume (z, y, x), float16, at ``spacing_A``.
    picks : pandas.DataFrame
        Truth picks of this run (Å).
    spacing_A : float
        Voxel size of ``volumes``.
    source : str
        Where it came from.
    particles : ParticleSet
        The set the picks' types belong to (labels, radii); default the CZII set.
    negatives_zyx_A : numpy.ndarray, shape (M, 3)
        Centres (Å, z y x) of hard negatives to centre patches on (none by default).

    Raises
    ------
    InputError
        If a pick's type is not in ``particles``.
    """

    name: str
    volumes: dict[str, NDArray]
    picks: pd.DataFrame
    spacing_A: float
    source: str = ""
    particles: ParticleSet = field(default_factory=default_particle_set)
    negatives_zyx_A: NDArray = field(default_factory=lambda: np.zeros((0, 3)))
    _centres_vox: NDArray = field(init=False, repr=False)
    _labels: NDArray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        df = self.picks
        coords = df[["z", "y", "x"]].to_numpy(dtype=np.float64) if len(df) else np.zeros((0, 3))
        self._centres_vox = angstrom_to_voxels(coords, self.spacing_A)
        try:
            labels = [self.particles.label(t) for t in df["particle_type"]]
        except UnknownParticleError as err:
            raise InputError(self.source or None, f"run {self.name}: {err}") from None
        self._labels = np.array(labels, dtype=int)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Volume shape (z, y, x)."""
        z, y, x = next(iter(self.volumes.values())).shape
        return int(z), int(y), int(x)


def _prepare_volume(data: Any, spacing_A: float, grid_spacing_A: float, source: Any) -> NDArray:
    from cryopick.inference.preprocess import normalise_volume, resample_volume

    if spacing_A != grid_spacing_A:
        data = resample_volume(data, spacing_A, grid_spacing_A)
    return normalise_volume(data, source=source).astype(np.float16)


def load_runs(
    source: str | Path,
    tomo_types: Sequence[str] = ("denoised",),
    spacing_A: float = 10.0,
    runs: Sequence[str] | None = None,
    particles: ParticleSet | None = None,
) -> list[TrainRun]:
    """Load every annotated run of a source with the reconstruction types available.

    Parameters
    ----------
    source : str or Path
        Copick config JSON, Kaggle root, or anything else both readers accept.
    tomo_types : sequence of str
        Reconstruction types to load; types a run lacks are skipped (each run needs one).
    spacing_A : float
        Model voxel size; volumes more than 1 % off it are resampled to it, the others
        keep their own voxels (each run's ``spacing_A``;
        :func:`cryopick.inference.preprocess.choose_network_spacing_A`).
    runs : sequence of str, optional
        Only these runs.
    particles : ParticleSet, optional
        The set learnt (the source should declare it); default the CZII set.

    Returns
    -------
    list of TrainRun
        Runs that have truth picks, sorted by name.
    """
    from cryopick.inference.preprocess import choose_network_spacing_A
    from cryopick.io.picks import read_picks
    from cryopick.io.picks.checks import warn_position_problems
    from cryopick.io.tomograms import read_tomograms

    particle_set = resolve_particle_set(particles)
    truth = read_picks(source, particles=particle_set)
    by_run: dict[str, dict[str, NDArray]] = {}
    found_spacing: dict[str, float] = {}
    for tomo_type in tomo_types:
        try:
            tomograms = read_tomograms(source, tomo_type=tomo_type, spacing_A=spacing_A, runs=runs)
        except InputError as err:
            log.info("%s: no %s tomograms (%s)", source, tomo_type, err.problem)
            continue
        for tomo in tomograms:
            # within 1 % of the model's voxel size a run keeps its own voxels, as in predict
            grid_spacing_A = found_spacing.setdefault(
                tomo.name, choose_network_spacing_A(tomo.spacing_A, spacing_A)
            )
            by_run.setdefault(tomo.name, {})[tomo_type] = _prepare_volume(
                tomo.data, tomo.spacing_A, grid_spacing_A, tomo.source
            )
    if not by_run:
        raise InputError(source, f"no tomograms of type(s) {', '.join(tomo_types)} found")
    out = []
    for name in sorted(by_run):
        picks = truth[truth["experiment"] == name].reset_index(drop=True)
        if picks.empty:
            log.warning("%s: run %s has no picks; skipped", source, name)
            continue
        grid_spacing_A = found_spacing[name]
        volume = next(iter(by_run[name].values()))
        warn_position_problems(picks, {name: (volume.shape, grid_spacing_A)}, source)
        out.append(TrainRun(name, by_run[name], picks, grid_spacing_A, str(source), particle_set))
    if not out:
        raise InputError(source, "no run has both a tomogram and truth picks")
    return out


def run_from_simulation(
    sim: Any, tomo_types: Sequence[str] | None = None, particles: ParticleSet | None = None
) -> TrainRun:
    """Make a :class:`TrainRun` from an in-memory :class:`cryopick.simulate.SimulatedRun`.

    ``particles`` is the set it was simulated with; default the run's own (``sim.particles``).
    """
    if particles is None:
        particles = sim.particles
    types = list(tomo_types or sim.tomograms)
    volumes = {
        t: _prepare_volume(sim.tomograms[t], sim.spacing_A, sim.spacing_A, sim.name)
        for t in types
        if t in sim.tomograms
    }
    return TrainRun(
        sim.name,
        volumes,
        sim.picks,
        float(sim.spacing_A),
        f"simulated:{sim.name}",
        resolve_particle_set(particles),
    )


class PatchSampler:
    """Draw augmented (input, target) training batches from runs.

    Parameters
    ----------
    runs : list of TrainRun
        Training runs.
    patch_size : (int, int, int)
        Input patch (z, y, x); multiples of ``stride``; y == x for XY rotations.
    stride : int
        Output stride of the network (targets are drawn on that grid).
    target : {"sphere", "gaussian"}
        Target kind; ``target_fraction`` its radius / sigma fraction.
    target_fraction : float
        See :func:`cryopick.training.targets.render_targets`.
    particle_fraction : float
        Probability that a patch is centred on a (class-balanced) particle.
    augment : AugmentConfig or None
        Augmentation (None: none).
    rng : numpy.random.Generator
        Source of all randomness; its state is the sampler state.
    particles : ParticleSet, optional
        The set learnt (labels, radii, classes); default the first run's. Every run must
        hold that set.
    negative_fraction : float
        Probability that a patch is centred on a run's recorded hard negative (when any
        run has them); at most ``1 - particle_fraction``.
    """

    def __init__(
        self,
        runs: Sequence[TrainRun],
        patch_size: Sequence[int],
        stride: int,
        target: TargetKind,
        target_fraction: float,
        particle_fraction: float,
        augment: AugmentConfig | None,
        rng: np.random.Generator,
        particles: ParticleSet | None = None,
        negative_fraction: float = 0.0,
    ) -> None:
        if not runs:
            raise ValueError("no training runs")
        if particle_fraction + negative_fraction > 1 + 1e-9:
            raise ValueError("particle_fraction + negative_fraction exceeds 1")
        self.particles = runs[0].particles if particles is None else particles
        for run in runs:
            if diff := self.particles.describe_differences(run.particles):
                raise ValueError(f"run {run.name} holds another particle set: {diff}")
        self.runs = list(runs)
        self.patch = tuple(int(p) for p in patch_size)
        self.stride = int(stride)
        self.target = target
        self.target_fraction = float(target_fraction)
        self.particle_fraction = float(particle_fraction)
        self.negative_fraction = float(negative_fraction)
        self.augment = augment
        self.rng = rng
        # (run index, pick index) per label, for class-balanced sampling
        self._by_label: dict[int, NDArray] = {}
        self._radius_A: dict[int, float] = {}
        for name in self.particles.names:
            label = self.particles.label(name)
            self._radius_A[label] = self.particles.radius_A(name)
            idx = [
                (r, i)
                for r, run in enumerate(self.runs)
                for i in np.flatnonzero(run._labels == label)
            ]
            if idx:
                self._by_label[label] = np.asarray(idx, dtype=np.int64)
        negatives = [
            (r, i) for r, run in enumerate(self.runs) for i in range(len(run.negatives_zyx_A))
        ]
        self._negatives = np.asarray(negatives, dtype=np.int64).reshape(-1, 2)

    def _choose_origin(self) -> tuple[int, NDArray[np.int64]]:
        rng = self.rng
        patch = np.asarray(self.patch)
        labels = sorted(self._by_label)
        n_negatives = len(self._negatives) if self.negative_fraction > 0 else 0
        # one draw, as before negatives existed, so that runs without them reproduce
        draw = rng.random() if labels or n_negatives else 1.0
        centre = None
        if labels and draw < self.particle_fraction:
            label = labels[int(rng.integers(len(labels)))]
            r, i = self._by_label[label][int(rng.integers(len(self._by_label[label])))]
            centre = self.runs[r]._centres_vox[i]
        elif n_negatives and draw < self.particle_fraction + self.negative_fraction:
            r, i = self._negatives[int(rng.integers(n_negatives))]
            run = self.runs[r]
            centre = angstrom_to_voxels(run.negatives_zyx_A[i], run.spacing_A)
        if centre is not None:
            margin = np.minimum(patch // 4, 8)
            offset = rng.integers(margin, patch - margin)
            origin = np.round(centre).astype(np.int64) - offset
        else:
            r = int(rng.integers(len(self.runs)))
            shape = np.asarray(self.runs[r].shape)
            origin = rng.integers(0, np.maximum(shape - patch, 0) + 1)
        shape = np.asarray(self.runs[int(r)].shape)
        # keep the patch inside the volume where it fits; align to the output grid
        origin = np.clip(origin, 0, np.maximum(shape - patch, 0))
        origin -= origin % self.stride
        return int(r), origin.astype(np.int64)

    def sample(self) -> tuple[NDArray[np.float32], NDArray]:
        """One augmented patch ``(Z, Y, X)`` float32 and its target on the output grid."""
        r, origin = self._choose_origin()
        run = self.runs[r]
        types = sorted(run.volumes)
        volume = run.volumes[types[int(self.rng.integers(len(types)))]]
        sl = tuple(slice(o, o + p) for o, p in zip(origin, self.patch, strict=True))
        x = np.asarray(volume[sl], dtype=np.float32)
        if x.shape != self.patch:  # volume smaller than the patch: zero-pad (= the median)
            x = np.pad(x, [(0, p - s) for p, s in zip(self.patch, x.shape, strict=True)])
        out_shape = tuple(p // self.stride for p in self.patch)
        centres = input_to_strided_vox(run._centres_vox - origin, self.stride)
        reach = max(self.patch) / self.stride
        near = np.all((centres > -reach) & (centres < np.asarray(out_shape) + reach), axis=1)
        radii_A = np.array([self._radius_A[lab] for lab in run._labels[near]], dtype=np.float64)
        y = render_targets(
            centres[near],
            run._labels[near],
            radii_A / (run.spacing_A * self.stride),
            out_shape,
            kind=self.target,
            fraction=self.target_fraction,
            n_classes=self.particles.n_classes,
        )
        if self.augment is not None:
            x, y = augment_geometry(x, y, self.rng, self.augment)
            x = augment_intensity(x, self.rng, self.augment)
        return x, y

    def sample_batch(self, batch_size: int) -> tuple[NDArray[np.float32], NDArray]:
        """Draw a batch: inputs ``(B, 1, Z, Y, X)`` and targets ``(B, ...)``."""
        pairs = [self.sample() for _ in range(batch_size)]
        x = np.stack([p[0] for p in pairs])[:, None]
        y = np.stack([p[1] for p in pairs])
        return x, y
