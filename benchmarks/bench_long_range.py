"""Long-range dependencies: pixels that copy pixels far away, against their exact entropy (issue 33).

Binary images of H x W (default 16 x 16): every pixel of the first ``--copied`` rows and of the rows between is a
fair coin, and each pixel of the last ``--copied`` rows copies the pixel H - copied rows above it (beyond the reach
of a default convolution stack when H is large). The exact entropy is known: ln 2 nats per free pixel, 0 per
copied one (it is determined by the past). Every family is trained from the same seed, at a similar parameter count
(``--hidden``, its layers, no output layer), for the same number of Adam steps on fresh batches, then scored on
held-out images: the mean NLL of the copied pixels (0 is perfect, ln 2 = 0.693 is "cannot see the source") and of
the free ones (ln 2 is perfect).

    OMP_NUM_THREADS=1 python benchmarks/bench_long_range.py [--families F ...] [--steps 400] [--batch 32]
        [--size 16 16] [--copied 1] [--hidden 32] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import torch

import pixelcnn

FAMILIES = ["pixelcnn", "gated_pixelcnn", "pixelcnn_pp", "row_lstm", "diagonal_bilstm", "lmconv", "multiscale", "pixelsnail"]
# Each family at a similar size: (hyperparameters); the parameter count is printed beside the result.
SETTINGS = {
    "pixelcnn": lambda hidden: {"hidden": 2 * hidden, "layers": 4, "output_hidden": 0},
    "gated_pixelcnn": lambda hidden: {"hidden": hidden, "layers": 4, "output_hidden": 0},
    "pixelcnn_pp": lambda hidden: {"filters": 3 * hidden // 8, "resnet_blocks": 1, "mixtures": 1},
    "row_lstm": lambda hidden: {"hidden": 2 * hidden, "layers": 2, "output_hidden": 0},
    "diagonal_bilstm": lambda hidden: {"hidden": 2 * hidden, "layers": 2, "output_hidden": 0},
    "lmconv": lambda hidden: {"hidden": hidden, "layers": 4, "output_hidden": 0, "orders": ("raster",),
                              "order_symmetries": 1},
    "multiscale": lambda hidden: {"hidden": hidden, "layers": 2, "output_hidden": 0},
    "pixelsnail": lambda hidden: {"hidden": hidden, "layers": 2, "residual_blocks": 1, "output_hidden": 0,
                                  "head_channels": hidden // 2},
}


def batch(n: int, height: int, width: int, copied: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 1, H, W) coin flips whose last ``copied`` rows repeat the first ``copied`` rows."""
    x = torch.randint(0, 2, (n, 1, height, width), generator=generator)
    x[:, :, height - copied:] = x[:, :, :copied]
    return x


def train_and_score(name: str, args) -> dict:
    torch.manual_seed(0)
    height, width = args.size
    model = pixelcnn.create(name, image_shape=(1, height, width), levels=2, **SETTINGS[name](args.hidden))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    model.train()
    for _ in range(args.steps):
        loss = model.nll(batch(args.batch, height, width, args.copied, g)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    test = batch(args.test, height, width, args.copied, torch.Generator().manual_seed(2))
    with torch.no_grad(), model.evaluating():
        per_pixel = -model.log_prob_per_pixel(test)                                 # (N, H, W) nats
    copied = per_pixel[:, height - args.copied:].mean().item()
    free = per_pixel[:, : height - args.copied].mean().item()
    return {"family": name, "parameters": model.num_parameters(), "copied_nll_nats": round(copied, 4),
            "free_nll_nats": round(free, 4), "train_seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=FAMILIES)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--test", type=int, default=512)
    parser.add_argument("--size", type=int, nargs=2, default=(16, 16))
    parser.add_argument("--copied", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}; {args.size[0]}x{args.size[1]} binary, "
          f"last {args.copied} row(s) copy the first; exact: copied 0, free ln 2 = {math.log(2):.4f} nats per pixel")
    rows = []
    for name in args.families:
        row = train_and_score(name, args)
        rows.append(row)
        print(f"{name:16s} {row['parameters']:8d} parameters: copied pixels {row['copied_nll_nats']:.4f} nats, "
              f"free pixels {row['free_nll_nats']:.4f} nats ({row['train_seconds']} s, {args.steps} steps)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
