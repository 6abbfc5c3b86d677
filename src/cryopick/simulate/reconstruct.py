"""Reconstruction: weighted back-projection, CTF deconvolution and denoising.

The three tomogram types of the CryoET Data Portal: ``wbp`` (R-weighted back-projection
at the output voxel size, with the missing wedge of the tilt range), ``ctfdeconvolved``
(a Wiener filter of the WBP with the run's average CTF, IsoNet-style: the polarity is
kept, so protein stays dark) and ``denoised`` (a Gaussian low-pass of the deconvolved
volume). Each output is normalised to zero mean and unit standard deviation.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from numpy.typing import NDArray

from cryopick.simulate.imaging import backprojection_matrix, ctf
from cryopick.simulate.presets import SimulationConfig


def _standardise(volume: NDArray) -> NDArray[np.float32]:
    volume = volume.astype(np.float32, copy=False)
    volume -= volume.mean()
    volume /= max(float(volume.std()), 1e-12)
    return volume


def reconstruct_wbp(
    images: NDArray[np.float32], angles_deg: NDArray[np.float64], nz: int
) -> NDArray[np.float32]:
    """Weighted back-projection of a tilt series about the Y axis.

    Parameters
    ----------
    images : numpy.ndarray, shape (n_tilts, Y, X)
        Tilt images (any offset; each is mean-subtracted).
    angles_deg : numpy.ndarray, shape (n_tilts,)
        Tilt angles used for back-projection.
    nz : int
        Number of slices of the reconstruction.

    Returns
    -------
    numpy.ndarray, shape (nz, Y, X), float32
        The reconstruction (not normalised), same polarity as the images.
    """
    n_tilts, ny, nx = images.shape
    freq = np.abs(np.fft.rfftfreq(nx))
    # R-weighting; keep a little of the zero frequency so the slab mean survives
    weight = np.maximum(freq, 0.5 / n_tilts / 2).astype(np.float32)
    accum = np.zeros((nz * nx, ny), np.float32)
    for image, angle in zip(images, angles_deg, strict=True):
        centred = image - image.mean()
        filtered = np.fft.irfft(np.fft.rfft(centred, axis=1) * weight, n=nx, axis=1)
        accum += backprojection_matrix(nz, nx, float(angle)) @ np.ascontiguousarray(
            filtered.T, dtype=np.float32
        )
    return np.ascontiguousarray(accum.reshape(nz, nx, ny).transpose(0, 2, 1))


def make_tomogram_types(
    wbp: NDArray[np.float32],
    config: SimulationConfig,
    params: dict,
    spacing_A: float,
) -> dict[str, NDArray[np.float32]]:
    """Make the portal's tomogram types from a raw WBP.

    Parameters
    ----------
    wbp : numpy.ndarray, shape (Z, Y, X)
        Raw weighted back-projection.
    config : SimulationConfig
        Wiener and denoising settings, microscope constants.
    params : dict
        This run's drawn values (``defocus_um``).
    spacing_A : float
        Voxel size in Å.

    Returns
    -------
    dict
        ``wbp``, ``ctfdeconvolved`` and ``denoised``, float32, standardised.
    """
    shape = wbp.shape
    spectrum = scipy.fft.rfftn(wbp, workers=2)
    kz = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None, None]
    ky = np.fft.fftfreq(shape[1]).astype(np.float32)[None, :, None]
    kx = np.fft.rfftfreq(shape[2]).astype(np.float32)[None, None, :]
    # both filters depend on |k| only: tabulate them finely and look them up
    n_bins = 4096
    k_table = np.linspace(0, np.sqrt(3) / 2, n_bins)
    c = ctf(
        k_table / spacing_A,
        params["defocus_um"],
        config.voltage_kV,
        config.cs_mm,
        config.amplitude_contrast,
    )
    snr = config.wiener_snr * np.exp(-config.wiener_falloff_A * k_table / spacing_A)
    wiener = (c / (c * c + 1 / snr)).astype(np.float32)
    gauss = np.exp(-2 * (np.pi * config.denoise_sigma_vox * k_table) ** 2).astype(np.float32)
    k_index = np.sqrt(kz**2 + ky**2 + kx**2) * ((n_bins - 1) / k_table[-1])
    k_index = np.round(k_index).astype(np.int16)
    spectrum *= wiener[k_index]
    deconv = scipy.fft.irfftn(spectrum, s=shape, workers=2)
    spectrum *= gauss[k_index]
    denoised = scipy.fft.irfftn(spectrum, s=shape, workers=2)
    return {
        "wbp": _standardise(wbp.copy()),
        "ctfdeconvolved": _standardise(deconv),
        "denoised": _standardise(denoised),
    }
