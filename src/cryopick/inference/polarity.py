"""Contrast polarity: are the particles dark, as the models learnt them, or bright.

Reconstruction pipelines differ: most write protein dark (denser than ice), some bright.
:func:`choose_inversion` inverts a tomogram when its grey values look inverted (the
skewness, :func:`measure_contrast_skew`) unless the network disagrees: run on a few cubes
of the tomogram as it is and inverted (:func:`measure_network_polarity`), it vetoes an
inversion when it finds particles more confidently as the volume is. Where the skewness
is too close to 0 to tell (most ``wbp`` tomograms, some denoised ones), the network
decides, inverting only when it clearly prefers the inverted volume. The skewness alone
is fooled by large dense objects: a carbon film edge in view made it positive in 6 of 6
simulated tomograms of a test, which were then inverted and lost every pick. The network
alone is not safe either (in 100 nm ice an early model preferred the inverted volume by a
little), so where the skewness says "bright" it only vetoes. Cost: the skewness ~0.1 s;
the network (only when the skewness does not say "dark") two passes over four 96³ cubes,
0.5-1.5 s on 2 CPU cores. :func:`orient_contrast` applies the decision (or the user's
``--invert`` / ``--no-invert``).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage

from cryopick.inference.window import predict_probability_map

log = logging.getLogger(__name__)

CROP_SIDE = 96
"""Edge of the cubes the network sees (voxels at the model's spacing)."""
NETWORK_MARGIN = 0.02
"""Confidence difference (as is minus inverted) above which the network's answer counts."""
CONFIDENCE_QUANTILE = 0.999
"""A cube's confidence: this quantile of its voxels' highest particle probability."""
POLARITY_SKEW_MARGIN = 0.1
"""Smoothed skewness above +margin: particles bright (inverted); within it: unclear."""
UNCLEAR_NETWORK_MARGIN = 0.1
"""Where the skewness is unclear, the network's confidence on the inverted volume must
exceed the one as it is by this much to invert it. On 86 simulated tomograms with
particles dark (68 runs of 17 robustness cells, the 18 held-out runs; bundled model v3.6)
the volume as it is scored higher every time, by 0.017 to 0.44; on the 7 of them whose
skewness was unclear, by 0.19 to 0.43."""


def measure_contrast_skew(volume: NDArray[np.float32]) -> float:
    """Skewness of a normalised tomogram smoothed to particle scale (negative: protein dark).

    Protein, membranes and gold are denser than ice: in the usual polarity they are the
    dark tail of the grey values, so the skewness of the volume, low-passed to remove
    voxel noise (every 2nd voxel, then a Gaussian of sigma 0.75 of those), is negative.
    Measured on 15 simulated tomograms: -0.1 to -0.96 for ``denoised`` and
    ``ctfdeconvolved``; plain ``wbp`` (no CTF correction, weak low frequencies) -0.03 to
    -0.3, too close to 0 to tell at times (then :func:`choose_inversion` keeps the input
    and warns); never above 0.
    """
    smooth = ndimage.gaussian_filter(np.asarray(volume[::2, ::2, ::2], np.float32), 0.75)
    sample = smooth.ravel()[::4].astype(np.float64)  # moments of ~2 M voxels: enough, fast
    centred = sample - sample.mean()
    squares = centred * centred
    spread = float(np.sqrt(squares.mean()))
    if spread == 0.0:
        return 0.0
    return float(np.dot(squares, centred) / len(centred) / spread**3)


def sample_crops(volume: NDArray[np.float32], side: int = CROP_SIDE) -> NDArray[np.float32] | None:
    """Return four cubes of the volume side by side along x, or None if it is too small.

    The cubes sit at the central z, at a quarter and three quarters of y and x (where the
    specimen usually is); their edge is ``side``, or the largest multiple of 16 that fits.
    """
    edge = min(side, *(n // 16 * 16 for n in volume.shape))
    if edge < 32:
        return None
    z0 = (volume.shape[0] - edge) // 2
    ys = [int(f * (volume.shape[1] - edge)) for f in (0.25, 0.75)]
    xs = [int(f * (volume.shape[2] - edge)) for f in (0.25, 0.75)]
    cubes = [volume[z0 : z0 + edge, y : y + edge, x : x + edge] for y in ys for x in xs]
    return np.ascontiguousarray(np.concatenate(cubes, axis=2), dtype=np.float32)


def _confidence(
    model: torch.nn.Module, strip: NDArray[np.float32], device: str, precision: str
) -> float:
    """Return the mean over the strip's cubes of their confidence (see the constants)."""
    edge = strip.shape[0]
    probs = predict_probability_map(
        model,
        strip,
        patch_size=(edge, edge, edge),
        overlap=0.0,
        device=device,
        precision=precision,
        upsample=False,
    ).probs
    particle = np.asarray(probs[1:], dtype=np.float32).max(axis=0)
    cubes = np.array_split(particle, 4, axis=2)
    return float(np.mean([np.quantile(c, CONFIDENCE_QUANTILE) for c in cubes]))


def measure_network_polarity(
    model: torch.nn.Module,
    volume: NDArray[np.float32],
    device: str = "cpu",
    precision: str = "auto",
) -> tuple[float, float] | None:
    """Return the network's confidence on the volume as it is and inverted (None: too small).

    Parameters
    ----------
    model : torch.nn.Module
        The picking network (background channel 0, particle types after it).
    volume : numpy.ndarray
        Normalised tomogram at the model's voxel size.
    device, precision : str
        As for :func:`cryopick.inference.window.predict_probability_map`.
    """
    strip = sample_crops(volume)
    if strip is None:
        return None
    as_is = _confidence(model, strip, device, precision)
    inverted = _confidence(model, -strip, device, precision)
    return as_is, inverted


def choose_inversion(
    volume: NDArray[np.float32],
    name: str,
    model: torch.nn.Module | None = None,
    device: str = "cpu",
    precision: str = "auto",
) -> bool:
    """Decide whether to invert a normalised tomogram so that particles are dark.

    Most pipelines write protein dark, so inverting is the claim that needs evidence. Where
    the grey-value skewness (:func:`measure_contrast_skew`) says "bright" (above
    :data:`POLARITY_SKEW_MARGIN`), the network (:func:`measure_network_polarity`) can
    veto: it keeps the volume when it finds particles more confidently (by
    :data:`NETWORK_MARGIN`) as the volume is, as with a carbon film edge that fools the
    skewness. Where the skewness cannot tell (within the margin of 0, as in most ``wbp``
    tomograms), the network decides alone, and inverts only with a clear preference
    (:data:`UNCLEAR_NETWORK_MARGIN`): it can be fooled too (in thin ice an early model
    preferred the inverted volume by a little). Inverting, and keeping a volume with
    signs of inversion, are logged as warnings naming the run and the evidence.
    """
    skew = measure_contrast_skew(volume)
    if skew < -POLARITY_SKEW_MARGIN:
        return False
    evidence = None if model is None else measure_network_polarity(model, volume, device, precision)
    if skew <= POLARITY_SKEW_MARGIN:
        return _decide_unclear_polarity(name, skew, evidence)
    if evidence is not None and evidence[0] > evidence[1] + NETWORK_MARGIN:
        log.warning(
            "%s: the grey values look inverted (smoothed skewness %+.2f) but the network "
            "finds particles as the volume is (confidence %.2f as it is, %.2f inverted): "
            "kept as it is (a carbon film or other dense object?); pass --invert if "
            "particles are bright",
            name,
            skew,
            *evidence,
        )
        return False
    log.warning(
        "%s: contrast looks inverted (particles bright; smoothed skewness %+.2f): "
        "inverting it (--no-invert keeps it as it is)",
        name,
        skew,
    )
    return True


def _decide_unclear_polarity(name: str, skew: float, evidence: tuple[float, float] | None) -> bool:
    """Return the network's decision where the skewness is within the margin of 0 (logged)."""
    found = "(confidence %.2f as it is, %.2f inverted)"
    if evidence is not None and evidence[1] > evidence[0] + UNCLEAR_NETWORK_MARGIN:
        message = "%s: contrast polarity unclear from the grey values (smoothed skewness %+.2f)"
        message += "; the network finds particles in the inverted volume " + found
        message += ": inverting it (--no-invert keeps it as it is)"
        log.warning(message, name, skew, *evidence)
        return True
    if evidence is not None and evidence[0] > evidence[1] + NETWORK_MARGIN:
        message = "%s: smoothed skewness %+.2f; the network finds particles dark " + found
        log.info(message + ": kept as it is", name, skew, *evidence)
        return False
    log.warning(
        "%s: contrast polarity unclear (smoothed skewness %+.2f), kept as particles "
        "dark; pass --invert if particles are bright",
        name,
        skew,
    )
    return False


def orient_contrast(
    volume: NDArray[np.float32],
    name: str,
    invert: bool | None = None,
    model: torch.nn.Module | None = None,
    device: str = "cpu",
    precision: str = "auto",
) -> NDArray[np.float32]:
    """Return the normalised volume with particles dark, as the models were trained.

    Parameters
    ----------
    volume : numpy.ndarray
        Output of :func:`cryopick.inference.preprocess.normalise_volume` (changed in place
        when inverted).
    name : str
        Run name, for the log.
    invert : bool or None
        True / False: invert / keep, as the user says. None: :func:`choose_inversion`
        decides (with ``model``, the network's evidence first).
    model, device, precision
        The picking network and how to run it, for :func:`measure_network_polarity`.
    """
    if invert is None:
        invert = choose_inversion(volume, name, model, device, precision)
    if invert:
        np.negative(volume, out=volume)
    return volume
