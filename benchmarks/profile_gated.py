"""Where a training step (or an evaluation) of the matched Gated PixelCNN spends its time: torch.profiler's table.

The matched configuration of bench_vs_plain.py, 1x28x28 random images, Adam; two warm-up steps,
then ``--steps`` profiled.

    OMP_NUM_THREADS=1 python benchmarks/profile_gated.py [--what train|eval] [--batch 32] [--steps 3]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import pixelcnn
from bench_vs_plain import CONFIGS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", choices=("train", "eval"), default="train")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rows", type=int, default=20)
    args = p.parse_args()
    torch.manual_seed(0)
    model = pixelcnn.create("gated_pixelcnn", image_shape=(1, 28, 28), levels=256, **CONFIGS["matched"])
    x = torch.randint(0, 256, (args.batch, 1, 28, 28))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train() -> None:
        opt.zero_grad(set_to_none=True)
        model.nll(x).mean().backward()
        opt.step()

    @torch.no_grad()
    def evaluate() -> None:
        model.log_prob(x)

    step = train if args.what == "train" else evaluate
    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
