"""Any-order LMConv against a raster model: test NLL, completion quality, sampling speed.

    OMP_NUM_THREADS=1 python benchmarks/bench_lmconv.py --lmconv RUN_OR_CKPT --raster RUN_OR_CKPT \
        [--reference pretrained:mnist] --images 200 --json out.json

1. Test NLL (nats/image) on a seeded random subset of the test split: the LMConv ensemble, each
   of its training orders alone, and the raster model(s).
2. Completion quality on the same images, for five masks: the exact conditional NLL of the
   unknown pixels given the known ones. LMConv uses order "auto" (known pixels first), so it
   conditions on every known pixel; a raster model can only use the known pixels before each
   unknown one, so its figure is the NLL of the true unknown pixels under raster completion,
   sum over unknown i of -log p(x_i | x_<i). As a control, LMConv in its first training order
   (no known-first) shows how much of the gain comes from the order.
3. Sampling speed in a non-raster order: cached against naive, same generator, same images.
4. Training images/s of both models on the same batch, alternating (lmconv: one order per step).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time

import torch

import pixelcnn
from pixelcnn.data import load_dataset
from pixelcnn.evaluation import evaluate, random_subset

# name -> (H, W) bool known mask builder; "random 50%" draws one mask per image.
MASKS = ("centre 14x14 unknown", "bottom half known", "left half known", "random 50% known", "top half known")


def known_masks(name: str, n: int, height: int, width: int, seed: int) -> torch.Tensor:
    """(n, 1, H, W) bool: True where a pixel is known."""
    known = torch.ones(n, 1, height, width, dtype=torch.bool)
    if name.startswith("centre"):
        top, left = (height - 14) // 2, (width - 14) // 2
        known[..., top : top + 14, left : left + 14] = False
    elif name == "bottom half known":
        known[..., : height // 2, :] = False
    elif name == "top half known":
        known[..., height // 2 :, :] = False
    elif name == "left half known":
        known[..., :, width // 2 :] = False
    else:
        known = torch.rand(n, 1, height, width, generator=torch.Generator().manual_seed(seed)) < 0.5
    return known


@torch.no_grad()
def raster_nll_per_pixel(model, x: torch.Tensor, batch: int) -> torch.Tensor:
    """(n, C, H, W): -log p(x_i | x_<i) of every sub-pixel in the model's raster order. Summed over
    the unknown sub-pixels of a mask, it is what raster completion conditions on: the known pixels before each."""
    return torch.cat([model.distribution.nll_per_subpixel(model(x[i : i + batch]), x[i : i + batch])
                      for i in range(0, len(x), batch)])


@torch.no_grad()
def lmconv_conditional_nll(model, x: torch.Tensor, known: torch.Tensor, batch: int, order) -> torch.Tensor:
    return torch.cat([-model.conditional_log_prob(x[i : i + batch], known[i : i + batch].expand_as(x[i : i + batch]),
                                                  order=order) for i in range(0, len(x), batch)])


@torch.no_grad()
def write_picture(lm, raster, x: torch.Tensor, args) -> None:
    """Per image and mask, one row: original, masked input, 3 raster completions, 3 lmconv ones (order auto)."""
    from pixelcnn.commands import completion_grid
    from pixelcnn.images import save_grid

    rows = []
    _, h, w = lm.image_shape
    for mask in ("bottom half known", "centre 14x14 unknown"):
        known = known_masks(mask, len(x), h, w, args.seed).expand_as(x)
        gen = lambda: torch.Generator().manual_seed(args.seed)   # noqa: E731
        ras = raster.complete(x, known, n=3, generator=gen())
        lmc = lm.complete(x, known, n=3, generator=gen(), order="auto")
        rows.append(completion_grid(x, known, torch.cat([ras, lmc], 1), lm.levels).view(len(x), 8, *x.shape[1:]))
    grid = torch.cat(rows).flatten(0, 1)
    save_grid(grid, 256, args.picture, nrow=8)
    print(f"wrote {args.picture}: rows of original, masked input, 3 raster completions, 3 lmconv completions")


def train_images_per_s(model, x: torch.Tensor, steps: int) -> float:
    """Adam steps as the Trainer takes them (an any-order model: one training order per step)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        loss = model.nll_from_params(model(x, **model.step_inputs(0, step)), x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return steps * len(x) / (time.perf_counter() - start)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lmconv", required=True)
    p.add_argument("--raster", required=True, help="raster model trained with the same budget")
    p.add_argument("--reference", nargs="*", default=[], help="further raster models, for scale")
    p.add_argument("--images", type=int, default=200, help="random test images (seeded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--sample-images", type=int, default=2)
    p.add_argument("--sample-order", default="hilbert:3")
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--train-repeats", type=int, default=2)
    p.add_argument("--skip", nargs="*", default=[], choices=["nll", "completion", "sampling", "training"])
    p.add_argument("--picture", help="PNG of completions by both models")
    p.add_argument("--picture-images", type=int, default=4)
    p.add_argument("--json")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    lm = pixelcnn.load(args.lmconv).eval()
    rasters = {"raster": pixelcnn.load(args.raster).eval(), **{r: pixelcnn.load(r).eval() for r in args.reference}}
    data = random_subset(load_dataset("mnist", "test"), args.images, args.seed)
    x = data.images.long()
    result = {"machine": f"{platform.machine()} {platform.system()}, torch {torch.__version__}, "
                         f"{torch.get_num_threads()} thread(s)", "images": len(x), "args": vars(args)}
    print(f"{len(x)} random MNIST test images (seed {args.seed}); {result['machine']}")

    if "nll" not in args.skip:
        r = evaluate(lm, data, args.batch)
        result["nll"] = {"lmconv ensemble": r["nll_nats"], **{f"lmconv {k}": v["nll_nats"] for k, v in r["orders"].items()}}
        for name, model in rasters.items():
            result["nll"][f"{name} ({model.name}, {model.num_parameters():,} parameters)"] = evaluate(model, data, args.batch)["nll_nats"]
        for k, v in result["nll"].items():
            print(f"test NLL  {k:<55} {v:9.2f} nats/image")

    if "completion" not in args.skip:
        result["completion"] = {}
        _, h, w = lm.image_shape
        per_pixel = {name: raster_nll_per_pixel(model, x, args.batch) for name, model in rasters.items()}
        for mask in MASKS:
            known = known_masks(mask, len(x), h, w, args.seed)
            row = {"unknown pixels (mean)": float((~known).flatten(1).sum(1).double().mean()),
                   "lmconv auto": float(lmconv_conditional_nll(lm, x, known, args.batch, "auto").mean()),
                   f"lmconv {lm.order_names[0]} (control)": float(
                       lmconv_conditional_nll(lm, x, known, args.batch, lm.order_names[0]).mean())}
            for name, nll in per_pixel.items():
                row[name] = float((nll * ~known).flatten(1).sum(1).mean())
            result["completion"][mask] = row
            print(f"completion {mask:<22} " + ", ".join(f"{k}: {v:.1f}" for k, v in row.items()))

    if "sampling" not in args.skip:
        n, order = args.sample_images, args.sample_order
        gen = lambda: torch.Generator().manual_seed(args.seed)   # noqa: E731
        t_cached, cached = timed(lambda: lm.sample(n, generator=gen(), method="cached", order=order))
        t_naive, naive = timed(lambda: lm.sample(n, generator=gen(), method="naive", order=order))
        t_raster, _ = timed(lambda: rasters["raster"].sample(n, generator=gen(), method="cached"))
        result["sampling"] = {"order": order, "images": n, "lmconv cached s": t_cached, "lmconv naive s": t_naive,
                              "speed-up": t_naive / t_cached, "same images": bool(torch.equal(cached, naive)),
                              "raster model cached s": t_raster}
        print(f"sampling {n} images in {order}: cached {t_cached:.1f} s, naive {t_naive:.1f} s "
              f"({t_naive / t_cached:.1f}x), same images: {torch.equal(cached, naive)}; "
              f"raster model cached {t_raster:.1f} s")
    if "training" not in args.skip:
        xb = x[: args.train_batch]
        rates = {"lmconv": [], "raster": []}
        for _ in range(args.train_repeats):                         # alternate, so both see the same load
            rates["lmconv"].append(train_images_per_s(copy.deepcopy(lm), xb, args.train_steps))
            rates["raster"].append(train_images_per_s(copy.deepcopy(rasters["raster"]), xb, args.train_steps))
        best = {k: max(v) for k, v in rates.items()}
        result["training"] = {"batch": len(xb), "images_per_s": best, "lmconv / raster": best["lmconv"] / best["raster"]}
        print(f"training images/s (batch {len(xb)}, best of {args.train_repeats}): lmconv {best['lmconv']:.1f}, "
              f"raster {best['raster']:.1f} ({best['lmconv'] / best['raster']:.2f}x)")
    if args.picture:
        write_picture(lm, rasters["raster"], x[: args.picture_images], args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
