"""Run octopi's own command line on a CPU, timed; executed by octopi's venv, not cryopick's.

    benchmarks/.venvs/octopi/bin/python benchmarks/_peers_octopi_launch.py \
        [--timings FILE.json] -- OCTOPI_COMMAND [ARGS ...]

One patch, nothing else changes in octopi: ``octopi segment`` refuses to start without
a GPU (its ``Predictor`` raises "No GPUs available" and defaults to ``cuda``), so its
predictor is built with ``device=cpu``. ``--timings`` writes the seconds of each
training epoch and each validation of ``octopi train`` (its methods are only timed).
``--estimate FILE.json`` instead times one training step of octopi's default network
(its CLI's U-Net, crops of 96^3, ``--batch-size`` of them, AdamW, Tversky loss) and one
forward pass of its validation (4 windows of 128^3), to plan the epochs of a budget.
"""

from __future__ import annotations

import argparse
import atexit
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _patch_predictor_to_cpu() -> None:
    import torch
    from octopi.pytorch import inference

    init = inference.Predictor.__init__

    def cpu_init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["device"] = torch.device("cpu")
        count = torch.cuda.device_count
        torch.cuda.device_count = lambda: 1  # only to pass the GPU check
        try:
            init(self, *args, **kwargs)
        finally:
            torch.cuda.device_count = count

    inference.Predictor.__init__ = cpu_init


def _time_trainer(timings_path: Path) -> None:
    from octopi.pytorch import trainer

    t0 = time.perf_counter()
    record: dict[str, list[float]] = {"epoch_s": [], "validation_s": [], "epoch_end_s": []}

    def timed(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                record[name].append(round(time.perf_counter() - start, 3))
                if name == "epoch_s":
                    record["epoch_end_s"].append(round(time.perf_counter() - t0, 3))

        return wrapper

    model_trainer = trainer.ModelTrainer
    model_trainer.train_update = timed("epoch_s", model_trainer.train_update)
    model_trainer.validate_update = timed("validation_s", model_trainer.validate_update)
    atexit.register(lambda: timings_path.write_text(json.dumps(record)))


def _estimate(path: Path, batch_size: int) -> None:
    import torch
    from monai.losses import TverskyLoss
    from octopi.entry_points.run_train import get_model_config
    from octopi.models import common

    config = get_model_config([32, 64, 96, 96], [2, 2, 1], 1, 96)  # octopi train's defaults
    model = common.get_model("Unet").build_model({**config, "num_classes": 7})
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    loss = TverskyLoss(include_background=True, to_onehot_y=True, softmax=True, alpha=0.3)
    x = torch.randn(batch_size, 1, 96, 96, 96)
    y = torch.randint(0, 7, (batch_size, 1, 96, 96, 96))
    steps = []
    for _ in range(2):  # the first one warms up
        start = time.perf_counter()
        optimiser.zero_grad()
        loss(model(x), y).backward()
        optimiser.step()
        steps.append(time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        start = time.perf_counter()
        model(torch.randn(4, 1, 128, 128, 128))
        forward_s = time.perf_counter() - start
    path.write_text(json.dumps({"step_s": steps[-1], "forward_s": forward_s}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timings", type=Path)
    parser.add_argument("--estimate", type=Path)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("octopi_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.estimate is not None:
        _estimate(args.estimate, args.batch_size)
        return
    octopi_args = args.octopi_args[1:] if args.octopi_args[:1] == ["--"] else args.octopi_args
    _patch_predictor_to_cpu()
    if args.timings is not None:
        _time_trainer(args.timings)
    from octopi.main import routines

    routines(args=octopi_args, prog_name="octopi")


if __name__ == "__main__":
    main()
