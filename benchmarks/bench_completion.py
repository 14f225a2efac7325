"""Completion quality: a completion model against the raster model and the any-order model.

    OMP_NUM_THREADS=2 python benchmarks/bench_completion.py [--model pretrained:mnist-inpainting] \
        [--raster pretrained:mnist] [--lmconv pretrained:mnist-lmconv] --images 400 --json out.json \
        --picture docs/completions.png

On a seeded random subset of the MNIST test split and for each mask (the named masks of
``pixelcnn.masks`` and a row of random training-style masks drawn from a seed the training never
used), every model's exact NLL of the unknown pixels, ``-conditional_log_prob(x, known)``:

- the completion model conditions every unknown pixel on every known one;
- the raster model sees the pixels before each unknown one (what its completion samples from);
- the any-order model uses order "auto" (the known pixels first).

Each row gives the mean over images, the paired difference against the raster model with its
standard error, and whether the completion model is lower by more than two standard errors.
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

import pixelcnn
from pixelcnn import masks
from pixelcnn.data import load_dataset
from pixelcnn.evaluation import random_subset

UNSEEN_SEED = 123_457          # random masks from a generator no training step or validation used


def known_for(name: str, n: int, h: int, w: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if name == "random mixture":
        return masks.random_known(n, h, w, gen)
    return masks.named(name, n, h, w, gen)


@torch.no_grad()
def nlls(model, x: torch.Tensor, known: torch.Tensor, batch: int) -> torch.Tensor:
    """(n,) exact NLL in nats of each image's unknown pixels under ``model``'s conditioning."""
    extra = {"order": "auto"} if model.default_order() is not None else {}
    return torch.cat([-model.conditional_log_prob(x[i : i + batch], known[i : i + batch].expand_as(x[i : i + batch]),
                                                  **extra).double() for i in range(0, len(x), batch)])


def paired(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean of a - b and its standard error."""
    d = a - b
    return float(d.mean()), float(d.std() / len(d) ** 0.5)


@torch.no_grad()
def write_picture(models: dict, x: torch.Tensor, path: str, seed: int) -> None:
    """Per image and mask, one row: original, masked input, then 3 completions by each model."""
    from pixelcnn.commands import completion_grid
    from pixelcnn.images import save_grid

    rows, (_, h, w) = [], x.shape[1:]
    for mask in ("bottom-half", "centre", "left-half", "random-50"):
        known = known_for(mask, len(x), h, w, seed).expand_as(x)
        outs = [model.complete(x, known, n=3, generator=torch.Generator().manual_seed(seed),
                               **({"order": "auto"} if model.default_order() is not None else {}))
                for model in models.values()]
        rows.append(completion_grid(x, known, torch.cat(outs, 1), 256))
    per_row = 2 + 3 * len(models)
    save_grid(torch.cat(rows), 256, path, nrow=per_row)
    print(f"wrote {path}: rows of original, masked input, 3 completions each by {', '.join(models)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="pretrained:mnist-inpainting", help="the completion model")
    p.add_argument("--raster", default="pretrained:mnist")
    p.add_argument("--lmconv", default="pretrained:mnist-lmconv")
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--picture")
    p.add_argument("--picture-images", type=int, default=3)
    p.add_argument("--json")
    args = p.parse_args()
    models = {"completion": pixelcnn.load(args.model).eval(), "raster": pixelcnn.load(args.raster).eval(),
              "lmconv auto": pixelcnn.load(args.lmconv).eval()}
    x = random_subset(load_dataset("mnist", "test"), args.images, args.seed).images.long()
    _, h, w = x.shape[1:]
    result = {"machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                         f"{torch.get_num_threads()} thread(s)", "images": len(x), "args": vars(args), "masks": {}}
    print(f"{len(x)} random MNIST test images (seed {args.seed}); {result['machine']}")
    print(f"{'mask':<16} {'unknown':>7} " + " ".join(f"{k:>12}" for k in models) + "   completion - raster (SE)")
    for mask in (*masks.NAMED, "random mixture"):
        known = known_for(mask, len(x), h, w, args.seed if mask != "random mixture" else UNSEEN_SEED)
        scores = {name: nlls(model, x, known, args.batch) for name, model in models.items()}
        diff, se = paired(scores["completion"], scores["raster"])
        row = {"unknown pixels (mean)": float((~known).flatten(1).sum(1).double().mean()),
               **{name: float(s.mean()) for name, s in scores.items()},
               "completion - raster": diff, "standard error": se, "lower by > 2 SE": diff < -2 * se}
        result["masks"][mask] = row
        means = " ".join(f"{float(s.mean()):12.2f}" for s in scores.values())
        verdict = "" if diff < -2 * se else "  NOT lower by 2 SE"
        print(f"{mask:<16} {row['unknown pixels (mean)']:7.1f} {means}   {diff:+8.2f} ({se:.2f}){verdict}")
    if args.picture:
        write_picture(models, x[: args.picture_images], args.picture, args.seed)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
