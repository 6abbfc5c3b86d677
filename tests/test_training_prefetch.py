"""Batches drawn by worker processes: the same for any number of workers, resumable."""

import multiprocessing

import numpy as np
import pytest
import torch

from cryopick.training import prefetch
from cryopick.training.augmentation import AugmentConfig
from cryopick.training.config import TrainConfig
from cryopick.training.prefetch import BatchPrefetcher, draw_seeded_batch
from cryopick.training.sampling import PatchSampler
from cryopick.training.trainer import train

from shared_settings import TINY_TRAINING

needs_fork = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork"
)


def _sampler(run, seed=0):
    return PatchSampler(
        [run], (32, 32, 32), 2, "sphere", 0.5, 0.8, AugmentConfig(), np.random.default_rng(seed)
    )


def _draw(prefetcher, n):
    with prefetcher:
        return [prefetcher.next_batch() for _ in range(n)]


def _same(a, b):
    pairs = [(xa, xb) for (xa, _), (xb, _) in zip(a, b, strict=True)]
    pairs += [(ya, yb) for (_, ya), (_, yb) in zip(a, b, strict=True)]
    return all(np.array_equal(p, q) for p, q in pairs)


@needs_fork
def test_workers_draw_the_seeded_batches_in_order(tiny_train_run):
    sampler = _sampler(tiny_train_run)
    one = _draw(BatchPrefetcher(sampler, 2, workers=1, seed=5), 4)
    three = _draw(BatchPrefetcher(sampler, 2, workers=3, seed=5), 4)
    # batch k is drawn from (seed, k) alone: in-process, out of order, on any worker
    direct = [draw_seeded_batch(_sampler(tiny_train_run), 5, k, 2) for k in (3, 0, 2, 1)]
    direct = [direct[1], direct[3], direct[2], direct[0]]
    assert _same(one, three) and _same(one, direct)
    assert one[0][0].shape == (2, 1, 32, 32, 32) and one[0][1].shape == (2, 16, 16, 16)
    assert not np.array_equal(one[0][0], one[1][0])  # consecutive batches differ
    other_seed = _draw(BatchPrefetcher(sampler, 2, workers=2, seed=6), 1)
    assert not np.array_equal(other_seed[0][0], one[0][0])
    # the sampler keeps its own generator (the trainer checkpoints it), untouched
    assert np.array_equal(sampler.sample_batch(2)[0], _sampler(tiny_train_run).sample_batch(2)[0])


@needs_fork
def test_resuming_at_a_step_draws_the_uninterrupted_runs_batches(tiny_train_run):
    sampler = _sampler(tiny_train_run)
    full = _draw(BatchPrefetcher(sampler, 2, workers=2, seed=1), 5)
    resumed = _draw(BatchPrefetcher(sampler, 2, workers=2, seed=1, start=3), 2)
    assert _same(full[3:], resumed)


@needs_fork
def test_an_error_in_a_worker_reaches_the_trainer(tiny_train_run, monkeypatch):
    def broken(self, batch_size):
        raise OSError("volume unreadable")

    monkeypatch.setattr(PatchSampler, "sample_batch", broken)  # before the fork: inherited
    with pytest.raises(OSError, match="volume unreadable"):
        _draw(BatchPrefetcher(_sampler(tiny_train_run), 2, workers=2, seed=0), 1)
    assert prefetch._WORKER_SAMPLER is None  # closed: workers gone, sampler released


def test_without_fork_batches_are_drawn_in_process_in_the_same_order(tiny_train_run, monkeypatch):
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    drawn = _draw(BatchPrefetcher(_sampler(tiny_train_run), 2, workers=2, seed=4), 2)
    direct = [draw_seeded_batch(_sampler(tiny_train_run), 4, k, 2) for k in range(2)]
    assert _same(drawn, direct)


@needs_fork
def test_training_with_workers_is_reproducible_and_resumes_exactly(
    tmp_path, tiny_train_run, monkeypatch
):
    config = TrainConfig(**{**TINY_TRAINING, "steps": 4, "sampling_workers": 2})
    train(config, tmp_path / "a", train_runs=[tiny_train_run], progress=False)
    one_worker = config.model_copy(update={"sampling_workers": 1})
    train(one_worker, tmp_path / "b", train_runs=[tiny_train_run], progress=False)

    real = BatchPrefetcher.next_batch
    calls = {"n": 0}

    def dying(self):
        calls["n"] += 1
        if calls["n"] == 4:  # killed during step 4, after the checkpoint of step 2
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(BatchPrefetcher, "next_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "c", train_runs=[tiny_train_run], progress=False)
    monkeypatch.setattr(BatchPrefetcher, "next_batch", real)
    assert prefetch._WORKER_SAMPLER is None  # the workers were stopped
    train(config, tmp_path / "c", resume=True, train_runs=[tiny_train_run], progress=False)

    weights = [torch.load(tmp_path / d / "model.pt", weights_only=True) for d in "abc"]
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
        assert torch.equal(weights[0][key], weights[2][key]), key
    in_process = config.model_copy(update={"sampling_workers": 0})
    train(in_process, tmp_path / "d", train_runs=[tiny_train_run], progress=False)
    other = torch.load(tmp_path / "d" / "model.pt", weights_only=True)
    assert any(not torch.equal(weights[0][k], other[k]) for k in other)  # other batches


def _runs_named(source):
    return [f"{source}-a", f"{source}-b"]


@needs_fork
def test_sources_are_read_in_worker_processes_in_order():
    from cryopick.training.sources import map_sources

    sources = ["p1", "p2", "p3"]
    expected = [["p1-a", "p1-b"], ["p2-a", "p2-b"], ["p3-a", "p3-b"]]
    assert map_sources(_runs_named, sources, workers=2) == expected
    assert map_sources(_runs_named, sources, workers=0) == expected


def test_sampling_workers_are_automatic_on_cuda_only(monkeypatch):
    from cryopick.training import config as config_module

    monkeypatch.setattr(config_module.os, "cpu_count", lambda: 16)
    auto = TrainConfig()
    assert auto.sampling_workers is None
    assert auto.sampling_worker_count("cpu") == 0  # in-process: the default CPU batches
    assert auto.sampling_worker_count("cuda") == 14  # every core but two
    monkeypatch.setattr(config_module.os, "cpu_count", lambda: 64)
    assert auto.sampling_worker_count("cuda") == 16
    monkeypatch.setattr(config_module.os, "cpu_count", lambda: 2)
    assert auto.sampling_worker_count("cuda") == 1
    assert TrainConfig(sampling_workers=3).sampling_worker_count("cpu") == 3
    assert TrainConfig(sampling_workers=0).sampling_worker_count("cuda") == 0
