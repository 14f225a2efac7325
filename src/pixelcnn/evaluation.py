"""Evaluation: the exact negative log-likelihood of a dataset under a model, in full float32, and the
re-evaluation of the shipped checkpoints against the test scores recorded in their manifest.

Training evaluates its validation split with :func:`evaluate`; ``pixelcnn eval`` and
``pixelcnn pretrained --reproduce`` call it from the command line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

import pixelcnn
from pixelcnn.data import load_dataset
from pixelcnn.distributions import bits_per_dim
from pixelcnn.errors import DataError, InvalidLabelError
from pixelcnn.pretrained import available, manifest
from pixelcnn.runtime import Runtime, all_reduce_sum
from pixelcnn.superres import cond_images
from pixelcnn.validation import COUNT


@contextlib.contextmanager
def full_float32():
    """Turn off TF32 (10-bit mantissa) convolutions and matmuls on CUDA for the duration, so that
    reported likelihoods are float32 numbers whatever the process's global settings."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=torch.backends.cudnn.benchmark,
                                        deterministic=torch.backends.cudnn.deterministic, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


@torch.no_grad()
def evaluate(model: pixelcnn.AutoregressiveModel, dataset, batch_size: int = 256, limit: int | None = None,
             runtime: Runtime | None = None, completion: bool = False) -> dict[str, float]:
    """Exact negative log-likelihood of a dataset: nats per image (mean and standard deviation
    over images) and bits per dimension. Class-conditional models get the dataset's labels,
    super-resolution models the low-resolution version of each image.

    Under torchrun each process evaluates a contiguous shard and the sums are combined. An
    any-order model (one with ``log_prob_per_order``) is scored as its order ensemble, and
    ``orders`` maps each of its training orders to that order's mean NLL, from the same passes.

    With ``completion``, each image gets a known mask drawn like training's (the same for image
    i on every call, :func:`validation_known`) and the score is the exact NLL of its unknown
    sub-pixels given what the model conditions on; bits per dimension are per unknown sub-pixel.
    """
    runtime = runtime or Runtime(model.device)
    conditional = model.config.num_classes is not None
    n = check_evaluation(model, dataset, batch_size, limit)
    lo, hi = runtime.rank * n // runtime.world, (runtime.rank + 1) * n // runtime.world
    names = [] if completion or not model.any_order else list(model.order_names)
    sums = torch.zeros(3 + len(names), dtype=torch.float64)     # NLLs, their squares, unknown dims, each order's NLLs
    gen = torch.Generator().manual_seed(0)
    with full_float32(), model.evaluating():
        for start in range(lo, hi, batch_size):
            x, y = dataset.batch(torch.arange(start, min(start + batch_size, hi)), generator=gen)
            y = y.to(runtime.device) if conditional else None
            x = x.to(runtime.device)
            dims = torch.tensor(float(x.numel()), dtype=torch.float64)
            if completion:
                known = validation_known(range(start, start + len(x)), *model.image_shape[1:]).to(runtime.device)
                nll, extra = -model.conditional_log_prob(x, known, y, cond_images(model, x)).double().cpu(), sums[:0]
                dims = (~known).expand_as(x).sum().double().cpu()
            else:
                nll, per_order = _image_nlls(model, x, y)
                extra = per_order.sum(1)
            sums += torch.cat([torch.stack([nll.sum(), nll.square().sum(), dims]), extra])
    total, squares, all_dims, *order_totals = all_reduce_sum(sums, runtime).tolist()
    mean = total / n
    std = math.sqrt(max(0.0, squares / n - mean**2) * n / max(n - 1, 1))  # sample standard deviation
    dims = math.prod(dataset.image_shape)
    out = {"nll_nats": mean, "nll_std_nats": std, "bits_per_dim": bits_per_dim(total, max(all_dims, 1.0)), "images": n}
    if names:
        out["orders"] = {name: {"nll_nats": t / n, "bits_per_dim": bits_per_dim(t / n, dims)}
                         for name, t in zip(names, order_totals)}
    return out


def validation_known(indices, height: int, width: int) -> Tensor:
    """(n, 1, H, W) known masks of :func:`pixelcnn.masks.random_known` for the images at ``indices``, each
    drawn from a generator seeded by its index: the same masks for every batch size and process count."""
    from pixelcnn.masks import random_known

    return torch.cat([random_known(1, height, width, torch.Generator().manual_seed(i)) for i in indices])


def _image_nlls(model, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
    """(B,) NLL of each image and (K, B) NLL in each of an any-order model's K orders (K = 0 otherwise)."""
    cond = cond_images(model, x)
    if not model.any_order:
        return -model.log_prob(x, y, cond).double().cpu(), torch.zeros(0, x.shape[0], dtype=torch.float64)
    per_order = model.log_prob_per_order(x, y, cond).double().cpu()        # (K, B)
    return -(torch.logsumexp(per_order, 0) - math.log(len(per_order))), -per_order


def check_evaluation(model, dataset, batch_size: int, limit: int | None) -> int:
    """Refuse what evaluate cannot score; returns the number of images it will score."""
    COUNT(batch_size, "batch_size")
    if limit is not None:
        COUNT(limit, "limit")
    if tuple(dataset.image_shape) != model.image_shape or dataset.levels != model.levels:
        raise DataError(f"expected a dataset of {model.image_shape} images with {model.levels} levels, as the model "
                        f"has, got {dataset.name} with {tuple(dataset.image_shape)} images and {dataset.levels} levels")
    if model.config.num_classes is not None and dataset.labels is None:
        raise InvalidLabelError(f"the model is class-conditional: expected a dataset with class labels, "
                                f"got {dataset.name} {dataset.split} without labels")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise DataError(f"expected at least one image to evaluate, got an empty {dataset.name} {dataset.split}")
    return n


def random_subset(data, size: int, seed: int = 0):
    """``size`` images drawn without replacement (seeded): a fair sample, unlike the first ones
    (MNIST's test set, for one, is ordered by the writers' origin)."""
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    pick = lambda t: None if t is None else t[idx]   # noqa: E731
    return dataclasses.replace(data, images=data.images[idx], labels=pick(data.labels),
                               intensities=pick(data.intensities))


def reproduce(names: list[str] | None = None, subset: int | None = None, data_dir=None,
              batch_size: int = 256) -> list[dict[str, Any]]:
    """Evaluate shipped checkpoints on their test split (a random, seeded subset of ``subset`` images if given).

    Each row holds the recorded full-test figure and, for a subset, the standard error of its
    mean, so that the agreement can be judged: |subset - full| should be a few standard errors.
    A completion model is scored as it was recorded: on the unknown pixels of random masks.
    """
    rows = []
    for name in names or available():
        info = manifest()[name]
        model = pixelcnn.load(f"pretrained:{name}")
        data = load_dataset(info["dataset"], "test", data_dir=data_dir)
        full = len(data)
        if subset is not None and subset < full:
            data = random_subset(data, subset)
        result = evaluate(model, data, batch_size, completion=model.config.inpainting)
        n = result["images"]
        # standard error of a mean of n draws without replacement from the full test set
        stderr = info["test_nll_std_nats"] / math.sqrt(n) * math.sqrt(max(0.0, 1 - n / full))
        rows.append({"name": name, "images": n, "nll_nats": result["nll_nats"], "bits_per_dim": result["bits_per_dim"],
                     "recorded_nll_nats": info["test_nll_nats"], "recorded_bits_per_dim": info["test_bits_per_dim"],
                     "stderr_nats": stderr})
    return rows
