"""Many runs as resumable tasks: Dask LocalCluster, worker death, resume, failing runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cryopick.cli import app
from cryopick.core.errors import InputError
from cryopick.core.particles import default_particle_set
from cryopick.io.atomic import temp_prefix
from cryopick.io.mrc import write_mrc
from cryopick.io.picks.csv_io import read_csv_exactly
from cryopick.io.tomograms import read_tomograms
from cryopick.scale.executors import (
    ClusterConfig,
    plan_local_threads,
    select_gpu,
    slurm_cluster_kwargs,
)
from cryopick.scale.parts import (
    list_run_refs,
    parse_shard,
    parts_dir_for,
    read_task_log,
    select_shard,
)
from cryopick.scale.runner import load_model_cached, run_predict_tasks

from shared_settings import SMALL_PROJECT

distributed = pytest.importorskip("distributed")
# stand-ins defined here must reach the workers by value (tests/ is not a package)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

N_RUNS = SMALL_PROJECT["n_runs"]
RUNS = [f"sim_{i:04d}" for i in range(N_RUNS)]

# the real path with settings for an untrained tiny network (its thresholds are low)
OPTIONS = {"device": "cpu", "blob_ratio_range": None}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """In-process batches use one PyTorch thread, like the workers and the reference."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(small_simulated_project: Path, tiny_untrained_model_dir: Path) -> pd.DataFrame:
    """Picks of the single-process path (``cryopick.inference.pipeline``), in this process."""
    import torch

    from cryopick.inference.pipeline import PredictConfig, predict_tomograms

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: same reduction order, same floats
    try:
        picks = predict_tomograms(
            read_tomograms(small_simulated_project),
            tiny_untrained_model_dir,
            PredictConfig(**OPTIONS),
        )
    finally:
        torch.set_num_threads(threads)
    assert len(picks) > 10 * N_RUNS and set(picks["experiment"]) == set(RUNS)
    return picks


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 worker processes, started the way ``--workers 2`` starts it."""
    from cryopick.scale.executors import open_client

    # one torch thread everywhere: the same floats as the single-process reference
    with open_client(ClusterConfig(workers=2, torch_threads=1)) as dask_client:
        dask_client.wait_for_workers(2)
        assert set(dask_client.run(lambda: __import__("torch").get_num_threads()).values()) == {1}
        yield dask_client


def _read_output(path: Path) -> pd.DataFrame:
    return read_csv_exactly(path, dtype={"experiment": str})


def _assert_same_picks(output: Path, reference: pd.DataFrame) -> None:
    got = _read_output(output)
    want = reference.loc[:, list(got.columns)].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False, check_exact=True)


# ------------------------------------------------------------------ pure helpers


def test_select_shard_assigns_run_k_to_shard_k_mod_n(small_simulated_project: Path) -> None:
    refs = list_run_refs([small_simulated_project])
    assert [r.run for r in refs] == RUNS
    shards = [[r.run for r in select_shard(refs, (i, 4))] for i in range(4)]
    assert shards == [RUNS[0::4], RUNS[1::4], RUNS[2::4], RUNS[3::4]]
    assert shards[0] == ["sim_0000", "sim_0004"]
    with pytest.raises(InputError, match="0 <= I < N"):
        select_shard(refs, (4, 4))


def test_parse_shard() -> None:
    assert parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "1", "a/b", "-1/2"):
        with pytest.raises(InputError, match="--shard"):
            parse_shard(bad)


def test_model_is_loaded_once_per_process_until_it_changes(
    tiny_untrained_model_dir: Path, tmp_path: Path
) -> None:
    model_dir = shutil.copytree(tiny_untrained_model_dir, tmp_path / "model")
    first = load_model_cached(model_dir)
    second = load_model_cached(model_dir)
    assert second[0] is first[0] and not second[2]
    weights = model_dir / "model.pt"
    os.utime(weights, (time.time() + 5, time.time() + 5))  # a retrained model
    third = load_model_cached(model_dir)
    assert third[2] and third[0] is not first[0]


def test_list_run_refs_rejects_a_run_in_two_inputs(
    small_simulated_project: Path, tmp_path: Path
) -> None:
    write_mrc(tmp_path / "sim_0003.mrc", np.zeros((4, 4, 4), np.float32), 10.0)
    with pytest.raises(InputError, match="'sim_0003' is also in"):
        list_run_refs([small_simulated_project, tmp_path])


def test_plan_local_threads_never_oversubscribes() -> None:
    assert plan_local_threads(2, 2) == 1
    assert plan_local_threads(1, 16) == 16
    assert plan_local_threads(3, 8) == 2
    assert plan_local_threads(4, 2) == 1


def test_local_workers_spread_over_gpus() -> None:
    assert [select_gpu(i, 4) for i in range(6)] == [0, 1, 2, 3, 0, 1]
    assert select_gpu(3, 1) is None and select_gpu(3, 0) is None
    assert select_gpu("tcp://10.0.0.1:4000", 4) is None


def test_slurm_options_become_one_worker_per_job() -> None:
    config = ClusterConfig(
        slurm=True, slurm_partition="gpu", slurm_gpus=1, slurm_cpus=8, slurm_memory="32GB"
    )
    kwargs = slurm_cluster_kwargs(config)
    assert kwargs["queue"] == "gpu"
    assert (kwargs["cores"], kwargs["processes"], kwargs["job_cpu"]) == (1, 1, 8)
    assert kwargs["memory"] == "32GB" and kwargs["walltime"] == "02:00:00"
    assert kwargs["job_extra_directives"] == ["--gpus=1"]
    assert "export OMP_NUM_THREADS=8" in kwargs["job_script_prologue"]
    with pytest.raises(ValueError, match="not both"):
        ClusterConfig(slurm=True, scheduler="tcp://x:8786")


def test_slurm_job_script_books_cores_for_torch_and_one_dask_thread() -> None:
    jobqueue = pytest.importorskip("dask_jobqueue")
    config = ClusterConfig(slurm=True, slurm_partition="gpu", slurm_gpus=2, slurm_cpus=8)
    kwargs = {**slurm_cluster_kwargs(config), "scheduler_options": {"dashboard_address": None}}
    with jobqueue.SLURMCluster(**kwargs) as cluster:
        script = cluster.job_script()
    for line in ("#SBATCH -p gpu", "--cpus-per-task=8", "#SBATCH --gpus=2", "#SBATCH -t 02:00:00"):
        assert line in script
    assert "--nthreads 1" in script and "export OMP_NUM_THREADS=8" in script


def test_slurm_without_dask_jobqueue_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cryopick.scale.executors import open_client

    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    with (
        pytest.raises(InputError, match=r"pip install 'cryopick\[slurm\]'"),
        open_client(ClusterConfig(slurm=True)),
    ):
        pass


# ------------------------------------------------------------------ in process: resume


@pytest.mark.integration
def test_resume_processes_only_missing_runs(
    small_simulated_project: Path,
    tiny_untrained_model_dir: Path,
    reference: pd.DataFrame,
    tmp_path: Path,
) -> None:
    output = tmp_path / "picks.csv"
    first = run_predict_tasks(
        [small_simulated_project],
        tiny_untrained_model_dir,
        output,
        predict_options=OPTIONS,
        progress=False,
    )
    assert first.processed == RUNS and first.complete
    _assert_same_picks(output, reference)
    parts = parts_dir_for(output)
    # simulate an interrupted batch: two runs never finished, one died while writing
    for run in ("sim_0001", "sim_0004"):
        (parts / f"{run}.json").unlink()
    (parts / "sim_0004.csv").unlink()
    # the temporary of a killed process (its pid no longer runs)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    prefix = temp_prefix("sim_0004.csv").replace(f"-{os.getpid()}-", f"-{dead}-")
    half = parts / f"{prefix}abc123.tmp"
    half.mkdir()
    (half / "sim_0004.csv").write_text("experiment,particle_type,x,y,z,score\nsim_0004,ribo")
    output.unlink()

    second = run_predict_tasks(
        [small_simulated_project],
        tiny_untrained_model_dir,
        output,
        predict_options=OPTIONS,
        progress=False,
    )
    assert second.processed == ["sim_0001", "sim_0004"]
    assert second.skipped == ["sim_0000", "sim_0002", "sim_0003", "sim_0005"]
    assert not half.exists()
    log = read_task_log(parts)
    batches = {line["batch_id"] for line in log}
    assert len(batches) == 2
    assert sorted(line["run"] for line in log[N_RUNS:]) == ["sim_0001", "sim_0004"]
    _assert_same_picks(output, reference)

    # new parameters: no part is reused (two runs keep the test short)
    cut = float(reference["score"].median())
    stricter_options = {**OPTIONS, "thresholds": dict.fromkeys(default_particle_set().names, cut)}
    two = ["sim_0002", "sim_0005"]
    changed = run_predict_tasks(
        [small_simulated_project],
        tiny_untrained_model_dir,
        output,
        predict_options=stricter_options,
        runs=two,
        progress=False,
    )
    assert changed.processed == two
    stricter = _read_output(output)
    assert set(stricter["experiment"]) == set(two)
    assert 0 < len(stricter) < (reference["experiment"].isin(two)).sum()
    assert stricter["score"].min() >= cut
    manifest = json.loads((parts / "manifest.json").read_text())
    assert manifest["predict_options"]["thresholds"] == stricter_options["thresholds"]
    again = run_predict_tasks(
        [small_simulated_project],
        tiny_untrained_model_dir,
        output,
        predict_options=stricter_options,
        runs=two,
        progress=False,
        overwrite=True,
    )
    assert again.processed == two


@pytest.mark.integration
def test_shards_merge_once_the_last_shard_is_done(
    small_simulated_project: Path,
    tiny_untrained_model_dir: Path,
    reference: pd.DataFrame,
    tmp_path: Path,
) -> None:
    output = tmp_path / "picks.csv"
    runs = []
    for i in range(3):
        result = run_predict_tasks(
            [small_simulated_project],
            tiny_untrained_model_dir,
            output,
            predict_options=OPTIONS,
            shard=(i, 3),
            progress=False,
        )
        runs += result.processed
        assert (result.output is None) == (i < 2) and result.complete == (i == 2)
    assert sorted(runs) == RUNS
    _assert_same_picks(output, reference)


@pytest.mark.integration
def test_cli_job_array_shards_then_resume(
    small_simulated_project: Path,
    tiny_untrained_model_dir: Path,
    reference: pd.DataFrame,
    tmp_path: Path,
) -> None:
    settings = tmp_path / "predict.json"
    settings.write_text(json.dumps(OPTIONS))
    output = tmp_path / "picks.csv"
    args = [
        "predict",
        str(small_simulated_project),
        "--model",
        str(tiny_untrained_model_dir),
        "-o",
        str(output),
    ]
    args += ["--config", str(settings), "-q"]
    for i in range(2):
        result = CliRunner().invoke(app, [*args, "--shard", f"{i}/2"])
        assert result.exit_code == 0, result.output
        assert output.exists() == (i == 1)
    _assert_same_picks(output, reference)
    result = CliRunner().invoke(app, [*args, "--overwrite", "--run", "sim_0003"])
    assert result.exit_code == 0, result.output
    log = read_task_log(parts_dir_for(output))
    assert [line["run"] for line in log[N_RUNS:]] == ["sim_0003"]
    assert set(_read_output(output)["experiment"]) == {"sim_0003"}
    for bad, message in [
        (["--shard", "2/2"], "0 <= I < N"),
        (["--shard", "0/2", "--workers", "2"], "--shard runs without Dask"),
        (["--slurm-gpus", "1"], "--slurm-gpus needs --slurm"),
        (["--slurm", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
    ]:
        result = CliRunner().invoke(app, args + bad)
        assert result.exit_code == 2 and message in result.output, result.output


# ------------------------------------------------------------------ Dask: real processes


@pytest.mark.integration
def test_local_cluster_gives_the_single_process_picks(
    client,
    small_simulated_project: Path,
    tiny_untrained_model_dir: Path,
    reference: pd.DataFrame,
    tmp_path: Path,
) -> None:
    output = tmp_path / "picks.csv"
    result = run_predict_tasks(
        [small_simulated_project],
        tiny_untrained_model_dir,
        output,
        client=client,
        predict_options=OPTIONS,
        progress=False,
    )
    assert result.complete and not result.failed
    assert result.processed == RUNS
    _assert_same_picks(output, reference)
    pids = {r.pid for r in result.runs}
    assert pids.isdisjoint({os.getpid()})  # the tasks ran in the workers
    # the model is loaded once per worker process, not once per run
    assert sum(r.model_loaded for r in result.runs) <= 2


@pytest.mark.integration
def test_corrupt_tomogram_fails_alone_and_the_exit_code_says_so(
    client,
    small_simulated_project: Path,
    tiny_untrained_model_dir: Path,
    reference: pd.DataFrame,
    tmp_path: Path,
) -> None:
    copy = tmp_path / "project"
    shutil.copytree(small_simulated_project.parent, copy)
    config = json.loads((copy / small_simulated_project.name).read_text())
    config["overlay_root"] = f"local://{copy}"
    (copy / small_simulated_project.name).write_text(json.dumps(config))
    chunk = copy / "ExperimentRuns/sim_0002/VoxelSpacing10.000/denoised.zarr/0/0/0/0"
    chunk.write_bytes(chunk.read_bytes()[:20])  # a half-copied chunk
    settings = tmp_path / "predict.json"
    settings.write_text(json.dumps(OPTIONS))
    output = tmp_path / "picks.csv"
    args = [
        "predict",
        str(copy / small_simulated_project.name),
        "--model",
        str(tiny_untrained_model_dir),
        "-o",
        str(output),
    ]
    args += ["--config", str(settings), "--scheduler", client.scheduler.address, "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "run sim_0002 failed" in result.output
    assert "sim_0002/VoxelSpacing10.000/denoised.zarr" in result.output
    parts = parts_dir_for(output)
    assert sorted(p.stem for p in parts.glob("sim_*.json")) == [r for r in RUNS if r != "sim_0002"]
    good = reference[reference["experiment"] != "sim_0002"]
    _assert_same_picks(output, good)  # the other runs all completed


@pytest.mark.integration
def test_killed_worker_does_not_lose_or_duplicate_picks(
    client,
    small_simulated_project: Path,
    tiny_untrained_model_dir: Path,
    reference: pd.DataFrame,
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()

    def gated_predict(tomogram, model, card, **options):
        (gate / f"started.{tomogram.name}.{os.getpid()}").touch()
        deadline = time.monotonic() + 60
        while not (gate / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        from cryopick.inference.pipeline import predict_tomogram

        return predict_tomogram(tomogram, model, card, **options)

    output = tmp_path / "picks.csv"
    box: dict = {}
    thread = threading.Thread(
        target=lambda: box.update(
            result=run_predict_tasks(
                [small_simulated_project],
                tiny_untrained_model_dir,
                output,
                client=client,
                predict_fn=gated_predict,
                predict_options=OPTIONS,
                progress=False,
            )
        )
    )
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not list(gate.glob("started.*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        started = sorted(gate.glob("started.*"))
        assert started, "no task started"
        victim_run, victim_pid = started[0].name.split(".")[1], int(started[0].name.split(".")[2])
        assert victim_pid in client.run(os.getpid).values()
        os.kill(victim_pid, signal.SIGKILL)  # dies in the middle of a run
    finally:
        (gate / "go").touch()
        thread.join(timeout=120)
    result = box["result"]
    assert result.complete and not result.failed
    # the killed run started again in another process, and was written once
    attempts = {int(p.name.split(".")[2]) for p in gate.glob(f"started.{victim_run}.*")}
    assert victim_pid in attempts and len(attempts) >= 2
    log = read_task_log(parts_dir_for(output))
    assert sorted(line["run"] for line in log) == RUNS
    assert not list(parts_dir_for(output).glob(".*.tmp"))
    _assert_same_picks(output, reference)
