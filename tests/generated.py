"""Test cases generated from the branches of each model family (:data:`BRANCHES`).

For every family, :data:`BRANCHES` lists the values of each setting that takes its code down a
different branch. :func:`pairwise` picks a few settings that still put every pair of values (of two
different settings) together in at least one case, among the cases that are valid at all; the
generated tests build a tiny, randomised float64 model for each.
"""

from __future__ import annotations

import functools
import itertools
import math
import random

import torch

import pixelcnn
from exact import randomise
from pixelcnn.errors import ConfigError
from pixelcnn.models.gated_pixelcnn import CONV_IMPLS as GATED_CONV_IMPLS
from pixelcnn.models.lmconv import AUTO_ORDERS
from pixelcnn.models.multiscale import BASES as MULTISCALE_BASES, WITHIN_GROUP

# Every family with a cached sampling path: one that loses its path, or a new one without, fails a test.
CACHED_FAMILIES = frozenset({"pixelcnn", "gated_pixelcnn", "pixelcnn_pp", "row_lstm", "diagonal_bilstm", "lmconv",
                             "multiscale", "pixelsnail"})
# Every family whose cached stepper can draw a group of pixels at once (``Stepper.groups``) in some configuration.
GROUPED_FAMILIES = frozenset({"multiscale"})
# The values of each setting that takes a family's code down a different branch; the generated tests
# run over their product, pairwise. ``channels`` is the image's first side; a cond_shape of "half"
# stands for a conditioning image of half the image's size. A registered family missing here fails
# test_generated.py::test_every_family_has_its_branches.
SHARED = {"channels": (1, 3), "levels": (2, 5, 256), "num_classes": (None, 3), "cond_shape": (None, "half"),
          "inpainting": (False, True)}
MASKED = {**SHARED, "output_hidden": (0, 8), "output": ("auto", "categorical")}
BRANCHES = {
    "pixelcnn": {**MASKED, "layers": (0, 2), "first_kernel": (1, 3), "kernel_size": (1, 3)},
    "gated_pixelcnn": {**MASKED, "layers": (1, 3), "first_kernel": (1, 3), "kernel_size": (1, 3),
                       "dilations": ((1,), (1, 2)), "conv_impl": GATED_CONV_IMPLS},
    "pixelcnn_pp": {**SHARED, "resnet_blocks": (0, 1, 2), "stages": (1, 2, 3), "mixtures": (1, 3), "dropout": (0.0, 0.5)},
    "row_lstm": {**MASKED, "layers": (1, 2), "first_kernel": (1, 3), "row_kernel": (1, 3)},
    "diagonal_bilstm": {**MASKED, "layers": (1, 2), "first_kernel": (1, 3)},
    # the default order is the first training order: raster, a flipped S-curve, a transposed Hilbert
    # curve, or the 8-symmetry mixture (whose log_prob is the ensemble's)
    "lmconv": {**MASKED, "layers": (0, 2), "first_kernel": (1, 3), "dilations": ((1,), (1, 2)),
               "orders": (("raster",), ("s_curve:3",), ("hilbert:6",), ("hilbert",)), "auto_order": AUTO_ORDERS},
    "multiscale": {**MASKED, "base": tuple(MULTISCALE_BASES), "scales": (1, 2), "within_group": tuple(WITHIN_GROUP),
                   "layers": (1, 2)},
    # layers 0: the convolutions alone; heads 2: two heads per colour group, queries split between them
    "pixelsnail": {**MASKED, "layers": (0, 1, 2), "residual_blocks": (0, 1), "first_kernel": (1, 3),
                   "kernel_size": (1, 3), "heads": (1, 2)},
}
# Small values for the fields a family has but does not vary; the branches override them.
UNVARIED = {"hidden": 8, "layers": 2, "output_hidden": 8, "first_kernel": 3, "kernel_size": 3, "filters": 8,
         "resnet_blocks": 1, "mixtures": 3, "stages": 2, "residual_blocks": 1, "heads": 1, "head_channels": 3}
# Image sides from a single pixel to 6x6, square and not, odd and even.
SIZES = ((1, 1), (1, 5), (2, 3), (3, 3), (4, 2), (4, 4), (5, 6), (6, 6))


def pairwise(factors: dict[str, tuple], valid, seed: int = 0, candidates: int = 2000) -> list[dict]:
    """Cases covering every pair of values of two factors that some valid candidate holds (greedy, deterministic).

    The candidates are the whole product when it is small, else a fixed random sample of it; each
    step takes the valid candidate that covers the most pairs not yet covered (the first such).
    """
    names, values = list(factors), list(factors.values())
    if math.prod(len(v) for v in values) <= candidates:
        every = [dict(zip(names, combo)) for combo in itertools.product(*values)]
    else:
        rng = random.Random(seed)
        every = [{n: rng.choice(v) for n, v in factors.items()} for _ in range(candidates)]
    every = [case for case in every if valid(case)]
    bit: dict = {}                                   # each pair of (setting, value)s gets a bit of an int
    pairs = [sum(1 << bit.setdefault(p, len(bit)) for p in set(itertools.combinations(
        [(n, repr(case[n])) for n in names], 2))) for case in every]
    uncovered = (1 << len(bit)) - 1
    chosen = []
    while uncovered:
        best = max(range(len(every)), key=lambda i: (pairs[i] & uncovered).bit_count())
        chosen.append(every[best])
        uncovered &= ~pairs[best]
    return chosen


def resolve(name: str, case: dict) -> tuple[dict, tuple[int, int, int]]:
    """The keyword arguments of ``pixelcnn.create`` for a case, and the image shape."""
    fields = {f.name for f in pixelcnn.models.get(name).config_class.hyperparameters()}
    hp = {k: v for k, v in UNVARIED.items() if k in fields}
    hp.update({k: v for k, v in case.items() if k in fields})
    shape = (case["channels"], *case["size"])
    cond = case["cond_shape"]
    if cond == "half":
        cond = (case["channels"], math.ceil(shape[1] / 2), math.ceil(shape[2] / 2))
    return {**hp, "levels": case["levels"], "num_classes": case["num_classes"], "cond_shape": cond,
            "inpainting": case["inpainting"]}, shape


def is_valid(name: str, case: dict) -> bool:
    kwargs, shape = resolve(name, case)
    config_class = pixelcnn.models.get(name).config_class
    try:
        config_class(image_shape=shape, **kwargs)
    except ConfigError:
        return False
    return True


@functools.cache
def cases(name: str, sizes=SIZES, max_images: int | None = None) -> tuple[dict, ...]:
    """The pairwise cases of family ``name`` over its branches and ``sizes``; ``max_images`` keeps only
    cases whose every image can be enumerated (levels ** (C H W) at most that). Built once per process:
    callers get the same tuple and must not change its cases (``case | {...}`` makes a new one)."""
    factors = {**BRANCHES[name], "size": tuple(sizes)}

    def valid(case):
        if max_images is not None and case["levels"] ** (case["channels"] * math.prod(case["size"])) > max_images:
            return False
        return is_valid(name, case)

    return tuple(pairwise(factors, valid))


def case_id(case: dict) -> str:
    return "-".join(f"{k}={'x'.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in case.items())


def build(name: str, case: dict, batch: int, seed: int = 0, scale: float = 1.0):
    """A randomised float64 model for a case, with labels and a conditioning image for ``batch`` images."""
    kwargs, shape = resolve(name, case)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = pixelcnn.create(name, image_shape=shape, **kwargs).double()
    randomise(model, seed, scale).eval()
    return (model, *conditioning(model, batch, seed))


def known_part(model, batch: int, seed: int = 0) -> tuple:
    """(x, known) for a completion model: random images and a random mask of known sub-pixels with at least
    one known and one unknown where the image has two sub-pixels; () for any other model."""
    if not model.config.inpainting:
        return ()
    g = torch.Generator().manual_seed(seed + 2)
    x = torch.randint(0, model.levels, (batch, *model.image_shape), generator=g)
    known = torch.rand(x.shape, generator=g) < 0.5
    if x[0].numel() > 1:
        known.view(batch, -1)[:, 0], known.view(batch, -1)[:, -1] = False, True
    return x, known


def conditioning(model, batch: int, seed: int = 0):
    """(labels, cond_image) for ``batch`` images, each None where the model takes none."""
    g = torch.Generator().manual_seed(seed + 1)
    cfg = model.config
    labels = None if cfg.num_classes is None else torch.randint(0, cfg.num_classes, (batch,), generator=g)
    cond_image = None if cfg.cond_shape is None else torch.randint(0, cfg.levels, (batch, *cfg.cond_shape), generator=g)
    return labels, cond_image
