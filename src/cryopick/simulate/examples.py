"""An example particles file to try ``cryopick learn`` with, made without any download.

:func:`write_example_particles` writes a particles file with one particle from a density
map and one from an atomic model, as a user would bring from EMDB and the PDB:

* ``maps/proteasome-20s.mrc``: the 20S proteasome (PDB 3J9I), a barrel ~150 x 110 Å,
  from cryopick's packaged 10 Å template library, resampled to 5 Å and scaled to arbitrary
  units with a noisy background as an EMDB map has (the user's ``threshold`` then matters);
* ``models/dumbbell.cif``: a made-up two-domain complex (two globular domains of radius
  48 Å whose centres are 90 Å apart, joined by a 48 Å-wide waist: ~190 x 95 Å, about
  the mass of a 26S proteasome's core), as an mmCIF of ~58,000 heavy atoms at protein
  density, written with gemmi.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

PROTEIN_ATOMS_PER_A3 = 0.062  # heavy atoms per Å^3 in protein (0.81 Da/Å^3, ~13 Da per atom)
DOMAIN_RADIUS_A = 48.0
DOMAIN_SEPARATION_A = 90.0
LINKER_RADIUS_A = 24.0


def proteasome_map(spacing_A: float = 5.0, seed: int = 0) -> NDArray[np.float32]:
    """Return the packaged 20S proteasome density as an EMDB-like map at ``spacing_A``.

    The 10 Å template (protein interior 1.0) is resampled (cubic), scaled by 0.02 and given
    a faint Gaussian background (sigma 0.0005), so its values look like a deposited map's.
    """
    from cryopick.simulate.templates import TEMPLATE_SPACING_A, load_templates

    density = load_templates()["distractor/3j9i"].density
    resampled = ndi.zoom(density, TEMPLATE_SPACING_A / spacing_A, order=3)
    noise = np.random.default_rng(seed).normal(0.0, 0.0005, resampled.shape)
    return np.asarray(0.02 * resampled + noise, dtype=np.float32)


def dumbbell_atoms(seed: int = 0) -> NDArray[np.float64]:
    """Return heavy-atom positions (N, 3), in Å, of the made-up two-domain complex.

    Atoms sit on a jittered cubic grid at protein density inside two balls of radius
    :data:`DOMAIN_RADIUS_A`, :data:`DOMAIN_SEPARATION_A` apart along x, and a cylinder of
    radius :data:`LINKER_RADIUS_A` joining them; the centre of mass is at the origin.
    """
    step = PROTEIN_ATOMS_PER_A3 ** (-1.0 / 3.0)
    half = DOMAIN_SEPARATION_A / 2 + DOMAIN_RADIUS_A
    axis = np.arange(-half, half + step, step)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    points = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    points += np.random.default_rng(seed).uniform(-0.3, 0.3, points.shape) * step
    centres = np.array([[-DOMAIN_SEPARATION_A / 2, 0, 0], [DOMAIN_SEPARATION_A / 2, 0, 0]])
    in_domain = np.zeros(len(points), dtype=bool)
    for centre in centres:
        in_domain |= np.linalg.norm(points - centre, axis=1) <= DOMAIN_RADIUS_A
    in_linker = (np.abs(points[:, 0]) <= DOMAIN_SEPARATION_A / 2) & (
        np.hypot(points[:, 1], points[:, 2]) <= LINKER_RADIUS_A
    )
    atoms = points[in_domain | in_linker]
    return np.asarray(atoms - atoms.mean(axis=0), dtype=np.float64)


def write_atoms_mmcif(path: Path, atoms_xyz: NDArray[np.float64]) -> Path:
    """Write heavy atoms as an mmCIF model: chain A, one 4-atom residue (N, CA, C, O) each."""
    import gemmi

    structure = gemmi.Structure()
    structure.name = path.stem
    model = gemmi.Model(1)
    chain = gemmi.Chain("A")
    names = (("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O"))
    for start in range(0, len(atoms_xyz) - 3, 4):
        residue = gemmi.Residue()
        residue.name = "GLY"
        residue.seqid = gemmi.SeqId(start // 4 + 1, " ")
        for (atom_name, element), xyz in zip(names, atoms_xyz[start : start + 4], strict=True):
            atom = gemmi.Atom()
            atom.name = atom_name
            atom.element = gemmi.Element(element)
            atom.pos = gemmi.Position(*map(float, xyz))
            atom.occ = 1.0
            atom.b_iso = 30.0
            residue.add_atom(atom)
        chain.add_residue(residue)
    model.add_chain(chain)
    structure.add_model(model)
    structure.setup_entities()
    path.parent.mkdir(parents=True, exist_ok=True)
    structure.make_mmcif_document().write_file(str(path))
    return path


def write_example_particles(path: str | Path) -> Path:
    """Write the example particles file at ``path``, its map and model next to it.

    The map goes to ``maps/proteasome-20s.mrc`` and the model to ``models/dumbbell.cif``
    in the file's folder.

    Raises
    ------
    cryopick.core.errors.InputError
        If any of the three files exists already (nothing is replaced).
    """
    from cryopick.core.errors import InputError
    from cryopick.io.atomic import write_text_atomic
    from cryopick.io.mrc import write_mrc

    path = Path(path)
    map_path = path.parent / "maps" / "proteasome-20s.mrc"
    model_path = path.parent / "models" / "dumbbell.cif"
    for existing in (p for p in (path, map_path, model_path) if p.exists()):
        raise InputError(existing, "exists already; the example never replaces a file")
    write_mrc(map_path, proteasome_map(5.0), 5.0)
    write_atoms_mmcif(model_path, dumbbell_atoms())
    entries = [
        {
            "name": "proteasome-20s",
            "map": "maps/proteasome-20s.mrc",
            "threshold": 0.01,
            "pdb_id": "3J9I",
            "aliases": ["20s", "proteasome"],
        },
        {"name": "dumbbell", "model": "models/dumbbell.cif", "weight": 2},
    ]
    write_text_atomic(path, json.dumps({"particles": entries}, indent=2) + "\n")
    return path
