"""Image formation: a dose-symmetric tilt series of the specimen potential.

Per tilt: line integrals of the potential through the specimen tilted about the Y axis
(a sparse linear-interpolation projector, exact for every Y row at once), weak-phase
image formation with the CTF (300 kV, Cs, amplitude contrast, defocus with
astigmatism, B-factor), Grant & Grigorieff (2015) exposure filtering for the dose
received before the tilt, zero-loss attenuation through the tilted ice, Poisson shot
noise at the per-tilt dose, an optional detector MTF, and a small random
misalignment (shift and tilt-angle error) that the reconstruction does not correct.
Images are formed at the output voxel size (the templates are 10 Å maps, so a finer
grid would add no information); the defocus gradient across a tilted image is ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from cryopick.simulate.presets import SimulationConfig


@dataclass
class TiltSeries:
    """Tilt images and what the reconstruction is told about them.

    Attributes
    ----------
    images : numpy.ndarray, shape (n_tilts, Y, X), float32
        Normalised intensities (mean ~1), in ascending nominal angle order.
    angles_deg : numpy.ndarray, shape (n_tilts,)
        Nominal tilt angles (what the reconstruction uses).
    pre_exposure_e_A2 : numpy.ndarray, shape (n_tilts,)
        Dose received before each tilt.
    """

    images: NDArray[np.float32]
    angles_deg: NDArray[np.float64]
    pre_exposure_e_A2: NDArray[np.float64]


def electron_wavelength_A(voltage_kV: float) -> float:
    """Relativistic electron wavelength in Å."""
    v = voltage_kV * 1e3
    return 12.2643 / math.sqrt(v * (1 + 0.978466e-6 * v))


def interaction_constant(voltage_kV: float) -> float:
    """Phase shift per volt and Å of path, in rad / (V Å)."""
    rest_keV = 510.999
    lam = electron_wavelength_A(voltage_kV)
    return (
        2 * np.pi / (lam * voltage_kV * 1e3) * (rest_keV + voltage_kV) / (2 * rest_keV + voltage_kV)
    )


def dose_symmetric_order(angles_deg: NDArray[np.float64]) -> NDArray[np.int64]:
    """Acquisition order of a dose-symmetric (Hagen) scheme: 0, then pairs alternating sides.

    Returns indices into ``angles_deg``.
    """
    angles = np.asarray(angles_deg)
    start = int(np.argmin(np.abs(angles)))
    pos = [i for i in np.argsort(angles) if angles[i] > angles[start]]
    neg = [i for i in np.argsort(-angles) if angles[i] < angles[start]]
    order = [start]
    side = 0
    while pos or neg:
        group = (pos, neg)[side] or (neg, pos)[side]
        order += group[:2]
        del group[:2]
        side = 1 - side
    return np.array(order)


def critical_exposure(k_per_A: NDArray[np.float64]) -> NDArray[np.float64]:
    """Grant & Grigorieff (2015) critical exposure in e/Å² at spatial frequency k (1/Å)."""
    k = np.maximum(k_per_A, 1e-6)
    return 0.245 * k**-1.665 + 2.81


def _interp_matrix(positions: NDArray, n_src: int, n_rows: int, wrap: bool) -> sp.csr_matrix:
    """Sparse matrix whose row r linearly interpolates a length-``n_src`` signal at positions[r]."""
    i0 = np.floor(positions).astype(np.int64)
    w = (positions - i0).astype(np.float32)
    rows = np.repeat(np.arange(n_rows), 2)
    cols = np.stack([i0, i0 + 1], axis=1).ravel()
    vals = np.stack([1 - w, w], axis=1).ravel()
    if wrap:
        cols = cols % n_src
    else:
        keep = (cols >= 0) & (cols < n_src)
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    return sp.csr_matrix((vals, (rows, cols)), shape=(n_rows, n_src), dtype=np.float32)


def projection_matrix(nz: int, nx: int, angle_deg: float) -> sp.csr_matrix:
    """Projector of a (Z, X) plane onto X detector pixels at a tilt about Y.

    Row ``u`` sums, over z, the plane interpolated along x on the ray
    ``u = x cos t + z sin t`` (centred coordinates), times the path length ``1 / cos t``
    per voxel. The specimen repeats periodically along x, so rays leaving the box at
    high tilt still cross ice, as they do in a real, laterally extended specimen.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (X, Z * X)
        Acts on the plane flattened in (z, x) order.
    """
    t = np.deg2rad(angle_deg)
    zc = np.arange(nz) - (nz - 1) / 2
    uc = np.arange(nx) - (nx - 1) / 2
    x = (uc[:, None] - zc[None, :] * np.sin(t)) / np.cos(t) + (nx - 1) / 2  # (u, z)
    inner = _interp_matrix(x.ravel(), nx, nx * nz, wrap=True)  # rows (u, z), cols x
    # fold (u, z) rows x cols into (u) rows x (z, x) cols
    coo = inner.tocoo()
    u, z = np.divmod(coo.row, nz)
    return sp.csr_matrix(
        (coo.data / np.float32(np.cos(t)), (u, z * nx + coo.col)), shape=(nx, nz * nx)
    )


def backprojection_matrix(nz: int, nx: int, angle_deg: float) -> sp.csr_matrix:
    """Back-projector of X detector pixels into a (Z, X) plane (rays off the detector dropped).

    Returns
    -------
    scipy.sparse.csr_matrix, shape (Z * X, X)
    """
    t = np.deg2rad(angle_deg)
    zc = np.arange(nz) - (nz - 1) / 2
    xc = np.arange(nx) - (nx - 1) / 2
    u = xc[None, :] * np.cos(t) + zc[:, None] * np.sin(t) + (nx - 1) / 2  # (z, x)
    return _interp_matrix(u.ravel(), nx, nz * nx, wrap=False)


def frequency_grid_2d(ny: int, nx: int, spacing_A: float) -> tuple[NDArray, NDArray]:
    """Spatial frequencies (ky, kx) in 1/Å of an (ny, nx) image, FFT order."""
    ky = np.fft.fftfreq(ny, d=spacing_A)[:, None]
    kx = np.fft.fftfreq(nx, d=spacing_A)[None, :]
    return ky, kx


def ctf(
    k_per_A: NDArray,
    defocus_um: float | NDArray,
    voltage_kV: float,
    cs_mm: float,
    amplitude_contrast: float,
) -> NDArray:
    """Contrast transfer, positive at low frequency for underfocus (protein images dark).

    ``sqrt(1 - A^2) sin(chi) + A cos(chi)`` with
    ``chi = pi lambda df k^2 - pi/2 Cs lambda^3 k^4``.
    """
    lam = electron_wavelength_A(voltage_kV)
    df = np.asarray(defocus_um) * 1e4
    chi = np.pi * lam * df * k_per_A**2 - 0.5 * np.pi * cs_mm * 1e7 * lam**3 * k_per_A**4
    a = amplitude_contrast
    transfer: NDArray = math.sqrt(1 - a * a) * np.sin(chi) + a * np.cos(chi)
    return transfer


def simulate_tilt_series(
    potential: NDArray[np.float32],
    config: SimulationConfig,
    params: dict,
    spacing_A: float,
    thickness_A: float,
    rng: np.random.Generator,
) -> TiltSeries:
    """Image the specimen potential as a tilt series.

    Parameters
    ----------
    potential : numpy.ndarray, shape (Z, Y, X)
        Specimen potential in volts.
    config : SimulationConfig
        Microscope settings.
    params : dict
        This run's drawn values (defocus_um, dose_total_e_A2, bfactor_A2, ...).
    spacing_A : float
        Pixel size of the images (= voxel size).
    thickness_A : float
        Ice thickness at zero tilt, for the zero-loss attenuation.
    rng : numpy.random.Generator
        Random generator (noise, misalignment).

    Returns
    -------
    TiltSeries
    """
    nz, ny, nx = potential.shape
    angles = config.tilt_angles_deg(params)
    order = dose_symmetric_order(angles)
    dose_per_tilt = params["dose_total_e_A2"] / len(angles)
    pre = np.empty(len(angles))
    pre[order] = np.arange(len(angles)) * dose_per_tilt

    # (Z, Y, X) -> (Z * X, Y): each tilt projects all Y rows with one sparse product
    flat = np.ascontiguousarray(potential.transpose(0, 2, 1)).reshape(nz * nx, ny)
    ky, kx = frequency_grid_2d(ny, nx, spacing_A)
    k = np.sqrt(ky**2 + kx**2)
    phi_k = np.arctan2(ky, kx)
    df = params["defocus_um"] + 0.5 * params["astigmatism_um"] * np.cos(
        2 * (phi_k - np.deg2rad(params["astigmatism_angle_deg"]))
    )
    transfer = ctf(k, df, config.voltage_kV, config.cs_mm, config.amplitude_contrast)
    transfer = transfer * np.exp(-params["bfactor_A2"] * k**2 / 4)
    mtf = np.sinc(ky * spacing_A / 2) * np.sinc(kx * spacing_A / 2)  # the detector's
    sigma = interaction_constant(config.voltage_kV) * spacing_A
    crit = critical_exposure(k)

    images = np.empty((len(angles), ny, nx), np.float32)
    for i, angle in enumerate(angles):
        true_angle = angle + rng.normal(0, params["tilt_error_deg"])
        phase = sigma * (projection_matrix(nz, nx, true_angle) @ flat).T  # (Y, X)
        shift = rng.normal(0, params["misalignment_vox"], size=2)
        ramp = np.exp(-2j * np.pi * (ky * shift[0] + kx * shift[1]) * spacing_A)
        exposure = np.exp(-(pre[i] + dose_per_tilt / 2) / (2 * crit))
        spectrum = np.fft.rfft2(phase - phase.mean())
        half = slice(0, nx // 2 + 1)
        filt = (transfer * exposure * ramp)[:, half]
        image = 1 - 2 * np.fft.irfft2(spectrum * filt, s=(ny, nx))
        path_A = thickness_A / np.cos(np.deg2rad(true_angle))
        electrons = dose_per_tilt * spacing_A**2 * np.exp(-path_A / config.inelastic_mfp_A)
        counts = rng.poisson(electrons * np.clip(image, 0.02, None)).astype(np.float32)
        counts /= electrons
        if config.detector_mtf:
            counts = np.fft.irfft2(np.fft.rfft2(counts) * mtf[:, half], s=(ny, nx))
        images[i] = counts
    return TiltSeries(images=images, angles_deg=angles, pre_exposure_e_A2=pre)
