"""Where prediction tasks run: in this process, on a Dask LocalCluster, a cluster or SLURM.

:mod:`cryopick.scale.runner` decides *what* to run (one task per run) and this module decides
*where*: :func:`map_in_process` (one machine, no Dask) or :func:`map_on_client` (Dask).
Dask is an optional extra (``pip install 'cryopick[scale]'``; SLURM also needs
``'cryopick[slurm]'``), so every Dask import happens inside a function.

Each worker runs one task at a time (one Dask thread): a task holds a whole tomogram and its
probability maps, and PyTorch parallelises inside the task. The worker's PyTorch thread count
is set so that ``workers x torch threads`` does not exceed the cores of the machine or job.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cryopick.core.errors import InputError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Environment variables that size the thread pools of numerical libraries in a worker.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class ClusterConfig(BaseModel):
    """Where to run the tasks; built from ``--workers/--scheduler/--slurm*``.

    Exactly one of ``scheduler`` and ``slurm`` may be set; otherwise a LocalCluster with
    ``workers`` processes is started (``workers=None``: one per core).
    """

    model_config = ConfigDict(extra="forbid")

    workers: int | None = Field(None, ge=1, description="local worker processes")
    scheduler: str | None = Field(None, description="address of a running Dask scheduler")
    slurm: bool = Field(False, description="start workers as SLURM jobs (dask-jobqueue)")
    slurm_partition: str | None = None
    slurm_gpus: int = Field(0, ge=0, description="GPUs per SLURM job")
    slurm_cpus: int = Field(4, ge=1, description="CPU cores per SLURM job")
    slurm_memory: str = Field("16GB", description="memory per SLURM job, e.g. 32GB")
    slurm_walltime: str = Field("02:00:00", description="walltime per SLURM job, HH:MM:SS")
    slurm_jobs: int = Field(1, ge=1, description="number of SLURM jobs (one worker each)")
    torch_threads: int | None = Field(
        None, ge=1, description="PyTorch threads per worker (default: cores // workers)"
    )

    @model_validator(mode="after")
    def _one_backend(self) -> ClusterConfig:
        if self.scheduler and self.slurm:
            raise ValueError("give either a scheduler address or --slurm, not both")
        return self


def cluster_config_from_options(
    options: dict[str, Any], sharded: bool = False
) -> ClusterConfig | None:
    """Validate the CLI's scale-out options (None = not given) into a ClusterConfig.

    Returns None when no Dask option was given (the tasks then run in this process).

    Raises
    ------
    InputError
        For contradictory options: ``--shard`` with Dask options, ``--slurm-*`` without
        ``--slurm``, or a scheduler address together with ``--slurm``.
    """
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    if sharded and given:
        raise InputError(None, "--shard runs without Dask: drop --workers/--scheduler/--slurm")
    if (slurm_only := [k for k in given if k.startswith("slurm_")]) and "slurm" not in given:
        raise InputError(None, f"--{slurm_only[0].replace('_', '-')} needs --slurm")
    try:
        return ClusterConfig(**given) if given else None
    except ValueError as err:
        raise InputError(None, f"invalid scale-out options: {err}") from None


def count_cores() -> int:
    """Cores this process may use (CPU affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def plan_local_threads(n_workers: int, n_cores: int) -> int:
    """PyTorch threads per worker so that ``n_workers`` workers do not oversubscribe cores.

    Parameters
    ----------
    n_workers : int
        Worker processes, each running one task at a time.
    n_cores : int
        Cores of the machine.

    Returns
    -------
    int
        ``max(1, n_cores // n_workers)``.
    """
    if n_workers > n_cores:
        log.warning("%d workers on %d cores: cores are oversubscribed", n_workers, n_cores)
    return max(1, n_cores // n_workers)


def set_torch_threads(n_threads: int | None) -> None:
    """Set PyTorch's (and OpenMP's) thread count in this process; None leaves them alone."""
    if not n_threads:
        return
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(n_threads)
    import torch

    if torch.get_num_threads() != n_threads:
        torch.set_num_threads(n_threads)


def select_gpu(worker_name: object, n_gpus: int) -> int | None:
    """GPU index for a LocalCluster worker: worker ``i`` of a multi-GPU node uses GPU ``i % n``.

    Returns None (leave the default device) with fewer than two GPUs or a worker name that
    is not an integer (a worker not started by a LocalCluster).
    """
    if n_gpus < 2 or isinstance(worker_name, bool) or not isinstance(worker_name, int):
        return None
    return worker_name % n_gpus


def _worker_plugin(n_threads: int, spread_gpus: bool) -> Any:
    from distributed.diagnostics.plugin import WorkerPlugin

    class TorchSetup(WorkerPlugin):
        """Size the worker's PyTorch threads (and pick its GPU) when it starts or restarts."""

        name = "cryopick-torch-setup"

        def __init__(self, n: int, spread: bool) -> None:
            self.n, self.spread = n, spread

        def setup(self, worker: Any) -> None:
            set_torch_threads(self.n)
            if self.spread:
                import torch

                n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
                if (gpu := select_gpu(worker.name, n_gpus)) is not None:
                    torch.cuda.set_device(gpu)  # device "cuda"/"auto" then means this GPU

    return TorchSetup(n_threads, spread_gpus)


def slurm_cluster_kwargs(config: ClusterConfig) -> dict[str, Any]:
    """Keyword arguments for ``dask_jobqueue.SLURMCluster``: one worker per job.

    The worker gets one Dask thread (one run at a time) while SLURM books
    ``slurm_cpus`` cores for PyTorch (``job_cpu``).
    """
    directives = [f"--gpus={config.slurm_gpus}"] if config.slurm_gpus else []
    return {
        "queue": config.slurm_partition,
        "cores": 1,
        "processes": 1,
        "job_cpu": config.slurm_cpus,
        "memory": config.slurm_memory,
        "walltime": config.slurm_walltime,
        "job_extra_directives": directives,
        "job_script_prologue": [f"export {v}={config.slurm_cpus}" for v in THREAD_ENV_VARS],
    }


def check_cluster_libraries(config: ClusterConfig) -> None:
    """Raise InputError, before any work, when the libraries ``config`` needs are missing.

    Dask's ``distributed`` for every cluster; ``dask_jobqueue`` too for ``slurm``.
    """
    _import_distributed()
    if config.slurm:
        _import_slurm_cluster()


def _import_slurm_cluster() -> Any:
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        message = "--slurm needs dask-jobqueue: pip install 'cryopick[slurm]'"
        raise InputError(None, message) from None
    return SLURMCluster


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise InputError(
            None, "--workers/--scheduler need Dask: pip install 'cryopick[scale]'"
        ) from None
    return distributed


@contextmanager
def open_client(config: ClusterConfig) -> Iterator[Any]:
    """Start (or attach to) the cluster described by ``config`` and yield a Dask client.

    Clusters started here are closed on exit; an existing scheduler is left running.

    Raises
    ------
    InputError
        If Dask (or dask-jobqueue for ``slurm``) is not installed.
    """
    distributed = _import_distributed()
    # Dask logs every worker start and stop at INFO: keep that for --verbose only
    dask_log = logging.getLogger("distributed")
    level = dask_log.level
    if not log.isEnabledFor(logging.DEBUG):
        dask_log.setLevel(max(level, logging.WARNING))
    try:
        with _open_client(distributed, config) as client:
            yield client
    finally:
        dask_log.setLevel(level)


@contextmanager
def _open_client(distributed: Any, config: ClusterConfig) -> Iterator[Any]:
    if config.scheduler:
        with distributed.Client(config.scheduler) as client:
            log.info("attached to Dask scheduler %s", config.scheduler)
            yield client
        return
    if config.slurm:
        with _import_slurm_cluster()(**slurm_cluster_kwargs(config)) as cluster:
            cluster.scale(jobs=config.slurm_jobs)
            with distributed.Client(cluster) as client:
                client.register_plugin(
                    _worker_plugin(config.torch_threads or config.slurm_cpus, spread_gpus=False)
                )
                log.info("submitted %d SLURM worker jobs", config.slurm_jobs)
                yield client
        return
    n_cores = count_cores()
    n_workers = config.workers or n_cores
    torch_threads = config.torch_threads or plan_local_threads(n_workers, n_cores)
    env = {v: str(torch_threads) for v in THREAD_ENV_VARS}
    with (
        distributed.LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            silence_logs=logging.ERROR,
            dashboard_address=None,
            env=env,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.register_plugin(_worker_plugin(torch_threads, spread_gpus=True))
        log.info("LocalCluster: %d workers x %d torch threads", n_workers, torch_threads)
        yield client


def map_in_process(
    func: Callable[..., T], items: Sequence[Any], *args: Any, on_done: Callable[[T], None]
) -> list[T]:
    """Run ``func(item, *args)`` for each item here, one after the other (no Dask)."""
    results = []
    for item in items:
        result = func(item, *args)
        on_done(result)
        results.append(result)
    return results


def map_on_client(
    client: Any,
    func: Callable[..., T],
    items: Sequence[Any],
    *args: Any,
    keys: Sequence[str],
    on_done: Callable[[T], None],
    on_error: Callable[[Any, BaseException], T],
) -> list[T]:
    """Submit ``func(item, *args)`` per item to Dask and collect results as they complete.

    ``func`` returns a small record (it catches its own errors). A task that raises anyway,
    e.g. ``KilledWorker`` after its workers died too often, is turned into a result by
    ``on_error(item, exception)``, so one bad run never stops the others.
    """
    from distributed import as_completed

    futures = {
        client.submit(func, item, *args, key=key, pure=False, retries=0): item
        for item, key in zip(items, keys, strict=True)
    }
    results = []
    for future in as_completed(futures):
        try:
            result = future.result()
        except Exception as err:
            result = on_error(futures[future], err)
        on_done(result)
        results.append(result)
        future.release()
    return results
