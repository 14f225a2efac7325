"""Training and evaluation throughput of gated_pixelcnn: mask-shaped vs plain masked convolutions.

Configuration (issue 2): 64 hidden channels, 7 gated layers, 1x28x28 images, 256 levels, batch
128, CPU. Both implementations compute the same function; "masked" multiplies full k x k
kernels by their masks, "shaped" uses (k//2+1) x k and 1 x (k//2+1) kernels on shifted inputs.
The two are timed alternately in one run, so that machine noise hits both alike; the ratio is
the figure that matters.

    python benchmarks/bench_training.py [--repeats 5] [--steps 10] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

import pixelcnn
from timing import eval_images_per_s, train_images_per_s


def make(impl: str, hidden: int, layers: int):
    torch.manual_seed(0)
    return pixelcnn.create("gated_pixelcnn", image_shape=(1, 28, 28), levels=256, hidden=hidden, layers=layers,
                           conv_impl=impl)




def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=7)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.randint(0, 256, (args.batch, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    models = {impl: make(impl, args.hidden, args.layers) for impl in ("masked", "shaped")}
    for m in models.values():                      # warm-up
        train_images_per_s(m, x, 2)
        eval_images_per_s(m, x, 2)
    results = {impl: {"train": [], "eval": []} for impl in models}
    for _ in range(args.repeats):
        for impl, m in models.items():
            results[impl]["train"].append(train_images_per_s(m, x, args.steps))
            results[impl]["eval"].append(eval_images_per_s(m, x, args.steps))
    med = {impl: {k: sorted(v)[len(v) // 2] for k, v in r.items()} for impl, r in results.items()}
    print(f"gated_pixelcnn hidden={args.hidden} layers={args.layers} 1x28x28 levels=256 batch={args.batch}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{'implementation':<16}{'params':>10}{'train img/s':>14}{'eval img/s':>14}")
    for impl, m in models.items():
        print(f"{impl:<16}{m.num_parameters():>10}{med[impl]['train']:>14.1f}{med[impl]['eval']:>14.1f}")
    print(f"speed-up shaped/masked: train {med['shaped']['train'] / med['masked']['train']:.2f}x, "
          f"eval {med['shaped']['eval'] / med['masked']['eval']:.2f}x (median of {args.repeats} alternating repeats)")
    print(json.dumps({"median": med}))


if __name__ == "__main__":
    main()
