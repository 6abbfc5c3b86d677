import json
import os
import shutil

import mrcfile
import numpy as np
import pytest
import zarr

from cryopick.core.errors import InputError
from cryopick.inference.preprocess import normalise_volume
from cryopick.io.layout import kaggle_layout, make_copick_config, read_copick_config
from cryopick.io.mrc import read_mrc, write_mrc
from cryopick.io.omezarr import (
    ZARR3,
    downsample_mean,
    read_ome_zarr,
    read_ome_zarr_levels,
    write_label_zarr,
    write_ome_zarr,
)
from cryopick.io.tomograms import read_tomogram, read_tomograms, write_tomogram

# zarr v3 stores where zarr-python 3 is installed (zarr 2, as copick 1.x pins, reads v2 only)
ZARR_FORMATS = [2, pytest.param(3, marks=pytest.mark.skipif(not ZARR3, reason="needs zarr 3"))]


def _volume(shape=(5, 6, 7), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _edit_attrs(store, edit):
    """Apply ``edit`` to the OME multiscale dict of a v2 or v3 store, in place."""
    if (store / ".zattrs").exists():
        meta_file = store / ".zattrs"
        meta = json.loads(meta_file.read_text())
        ms = meta["multiscales"][0]
    else:
        meta_file = store / "zarr.json"
        meta = json.loads(meta_file.read_text())
        ms = meta["attributes"]["ome"]["multiscales"][0]
    edit(ms)
    meta_file.write_text(json.dumps(meta))


# ---------------------------------------------------------------- OME-Zarr


@pytest.mark.parametrize("zarr_format", ZARR_FORMATS)
def test_ome_zarr_round_trip(tmp_path, zarr_format):
    vol = _volume()
    path = write_ome_zarr(
        tmp_path / "t.zarr", vol, 10.012, zarr_format=zarr_format, chunks=(4,) * 3
    )
    meta = ".zattrs" if zarr_format == 2 else "zarr.json"
    assert (path / meta).exists()

    data, spacing_A = read_ome_zarr(path)
    assert isinstance(data, zarr.Array)  # lazy
    np.testing.assert_array_equal(data[...], vol)
    assert spacing_A == pytest.approx(10.012)

    level1, spacing1_A = read_ome_zarr(path, level=1)
    assert level1.shape == (3, 3, 4)  # ceil(5/2), ceil(6/2), ceil(7/2)
    assert spacing1_A == pytest.approx(20.024)
    assert level1[0, 0, 0] == pytest.approx(vol[:2, :2, :2].mean(), rel=1e-5)
    # a partial edge block averages only the voxels that exist
    assert level1[2, 2, 3] == pytest.approx(vol[4:, 4:, 6:].mean(), rel=1e-5)
    assert [s for _, s in read_ome_zarr_levels(path)] == pytest.approx([10.012, 20.024, 40.048])


def test_downsample_mean_of_known_blocks():
    vol = np.arange(27, dtype=np.int16).reshape(3, 3, 3) * 8
    out = downsample_mean(vol)
    assert out.dtype == np.int16 and out.shape == (2, 2, 2)
    assert out[0, 0, 0] == 52  # (0+1+3+4+9+10+12+13) * 8 / 8
    assert out[0, 0, 1] == 8 * (2 + 5 + 11 + 14) / 4  # half block: x has one voxel left
    assert out[1, 1, 1] == 208  # a lone corner voxel


@pytest.mark.parametrize("zarr_format", ZARR_FORMATS)
def test_ome_zarr_level_path_comes_from_metadata(tmp_path, zarr_format):
    vol = _volume((4, 4, 4))
    path = write_ome_zarr(tmp_path / "t.zarr", vol, 8.0, n_levels=2, zarr_format=zarr_format)
    # rename the arrays and list the coarse one first: level indexes the list, not the names
    os.rename(path / "0", path / "full")
    os.rename(path / "1", path / "0")

    def edit(ms):
        fine, coarse = ms["datasets"]
        fine["path"], coarse["path"] = "full", "0"
        ms["datasets"] = [coarse, fine]

    _edit_attrs(path, edit)
    data, spacing_A = read_ome_zarr(path, level=1)
    np.testing.assert_array_equal(data[...], vol)
    assert spacing_A == 8.0
    coarse, coarse_A = read_ome_zarr(path, level=0)
    assert coarse.shape == (2, 2, 2) and coarse_A == 16.0


def test_ome_zarr_nanometer_axes_converted(tmp_path):
    path = write_ome_zarr(tmp_path / "t.zarr", _volume(), 10.0, n_levels=1)

    def to_nm(ms):
        for ax in ms["axes"]:
            ax["unit"] = "nanometer"
        ms["datasets"][0]["coordinateTransformations"][0]["scale"] = [0.75] * 3

    _edit_attrs(path, to_nm)
    assert read_ome_zarr(path)[1] == pytest.approx(7.5)


def test_label_zarr_keeps_labels(tmp_path):
    labels = np.zeros((4, 4, 4), np.int64)
    labels[0, 0, 0] = 3
    labels[2:, 2:, 2:] = 5
    path = write_label_zarr(tmp_path / "seg.zarr", labels, 10.0, n_levels=2)
    full, _ = read_ome_zarr(path)
    assert full.dtype == np.uint8
    np.testing.assert_array_equal(full[...], labels)
    half, half_A = read_ome_zarr(path, level=1)
    assert half_A == 20.0
    np.testing.assert_array_equal(half[...], labels[::2, ::2, ::2])  # nearest, no blending


def _corrupt_attrs(path):
    (path / ".zattrs").write_text("{not json")


def _drop_multiscales(path):
    (path / ".zattrs").write_text("{}")


def _drop_scale(path):
    _edit_attrs(path, lambda ms: ms["datasets"][0].pop("coordinateTransformations"))


def _remove_level0(path):
    shutil.rmtree(path / "0")


@pytest.mark.parametrize(
    ("damage", "level", "message"),
    [
        (_corrupt_attrs, 0, "corrupt"),
        (_drop_multiscales, 0, "multiscales"),
        (_drop_scale, 0, "voxel size"),
        (_remove_level0, 0, "missing"),
        (lambda p: None, 3, "out of range"),
    ],
)
def test_ome_zarr_errors_name_the_store(tmp_path, damage, level, message):
    path = write_ome_zarr(tmp_path / "bad.zarr", _volume(), 10.0)
    damage(path)
    with pytest.raises(InputError, match=message) as err:
        read_ome_zarr(path, level=level)
    assert err.value.path == path


def test_ome_zarr_not_zarr_and_not_3d(tmp_path):
    plain = tmp_path / "plain.zarr"
    plain.mkdir()
    with pytest.raises(InputError, match="not a zarr store"):
        read_ome_zarr(plain)
    flat = write_ome_zarr(tmp_path / "flat.zarr", _volume(), 10.0, n_levels=1)
    shutil.rmtree(flat / "0")
    group = zarr.open_group(str(flat), mode="a")
    (group.create_array if ZARR3 else group.create_dataset)("0", shape=(4, 4), dtype="f4")
    with pytest.raises(InputError, match="3-D"):
        read_ome_zarr(flat)


# ---------------------------------------------------------------- MRC


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "float16", "float32"])
def test_mrc_round_trip_each_mode(tmp_path, dtype):
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    vol = np.arange(60).reshape(3, 4, 5)
    vol = (vol + (info.max - 60 if info else -30)).astype(dtype)  # values near the type's top
    path = write_mrc(tmp_path / "t.mrc", vol, 13.48)
    data, spacing_A = read_mrc(path)
    assert isinstance(data, np.memmap)
    assert data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(data, vol)
    assert spacing_A == pytest.approx(13.48)


def test_mrc_without_voxel_size_needs_override(tmp_path):
    path = tmp_path / "raw.rec"
    with mrcfile.new(path) as mrc:
        mrc.set_data(_volume())  # voxel size left at its default: 0 or 1
    with pytest.raises(InputError, match="--spacing-A") as err:
        read_mrc(path)
    assert err.value.path == path
    assert read_mrc(path, spacing_A=10.0)[1] == 10.0
    tomo = read_tomogram(path, spacing_A=12.5)
    assert (tomo.name, tomo.spacing_A) == ("raw", 12.5)


@pytest.mark.parametrize(
    ("mapc_mapr_maps", "stored_axes"),
    [((3, 2, 1), (2, 1, 0)), ((2, 1, 3), (0, 2, 1)), ((1, 3, 2), (1, 0, 2))],
)
def test_mrc_axis_order_of_the_header_is_applied(tmp_path, caplog, mapc_mapr_maps, stored_axes):
    # the file's sections, rows, columns are the physical axes maps, mapr, mapc (1 = x)
    vol = _volume((5, 6, 7))
    path = tmp_path / "ordered.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.ascontiguousarray(vol.transpose(stored_axes)))
        mrc.header.mapc, mrc.header.mapr, mrc.header.maps = mapc_mapr_maps
        mrc.voxel_size = 10.0
    data, spacing_A = read_mrc(path)
    np.testing.assert_array_equal(data, vol)
    assert spacing_A == 10.0 and "read as z, y, x" in caplog.text
    np.testing.assert_array_equal(normalise_volume(data), normalise_volume(vol))
    with mrcfile.open(path, mode="r+") as mrc:
        mrc.header.mapc, mrc.header.mapr, mrc.header.maps = 1, 1, 3
    with pytest.raises(InputError, match=r"invalid axis order .* = \[1, 1, 3\]"):
        read_mrc(path)


def test_mrc_not_3d_and_not_mrc(tmp_path):
    flat = tmp_path / "flat.mrc"
    with mrcfile.new(flat) as mrc:
        mrc.set_data(np.zeros((4, 4), np.float32))
        mrc.voxel_size = 10.0
    with pytest.raises(InputError, match="3-D"):
        read_mrc(flat)
    junk = tmp_path / "junk.mrc"
    junk.write_bytes(b"hello")
    with pytest.raises(InputError, match="not a readable MRC"):
        read_mrc(junk)


@pytest.mark.parametrize("compress", ["gzip", "bz2"])
def test_compressed_mrc_as_emdb_distributes_maps_is_read(tmp_path, compress):
    import bz2
    import gzip

    volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    plain = write_mrc(tmp_path / "emd_1.map", volume, spacing_A=1.06)
    packed = tmp_path / f"emd_1.map.{'gz' if compress == 'gzip' else 'bz2'}"
    packed.write_bytes((gzip if compress == "gzip" else bz2).compress(plain.read_bytes()))
    data, spacing_A = read_mrc(packed)
    np.testing.assert_array_equal(data, volume)
    assert spacing_A == pytest.approx(1.06) and not data.flags.writeable


def test_a_truncated_mrc_is_called_truncated_with_its_sizes(tmp_path):
    path = tmp_path / "TS_5.mrc"
    write_mrc(path, np.ones((8, 10, 12), np.float32), spacing_A=10.0)
    path.write_bytes(path.read_bytes()[: 1024 + 2000])  # an interrupted copy
    with pytest.raises(InputError) as info:
        read_mrc(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a readable MRC file: the file is truncated")
    assert "8 x 10 x 12 voxels (4,864 bytes) but it has 3,024 bytes" in message
    path.write_bytes(b"")
    with pytest.raises(InputError, match=r"TS_5\.mrc: the file is empty \(0 bytes\)"):
        read_mrc(path)


# ---------------------------------------------------------------- project layouts


def _copick_project(tmp_path):
    config = tmp_path / "copick.json"
    cfg = make_copick_config("test", tmp_path / "overlay", tmp_path / "static")
    config.write_text(json.dumps(cfg))
    return config, read_copick_config(config)


def test_read_tomograms_copick_config(tmp_path):
    config, layout = _copick_project(tmp_path)
    vols = {"TS_2": _volume(seed=2), "TS_1": _volume(seed=1)}
    for run, vol in vols.items():
        write_tomogram(layout, run, vol, 10.0, n_levels=1)
    # the challenge data: folder says 10.000, metadata say 10.012
    odd = layout.static_root / "ExperimentRuns/TS_3/VoxelSpacing10.000/denoised.zarr"
    write_ome_zarr(odd, _volume(seed=3), 10.012, n_levels=2)
    (layout.overlay_root / "ExperimentRuns/TS_1/Picks").mkdir(parents=True)  # overlay-only dir

    tomos = read_tomograms(config)
    assert [t.name for t in tomos] == ["TS_1", "TS_2", "TS_3"]
    for t in tomos[:2]:
        np.testing.assert_array_equal(t.data[...], vols[t.name])
        assert t.spacing_A == 10.0 and t.tomo_type == "denoised"
        assert isinstance(t.data, zarr.Array)
    assert tomos[2].spacing_A == pytest.approx(10.012)
    assert tomos[2].source == odd
    level1 = read_tomograms(config, level=1, runs=["TS_3"])[0]
    assert level1.spacing_A == pytest.approx(20.024) and level1.shape == (3, 3, 4)


def test_read_tomograms_kaggle_root_types_and_errors(tmp_path):
    (tmp_path / "static").mkdir()
    layout = kaggle_layout(tmp_path)
    wbp, den = _volume(seed=1), _volume(seed=2)
    write_tomogram(layout, "TS_5_4", den, 10.012, tomo_type="denoised", n_levels=1)
    write_tomogram(layout, "TS_5_4", wbp, 10.012, tomo_type="wbp", n_levels=1)
    assert layout.static_root is not None
    assert (tmp_path / "static/ExperimentRuns/TS_5_4/VoxelSpacing10.012/wbp.zarr").is_dir()

    tomo = read_tomogram(tmp_path, tomo_type="wbp")
    np.testing.assert_array_equal(tomo.to_numpy(), wbp)
    assert (tomo.name, tomo.tomo_type) == ("TS_5_4", "wbp")
    with pytest.raises(InputError, match=r"no 'isonetcorrected'.*denoised.*wbp"):
        read_tomograms(tmp_path, tomo_type="isonetcorrected")
    with pytest.raises(InputError, match=r"TS_9.*not found.*TS_5_4"):
        read_tomograms(tmp_path, runs=["TS_9"])


def test_read_tomograms_chooses_voxel_spacing_folder(tmp_path):
    runs_dir = tmp_path / "ExperimentRuns/TS_1"
    write_ome_zarr(runs_dir / "VoxelSpacing20.000/denoised.zarr", _volume(seed=2), 20.0, 1)
    write_ome_zarr(runs_dir / "VoxelSpacing10.000/denoised.zarr", _volume(seed=1), 10.0, 1)
    assert read_tomogram(tmp_path).spacing_A == 10.0  # smallest by default
    assert read_tomogram(tmp_path, spacing_A=19.0).spacing_A == 20.0  # closest


def test_read_tomograms_corrupt_zarr_in_project(tmp_path):
    store = write_ome_zarr(
        tmp_path / "ExperimentRuns/TS_1/VoxelSpacing10.000/denoised.zarr", _volume(), 10.0, 1
    )
    (store / ".zgroup").write_text("garbage")
    with pytest.raises(InputError) as err:
        read_tomograms(tmp_path)
    assert err.value.path == store


def test_read_tomograms_folder_of_files_and_single_files(tmp_path):
    a, b, c = _volume(seed=1), _volume(seed=2), _volume(seed=3)
    write_mrc(tmp_path / "a.mrc", a, 10.0)
    write_mrc(tmp_path / "b.rec", b, 10.0)
    write_ome_zarr(tmp_path / "c.zarr", c, 10.0, 1)
    (tmp_path / "notes.txt").write_text("ignored")

    tomos = read_tomograms(tmp_path)
    assert [t.name for t in tomos] == ["a", "b", "c"]
    assert isinstance(tomos[0].data, np.memmap) and isinstance(tomos[2].data, zarr.Array)
    for t, vol in zip(tomos, (a, b, c), strict=True):
        out = t.to_numpy()
        assert out.dtype == np.float32 and not isinstance(out, np.memmap)
        np.testing.assert_array_equal(out, vol)
    assert [t.name for t in read_tomograms(tmp_path, runs=["c", "a"])] == ["c", "a"]
    assert read_tomogram(tmp_path / "b.rec").shape == (5, 6, 7)
    assert read_tomogram(tmp_path / "c.zarr").name == "c"
    with pytest.raises(InputError, match="choose one run"):
        read_tomogram(tmp_path)


def test_read_tomograms_nothing_there(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_tomograms(tmp_path / "nope")
    with pytest.raises(InputError, match="no tomograms found"):
        read_tomograms(tmp_path)


def test_a_copick_config_broken_by_an_edit_says_where_its_json_breaks(tmp_path):
    config, _ = _copick_project(tmp_path)
    text = config.read_text()
    config.write_text(text.replace('"overlay_root"', '"overlay_root" "', 1))
    line = text[: text.index('"overlay_root"')].count("\n") + 1
    with pytest.raises(InputError, match=rf"copick.json: not valid JSON \(.* at line {line}, "):
        read_tomograms(config)


def _write_store_with_axes(path, volume, axes, dtype="f4"):
    """A zarr v2 / NGFF 0.4 store of one level written with zarr itself, with these axes.

    Chunks are 4 voxels along the last three axes and 1 along any before them; every
    axis has scale 1 (1 nm for the spatial axes of ``TCZYX``).
    """
    group = zarr.open_group(str(path), mode="w", **({"zarr_format": 2} if ZARR3 else {}))
    create = group.create_array if ZARR3 else group.create_dataset
    chunks = (1,) * (volume.ndim - 3) + (4, 4, 4)
    create("0", shape=volume.shape, dtype=dtype, chunks=chunks)[...] = volume
    scale = [1.0] * volume.ndim
    dataset = {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [dataset]}]
    return path


def test_a_complex_ome_zarr_is_refused_not_cast(tmp_path):
    zyx = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    volume = np.ones((4, 8, 8), np.complex64)
    store = _write_store_with_axes(tmp_path / "fft.zarr", volume, zyx, dtype="c8")
    with pytest.raises(InputError, match=r"fft\.zarr: level 0: data type complex64 is not"):
        read_tomogram(store)


TCZYX = [
    {"name": "t", "type": "time"},
    {"name": "c", "type": "channel"},
    *({"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"),
]


def test_ome_zarr_time_and_channel_axes_of_one_are_dropped(tmp_path):
    vol = _volume((6, 7, 9))
    store = _write_store_with_axes(tmp_path / "t.zarr", vol[None, None], TCZYX)
    data, spacing_A = read_ome_zarr(store)
    assert data.shape == vol.shape and data.ndim == 3 and spacing_A == 10.0
    np.testing.assert_array_equal(data[...], vol)
    np.testing.assert_array_equal(data[2:5, :, 3], vol[2:5, :, 3])
    np.testing.assert_array_equal(normalise_volume(data), normalise_volume(vol))
    (chunk,) = store.joinpath("0").glob("0?0?1?0?0")  # t=0, c=0, z chunk 1 (z 4:8)
    chunk.unlink()  # a damaged copy: the chunk checks still guard the view's reads
    data, _ = read_ome_zarr(store)
    np.testing.assert_array_equal(data[:4], vol[:4])
    message = r"chunk file '0/0\.0\.1\.0\.0' \(voxels z 4:6, y 0:4, x 0:4\) is missing"
    with pytest.raises(InputError, match=message):
        data[4:6]


def test_ome_zarr_several_channels_or_unnamed_axes_are_clear_errors(tmp_path):
    two = np.stack([_volume((4, 5, 6)), _volume((4, 5, 6), seed=1)])[None]
    store = _write_store_with_axes(tmp_path / "c2.zarr", two, TCZYX)
    with pytest.raises(InputError, match=r"axis 'c' has 2 entries \(shape \(1, 2, 4, 5, 6\)\)"):
        read_ome_zarr(store)
    czyx = _write_store_with_axes(tmp_path / "c1.zarr", two[:, :1][0], None)  # 4-D, no axes named
    with pytest.raises(InputError, match=r"expected a 3-D \(z, y, x\) volume, got shape"):
        read_ome_zarr(czyx)
    zyxc = [*TCZYX[2:], {"name": "c", "type": "channel"}]
    last = _write_store_with_axes(tmp_path / "last.zarr", two[0, :1].transpose(1, 2, 3, 0), zyxc)
    with pytest.raises(InputError, match="expected a 3-D"):
        read_ome_zarr(last)


def _write_mrc_with_sizes(path, volume, sizes_xyz_A):
    with mrcfile.new(path) as mrc:
        mrc.set_data(volume)
        mrc.voxel_size = sizes_xyz_A
    return path


def test_mrc_with_voxel_sizes_differing_between_axes_is_refused_unless_given(tmp_path):
    """A z size twice x's would put every pick's z at half its true value: refuse it."""
    vol = _volume((6, 7, 8))
    path = _write_mrc_with_sizes(tmp_path / "TS_1.mrc", vol, (10.0, 10.0, 20.0))
    with pytest.raises(
        InputError, match=r"TS_1\.mrc: .*differs between axes \(z 20\.00, y 10\.00, x 10\.00 Å\)"
    ):
        read_mrc(path)
    data, spacing_A = read_mrc(path, spacing_A=10.0)  # the user says the header is wrong
    assert spacing_A == 10.0 and data.shape == (6, 7, 8)
    # header rounding (a cell of 1347.99 Å over 100 voxels) is not anisotropy
    close = _write_mrc_with_sizes(tmp_path / "TS_2.mrc", vol, (13.48, 13.48, 13.4799))
    assert read_mrc(close)[1] == pytest.approx(13.48)


def test_folder_of_compressed_mrcs_is_read_with_run_names(tmp_path):
    """IMOD/EMPIAR downloads come as TS_1.mrc.gz: the run is TS_1, its voxels as written."""
    import bz2
    import gzip

    from cryopick.io.mrc import split_volume_name
    from cryopick.io.runs import list_run_refs

    folder = tmp_path / "tomos"
    folder.mkdir()
    volumes = {"TS_1": _volume(seed=1), "TS_2": _volume(seed=2)}
    for name, vol in volumes.items():
        plain = write_mrc(tmp_path / f"{name}.mrc", vol, spacing_A=10.0)
        packed = gzip.compress if name == "TS_1" else bz2.compress
        suffix = ".mrc.gz" if name == "TS_1" else ".mrc.bz2"
        (folder / f"{name}{suffix}").write_bytes(packed(plain.read_bytes()))
    (folder / "notes.txt.gz").write_bytes(gzip.compress(b"not a volume"))
    tomograms = read_tomograms(folder)
    assert [t.name for t in tomograms] == ["TS_1", "TS_2"]
    for t in tomograms:
        np.testing.assert_array_equal(t.to_numpy(), volumes[t.name])
        assert t.spacing_A == 10.0
    assert [r.run for r in list_run_refs([folder])] == ["TS_1", "TS_2"]
    assert read_tomogram(folder / "TS_1.mrc.gz").name == "TS_1"
    assert split_volume_name(folder / "TS_1.MRC.GZ") == ("TS_1", ".mrc")
    assert split_volume_name("archive.tar.gz") == ("archive.tar", ".gz")
    assert split_volume_name("TS_3.zarr") == ("TS_3", ".zarr")


def test_tilt_series_are_never_read_as_tomograms(tmp_path):
    """IMOD keeps TS_1.st (raw), TS_1.ali (aligned) and TS_1.rec (the tomogram) together."""
    folder = tmp_path / "TS_1"
    folder.mkdir()
    stack = _volume((41, 60, 50), seed=3)  # 41 projections
    for suffix in (".st", ".ali"):
        write_mrc(folder / f"TS_1{suffix}", stack, spacing_A=2.7)
    with pytest.raises(InputError, match=r"only tilt series: TS_1\.ali, TS_1\.st"):
        read_tomograms(folder)
    with pytest.raises(InputError, match=r"TS_1\.st: is a tilt series .*reconstruct it first"):
        read_tomograms(folder / "TS_1.st")
    tomogram = _volume((10, 60, 50), seed=4)
    write_mrc(folder / "TS_1.rec", tomogram, spacing_A=10.8)
    (found,) = read_tomograms(folder)  # the tomogram alone, not three runs named TS_1
    assert found.name == "TS_1" and found.source.name == "TS_1.rec"
    np.testing.assert_array_equal(found.to_numpy(), tomogram)


def test_a_plain_zarr_array_is_read_at_the_voxel_size_given(tmp_path):
    """A zarr array saved by napari / dask (no OME-NGFF metadata) says no voxel size."""
    vol = _volume((6, 7, 8), seed=5)
    zarr.open_array(str(tmp_path / "TS_1.zarr"), mode="w", shape=vol.shape, dtype="f4")[:] = vol
    with pytest.raises(InputError, match=r"TS_1\.zarr: a plain zarr array .* --spacing-A"):
        read_tomogram(tmp_path / "TS_1.zarr")
    tomo = read_tomogram(tmp_path / "TS_1.zarr", spacing_A=13.48)
    assert tomo.name == "TS_1" and tomo.spacing_A == 13.48
    np.testing.assert_array_equal(tomo.to_numpy(), vol)
    # a level inside an OME-Zarr image is not plain: its parent holds the voxel size
    store = write_ome_zarr(tmp_path / "TS_2.zarr", vol, 10.0)
    with pytest.raises(InputError, match="pass the parent"):
        read_ome_zarr(store / "0")
