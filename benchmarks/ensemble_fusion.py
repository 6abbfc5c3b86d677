"""Would one grouped-convolution network run a two-member ensemble faster than two passes?

The bundled model averages two U-Nets of one architecture (``UNetEnsemble``): two forward
passes per window. Fused, the members become one network of twice the channels whose
convolutions have ``groups=2`` (each member's channels see only their own), one pass per
window, the same arithmetic. This times both on the inference window (192³, batch 2),
prepared as prediction prepares them (batch norms folded, ``channels_last_3d``), in fp32
and bf16 autocast, with random weights (time does not depend on them). The fused network
is built here only; the package does not have one.

    python benchmarks/ensemble_fusion.py --out benchmarks/results/ensemble_fusion.json
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cryopick.inference.window import prepare_network
from cryopick.model import describe_hardware
from cryopick.model.network import ModelConfig, build_model

WIDTHS = (8, 16, 48, 128)  # the bundled model's


def _block(c_in: int, c_out: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(groups * c_in, groups * c_out, 3, padding=1, groups=groups),
        nn.ReLU(inplace=True),
        nn.Conv3d(groups * c_out, groups * c_out, 3, padding=1, groups=groups),
        nn.ReLU(inplace=True),
    )


class FusedUNet(nn.Module):
    """``groups`` U-Nets (stride-2 stem and output, as the bundled model) as one network."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS, groups: int = 2, n_classes: int = 7):
        super().__init__()
        g, w = groups, widths
        self.groups = g
        self.stem = nn.Sequential(nn.Conv3d(1, g * w[0], 2, stride=2), nn.ReLU(inplace=True))
        self.encoders = nn.ModuleList(
            _block(w[0] if i == 0 else w[i - 1], w[i], g) for i in range(len(w))
        )
        self.levels = list(range(len(w) - 2, -1, -1))
        self.ups = nn.ModuleList(
            nn.ConvTranspose3d(g * w[i + 1], g * w[i], 2, stride=2, groups=g) for i in self.levels
        )
        self.decoders = nn.ModuleList(_block(2 * w[i], w[i], g) for i in self.levels)
        self.head = nn.Conv3d(g * w[0], g * n_classes, 1, groups=g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        x = self.stem(x)
        for i, encoder in enumerate(self.encoders):
            x = encoder(x if i == 0 else F.max_pool3d(x, 2))
            skips.append(x)
        for level, up, decoder in zip(self.levels, self.ups, self.decoders, strict=True):
            # each member's upsampled and skip channels side by side, member after member
            pair = [
                up(x).unflatten(1, (self.groups, -1)),
                skips[level].unflatten(1, (self.groups, -1)),
            ]
            x = decoder(torch.cat(pair, dim=2).flatten(1, 2))
        return self.head(x).unflatten(1, (self.groups, -1)).mean(1)


def time_network(net: nn.Module, precision: str, repeats: int) -> float:
    """Median seconds of one forward pass on a (2, 1, 192, 192, 192) batch."""
    x = torch.randn(2, 1, 192, 192, 192).to(memory_format=torch.channels_last_3d)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    times = []
    with torch.inference_mode(), autocast:
        net(x)  # warm-up: oneDNN picks its kernels
        for _ in range(repeats):
            start = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ensemble_fusion.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    rows = []
    for precision in ("bf16", "fp32"):
        for members in (1, 2):
            net, _ = prepare_network(build_model(ModelConfig(widths=WIDTHS, members=members)), cpu)
            seconds = time_network(net, precision, args.repeats)
            rows.append(
                {"precision": precision, "network": f"{members} member(s)", "seconds": seconds}
            )
        fused = FusedUNet().eval().to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
        rows.append(
            {
                "precision": precision,
                "network": "2 fused (groups=2)",
                "seconds": time_network(fused, precision, args.repeats),
            }
        )
    for row in rows:
        print(f"{row['precision']:5s} {row['network']:20s} {row['seconds']:.3f} s per batch")
    save_timings(rows, args.out)


def save_timings(rows: list[dict], out: Path) -> None:
    """Write rows timed by :func:`time_network` as JSON, with the machine and the batch."""
    result = {"hardware": describe_hardware(), "window": [192, 192, 192], "batch": 2, "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
