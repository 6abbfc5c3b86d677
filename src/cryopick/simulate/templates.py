"""Density templates of the six targets and of the crowding distractors.

The maps shipped in ``cryopick/data/templates/templates.npz`` were made once by
:func:`build_template_library` from the 10 Å reference maps (polnet's ``mrcs_10A``):
background removed, scaled so that the interior of a protein is 1.0 (the 90th percentile
of the voxels above 5 % of the maximum; with this level the support volume of each map
matches its molecular weight to ~20 %), cropped to the support and stored as float16.
Beta-amylase is a tetramer in the CZII sample; the reference map is a monomer, so the
library holds a D2-symmetric tetramer assembled from it.

At simulation time :func:`rotate_template` turns a map by a rotation matrix and a
sub-voxel shift, and returns the rotated density with its support mask.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

LIBRARY_FILE = "templates.npz"
TEMPLATE_SPACING_A = 10.0  # voxel size of the packaged maps
SUPPORT_LEVEL = 0.35  # fraction of the protein interior level that counts as protein
_TARGET_FILES = {
    "apo-ferritin": "8cpv",
    "beta-amylase": "1fa2",
    "beta-galactosidase": "6drv",
    "ribosome": "6qzp",
    "thyroglobulin": "7n4y",
    "virus-like-particle": "6n4v",
}
_ALTERNATE_FILES = {
    "apo-ferritin": "6pxm",
    "beta-galactosidase": "1f4a",
    "ribosome": "6qzp",
    "thyroglobulin": "7n4y",
    "virus-like-particle": "8tux",
}
_DISTRACTOR_FILES = ("8vaf", "2uv8", "3ipm", "3j9i", "4cr2", "4v7r", "6utj")


@dataclass(frozen=True)
class Template:
    """One density map on the simulation grid.

    Attributes
    ----------
    key : str
        Library key, e.g. ``"target/ribosome"`` or ``"distractor/8vaf"``.
    density : numpy.ndarray, shape (n, n, n), float32
        Density, protein interior = 1, background 0; its centre of mass is the box centre.
    particle_type : str or None
        The particle it represents, or None for a distractor.
    radius_vox : float
        Distance from the centre to the farthest support voxel, in voxels.
    source : str or None
        The map it was made from (e.g. ``8cpv.mrc``), if known.
    """

    key: str
    density: NDArray[np.float32]
    particle_type: str | None
    radius_vox: float
    source: str | None = None


def _read_map(path: Path) -> NDArray[np.float32]:
    import mrcfile

    with mrcfile.open(path, permissive=True) as mrc:
        data = np.asarray(mrc.data, dtype=np.float32)
    border = np.concatenate([data[0].ravel(), data[-1].ravel(), data[:, 0].ravel()])
    data = np.clip(data - np.median(border), 0, None)
    positive = data[data > 0.05 * data.max()]
    return np.asarray(data / np.percentile(positive, 90), dtype=np.float32)


def _recentre(density: NDArray[np.float32], margin: int = 2) -> NDArray[np.float32]:
    """Shift the centre of mass to the centre of a cube just large enough for any rotation."""
    com = np.array(ndi.center_of_mass(density))
    support = np.argwhere(density > 0.05)
    radius = np.sqrt(((support - com) ** 2).sum(axis=1)).max()
    n = int(2 * np.ceil(radius + margin) + 1)
    centre = (n - 1) / 2
    out = ndi.affine_transform(
        density, np.eye(3), offset=com - centre, output_shape=(n, n, n), order=1
    )
    return np.asarray(out, dtype=np.float32)


def _assemble_d2_tetramer(monomer: NDArray[np.float32]) -> NDArray[np.float32]:
    """Four copies of a monomer related by D2 symmetry, moved apart until they touch."""
    n = monomer.shape[0]
    size = 3 * n
    big = np.zeros((size,) * 3, np.float32)
    c = (n - 1) / 2
    direction = np.array([1.0, 0.8, 0.6]) / np.linalg.norm([1.0, 0.8, 0.6])
    flips = [np.diag(d) for d in ([1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1])]
    support_vox = (monomer > SUPPORT_LEVEL).sum()
    for dist in np.arange(1.0, n, 0.25):
        big[:] = 0
        count = np.zeros_like(big)
        for flip in flips:
            centre = (size - 1) / 2 + flip @ direction * dist
            # out[o] = monomer[flip @ (o - centre) + c]
            moved = ndi.affine_transform(
                monomer, flip, offset=c - flip @ centre, output_shape=big.shape, order=1
            )
            big += moved
            count += moved > SUPPORT_LEVEL
        if (count > 1).sum() < 0.02 * support_vox:
            break
    return _recentre(big)


def build_template_library(source_dir: str | Path, out_path: str | Path) -> Path:
    """Build the packaged template library from the 10 Å reference maps.

    Parameters
    ----------
    source_dir : str or Path
        Folder with ``targets/``, ``alternates/`` and ``distractors/`` MRC files at 10 Å.
    out_path : str or Path
        Destination ``.npz`` (float16 maps plus a JSON ``index``).

    Returns
    -------
    Path
        ``out_path``.
    """
    source_dir, out_path = Path(source_dir), Path(out_path)
    maps: dict[str, NDArray] = {}
    index = []
    entries = [
        *(
            (f"target/{p}", p, source_dir / "targets" / f"{f}.mrc")
            for p, f in _TARGET_FILES.items()
        ),
        *(
            (f"alternate/{p}", p, source_dir / "alternates" / f"{f}.mrc")
            for p, f in _ALTERNATE_FILES.items()
        ),
        *(
            (f"distractor/{f}", None, source_dir / "distractors" / f"{f}.mrc")
            for f in _DISTRACTOR_FILES
        ),
    ]
    for key, particle, path in entries:
        density = _recentre(_read_map(path))
        if particle == "beta-amylase":
            density = _assemble_d2_tetramer(density)
        maps[key.replace("/", "__")] = density.astype(np.float16)
        index.append({"key": key, "particle_type": particle, "source": path.name})
    # mypy matches **maps against savez_compressed's allow_pickle: bool; the keys are map names
    np.savez_compressed(out_path, index=np.array(json.dumps(index)), **maps)  # type: ignore[arg-type]
    return out_path


def support_radius_vox(density: NDArray[np.float32]) -> float:
    """Distance from the box centre to the farthest support voxel, plus half a voxel."""
    support = np.argwhere(density > SUPPORT_LEVEL)
    centre = (np.array(density.shape) - 1) / 2
    return float(np.sqrt(((support - centre) ** 2).sum(axis=1)).max()) + 0.5


@functools.lru_cache(maxsize=1)
def load_templates() -> dict[str, Template]:
    """Load the packaged template library (cached).

    Returns
    -------
    dict of str to Template
        Keyed ``target/<particle>``, ``alternate/<particle>`` and ``distractor/<pdb>``.
    """
    path = resources.files("cryopick") / "data" / "templates" / LIBRARY_FILE
    with resources.as_file(path) as local, np.load(local) as npz:
        index = json.loads(str(npz["index"]))
        out = {}
        for entry in index:
            density = npz[entry["key"].replace("/", "__")].astype(np.float32)
            out[entry["key"]] = Template(
                entry["key"],
                density,
                entry["particle_type"],
                support_radius_vox(density),
                entry.get("source"),
            )
    return out


def rotate_template(
    density: NDArray[np.float32],
    rotation_zyx: NDArray[np.float64],
    shift_zyx: NDArray[np.float64] | None = None,
    zoom: float = 1.0,
) -> NDArray[np.float32]:
    """Rotate a centred density about its box centre, resample it and shift it sub-voxel.

    Parameters
    ----------
    density : numpy.ndarray, shape (n, n, n)
        Template with its centre at the box centre ``(n - 1) / 2``.
    rotation_zyx : numpy.ndarray, shape (3, 3)
        Rotation acting on (z, y, x) column vectors (template frame -> tomogram frame).
    shift_zyx : numpy.ndarray, shape (3,), optional
        Where the template centre goes relative to the output box centre, in output voxels.
    zoom : float
        Output voxels per template voxel: ``TEMPLATE_SPACING_A / spacing_A``. Below 1 the
        map is low-pass filtered first, so coarse grids do not alias.

    Returns
    -------
    numpy.ndarray, shape (m, m, m), float32
        ``out[p] = density(R^T (p - c_out - shift) / zoom + c)`` by trilinear
        interpolation; ``m`` is the odd size holding the zoomed box (``n`` at zoom 1).
    """
    n = density.shape[0]
    m = n if zoom == 1 else 2 * int(np.ceil((n - 1) / 2 * zoom)) + 1
    if zoom < 1:
        density = ndi.gaussian_filter(density, sigma=0.4 * (1 / zoom - 1) + 1e-3)
    c_in, c_out = np.full(3, (n - 1) / 2), np.full(3, (m - 1) / 2)
    shift = np.zeros(3) if shift_zyx is None else np.asarray(shift_zyx, dtype=np.float64)
    inv = np.asarray(rotation_zyx, dtype=np.float64).T / zoom
    offset = c_in - inv @ (c_out + shift)
    out = ndi.affine_transform(density, inv, offset=offset, output_shape=(m,) * 3, order=1)
    return np.asarray(out, dtype=np.float32)


def support_mask(density: NDArray[np.float32], fill: bool = True) -> NDArray[np.bool_]:
    """Return the voxels a particle occupies: density above :data:`SUPPORT_LEVEL`, holes filled.

    Filling makes hollow particles (apo-ferritin, VLP capsids) occupy their lumen too,
    so nothing is placed inside them and their label covers the whole particle.
    """
    mask = density > SUPPORT_LEVEL
    return np.asarray(ndi.binary_fill_holes(mask), dtype=np.bool_) if fill else mask


def rotation_xyz_to_zyx(rotation_xyz: NDArray[np.float64]) -> NDArray[np.float64]:
    """Re-express a rotation of (x, y, z) vectors as one of (z, y, x) vectors (and back)."""
    return np.flip(np.asarray(rotation_xyz, dtype=np.float64), axis=(0, 1)).copy()
