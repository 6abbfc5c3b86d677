"""Outputs never destroy user data: folders, projects, partial failures, full disks, links."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cryopick.cli import app
from cryopick.core.errors import InputError
from cryopick.inference.input_checks import (
    warn_if_thickness_not_along_z,
    warn_if_voxel_size_implausible,
)
from cryopick.inference.pipeline import PredictConfig, predict, predict_tomogram
from cryopick.io.atomic import temp_prefix, write_text_atomic
from cryopick.io.layout import make_copick_config, read_copick_config
from cryopick.io.mrc import write_mrc
from cryopick.io.picks import make_picks, read_picks, write_copick_picks
from cryopick.io.picks.copick_config import insert_array_items
from test_inference_pipeline import DarkBlobDetector, _card, _tomogram, _volume

RUNNER = CliRunner()
CPU = PredictConfig(device="cpu")


def _dead_pid() -> str:
    """The pid of a process that has exited."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _mrc_folder(folder: Path, bad: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, run in enumerate(["TS_1", "TS_2"]):
        write_mrc(folder / f"{run}.mrc", _volume(seed=i), 10.0)
    if bad:
        (folder / "TS_bad.mrc").write_bytes(b"this is not an MRC file" * 100)
    return folder


def _predict_args(model_dir: Path, *args: str) -> list[str]:
    return ["predict", *args, "--model", str(model_dir), "--device", "cpu", "-q"]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------ 1. a folder is never replaced


def test_an_existing_folder_given_as_file_output_is_refused_and_kept(
    tmp_path, tiny_untrained_model_dir
):
    tomos = _mrc_folder(tmp_path / "tomos")
    folder = tmp_path / "my_project"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "notes.txt").write_text("years of work")
    before = _tree(folder)
    for extra in ([], ["--shard", "0/1"]):
        result = RUNNER.invoke(
            app, _predict_args(tiny_untrained_model_dir, str(tomos), "-o", str(folder), *extra)
        )
        assert result.exit_code == 2, result.output
        assert "is an existing folder" in result.output
        assert _tree(folder) == before
    with pytest.raises(InputError, match="existing folder"):
        write_text_atomic(folder, "x")
    assert _tree(folder) == before


def test_report_refuses_a_folder_as_its_html_output(tmp_path):
    tomos = _mrc_folder(tmp_path / "tomos")
    picks = tmp_path / "picks.csv"
    make_picks("TS_1", "apo-ferritin", [[100.0, 120.0, 120.0]]).to_csv(picks, index=False)
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    result = RUNNER.invoke(app, ["report", str(tomos), "--picks", str(picks), "--out", str(folder)])
    assert result.exit_code == 2 and "existing folder" in result.output
    assert (folder / "keep.txt").read_text() == "keep"


# ------------------------------------------------------------ 3. simulate never mixes projects

SIM = ["--shape", "16", "32", "32", "--preset", "easy"]


def test_simulate_refuses_a_non_empty_folder_and_overwrites_only_its_own(tmp_path):
    user = tmp_path / "user_project"
    user.mkdir()
    (user / "copick_config.json").write_text('{"name": "mine", "overlay_root": "x"}')
    for extra in ([], ["--overwrite"]):
        result = RUNNER.invoke(app, ["simulate", str(user), *SIM, *extra])
        assert result.exit_code == 2, result.output
    assert json.loads((user / "copick_config.json").read_text())["name"] == "mine"

    sim = tmp_path / "sim"
    assert RUNNER.invoke(app, ["simulate", str(sim), "--runs", "2", *SIM]).exit_code == 0
    again = RUNNER.invoke(app, ["simulate", str(sim), "--runs", "1", "--seed", "5", *SIM])
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert json.loads((sim / "simulation.json").read_text())["seed"] == 0
    result = RUNNER.invoke(
        app, ["simulate", str(sim), "--runs", "1", "--seed", "5", "--overwrite", *SIM]
    )
    assert result.exit_code == 0, result.output
    record = json.loads((sim / "simulation.json").read_text())
    assert record["seed"] == 5 and record["complete"] and list(record["runs"]) == ["sim_0000"]
    # the seed-0 run sim_0001 is gone: no mixing of two simulations
    assert sorted(p.name for p in (sim / "ExperimentRuns").iterdir()) == ["sim_0000"]


def test_a_run_that_fails_while_being_written_leaves_nothing_of_it(tmp_path, monkeypatch):
    # a full disk while writing run 2 left its wbp and ctfdeconvolved tomograms and no
    # picks: training and tuning would have read it as a run without particles
    import cryopick.io.omezarr as omezarr
    from cryopick.simulate import simulate_project

    real, calls = omezarr.write_label_zarr, []

    def fail_on_the_second_run(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(omezarr, "write_label_zarr", fail_on_the_second_run)
    out = tmp_path / "sim"
    with pytest.raises(OSError):
        simulate_project(out, n_runs=3, shape=(32, 48, 48), preset="easy", progress=False)
    assert sorted(p.name for p in (out / "ExperimentRuns").iterdir()) == ["sim_0000"]
    assert len(read_picks(out / "copick_config.json", user_id="simulation")) > 0
    assert not json.loads((out / "simulation.json").read_text())["complete"]


# ------------------------------------------------------------ 4. copick output needs a project


def test_copick_output_into_a_plain_folder_of_mrcs_is_refused(tmp_path, tiny_untrained_model_dir):
    tomos = _mrc_folder(tmp_path / "tomos")
    before = _tree(tomos)
    result = RUNNER.invoke(
        app, _predict_args(tiny_untrained_model_dir, str(tomos), "--format", "copick")
    )
    assert result.exit_code == 2 and "not a copick project" in result.output
    assert _tree(tomos) == before and not (tomos / "ExperimentRuns").exists()


# ------------------------------------------------------------ 6. one bad run spoils no other


def test_one_corrupt_run_does_not_lose_the_others(tmp_path, tiny_untrained_model_dir):
    tomos = _mrc_folder(tmp_path / "tomos", bad=True)
    out = tmp_path / "picks.csv"
    result = RUNNER.invoke(app, _predict_args(tiny_untrained_model_dir, str(tomos), "-o", str(out)))
    assert result.exit_code == 1, result.output
    assert "run TS_bad failed" in result.output and "1 of 3 run(s) failed" in result.output
    picks = read_picks(out)
    assert sorted(set(picks["experiment"])) == ["TS_1", "TS_2"]
    # exactly the picks of the good runs alone
    good = predict(_mrc_folder(tmp_path / "good"), tiny_untrained_model_dir, config=CPU)
    cols = ["experiment", "particle_type", "x", "y", "z", "score"]
    pd.testing.assert_frame_equal(picks[cols], good[cols], atol=1e-3)
    assert "Traceback" not in result.output


def test_a_single_bad_tomogram_is_one_line_and_writes_nothing(
    tmp_path, tiny_untrained_model_dir, caplog
):
    bad = tmp_path / "TS_bad.mrc"
    bad.write_bytes(b"garbage" * 50)
    out = tmp_path / "picks.csv"
    with caplog.at_level(logging.INFO):
        result = RUNNER.invoke(
            app, _predict_args(tiny_untrained_model_dir, str(bad), "-o", str(out))
        )
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "TS_bad.mrc" in result.output
    assert not out.exists()
    # the reason once, in the error line: no "ERROR ...: TS_bad: cannot open: ..." before it
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# ------------------------------------------------------------ 7. a full disk


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs (root only; skipped elsewhere), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave_bytes: int) -> None:
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * max(0, free - leave_bytes))


def _project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "copick_config.json"
    config.write_text(json.dumps(make_copick_config("p", root / "overlay"), indent=2))
    return config


def test_full_disk_leaves_every_pick_file_of_a_run_as_it_was(tiny_disk):
    config = _project(tiny_disk)
    old = make_picks("TS_1", "ribosome", [[1.0, 2.0, 3.0]])
    write_copick_picks(old, config, "cryopick", "0")
    picks_dir = read_copick_config(config).picks_dir("TS_1")
    before = _tree(picks_dir)
    assert len(before) == 6
    _fill(tiny_disk, leave_bytes=8 * 1024)
    many = make_picks("TS_1", "apo-ferritin", np.random.default_rng(0).uniform(0, 1e4, (400, 3)))
    with pytest.raises(OSError) as info:
        write_copick_picks(many, config, "cryopick", "0")
    assert info.value.errno == 28  # ENOSPC
    assert _tree(picks_dir) == before  # all six files as they were, no temporaries
    assert not list(tiny_disk.rglob("*.tmp")) and not list(tiny_disk.rglob("*.journal"))


def test_full_disk_in_the_cli_is_one_line_and_leaves_no_file(
    tiny_disk, tmp_path, tiny_untrained_model_dir
):
    tomos = _mrc_folder(tmp_path / "tomos")
    _fill(tiny_disk, leave_bytes=0)
    out = tiny_disk / "picks.csv"
    result = RUNNER.invoke(app, _predict_args(tiny_untrained_model_dir, str(tomos), "-o", str(out)))
    assert result.exit_code == 1, result.output
    assert "disk is full" in result.output and "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]


def test_stale_temporaries_of_killed_writers_are_removed_on_the_next_write(tmp_path):
    config = _project(tmp_path)
    picks_dir = read_copick_config(config).picks_dir("TS_1")
    picks_dir.mkdir(parents=True)
    dead, alive = _dead_pid(), str(os.getpid())
    prefix = temp_prefix("cryopick_0_ribosome.json")
    stale = picks_dir / f"{prefix.replace(f'-{alive}-', f'-{dead}-')}x1.tmp"
    running = picks_dir / f"{prefix}x2.tmp"  # a write in progress (this process): kept
    stale.write_text("half")
    running.write_text("half")
    write_copick_picks(make_picks("TS_1", "ribosome", [[1.0, 2.0, 3.0]]), config, "me", "1")
    assert not stale.exists() and running.exists()


_KILLED_WRITER = textwrap.dedent(
    """
    import os, sys
    import cryopick.io.picks.copick_write as w
    from cryopick.io.picks import make_picks
    renames = []
    real = os.replace
    def dying_replace(src, dst):
        if len(renames) == 2:
            os._exit(9)  # killed in the middle of the commit
        renames.append(dst)
        real(src, dst)
    w.os.replace = dying_replace
    picks = make_picks("TS_1", "ribosome", [[7.0, 8.0, 9.0]])
    w.write_copick_picks(picks, sys.argv[1], "cryopick", "0", voxel_spacing=10.0)
    """
)


def test_a_writer_killed_mid_commit_is_completed_by_the_next_write(tmp_path):
    config = _project(tmp_path)
    write_copick_picks(make_picks("TS_1", "ribosome", [[1.0, 2.0, 3.0]]), config, "cryopick", "0")
    killed = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(config)], check=False)
    assert killed.returncode == 9
    picks_dir = read_copick_config(config).picks_dir("TS_1")
    spacings = {json.loads(p.read_text())["voxel_spacing"] for p in picks_dir.glob("*.json")}
    assert spacings == {None, 10.0}  # half-replaced: two files new, four old
    write_copick_picks(make_picks("TS_2", "ribosome", [[1.0, 1.0, 1.0]]), config, "cryopick", "0")
    spacings = {json.loads(p.read_text())["voxel_spacing"] for p in picks_dir.glob("*.json")}
    assert spacings == {10.0}  # the interrupted write was finished
    ribosome = read_picks(config, user_id="cryopick")
    run1 = ribosome[ribosome["experiment"] == "TS_1"]
    assert run1[["z", "y", "x"]].values.tolist() == [[7.0, 8.0, 9.0]]
    assert not list(tmp_path.rglob(".*.tmp")) and not list(tmp_path.rglob(".*.journal"))


# ------------------------------------------------------------ 8. never outside the project


def test_a_run_folder_linking_outside_the_project_is_refused(tmp_path):
    config = _project(tmp_path / "proj")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    runs = tmp_path / "proj" / "overlay" / "ExperimentRuns"
    runs.mkdir(parents=True)
    (runs / "TS_1").symlink_to(outside, target_is_directory=True)
    picks = make_picks("TS_1", "ribosome", [[1.0, 2.0, 3.0]])
    with pytest.raises(InputError, match="outside the project"):
        write_copick_picks(picks, config, "cryopick", "0")
    assert not any(outside.rglob("*"))
    for name in ("../../escape", ".."):
        with pytest.raises(InputError, match="run folder name"):
            write_copick_picks(make_picks(name, "ribosome", [[1.0, 2.0, 3.0]]), config, "me", "1")
    assert not (tmp_path / "escape").exists()


# ------------------------------------------------------------ 16. objects the config lacks


def _common_prefix_length(a: str, b: str) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def _only_inserted(old: str, new: str) -> bool:
    """True when ``new`` is ``old`` with one piece of text inserted."""
    prefix = _common_prefix_length(old, new)
    suffix = _common_prefix_length(old[::-1], new[::-1])
    return len(new) > len(old) and prefix + suffix >= len(old)


def test_undeclared_objects_are_added_to_the_config_keeping_every_other_byte(tmp_path):
    config = tmp_path / "copick.config"
    text = (
        '{\n    "name": "lab project",\n    "overlay_root": "local://'
        + str(tmp_path / "overlay")
        + '",\n    "pickable_objects": [\n        {"name": "cytosolic-ribosome", "label": 1,'
        ' "is_particle": true, "radius": 150}\n    ],\n    "extra": {"keep": [1, 2]}\n}\n'
    )
    config.write_text(text)
    picks = pd.concat(
        [
            make_picks("TS_1", "ribosome", [[1.0, 2.0, 3.0]]),
            make_picks("TS_1", "apo-ferritin", [[4.0, 5.0, 6.0]]),
        ],
        ignore_index=True,
    )
    paths = write_copick_picks(picks, config, "cryopick", "0")
    # ribosome is written under the project's own name; apo-ferritin was declared for it
    assert sorted(p.name for p in paths) == [
        "cryopick_0_apo-ferritin.json",
        "cryopick_0_cytosolic-ribosome.json",
    ]
    new = config.read_text()
    assert _only_inserted(text, new)
    objects = json.loads(new)["pickable_objects"]
    assert [o["name"] for o in objects] == ["cytosolic-ribosome", "apo-ferritin"]
    assert objects[1]["label"] == 2 and objects[1]["radius"] == 60.0  # label 1 was taken
    assert json.loads(new)["extra"] == {"keep": [1, 2]}
    back = read_picks(config, user_id="cryopick")
    assert sorted(back["particle_type"]) == ["apo-ferritin", "ribosome"]
    write_copick_picks(picks, config, "cryopick", "0")
    assert config.read_text() == new  # declared once


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1, "k": [{"n": 1}]}),
        ('{"k": []}', {"k": [{"n": 1}]}),
        ('{"s": "k\\" ]", "k": [{"n": "[]"}]}', {"s": 'k" ]', "k": [{"n": "[]"}, {"n": 1}]}),
        ('{"o": {"k": [5]}, "k": [2]}', {"o": {"k": [5]}, "k": [2, {"n": 1}]}),
    ],
)
def test_array_items_are_inserted_as_text(text, expected):
    new = insert_array_items(text, "k", [{"n": 1}])
    assert json.loads(new) == expected and _only_inserted(text, new)


# ------------------------------------------------------------ 12. small tomograms


def test_a_tomogram_smaller_than_the_window_is_warned_about(caplog):
    card = _card()  # 16-voxel training window
    with caplog.at_level(logging.WARNING, logger="cryopick.inference.pipeline"):
        predict_tomogram(_tomogram(_volume()), DarkBlobDetector(), card, device="cpu")
    assert "smaller than the network" not in caplog.text
    thin = _volume(shape=(8, 40, 44))
    with caplog.at_level(logging.WARNING, logger="cryopick.inference.pipeline"):
        predict_tomogram(_tomogram(thin), DarkBlobDetector(), card, device="cpu")
    assert "smaller than the network's 16x16x16-voxel window (z 8 < 16)" in caplog.text


def test_an_image_saved_as_a_one_slice_volume_is_refused(tmp_path, tiny_untrained_model_dir):
    # a slice or projection exported as MRC: picked as a tomogram, 0 picks and no reason
    image = tmp_path / "slice_42.mrc"
    write_mrc(image, _volume(shape=(1, 40, 44)), 10.0)
    out = tmp_path / "picks.csv"
    result = RUNNER.invoke(app, _predict_args(tiny_untrained_model_dir, str(image), "-o", str(out)))
    assert result.exit_code == 2 and not out.exists()
    assert "slice_42.mrc: is 1 x 40 x 44 voxels (z, y, x), only 1 along z" in result.output
    assert "not a tomogram" in result.output


@pytest.mark.filterwarnings("ignore:Data array contains NaN")  # the point of the test
def test_report_warns_about_slices_without_data(tmp_path, caplog):
    from cryopick.report import write_report

    tomos = tmp_path / "tomos"
    tomos.mkdir()
    write_mrc(tomos / "TS_flat.mrc", np.full((24, 40, 44), 3.0, np.float32), 10.0)
    write_mrc(tomos / "TS_nan.mrc", np.full((24, 40, 44), np.nan, np.float32), 10.0)
    write_mrc(tomos / "TS_ok.mrc", _volume(), 10.0)
    picks = tmp_path / "picks.csv"
    make_picks("TS_ok", "apo-ferritin", [[100.0, 120.0, 120.0]]).to_csv(picks, index=False)
    with caplog.at_level(logging.WARNING):
        write_report(tomos, picks, tmp_path / "report.html")
    warnings = [r.getMessage() for r in caplog.records if "show no data" in r.getMessage()]
    assert len(warnings) == 2
    assert "TS_flat" in warnings[0] and "is constant (3 everywhere)" in warnings[0]
    assert "TS_nan" in warnings[1] and "no finite value" in warnings[1]


def test_an_input_or_another_data_file_is_never_the_output(tmp_path, tiny_untrained_model_dir):
    tomos = _mrc_folder(tmp_path / "tomos")
    tomogram = tomos / "TS_1.mrc"
    before = tomogram.read_bytes()
    config = _project(tmp_path / "proj")
    config_text = config.read_text()
    cases = [
        (str(tomogram), str(tomogram), "is an input of this command"),
        (str(tomos), str(tmp_path / "other.mrc"), "a .mrc file is not what this command writes"),
        (str(config), str(config), "is an input of this command"),
        (str(tomos), str(tmp_path / "picks.star"), "expected .csv"),  # CSV format, STAR name
    ]
    for source, output, message in cases:
        result = RUNNER.invoke(app, _predict_args(tiny_untrained_model_dir, source, "-o", output))
        assert result.exit_code == 2 and message in result.output, result.output
    assert tomogram.read_bytes() == before and config.read_text() == config_text
    assert not (tmp_path / "other.mrc").exists() and not (tmp_path / "picks.star").exists()
    picks = tmp_path / "picks.csv"
    make_picks("TS_1", "apo-ferritin", [[100.0, 120.0, 120.0]]).to_csv(picks, index=False)
    kept = picks.read_bytes()
    report = ["report", str(tomos), "--picks", str(picks), "--out", str(picks)]
    result = RUNNER.invoke(app, report)
    assert result.exit_code == 2 and "is an input of this command" in result.output
    assert picks.read_bytes() == kept


def test_a_voxel_size_far_from_the_models_is_warned_about(caplog):
    # a binned tomogram whose header kept the tilt series' pixel size (2.5 Å at bin 4)
    card = _card()
    with caplog.at_level(logging.WARNING, logger="cryopick.inference.input_checks"):
        predict_tomogram(_tomogram(_volume(), spacing_A=10.2), DarkBlobDetector(), card)
    assert "voxel size" not in caplog.text
    shape = (96, 160, 176)  # SHAPE in 2.5 Å voxels
    with caplog.at_level(logging.WARNING, logger="cryopick.inference.input_checks"):
        predict_tomogram(
            _tomogram(_volume(2.5, shape), spacing_A=2.5), DarkBlobDetector(), card, device="cpu"
        )
    assert "TS_1: voxel size 2.5 Å is 4x finer than the model's 10 Å" in caplog.text
    assert "--spacing-A" in caplog.text
    assert warn_if_voxel_size_implausible("T", 40.0, 10.0)
    assert not warn_if_voxel_size_implausible("T", 13.48, 10.0)
    assert not warn_if_voxel_size_implausible("T", 5.0, 10.0)


def test_a_tomogram_thinnest_along_y_is_warned_about(caplog):
    # an IMOD reconstruction before trimvol -rx: thickness along y, the beam not along z
    card = _card()
    with caplog.at_level(logging.WARNING, logger="cryopick.inference.input_checks"):
        predict_tomogram(
            _tomogram(_volume(shape=(20, 40, 44))), DarkBlobDetector(), card, device="cpu"
        )
    assert "looks unrotated" not in caplog.text
    unrotated = _volume(shape=(44, 18, 40))
    with caplog.at_level(logging.WARNING, logger="cryopick.inference.input_checks"):
        predict_tomogram(_tomogram(unrotated), DarkBlobDetector(), card, device="cpu")
    assert "(44 x 18 x 40 voxels, z y x) is thinnest along y, not z" in caplog.text
    assert warn_if_thickness_not_along_z("T", (40, 44, 15)) and not warn_if_thickness_not_along_z(
        "T", (300, 200, 1000)
    )


# ------------------------------------------------------------ 7. Ctrl-C and other libraries' logs


def test_ctrl_c_while_picks_are_written_keeps_the_old_file_and_says_so(
    tmp_path, tiny_untrained_model_dir, monkeypatch
):
    tomos = _mrc_folder(tmp_path / "tomos")
    out = tmp_path / "picks.csv"
    out.write_text("the picks of yesterday\n")

    def interrupted_halfway(frame, path, *args, **kwargs):
        Path(path).write_text("experiment,particle_type,x")  # half a file, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", interrupted_halfway)
    result = RUNNER.invoke(app, _predict_args(tiny_untrained_model_dir, str(tomos), "-o", str(out)))
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output and "Traceback" not in result.output
    assert out.read_text() == "the picks of yesterday\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picks.csv", "tomos"]


def test_other_libraries_info_logs_stay_quiet_and_cryopick_s_show():
    # torch logged its FakeTensor cache statistics at INFO on every interrupted predict
    code = textwrap.dedent(
        """
        import logging
        from cryopick.cli.app import _main
        _main(verbose=False)
        logging.getLogger("torch._subclasses.fake_tensor").info("cache_hits: 0")
        logging.getLogger("cryopick.inference.pipeline").info("TS_1: 28 picks")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "TS_1: 28 picks" in done.stderr
    assert "cache_hits" not in done.stderr


@pytest.mark.parametrize("flag", [[], ["-q"], ["--quiet"]])
def test_simulate_quiet_hides_its_progress_bar(tmp_path, monkeypatch, flag):
    # simulate had no --quiet, unlike predict and tune: a SLURM log filled with its bar
    import cryopick.console as console

    shown = []
    real = console.step_progress_bar

    def record(show, total, label):
        shown.append(show)
        return real(show, total, label)

    monkeypatch.setattr(console, "step_progress_bar", record)
    result = RUNNER.invoke(app, ["simulate", str(tmp_path / "sim"), *SIM, *flag])
    assert result.exit_code == 0, result.output
    assert shown == [not flag]


@pytest.mark.parametrize("flag", [[], ["-q"], ["--no-progress"]])
def test_train_and_learn_take_quiet_too(tmp_path, monkeypatch, flag):
    # train and learn had only --no-progress; every other long command takes -q
    from types import SimpleNamespace

    import cryopick.learn
    import cryopick.training.trainer

    shown = []

    def record(*args, progress, **kwargs):
        shown.append(progress)
        return SimpleNamespace(steps=0, score=None, validation=[])

    monkeypatch.setattr(cryopick.training.trainer, "train", record)
    monkeypatch.setattr(cryopick.learn, "learn_particles", record)
    data = ["--data", str(tmp_path / "project")]
    trained = RUNNER.invoke(app, ["train", *data, "--out", str(tmp_path / "m"), *flag])
    learnt = RUNNER.invoke(
        app, ["learn", str(tmp_path / "p.json"), "--out", str(tmp_path / "l"), *flag]
    )
    assert trained.exit_code == 0 and learnt.exit_code == 0, trained.output + learnt.output
    assert shown == [not flag, not flag]
