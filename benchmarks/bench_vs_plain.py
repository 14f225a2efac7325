"""This library's default gated_pixelcnn path against a plain tutorial-style Gated PixelCNN, in one run.

The reference is benchmarks/plain_gated_pixelcnn.py (full kernels times masks, F.cross_entropy).
Two library configurations are timed against it:

    matched   pixelcnn.create("gated_pixelcnn", hidden=64, layers=8, first_kernel=3, output_hidden=0,
              dilations=(1, 1, 2, 1, 4, 1, 2, 1)): the reference's architecture (64 channels, a
              mask-A input layer, 7 gated layers with dilations 1,2,1,4,1,2,1, a 1x1 head)
    defaults  pixelcnn.create("gated_pixelcnn"): 7 gated layers of 64, a 7x7 first layer and a
              256-wide output layer (a bigger network than the reference)

Training is forward, backward and an Adam step on the mean NLL; evaluation is ``log_prob``
under ``no_grad``. 1x28x28 images, 256 levels, random pixels (the time does not depend on
them). Each repeat times the library and the reference back to back, alternating which goes
first, so that load from other jobs hits both alike; the figure is the median over repeats of
the per-repeat ratio library / reference images/s.

    OMP_NUM_THREADS=1 python benchmarks/bench_vs_plain.py [--repeats 5] [--steps 2] [--batch 128]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics

import torch

import pixelcnn
from plain_gated_pixelcnn import PlainGatedPixelCNN
from timing import eval_images_per_s, train_seconds

CONFIGS = {
    "matched": dict(hidden=64, layers=8, first_kernel=3, output_hidden=0, dilations=(1, 1, 2, 1, 4, 1, 2, 1)),
    "defaults": {},
}


def check_reference_is_normalised() -> float:
    """logsumexp of the reference's log_prob over every 1x3x3 binary image: 0 for a distribution."""
    torch.manual_seed(0)
    model = PlainGatedPixelCNN(hidden=8, levels=2).eval()
    bits = (torch.arange(512)[:, None] >> torch.arange(9)) & 1
    with torch.no_grad():
        return torch.logsumexp(model.log_prob(bits.view(512, 1, 3, 3)).double(), 0).item()


def compare(lib, plain, x, repeats: int, steps: int) -> dict:
    """Per-repeat images/s of both and their ratios; the order alternates between repeats."""
    pair = {"library": lib, "plain": plain}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in pair.items()}
    rate = {"train": lambda k, n: n * len(x) / train_seconds(pair[k], x, n, opts[k])[0],
            "eval": lambda k, n: eval_images_per_s(pair[k], x, n)}
    for k in pair:                                                # warm-up (and oneDNN primitive caches)
        rate["train"](k, 1), rate["eval"](k, 1)
    rates = {k: {"train": [], "eval": []} for k in pair}
    for r in range(repeats):
        for what in ("train", "eval"):
            for k in (("library", "plain") if r % 2 == 0 else ("plain", "library")):
                rates[k][what].append(rate[what](k, steps))
    ratio = {w: statistics.median(a / b for a, b in zip(rates["library"][w], rates["plain"][w])) for w in ("train", "eval")}
    return {"images_per_s": {k: {w: statistics.median(v) for w, v in r.items()} for k, r in rates.items()},
            "ratio": ratio, "raw": rates}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--configs", default="matched,defaults")
    args = p.parse_args()
    print(f"reference normalised on 1x3x3 binary images: logsumexp = {check_reference_is_normalised():.2e}")
    x = torch.randint(0, 256, (args.batch, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    plain = PlainGatedPixelCNN()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, batch {args.batch}, "
          f"{args.repeats} repeats of {args.steps} steps")
    print(f"plain reference: {plain.num_parameters():,} parameters ({plain.effective_parameters():,} not masked)")
    results = {}
    for name in args.configs.split(","):
        torch.manual_seed(0)
        lib = pixelcnn.create("gated_pixelcnn", image_shape=(1, 28, 28), levels=256, **CONFIGS[name])
        res = compare(lib, plain, x, args.repeats, args.steps)
        results[name] = {"config": CONFIGS[name], "library_parameters": lib.num_parameters(), **res}
        ips = res["images_per_s"]
        print(f"{name:<9} library {lib.num_parameters():>9,} params: train {ips['library']['train']:6.1f} img/s vs plain "
              f"{ips['plain']['train']:6.1f} -> {res['ratio']['train']:.2f}x; eval {ips['library']['eval']:6.1f} vs "
              f"{ips['plain']['eval']:6.1f} -> {res['ratio']['eval']:.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
