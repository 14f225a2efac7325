"""LMConv's locally masked convolution against its unfold reference and a gated PixelCNN (issue 26).

    OMP_NUM_THREADS=1 python benchmarks/bench_lmconv_speed.py --rounds 7 --steps 3 --json runs/bench-lmconv-speed.json

1. Training: images/s of full steps (forward, backward, Adam) on one MNIST batch, fp32, in one
   process: lmconv with its forward (``LocallyMaskedConv2d.forward``: the kept taps' convolution
   plus the varying taps' patches), the same lmconv with ``forward_reference`` (the paper's unfold
   form), and a gated_pixelcnn of about the same size. Each round times ``--steps`` steps of each,
   in turn, so that the three see the same load of a shared machine; the rounds give the median
   and the range. lmconv draws one training order per step (``step_inputs``), the same sequence
   for both of its forms.
2. One layer: forward + backward of one locally masked convolution, in raster, S-curve, Hilbert and
   random orders, in four forms: the kept one, the reference, one convolution per mask pattern
   (positions grouped by their tap mask, taps outside the image free; only where there are few)
   and the taps as shifted 1x1 products. Milliseconds, best of ``--layer-repeats``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import pixelcnn
from bench_compression import cpu_model
from pixelcnn.models.lmconv import orders
from pixelcnn.data import load_dataset
from pixelcnn.evaluation import random_subset
from pixelcnn.models.layers import channel_groups
from pixelcnn.models.common import gate_groups
from pixelcnn.models.lmconv.local_conv import LocallyMaskedConv2d, TapSplit, reference_copy, tap_masks, tap_sources

# (in, out, kernel, dilation, mask type) of the layers timed alone: the blocks' and the first one.
LAYERS = [(32, 64, 3, 1, "B"), (32, 64, 3, 2, "B"), (32, 64, 3, 4, "B"), (2, 32, 5, 1, "A")]
LAYER_ORDERS = ("raster", "s_curve:0", "hilbert:0", "random")
MAX_PATTERNS = 8                                     # one convolution per pattern is timed up to this many


def machine() -> str:
    flags = open("/proc/cpuinfo").read() if platform.system() == "Linux" else ""
    vector = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "avx2") if f" {f}" in flags]
    return (f"{cpu_model()} ({', '.join(vector) or 'no avx2'}), {platform.machine()} {platform.system()}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")


# ----- 1. training ------------------------------------------------------------------------------




def train_steps(model, opt, x: torch.Tensor, first: int, steps: int) -> float:
    """Images/s of Adam steps first..first+steps-1, as the Trainer takes them (an any-order model: its step's order)."""
    model.train()
    start = time.perf_counter()
    for step in range(first, first + steps):
        loss = model.nll_from_params(model(x, **model.step_inputs(0, step)), x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * len(x) / (time.perf_counter() - start)


def training(args, x: torch.Tensor) -> dict:
    shape = tuple(x.shape[1:])
    lm = pixelcnn.create("lmconv", image_shape=shape, levels=256, hidden=args.hidden, layers=args.blocks,
                         output_hidden=args.output_hidden, orders=("s_curve",), order_symmetries=8,
                         completion_orders=args.completion_orders)
    gated = pixelcnn.create("gated_pixelcnn", image_shape=shape, levels=256, hidden=args.hidden, layers=args.blocks,
                            output_hidden=args.output_hidden)
    models = {"lmconv": lm, "lmconv reference": reference_copy(lm), "gated_pixelcnn": gated}
    opts = {name: torch.optim.Adam(m.parameters(), lr=1e-4) for name, m in models.items()}
    for name, model in models.items():                                       # an untimed round: allocator, Adam's state
        train_steps(model, opts[name], x, 0, args.steps)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for r in range(1, args.rounds + 1):
        for name, model in models.items():
            rates[name].append(train_steps(model, opts[name], x, r * args.steps, args.steps))
        print(f"round {r}: " + ", ".join(f"{name} {v[-1]:.1f}" for name, v in rates.items()) + " images/s",
              flush=True)
    ratios = {"lmconv / gated_pixelcnn": [a / b for a, b in zip(rates["lmconv"], rates["gated_pixelcnn"])],
              "lmconv / lmconv reference": [a / b for a, b in zip(rates["lmconv"], rates["lmconv reference"])]}
    result = {"parameters": {name: m.num_parameters() for name, m in models.items() if name != "lmconv reference"},
              "images_per_s": {name: summary(v) for name, v in rates.items()},
              "ratio of medians": {"lmconv / gated_pixelcnn": statistics.median(rates["lmconv"]) /
                                   statistics.median(rates["gated_pixelcnn"]),
                                   "lmconv / lmconv reference": statistics.median(rates["lmconv"]) /
                                   statistics.median(rates["lmconv reference"])},
              "ratio per round": {name: summary(v) for name, v in ratios.items()}}
    for name, s in result["images_per_s"].items():
        print(f"{name:<18} median {s['median']:.1f} images/s (range {s['min']:.1f}..{s['max']:.1f})")
    for name, s in result["ratio per round"].items():
        print(f"{name:<27} {result['ratio of medians'][name]:.2f}x (ratio of medians); per round median "
              f"{s['median']:.2f}x, range {s['min']:.2f}..{s['max']:.2f}")
    return result


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": values}


# ----- 2. one layer in each form ----------------------------------------------------------------


def layer_patterns(layer, x, masks, patterns):
    """One convolution per pattern (its kernel cropped to the pattern's taps), each position's output picked from its
    pattern's map by a 0/1 indicator."""
    kept, which = patterns
    weight = layer.conv.weight * layer.mask
    out = 0
    for q, taps in enumerate(kept):
        box = _box(taps)
        part = layer._kept(x, weight, TapSplit(taps.to(x.dtype), box, (), masks[:0]))   # (B, out, H, W), bias in
        out = out + part * (which == q).to(x.dtype).view(x.shape[2:])
    return out


def _box(taps: torch.Tensor) -> tuple[int, int, int, int]:
    rows, cols = taps.any(1).nonzero().flatten().tolist(), taps.any(0).nonzero().flatten().tolist()
    return rows[0], rows[-1], cols[0], cols[-1]


def mask_patterns(masks: torch.Tensor, height: int, width: int, kernel: int, dilation: int):
    """(P, k, k) bool patterns and (H W,) each position's, greedily: a position takes the first pattern that agrees with
    its mask on its taps inside the image; positions with all taps inside found the patterns."""
    inside = tap_sources(height, width, kernel, dilation)[0]
    keep = masks.bool() & inside
    which = torch.full((masks.shape[1],), -1)
    patterns = []
    for p in sorted(range(masks.shape[1]), key=lambda p: -int(inside[:, p].sum())):
        if which[p] >= 0:
            continue
        agree = ((keep == keep[:, p:p + 1]) | ~inside).all(0) & (which < 0)
        which[agree] = len(patterns)
        patterns.append(keep[:, p].view(kernel, kernel))
    return torch.stack(patterns), which


def layer_shifted(layer, x, masks):
    """The taps as shifted 1x1 products: y = (W_t x) for every tap t in one 1x1 convolution, out(p) = sum_t
    mask_t(p) y_t(p + offset_t)."""
    b, _, h, w = x.shape
    k, d = layer.kernel, layer.dilation
    weight = layer.conv.weight * layer.mask                                  # (out, in, k, k)
    y = F.conv2d(x, weight.permute(2, 3, 0, 1).reshape(k * k * len(weight), -1, 1, 1))
    y = F.pad(y.view(b, k * k, len(weight), h, w), (d * (k // 2),) * 4)
    out = layer.conv.bias[:, None, None]
    for t in range(k * k):
        i, j = divmod(t, k)
        out = out + y[:, t, :, i * d:i * d + h, j * d:j * d + w] * masks[t].view(h, w)
    return out


def time_layer(fn, x: torch.Tensor) -> float:
    """Milliseconds of one forward and backward pass (the input's gradient too)."""
    x = x.detach().requires_grad_(True)
    start = time.perf_counter()
    fn(x).square().sum().backward()
    return (time.perf_counter() - start) * 1000


def make_layer(cin: int, cout: int, k: int, d: int, mask_type: str) -> LocallyMaskedConv2d:
    """A layer with lmconv's colour groups (one colour): the first (image and ones channel in) or a block's."""
    if mask_type == "A":
        return LocallyMaskedConv2d(cin, cout, k, torch.tensor([0, -1]), channel_groups(cout, 1), "A", d)
    return LocallyMaskedConv2d(cin, cout, k, channel_groups(cin, 1), gate_groups(cout // 2, 1), "B", d)


def layer_forms(layer, masks: torch.Tensor, height: int, width: int) -> tuple[dict, int]:
    """Each form as a function of the input, and the number of mask patterns."""
    patterns = mask_patterns(masks, height, width, layer.kernel, layer.dilation)
    forms = {"kept": lambda x: layer(x, masks), "reference": lambda x: layer.forward_reference(x, masks),
             "shifted 1x1": lambda x: layer_shifted(layer, x, masks)}
    if len(patterns[0]) <= MAX_PATTERNS:
        forms["patterns"] = lambda x: layer_patterns(layer, x, masks, patterns)
    return forms, len(patterns[0])


def layer_row(spec: tuple, name: str, args) -> dict:
    cin, cout, k, d, mask_type = spec
    height, width = 28, 28
    layer = make_layer(*spec)
    x = torch.randn(args.batch, cin, height, width, generator=torch.Generator().manual_seed(0))
    order = torch.randperm(height * width, generator=torch.Generator().manual_seed(0)) if name == "random" \
        else orders.resolve(name, height, width)
    masks = tap_masks(order, height, width, k, d)
    forms, patterns = layer_forms(layer, masks, height, width)
    with torch.no_grad():
        want = layer.forward_reference(x, masks)
        assert all(torch.allclose(f(x), want, atol=1e-4) for f in forms.values()), (spec, name)
    times = {f: [] for f in forms}
    for _ in range(args.layer_repeats):                                      # interleaved: the same load for each form
        for f, fn in forms.items():
            times[f].append(time_layer(fn, x))
    split = layer.split(masks, height, width)
    return {"layer": f"{cin}->{cout} {k}x{k} dilation {d}", "order": name, "patterns": patterns,
            "kept taps": int(split.kept.sum()), "varying taps": len(split.varying),
            "ms": {f: min(v) for f, v in times.items()}}


def layers(args) -> list[dict]:
    rows = []
    for spec in LAYERS:
        for name in LAYER_ORDERS:
            row = layer_row(spec, name, args)
            rows.append(row)
            print(f"{row['layer']:<24} {name:<10} patterns {row['patterns']:>3}, kept {row['kept taps']}, varying "
                  f"{row['varying taps']}: " + ", ".join(f"{f} {v:.1f}" for f, v in row["ms"].items()) + " ms",
                  flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--blocks", type=int, default=6, help="lmconv's residual blocks, gated_pixelcnn's layers")
    p.add_argument("--output-hidden", type=int, default=64)
    p.add_argument("--completion-orders", type=float, default=0.0, help="lmconv's completion_orders")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="training steps per model per round")
    p.add_argument("--layer-repeats", type=int, default=5)
    p.add_argument("--skip", nargs="*", default=[], choices=["training", "layers"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    x = random_subset(load_dataset("mnist", "train"), args.batch, args.seed).images.long()
    result = {"machine": machine(), "args": vars(args)}
    print(result["machine"])
    if "training" not in args.skip:
        result["training"] = training(args, x)
    if "layers" not in args.skip:
        result["layers"] = layers(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
