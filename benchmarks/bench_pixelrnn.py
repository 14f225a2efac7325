"""Training and evaluation throughput of the PixelRNN family beside Gated PixelCNN (issue 3).

Binarized-MNIST-shaped data (1x28x28, levels=2, Bernoulli output), random binary images (the
throughput does not depend on the values), batch 64, CPU, every model at its defaults:

* row_lstm, diagonal_bilstm: 7 LSTM layers, h = 16 (hidden=32), 64-wide output layer
  (the paper's MNIST model);
* gated_pixelcnn: 7 gated layers of 64, 256-wide output layer.

Training is forward + backward + Adam step on ``model.nll``; evaluation is ``model.log_prob``
under ``torch.no_grad``. The models are timed in turn within each repeat, so machine noise hits
them alike; the median over repeats is reported. With ``--sampling`` it also times sampling n
images (the cached path, and the naive one with ``--naive``) beside one forward pass over them.

    python benchmarks/bench_pixelrnn.py [--repeats 3] [--steps 3] [--threads N] [--sampling 16] [--naive]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

import pixelcnn
from timing import eval_images_per_s, train_images_per_s

MODELS = ("row_lstm", "diagonal_bilstm", "gated_pixelcnn")
SHAPE = (1, 28, 28)


def make(name: str):
    torch.manual_seed(0)
    return pixelcnn.create(name, image_shape=SHAPE, levels=2)




@torch.no_grad()
def time_sampling(model, n: int, naive: bool) -> dict[str, float]:
    model.eval()
    x = torch.zeros((n, *SHAPE), dtype=torch.long)
    out = {}
    start = time.perf_counter()
    model.log_prob(x)
    out["forward_s"] = time.perf_counter() - start
    for method in ("cached", "naive") if naive else ("cached",):
        start = time.perf_counter()
        model.sample(n, generator=torch.Generator().manual_seed(0), method=method)
        out[f"{method}_s"] = time.perf_counter() - start
    return out


def throughput(models: dict, x, args) -> dict[str, dict[str, float]]:
    runs = {name: {"train": [], "eval": []} for name in models}
    for name, model in models.items():                       # warm-up: allocator, first-call costs
        train_images_per_s(model, x, 1)
        eval_images_per_s(model, x, 1)
    for _ in range(args.repeats):
        for name, model in models.items():
            runs[name]["train"].append(train_images_per_s(model, x, args.steps))
            runs[name]["eval"].append(eval_images_per_s(model, x, args.steps))
    return {name: {k: statistics.median(v) for k, v in r.items()} for name, r in runs.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="timed steps per repeat and model")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--sampling", type=int, default=0, metavar="N", help="also time sampling N images")
    p.add_argument("--naive", action="store_true", help="with --sampling, also time naive sampling (slow)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.randint(0, 2, (args.batch, *SHAPE), generator=torch.Generator().manual_seed(0))
    models = {name: make(name) for name in args.models}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, "
          f"batch {args.batch}, {args.repeats} repeats x {args.steps} steps, load average at start {load:.1f}")
    results = throughput(models, x, args)
    print("\n| model | parameters | train images/s | eval images/s |\n|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {models[name].num_parameters():,} | {r['train']:.1f} | {r['eval']:.1f} |")
    if args.sampling:
        print(f"\n| model | one forward pass, n={args.sampling} (s) | cached sampling (s) | naive sampling (s) |\n"
              "|---|---:|---:|---:|")
        for name, model in models.items():
            s = time_sampling(model, args.sampling, args.naive)
            naive = f"{s['naive_s']:.2f}" if "naive_s" in s else "-"
            print(f"| {name} | {s['forward_s']:.3f} | {s['cached_s']:.2f} | {naive} |")


if __name__ == "__main__":
    main()
