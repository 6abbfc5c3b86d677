"""OME-Zarr against another implementation, ngff-zarr: zarr v3 + OME-NGFF 0.5 both ways.

cryopick's own writer cannot show that the reader follows the spec rather than the writer.
ngff-zarr (an independent OME-NGFF implementation) writes stores as other tools do: arrays
at nested paths (``scale0/<name>``) in several chunks, consolidated metadata, axes in
nanometres, a translation on the coarser level. cryopick must read their voxels and voxel
sizes. The other way round, the metadata cryopick writes must pass ngff-zarr's validation
against the OME-NGFF JSON schemas it bundles, and read back there.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from cryopick.io.omezarr import read_ome_zarr, write_ome_zarr
from cryopick.io.tomograms import read_tomograms

ngff_zarr = pytest.importorskip("ngff_zarr")  # the dev extra, Python >= 3.11
pytest.importorskip("jsonschema")  # ngff-zarr's [validate] extra

SPACING_A = 13.48  # an odd voxel size, not a round number in either unit
SHAPE = (16, 20, 24)
TO_UNIT = {"angstrom": 1.0, "nanometer": 0.1}


def _volume() -> np.ndarray:
    return np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)


def _write_with_ngff_zarr(path: Path, volume: np.ndarray, unit: str) -> Path:
    """A two-level zarr v3 / NGFF 0.5 store in ``unit``, in 8-voxel chunks."""
    image = ngff_zarr.to_ngff_image(
        volume,
        dims=["z", "y", "x"],
        scale=dict.fromkeys("zyx", SPACING_A * TO_UNIT[unit]),
        translation=dict.fromkeys("zyx", 0.0),
        axes_units=dict.fromkeys("zyx", unit),
        name="tomogram",
    )
    multiscales = ngff_zarr.to_multiscales(image, scale_factors=[2], chunks=8)
    ngff_zarr.to_ngff_zarr(path, multiscales, version="0.5")
    return path


@pytest.mark.parametrize("unit", ["nanometer", "angstrom"])
def test_reads_a_store_written_by_ngff_zarr(
    tmp_path: Path, unit: str, caplog: pytest.LogCaptureFixture
) -> None:
    volume = _volume()
    store = _write_with_ngff_zarr(tmp_path / "TS_5.zarr", volume, unit)
    root = json.loads((store / "zarr.json").read_text())
    assert root["zarr_format"] == 3 and root["attributes"]["ome"]["version"] == "0.5"
    datasets = root["attributes"]["ome"]["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == ["scale0/tomogram", "scale1/tomogram"]

    data, spacing_A = read_ome_zarr(store)
    assert spacing_A == pytest.approx(SPACING_A)
    np.testing.assert_array_equal(np.asarray(data[...]), volume)
    np.testing.assert_array_equal(np.asarray(data[3:11, 5:17, 1:20]), volume[3:11, 5:17, 1:20])

    with caplog.at_level(logging.WARNING):
        coarse, coarse_A = read_ome_zarr(store, level=1)
    assert coarse_A == pytest.approx(2 * SPACING_A)
    theirs = np.asarray(ngff_zarr.from_ngff_zarr(store).images[1].data)
    np.testing.assert_array_equal(np.asarray(coarse[...]), theirs)
    # ngff-zarr centres the coarse grid with a translation; cryopick says it does not apply it
    assert "translation" in caplog.text and "TS_5.zarr" in caplog.text

    (tomogram,) = read_tomograms(store)
    assert (tomogram.name, tomogram.shape) == ("TS_5", SHAPE)
    assert tomogram.spacing_A == pytest.approx(SPACING_A)


@pytest.mark.parametrize(
    ("zarr_format", "version", "attributes_file"),
    [(3, "0.5", "zarr.json"), (2, "0.4", ".zattrs")],
)
def test_stores_cryopick_writes_pass_ngff_zarr_validation(
    tmp_path: Path, zarr_format: int, version: str, attributes_file: str
) -> None:
    volume = _volume()
    store = write_ome_zarr(tmp_path / "TS_1.zarr", volume, SPACING_A, zarr_format=zarr_format)
    attributes = json.loads((store / attributes_file).read_text())
    if zarr_format == 3:
        attributes = attributes["attributes"]
        assert attributes["ome"]["version"] == "0.5"
    # the schema's requirements (the strict variant also wants the optional 'metadata')
    ngff_zarr.validate(attributes, version=version, model="image")

    multiscales = ngff_zarr.from_ngff_zarr(store, validate=True)
    assert [image.scale for image in multiscales.images] == [
        dict.fromkeys("zyx", pytest.approx(SPACING_A * 2**level)) for level in range(3)
    ]
    assert [a.unit for a in multiscales.metadata.axes] == ["angstrom"] * 3
    np.testing.assert_array_equal(np.asarray(multiscales.images[0].data), volume)


def test_reads_a_tczyx_store_with_one_time_point_and_channel(tmp_path: Path) -> None:
    # bioformats2raw and other converters write t, c, z, y, x even for one volume
    volume = _volume()
    image = ngff_zarr.to_ngff_image(
        volume[None, None],
        dims=["t", "c", "z", "y", "x"],
        scale={"t": 1.0, "c": 1.0, **dict.fromkeys("zyx", SPACING_A / 10)},
        axes_units={"t": "second", **dict.fromkeys("zyx", "nanometer")},
        name="tomogram",
    )
    multiscales = ngff_zarr.to_multiscales(image, scale_factors=[], chunks=8)
    store = tmp_path / "TS_6.zarr"
    ngff_zarr.to_ngff_zarr(store, multiscales, version="0.5")
    axes = json.loads((store / "zarr.json").read_text())["attributes"]["ome"]["multiscales"][0]
    assert [a["name"] for a in axes["axes"]] == ["t", "c", "z", "y", "x"]

    data, spacing_A = read_ome_zarr(store)
    assert data.shape == SHAPE and spacing_A == pytest.approx(SPACING_A)
    np.testing.assert_array_equal(np.asarray(data), volume)
    np.testing.assert_array_equal(data[3:11, 5], volume[3:11, 5])
    (tomogram,) = read_tomograms(store)
    assert tomogram.shape == SHAPE and tomogram.spacing_A == pytest.approx(SPACING_A)
