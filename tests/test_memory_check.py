"""Memory checks before picking: a tomogram that cannot fit is refused in one line."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from typer.testing import CliRunner

from cryopick.cli import app
from cryopick.core import memory as core_memory
from cryopick.core.errors import InputError
from cryopick.inference import memory
from cryopick.inference.memory import check_memory, estimate_predict_bytes
from cryopick.inference.pipeline import predict_tomogram
from cryopick.io.mrc import write_mrc
from test_inference_pipeline import DarkBlobDetector, _card, _tomogram, _volume

GIB = 1024**3


def test_the_estimate_grows_with_the_grid_voxels():
    small, double = estimate_predict_bytes((100, 200, 200)), estimate_predict_bytes((200, 200, 200))
    assert double - small == memory.BYTES_PER_VOXEL * 100 * 200 * 200
    # the measured figure it stands for: 1.47 GB for 184 x 630 x 630 on the bundled model
    assert 1.3 * GIB < estimate_predict_bytes((184, 630, 630)) < 2.0 * GIB


def test_a_grid_larger_than_memory_is_refused_naming_the_file_and_the_shape():
    with pytest.raises(InputError) as info:
        check_memory("TS_1.mrc", (1000, 1000, 1000), 10.0, available_bytes=2 * GIB)
    text = str(info.value)
    assert text.startswith("TS_1.mrc: ") and "1000 x 1000 x 1000 voxels" in text
    assert "3.7 GB as float32" in text and "2.0 GB" in text and "--spacing-A" in text


def test_a_peak_beyond_memory_warns_and_a_small_one_is_silent(caplog):
    shape = (200, 500, 500)  # 0.19 GB as float32, about 1.4 GB at its peak
    with caplog.at_level(logging.WARNING, logger="cryopick.inference.memory"):
        check_memory("TS_1.mrc", shape, 10.0, available_bytes=8 * GIB)
        assert caplog.text == ""
        check_memory("TS_1.mrc", shape, 10.0, available_bytes=1 * GIB)
    assert "TS_1.mrc: picking this tomogram (200 x 500 x 500 voxels" in caplog.text
    assert "1.0 GB available" in caplog.text


def test_where_memory_cannot_be_read_nothing_is_refused(monkeypatch, caplog):
    monkeypatch.setattr(memory, "measure_available_bytes", lambda: None)
    with caplog.at_level(logging.WARNING, logger="cryopick.inference.memory"):
        check_memory("TS_1.mrc", (10**4, 10**4, 10**4), 10.0)
    assert caplog.text == ""


def test_cgroup_limit_of_a_job_is_read(tmp_path, monkeypatch):
    job = tmp_path / "memory" / "slurm" / "job_7"
    job.mkdir(parents=True)
    (job / "memory.limit_in_bytes").write_text(f"{4 * GIB}\n")
    (job / "memory.usage_in_bytes").write_text(f"{1 * GIB}\n")
    monkeypatch.setattr(core_memory, "_cgroup_dirs", lambda: [tmp_path / "none", job])
    assert core_memory._cgroup_headroom_bytes() == 3 * GIB
    monkeypatch.setattr(core_memory, "_meminfo_available_bytes", lambda: 20 * GIB)
    assert core_memory.measure_available_bytes() == 3 * GIB  # the job's limit, not the node's


def test_a_wrong_voxel_size_is_refused_before_any_allocation(monkeypatch):
    """A tiny volume whose header says 1000 Å becomes 100³ times larger at 10 Å."""
    monkeypatch.setattr(memory, "measure_available_bytes", lambda: 4 * GIB)
    tomogram = _tomogram(_volume(shape=(16, 20, 24)), spacing_A=1000.0, source="TS_9.mrc")
    with pytest.raises(InputError, match=r"^TS_9.mrc: at the network's 10 Å voxels"):
        predict_tomogram(tomogram, DarkBlobDetector(), _card(), device="cpu")


def test_the_cli_refuses_it_in_one_line_and_writes_nothing(
    tmp_path, monkeypatch, tiny_untrained_model_dir
):
    monkeypatch.setattr(memory, "measure_available_bytes", lambda: 4 * GIB)
    path = tmp_path / "TS_9.mrc"
    write_mrc(path, np.zeros((16, 20, 24), np.float32), spacing_A=1000.0)
    out = tmp_path / "picks.csv"
    args = ["predict", str(path), "--model", str(tiny_untrained_model_dir), "-o", str(out), "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "TS_9.mrc: at the network's" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_simulating_a_run_larger_than_memory_is_refused_before_any_folder(tmp_path, monkeypatch):
    from cryopick.simulate.library import check_simulation_memory

    check_simulation_memory((184, 630, 630), available_bytes=8 * GIB)  # 2.7 GB: fits
    with pytest.raises(InputError, match=r"^--shape 184 630 630: .* about 2\.7 GB .* 1\.0 GB"):
        check_simulation_memory((184, 630, 630), available_bytes=1 * GIB)
    monkeypatch.setattr(core_memory, "measure_available_bytes", lambda: 1 * GIB)
    out = tmp_path / "sim"
    result = CliRunner().invoke(
        app, ["simulate", str(out), "--runs", "1", "--shape", "184", "630", "630"]
    )
    assert result.exit_code == 2 and "--shape 184 630 630" in result.output
    assert not out.exists()
