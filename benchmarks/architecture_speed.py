"""What would a network that sees 10 Å detail cost at prediction? Forward time per window.

The bundled model's first layer is a stride-2 stem: its finest level works at 20 Å. A
network whose first level works at the tomogram's 10 Å (``input_stride`` 1) sees more
detail, at a price. This times candidate architectures against the bundled pair on the
inference window (192³, batch 2), prepared as prediction prepares them (batch norms
folded, ``channels_last_3d``), in bf16 autocast and fp32, with random weights (time does
not depend on them), all in one run on one machine.

    python benchmarks/architecture_speed.py --out benchmarks/results/architecture_speed.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from ensemble_fusion import save_timings, time_network

from cryopick.inference.window import prepare_network
from cryopick.model import count_parameters
from cryopick.model.network import ModelConfig, build_model

CANDIDATES = {
    "bundled v3.4 (8,16,48,128, stride-2 stem, 2 members)": ModelConfig(
        widths=(8, 16, 48, 128), members=2
    ),
    "one member of it": ModelConfig(widths=(8, 16, 48, 128)),
    "10 Å level (4,8,16,48,128), 1 member": ModelConfig(
        widths=(4, 8, 16, 48, 128), input_stride=1, output_stride=2
    ),
    "10 Å level (8,16,32,64,128), 1 member": ModelConfig(
        widths=(8, 16, 32, 64, 128), input_stride=1, output_stride=2
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", nargs="+", default=["bf16", "fp32"])
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/architecture_speed.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for precision in args.precision:
        for name, config in CANDIDATES.items():
            model = build_model(config)
            net, _ = prepare_network(model, torch.device("cpu"))
            seconds = time_network(net, precision, args.repeats)
            rows.append(
                {
                    "precision": precision,
                    "network": name,
                    "parameters": count_parameters(model),
                    "seconds": seconds,
                }
            )
            print(f"{precision:5s} {name:55s} {rows[-1]['parameters']:>9,d} {seconds:.3f} s")
    save_timings(rows, args.out)


if __name__ == "__main__":
    main()
