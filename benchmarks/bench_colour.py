"""Training throughput on colour images (issue 4): PixelCNN++ at the paper's size and small, Gated PixelCNN.

32x32 RGB, 256 levels, batch 32, Adam, one optimisation step = forward + backward + update on
the training loss (``model.nll``). Each model gets ``--warmup`` untimed steps, then ``--steps``
timed ones; the figure is images per second over the timed steps. Data are random integers:
throughput does not depend on the pixel values.

    python benchmarks/bench_colour.py [--steps 3] [--warmup 1] [--batch 32] [--threads N] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

import pixelcnn
from timing import train_seconds
from pixelcnn.distributions import bits_per_dim

SHAPE = (3, 32, 32)
MODELS = {
    "pixelcnn_pp-paper": ("pixelcnn_pp", {}),                               # 160 filters, 5 blocks, 3 stages, 10 mixtures
    "pixelcnn_pp-small": ("pixelcnn_pp", {"filters": 64, "resnet_blocks": 2}),
    "gated_pixelcnn": ("gated_pixelcnn", {}),                               # its defaults, 3 colour groups
}


def train_steps(model, x: torch.Tensor, steps: int, opt: torch.optim.Optimizer) -> tuple[float, float]:
    """Seconds for ``steps`` optimisation steps, and the last loss in bits per sub-pixel."""
    seconds, loss = train_seconds(model, x, steps, opt)
    return seconds, float(bits_per_dim(loss, x[0].numel()))


def bench(name: str, x: torch.Tensor, steps: int, warmup: int) -> dict:
    family, hp = MODELS[name]
    torch.manual_seed(0)
    model = pixelcnn.create(family, image_shape=SHAPE, levels=256, **hp)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    train_steps(model, x, warmup, opt)
    seconds, bpd = train_steps(model, x, steps, opt)
    return {"model": name, "family": family, "hyperparameters": hp, "params": model.num_parameters(),
            "steps": steps, "seconds": round(seconds, 2), "images_per_s": round(steps * x.shape[0] / seconds, 2),
            "last_loss_bpd": round(bpd, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--only", nargs="*", choices=sorted(MODELS), default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.randint(0, 256, (args.batch, *SHAPE), generator=torch.Generator().manual_seed(0))
    print(f"3x32x32 levels=256 batch={args.batch}, {args.warmup} warm-up + {args.steps} timed steps; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{'model':<20}{'params':>12}{'train img/s':>14}{'s/step':>9}")
    rows = []
    for name in args.only or MODELS:
        r = bench(name, x, args.steps, args.warmup)
        rows.append(r)
        print(f"{name:<20}{r['params']:>12,}{r['images_per_s']:>14.2f}{r['seconds'] / r['steps']:>9.2f}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
