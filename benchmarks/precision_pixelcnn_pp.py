"""Where float32 loses the probabilities of a default-size PixelCNN++ far from its initial weights (issue 14).

    .venv/bin/python benchmarks/precision_pixelcnn_pp.py [--scales 1 1.4 1.8] [--size 3]

For a default-size model (160 filters, 5 blocks, the stages the image allows) whose weights are moved
from their initial values by noise of ``scale`` times the initialisation's size (``tests/exact.py``'s
``randomise``), the script compares the conditionals that sampling reads, along the same images:

* float64 naive vs float64 cached: the two paths' own difference, with rounding far below the rest;
* float32 naive vs float64, float32 cached vs float64: how far each float32 path is from the network;
* float32 naive vs float32 cached: what a user comparing the two paths sees;
* and the network's sensitivity: the largest move of its float64 parameters when its first layer's
  output alone is perturbed by one float32 rounding (relative 6e-8).

If the paths' difference is no larger than each one's distance from float64, and one rounding in the
first layer moves the parameters by as much, the precision is lost in the network, not in a path.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

import pixelcnn
from pixelcnn.sampling import make_stepper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from exact import randomise  # noqa: E402


def conditionals(model, x: torch.Tensor, method: str) -> torch.Tensor:
    """(steps, B, L) float64 probabilities of every sub-pixel of x, visited in order while x is set."""
    stepper = make_stepper(model, torch.zeros_like(x), None, method)
    out = []
    with torch.no_grad():
        for h, w in stepper.order:
            for c in range(x.shape[1]):
                out.append(stepper.log_probs(c, h, w).double().exp())
                stepper.set(c, h, w, x[:, c, h, w])
    return torch.stack(out)


def sensitivity(model, x: torch.Tensor) -> float:
    """Largest move of the float64 parameters when the first layer's output is rounded once more (6e-8 relative)."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        ref = model.network(model.preprocess(x), None)
        noise = lambda mod, inp, out: out * (1 + 6e-8 * torch.randn(out.shape, generator=g, dtype=out.dtype))  # noqa: E731
        handle = model.u_in.register_forward_hook(noise)
        moved = model.network(model.preprocess(x), None)
        handle.remove()
    return float((moved - ref).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.4, 1.8])
    parser.add_argument("--size", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    shape = (1, args.size, args.size)
    x = torch.randint(0, 2, (16, *shape), generator=torch.Generator().manual_seed(1))
    print("| scale | max abs param | f64 naive-cached | f32 naive-f64 | f32 cached-f64 | f32 naive-cached "
          "| param move from one rounding |")
    print("|---|---|---|---|---|---|---|")
    for scale in args.scales:
        torch.manual_seed(0)
        m64 = pixelcnn.create("pixelcnn_pp", image_shape=shape, levels=2).double()
        randomise(m64, 0, scale).eval()
        m32 = copy.deepcopy(m64).float()
        ref, ref_cached = conditionals(m64, x, "naive"), conditionals(m64, x, "cached")
        naive, cached = conditionals(m32, x, "naive"), conditionals(m32, x, "cached")
        with torch.no_grad():
            top = float(m64.network(m64.preprocess(x), None).abs().max())
        diff = lambda a, b: f"{float((a - b).abs().max()):.1e}"  # noqa: E731
        print(f"| {scale} | {top:.1e} | {diff(ref, ref_cached)} | {diff(naive, ref)} | {diff(cached, ref)} "
              f"| {diff(naive, cached)} | {sensitivity(m64, x):.1e} |")


if __name__ == "__main__":
    main()
