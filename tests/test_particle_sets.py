"""Particle sets (issue 13 foundation): the default set, particles files, user densities, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from typer.testing import CliRunner

from cryopick.cli import app
from cryopick.core.errors import InputError
from cryopick.core.particles import (
    ParticleSet,
    ParticleSetError,
    ParticleSpec,
    UnknownParticleError,
    default_particle_set,
)
from cryopick.core.particles_file import complete_radii, load_particles_file
from cryopick.io.mrc import write_mrc
from cryopick.simulate.user_maps import density_for

BALL_RADIUS_A = 30.0  # 6 voxels at 5 Å
MODEL_RADIUS_A = 40.0


def _write_ball(path: Path, value: float = 1.0) -> Path:
    z, y, x = np.mgrid[:40, :40, :40]
    ball = ((z - 14) ** 2 + (y - 22) ** 2 + (x - 25) ** 2) <= 36
    return write_mrc(path, ball.astype(np.float32) * value, 5.0)


def _write_model(path: Path) -> Path:
    import gemmi

    rng = np.random.default_rng(0)
    pts = rng.uniform(-1, 1, (3000, 3))
    pts = pts[np.linalg.norm(pts, axis=1) < 1][:600] * MODEL_RADIUS_A + [100.0, -50.0, 20.0]
    st, model, chain = gemmi.Structure(), gemmi.Model("1"), gemmi.Chain("A")
    for i, p in enumerate(pts):
        res = gemmi.Residue()
        res.name, res.seqid = "GLY", gemmi.SeqId(i + 1, " ")
        atom = gemmi.Atom()
        atom.name, atom.element, atom.pos, atom.b_iso = (
            "CA",
            gemmi.Element("C"),
            gemmi.Position(*p),
            20,
        )
        res.add_atom(atom)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.write_pdb(str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("own")
    _write_ball(d / "ball.mrc")
    (d / "maps").mkdir()
    _write_model(d / "maps" / "blob.pdb")
    return d


def _write(d: Path, entries: object, name: str = "particles.json") -> Path:
    path = d / name
    path.write_text(json.dumps(entries if isinstance(entries, dict) else {"particles": entries}))
    return path


GOOD = [
    {"name": "Ball", "map": "ball.mrc", "radius_A": 30, "weight": 2, "aliases": ["sphere"]},
    {"name": "blob", "model": "maps/blob.pdb", "weight": 0.5},
]


def test_default_set_is_the_czii_six_and_round_trips() -> None:
    ps = default_particle_set()
    assert ps.names == (
        "apo-ferritin", "beta-amylase", "beta-galactosidase",
        "ribosome", "thyroglobulin", "virus-like-particle",
    )  # fmt: skip
    assert ps.colours["apo-ferritin"] == "#1f77b4" and ps.colour("ribosome") == "#d62728"
    assert ps.get("FERRITIN-complex").name == "apo-ferritin"
    assert ps.get("vlp").name == "virus-like-particle"
    assert ps.by_label(4).name == "ribosome"
    assert ps.n_classes == 7 and ps.total_weight == 7.0 and ps.is_czii
    assert ps.max_radius_A == 150.0 and ps.radius_A("thyroglobulin") == 130.0
    assert ParticleSet.from_records(ps.to_records()) == ps
    with pytest.raises(UnknownParticleError):
        ps.get("proteasome")
    with pytest.raises(UnknownParticleError):
        ps.by_label(7)


def test_a_set_without_a_radius_says_so() -> None:
    ps = ParticleSet((ParticleSpec(name="a"), ParticleSpec(name="b", radius_A=40)))
    assert not ps.is_czii and ps.radius_A("b") == 40.0
    with pytest.raises(ParticleSetError, match="particle 'a': radius_A is not known"):
        ps.radius_A("a")
    assert ps.with_radii({"a": 25.0}).radius_A("a") == 25.0


def test_labels_assigned_in_order_and_colours_default() -> None:
    ps = ParticleSet((ParticleSpec(name="a"), ParticleSpec(name="b", label=1)))
    assert ps.names == ("b", "a") and [s.label for s in ps] == [1, 2]
    assert len(set(ps.colours.values())) == 2
    assert ps.with_radii({"a": 50.0}).radii_A == {"b": None, "a": 50.0}


def test_file_round_trip_and_densities(files: Path) -> None:
    ps = load_particles_file(_write(files, GOOD))
    assert ps.names == ("Ball", "blob") and [s.label for s in ps] == [1, 2]
    assert ps.weights == {"Ball": 2.0, "blob": 0.5}
    assert ps.get("SPHERE").map == (files / "ball.mrc").resolve()

    density, radius = density_for(ps.get("ball"), 10.0)
    centre = (np.array(density.shape) - 1) / 2
    assert abs(radius - BALL_RADIUS_A) < 0.15 * BALL_RADIUS_A
    assert np.abs(np.array(ndi.center_of_mass(density)) - centre).max() < 0.5
    assert density.shape[0] < 20  # resampled to 10 Å and cropped (the file is 40^3 at 5 Å)

    density, radius = density_for(ps.get("blob"), 10.0)
    centre = (np.array(density.shape) - 1) / 2
    assert abs(radius - MODEL_RADIUS_A) < 0.2 * MODEL_RADIUS_A
    assert np.abs(np.array(ndi.center_of_mass(density)) - centre).max() < 0.5


def _with(**change: object) -> list[dict]:
    first = {**GOOD[0], **change}
    return [{k: v for k, v in first.items() if v is not None}, GOOD[1]]


BAD = {
    "missing map": (_with(map="nope.mrc"), "nope.mrc does not exist"),
    "no source": (_with(map=None), "needs a 'map' or a 'model'"),
    "both sources": (_with(model="maps/blob.pdb"), "both 'map' and 'model'"),
    "empty map": (_with(map="zero.mrc", radius_A=None), "empty map"),
    "radius far off": (_with(radius_A=100), "inconsistent"),
    "duplicate name": ([GOOD[0], {**GOOD[1], "name": "ball"}], "duplicate name"),
    "alias clash": ([GOOD[0], {**GOOD[1], "aliases": ["BALL"]}], "clashes"),
    "zero radius": (_with(radius_A=0), "radius_A"),
    "negative weight": (_with(weight=-1), "weight"),
    "typo": (_with(raduis_A=30), "unknown key"),
    "high threshold": (_with(threshold=5.0), "empty map"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_entries_raise_one_line_input_error(files: Path, case: str) -> None:
    write_mrc(files / "zero.mrc", np.zeros((8, 8, 8), np.float32), 5.0)
    entries, expected = BAD[case]
    path = _write(files, entries, "bad.json")
    with pytest.raises(InputError) as err:
        load_particles_file(path)
    msg = str(err.value)
    assert "\n" not in msg and expected in msg, msg
    assert "particle 'ball'" in msg.lower(), msg


def test_invalid_json(files: Path) -> None:
    path = files / "broken.json"
    path.write_text('{"particles": [')
    with pytest.raises(InputError, match="not a valid JSON"):
        load_particles_file(path)


def test_yaml_file_reads_like_json_and_bad_yaml_is_one_line(files: Path) -> None:
    yaml_path = files / "particles.yaml"
    yaml_path.write_text(
        "particles:\n"
        "  - {name: Ball, map: ball.mrc, radius_A: 30, weight: 2, aliases: [sphere]}\n"
        "  - name: blob\n    model: maps/blob.pdb\n    weight: 0.5\n"
    )
    assert load_particles_file(yaml_path) == load_particles_file(_write(files, GOOD))
    bad = files / "bad.yml"
    bad.write_text("particles: [name: x\n  - : :")
    with pytest.raises(InputError, match="not a valid YAML particles file") as err:
        load_particles_file(bad)
    assert "\n" not in str(err.value)


def test_cli_table_and_error(files: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["particles", str(_write(files, GOOD))])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["name", "label", "weight"]
    assert lines[1].split()[:4] == ["Ball", "1", "2", "30"] and "map ball.mrc" in lines[1]
    assert lines[2].split()[:3] == ["blob", "2", "0.5"] and "model blob.pdb" in lines[2]

    bad = _write(files, _with(map="nope.mrc"), "bad_cli.json")
    result = runner.invoke(app, ["particles", str(bad)])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error:") and "particle 'Ball'" in errors[0]


def test_complete_radii_from_the_data_else_measured(files: Path) -> None:
    ps = load_particles_file(_write(files, GOOD, "radii.json"), check_maps=False)
    assert ps.radii_A == {"Ball": 30.0, "blob": None}
    declared = ParticleSet(
        (ParticleSpec(name="Ball", radius_A=30), ParticleSpec(name="blob", radius_A=44))
    )
    other = ParticleSet((ParticleSpec(name="x", radius_A=10),))
    assert complete_radii(ps, [None, other, declared]).radii_A == {"Ball": 30.0, "blob": 44.0}
    measured = complete_radii(ps).radius_A("blob")  # the model's equivalent sphere
    assert abs(measured - MODEL_RADIUS_A) < 0.2 * MODEL_RADIUS_A


def test_sizes_that_do_not_suit_the_picker_are_named_with_a_voxel_size_that_does(
    files: Path,
) -> None:
    from cryopick.core.particles_file import describe_size_problems

    particle_set = complete_radii(load_particles_file(_write(files, GOOD, "sizes.json")))
    assert describe_size_problems(particle_set, 10.0) == []  # 60 and ~80 Å: 6 and ~8 voxels
    # at 20 Å the ball is 3 voxels across and the blob ~4 (just enough)
    tiny, huge = (
        describe_size_problems(particle_set, 20.0),
        describe_size_problems(particle_set, 1.0),
    )
    assert len(tiny) == 1 and tiny[0].startswith("'Ball' is 60 Å across, 3 voxels at 20 Å")
    assert "too small to pick; use --spacing-A 7.5 " in tiny[0]  # 8 voxels across
    assert len(huge) == 2 and "60 voxels at 1 Å: too large" in huge[0]
    assert "--spacing-A 4 " in huge[0] and "about 2.5 Å would suit it" in huge[0]
    result = CliRunner().invoke(app, ["particles", str(files / "sizes.json"), "--spacing-A", "20"])
    assert (
        result.exit_code == 0 and "warning:" in result.output and "'Ball' is 60 Å" in result.output
    )
