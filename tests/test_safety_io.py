"""Hardening of tomogram input (issue 11): damaged zarr chunks, config names, competition
folders, runs lacking a reconstruction type, NGFF translations."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import zarr

from cryopick.core.errors import InputError
from cryopick.io.layout import kaggle_layout, make_copick_config, resolve_layout
from cryopick.io.omezarr import ZARR3, read_ome_zarr, read_ome_zarr_levels, write_ome_zarr
from cryopick.io.tomograms import read_tomogram, read_tomograms, write_tomogram
from cryopick.scale.parts import list_run_refs

FORMATS = [2, 3] if ZARR3 else [2]
CHUNK_KEY = {2: "0/1/1/1", 3: "0/c/1/1/1"}  # chunk (1, 1, 1) of level 0, as write_ome_zarr names it


def _volume(seed: int = 0) -> np.ndarray:
    vol = np.random.default_rng(seed).normal(size=(10, 10, 10)).astype(np.float32)
    vol[:4, :4, :4] = 0.0  # one chunk equal to the fill value
    return vol


def _store(tmp_path: Path, fmt: int, name: str = "t.zarr") -> Path:
    return write_ome_zarr(
        tmp_path / name, _volume(), 10.0, n_levels=1, zarr_format=fmt, chunks=(4,) * 3
    )


def _chunk_files(array_dir: Path) -> list[Path]:
    meta = {".zarray", ".zattrs", "zarr.json"}
    return [p for p in array_dir.rglob("*") if p.is_file() and p.name not in meta]


# ---------------------------------------------------------------- zarr chunks (item 5)


@pytest.mark.parametrize("fmt", FORMATS)
def test_writer_writes_every_chunk_also_all_fill_ones(tmp_path, fmt):
    store = _store(tmp_path, fmt)
    assert len(_chunk_files(store / "0")) == 3**3  # zarr 3 skips all-fill chunks by default


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_chunk_is_an_error_naming_store_and_chunk(tmp_path, fmt):
    store = _store(tmp_path, fmt)
    (store / CHUNK_KEY[fmt]).unlink()
    data, _ = read_ome_zarr(store)
    assert isinstance(data, zarr.Array)  # still lazy, still a zarr array
    np.testing.assert_array_equal(data[0:4], _volume()[0:4])  # untouched chunks read fine
    for read in (lambda a: a[...], lambda a: a[4:8, 5:6, 4:8], np.asarray):
        with pytest.raises(InputError, match=f"chunk file '{CHUNK_KEY[fmt]}'.*missing") as err:
            read(data)
        assert err.value.path == store and "\n" not in str(err.value)
        assert "z 4:8, y 4:8, x 4:8" in str(err.value)
    with pytest.raises(InputError, match="missing"):  # a pickled array (Dask) still checks
        pickle.loads(pickle.dumps(data))[...]
    with pytest.raises(InputError, match="missing"):  # and so does Tomogram.to_numpy
        read_tomogram(store).to_numpy()


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupt_chunk_is_an_error_naming_store_and_chunk(tmp_path, fmt):
    store = _store(tmp_path, fmt)
    (store / CHUNK_KEY[fmt]).write_bytes(b"garbage" * 9)
    data, _ = read_ome_zarr(store)
    with pytest.raises(InputError, match=f"chunk file '{CHUNK_KEY[fmt]}'.*corrupt") as err:
        data[2:6, 2:6, 2:6]
    assert err.value.path == store and "\n" not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_missing_chunk_in_a_foreign_store_with_dot_separator(tmp_path):
    # another writer: flat '1.1.1' chunk keys, all-fill chunks not written
    store = tmp_path / "foreign.zarr"
    root = zarr.open_group(str(store), mode="w", **({"zarr_format": 2} if ZARR3 else {}))
    vol = _volume()
    if ZARR3:
        arr = root.create_array(
            "s0",
            shape=vol.shape,
            dtype=vol.dtype,
            chunks=(4, 4, 4),
            chunk_key_encoding={"name": "v2", "separator": "."},
        )
        arr[...] = vol
    else:
        root.create_dataset("s0", data=vol, chunks=(4, 4, 4), write_empty_chunks=False)
    ct = [{"type": "scale", "scale": [10.0] * 3}]
    datasets = [{"path": "s0", "coordinateTransformations": ct}]
    root.attrs["multiscales"] = [{"version": "0.4", "datasets": datasets}]
    assert (store / "s0/1.1.1").is_file()
    data, _ = read_ome_zarr(store)
    np.testing.assert_array_equal(data[4:], vol[4:])
    (store / "s0/2.0.1").unlink()
    data, _ = read_ome_zarr(store)  # chunk files are listed once, on the first read
    with pytest.raises(
        InputError, match=r"chunk file 's0/2\.0\.1' \(voxels z 8:10, y 0:4, x 4:8\)"
    ):
        data[8:, :2]
    if not (store / "s0/0.0.0").exists():  # zarr 3 did not write the all-zero chunk
        with pytest.raises(InputError, match=r"chunk file 's0/0\.0\.0'.*missing.*fill value 0"):
            data[:2, :2, :2]


# ---------------------------------------------------------------- config names, competition root


def _kaggle(root: Path, runs: dict[str, str]) -> None:
    (root / "static").mkdir(parents=True, exist_ok=True)
    layout = kaggle_layout(root)
    for i, (run, tomo_type) in enumerate(runs.items()):
        write_tomogram(layout, run, _volume(i), 10.0, tomo_type=tomo_type, n_levels=1)


def test_copick_config_of_any_file_name(tmp_path):
    _kaggle(tmp_path / "data", {"TS_1": "denoised"})
    config = tmp_path / "copick.config"  # as in the CZII Kaggle notebooks
    cfg = make_copick_config("p", tmp_path / "data/overlay", tmp_path / "data/static")
    config.write_text(json.dumps(cfg))
    layout = resolve_layout(config)
    assert layout is not None and layout.config_path == config
    assert [t.name for t in read_tomograms(config)] == ["TS_1"]
    assert [r.run for r in list_run_refs([config])] == ["TS_1"]
    for other, text in (("a.csv", "x,y\n1,2\n"), ("b.config", "[1, 2]"), ("c.bin", "\xff{")):
        (tmp_path / other).write_text(text, encoding="latin-1")
        assert resolve_layout(tmp_path / other) is None


def test_remote_and_portal_copick_configs_say_to_download_first(tmp_path):
    cfg = make_copick_config("p", tmp_path / "overlay", tmp_path / "static")
    remote = tmp_path / "remote.json"
    remote.write_text(json.dumps({**cfg, "static_root": "s3://cryoet-data-portal-public/1/"}))
    with pytest.raises(InputError, match=r"^\S*remote.json: copick root 's3://.*download"):
        read_tomograms(remote)
    portal = tmp_path / "portal.json"
    portal.write_text(json.dumps({**cfg, "config_type": "cryoet_data_portal"}))
    with pytest.raises(InputError, match=r"^\S*portal.json: a CryoET Data Portal .*download"):
        read_tomograms(portal)


def test_competition_root_with_one_split(tmp_path, caplog):
    _kaggle(tmp_path / "train", {"TS_5_4": "denoised"})
    caplog.set_level(logging.INFO, logger="cryopick")
    assert [t.name for t in read_tomograms(tmp_path)] == ["TS_5_4"]
    assert "'train' split" in caplog.text and str(tmp_path / "train") in caplog.text


def test_competition_root_with_both_splits_is_ambiguous(tmp_path):
    _kaggle(tmp_path / "train", {"TS_5_4": "denoised"})
    (tmp_path / "train/overlay/ExperimentRuns/TS_5_4/Picks").mkdir(parents=True)
    _kaggle(tmp_path / "test", {"TS_6_4": "denoised"})
    with pytest.raises(InputError, match=r"pass .*train or .*test") as err:
        read_tomograms(tmp_path)
    assert str(tmp_path / "train") in str(err.value) and str(tmp_path / "test") in str(err.value)
    with pytest.raises(InputError, match="both"):
        list_run_refs([tmp_path])
    # truth picks live only in train/overlay: unambiguous for reading picks
    picks_layout = resolve_layout(tmp_path, content="picks")
    assert picks_layout is not None and picks_layout.overlay_root == tmp_path / "train/overlay"


# ---------------------------------------------------------------- runs lacking a tomo type


def test_runs_lacking_the_tomo_type_are_skipped_with_a_warning(tmp_path, caplog):
    from cryopick.io.tomo_types import MissingTomoTypeError, runs_with_tomo_type

    _kaggle(tmp_path, {"TS_1": "denoised", "TS_2": "wbp", "TS_3": "denoised"})
    kept, skipped = runs_with_tomo_type(
        kaggle_layout(tmp_path), ["TS_1", "TS_2", "TS_3"], "denoised"
    )
    assert kept == ["TS_1", "TS_3"] and skipped == {"TS_2": {"wbp": [10.0]}}
    with caplog.at_level(logging.WARNING):
        assert [t.name for t in read_tomograms(tmp_path)] == ["TS_1", "TS_3"]
    assert "skipping 1 of 3 runs without a 'denoised'" in caplog.text
    assert "TS_2 (has: wbp (10 Å))" in caplog.text
    with pytest.raises(
        MissingTomoTypeError, match=r"run 'TS_2' has no 'denoised'.*wbp.*--tomo-type wbp\)$"
    ):
        read_tomogram(tmp_path, run="TS_2")
    with pytest.raises(
        MissingTomoTypeError, match=r"no run has a 'isonet'.*denoised \(2 of 3"
    ) as e:
        read_tomograms(tmp_path, tomo_type="isonet")
    assert str(e.value).endswith("; choose one with --tomo-type (e.g. --tomo-type denoised)")
    assert issubclass(MissingTomoTypeError, InputError)


def test_list_run_refs_skips_runs_lacking_the_tomo_type(tmp_path, caplog):
    from cryopick.io.tomo_types import MissingTomoTypeError

    _kaggle(tmp_path, {"TS_1": "denoised", "TS_2": "wbp"})
    assert [r.run for r in list_run_refs([tmp_path])] == ["TS_1", "TS_2"]  # old call unchanged
    with caplog.at_level(logging.WARNING):
        assert [r.run for r in list_run_refs([tmp_path], tomo_type="denoised")] == ["TS_1"]
    assert "TS_2 (has: wbp" in caplog.text
    with pytest.raises(MissingTomoTypeError, match="no run has a 'isonet'"):
        list_run_refs([tmp_path], tomo_type="isonet")


# ---------------------------------------------------------------- NGFF translation


def _add_translation(store: Path, fmt: int, translation: list[float]) -> None:
    meta = store / (".zattrs" if fmt == 2 else "zarr.json")
    doc = json.loads(meta.read_text())
    attrs = doc if fmt == 2 else doc["attributes"]["ome"]
    ct = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    ct.append({"type": "translation", "translation": translation})
    meta.write_text(json.dumps(doc))


@pytest.mark.parametrize("fmt", FORMATS)
def test_translation_is_warned_once_per_store(tmp_path, fmt, caplog):
    store = write_ome_zarr(tmp_path / "moved.zarr", _volume(), 10.0, n_levels=2, zarr_format=fmt)
    _add_translation(store, fmt, [20.0, 0.0, 5.0])
    with caplog.at_level(logging.WARNING):
        read_ome_zarr(store)
        read_ome_zarr(store)
        read_ome_zarr_levels(store)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert str(store) in message and "[20.0, 0.0, 5.0] Å" in message
    assert "not apply" in message


def test_no_translation_no_warning(tmp_path, caplog):
    store = _store(tmp_path, 2)
    _add_translation(store, 2, [0.0, 0.0, 0.0])
    with caplog.at_level(logging.WARNING):
        read_ome_zarr(store)
        read_ome_zarr(_store(tmp_path, 2, "plain.zarr"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
