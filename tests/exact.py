"""Model-agnostic exactness checks: normalisation, causality, faithful sampling.

They look at a model only through its public face (``log_prob``, ``network``, ``sample``), so
every registered family is held to the same standard.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import torch

import pixelcnn
from pixelcnn.models.pixelcnn_pp import max_stages


def randomise(model: torch.nn.Module, seed: int = 0, scale: float = 1.0) -> torch.nn.Module:
    """Move every parameter away from its initial value so that the checks have teeth.

    The noise of a weight is scaled by 1 / sqrt(fan-in), like an initialisation, so that deep
    stacks keep outputs of order one and the distribution stays far from deterministic.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            std = scale / p[0].numel() ** 0.5 if p.dim() > 1 else 0.5 * scale
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return model


# Settings of the families whose defaults do not suit the exhaustive tests on tiny images; the others keep theirs.
TINY_SETTINGS = {
    # down/upsampling where the size allows it
    "pixelcnn_pp": lambda shape: {"filters": 8, "resnet_blocks": 1, "stages": min(2, max_stages(shape)), "mixtures": 3},
    # the model-agnostic tests check causality and caching in one order: train on raster alone
    "lmconv": lambda shape: {"orders": ("raster",), "order_symmetries": 1, "hidden": 16, "output_hidden": 32},
    # the sampling tests draw thousands of images at once: the wide families narrower than their defaults
    # (every branch of their code is the same at any width; the defaults are checked in test_generated)
    "multiscale": lambda shape: {"hidden": 16, "output_hidden": 32},
    "pixelcnn": lambda shape: {"hidden": 16, "output_hidden": 32},
    "gated_pixelcnn": lambda shape: {"hidden": 16, "output_hidden": 32},
    "pixelsnail": lambda shape: {"hidden": 16, "output_hidden": 32, "head_channels": 8},
}


def tiny_model(name: str, shape, levels: int, seed: int = 0, **hp) -> pixelcnn.AutoregressiveModel:
    pixelcnn.models.get(name)                               # an unknown name fails here, not as a missing setting
    hp = {**TINY_SETTINGS.get(name, lambda shape: {})(tuple(shape)), **hp}
    with torch.random.fork_rng():              # the same model on every run, whatever ran before
        torch.manual_seed(seed)
        model = pixelcnn.create(name, image_shape=shape, levels=levels, **hp).double()
    return randomise(model, seed).eval()


def all_images(shape, levels: int) -> torch.Tensor:
    """Every image of ``shape`` with values in [0, levels): (levels ** numel, C, H, W)."""
    n = int(torch.tensor(shape).prod())
    return torch.tensor(list(itertools.product(range(levels), repeat=n))).view(-1, *shape)


def total_log_mass(model, labels=None, **kw) -> float:
    """log of the sum of p(x) over every image x: 0 for a normalised model."""
    x = all_images(model.image_shape, model.levels)
    if labels is not None:
        labels = torch.full((x.shape[0],), labels, dtype=torch.long)
    with torch.no_grad():
        return torch.logsumexp(model.log_prob(x, labels, **kw), 0).item()


def dependency_violations(model, labels=None, batch: int = 2, seed: int = 0, cond_image=None,
                          positions=None, order=None, known=None, reads_known: list | None = None) -> list[str]:
    """Sub-pixel pairs where a parameter depends on its own or a later sub-pixel (by gradients).

    The gradient is that of a random projection of the parameters, so contributions of several
    parameters cannot cancel out; ``positions`` restricts the check to some pixels (h, w), by
    default every pixel is checked. ``order`` (H W,) is the pixel visiting order of an any-order
    model (None: raster), passed to its network; colour channels come R, G, B inside each pixel
    either way. ``known`` (batch, C, H, W) bool: a completion model's known sub-pixels, which
    reach it through its network over them too (by the same gradients) and which it may read
    wherever they are; ``reads_known`` collects the pairs where it reads a later known one.
    """
    shape = model.image_shape
    c_, h_, w_ = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, model.levels, (batch, *shape), generator=g)
    xf = model.preprocess(x).requires_grad_(True)
    cond = model.condition(labels, cond_image, batch)
    if known is not None:
        cond = dataclasses.replace(cond, output=model.known_net(xf, known))
    params = model.params(xf, cond, order)
    groups = model.distribution.param_groups()
    step = torch.arange(h_ * w_) if order is None else order.ranks()
    index = step.view(1, h_, w_) * c_ + torch.arange(c_).view(c_, 1, 1)   # (C, H, W): visiting step of each sub-pixel
    bad = []
    for h, w in positions or itertools.product(range(h_), range(w_)):
        for grp in groups.unique().tolist():
            picked = params[:, groups == grp, h, w]
            projection = torch.randn(picked.shape, generator=g, dtype=picked.dtype)
            grad, = torch.autograd.grad((picked * projection).sum(), xf, retain_graph=True)
            later = (grad.abs().amax(0) > 0) & (index >= index[grp, h, w])
            leaks = later if known is None else later & ~known.all(0)
            bad += [f"params of channel {grp} at ({h},{w}) depend on channel {c2} at ({h2},{w2})"
                    for c2, h2, w2 in leaks.nonzero().tolist()]
            if reads_known is not None and known is not None:
                reads_known += (later & known.all(0)).nonzero().tolist()
    return bad


def input_gradient(model, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(C, H, W) total |gradient| of pixel (h, w)'s parameters with respect to the input."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, model.levels, (2, *model.image_shape), generator=g)
    xf = model.preprocess(x).requires_grad_(True)
    params = model.network(xf, None)
    grad, = torch.autograd.grad(params[:, :, h, w].abs().sum(), xf)
    return grad.abs().sum(0)


def chi_square_pvalue(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> float:
    """Pearson's chi-square test of observed counts against probabilities (rare cells pooled)."""
    counts, probs = counts.double(), probs.double() / probs.sum()
    expected = probs * counts.sum()
    order = torch.argsort(expected)
    small = expected[order].cumsum(0) < min_expected
    keep = order[~small]
    pooled_obs = torch.cat([counts[keep], counts[order[small]].sum().view(1)])
    pooled_exp = torch.cat([expected[keep], expected[order[small]].sum().view(1)])
    if pooled_exp[-1] == 0:
        pooled_obs, pooled_exp = pooled_obs[:-1], pooled_exp[:-1]
    stat = ((pooled_obs - pooled_exp) ** 2 / pooled_exp).sum()
    dof = len(pooled_exp) - 1
    if dof < 1:
        raise ValueError("the distribution is too concentrated for a chi-square test: pick another model or seed")
    # The chi-square CDF is the regularised lower incomplete gamma function P(k/2, x/2).
    return float(1.0 - torch.special.gammainc(torch.tensor(dof / 2.0), stat / 2.0))


def image_index(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Each image's position in :func:`all_images` order."""
    flat = x.flatten(1).long()
    weights = levels ** torch.arange(flat.shape[1] - 1, -1, -1)
    return (flat * weights).sum(1)


def sampling_pvalue(model, n: int | None = None, seed: int = 0, labels=None, cond_image=None, **sample_kw) -> float:
    """p-value of the hypothesis that ``model.sample`` draws images with probability exp(log_prob).

    ``labels`` is one class and ``cond_image`` one conditioning image (C', h, w) for every image; ``n``
    draws, by default the fewest that give the test its power (:func:`draws_for` over every image).
    """
    x = all_images(model.image_shape, model.levels)
    n = draws_for(x.shape[0]) if n is None else n
    lab = None if labels is None else torch.full((x.shape[0],), labels, dtype=torch.long)
    with torch.no_grad():
        probs = model.log_prob(x, lab, cond_image).exp()
    gen = torch.Generator().manual_seed(seed)
    samples = model.sample(n, labels=labels, generator=gen, cond_image=cond_image, **sample_kw)
    counts = torch.bincount(image_index(samples, model.levels), minlength=x.shape[0])
    return chi_square_pvalue(counts, probs)


# ----- how many draws a chi-square test of a sampler needs ---------------------------------------------

SAMPLER_ERROR = 0.07    # every sampling test detects a sampler this far (total variation) from the model's law
TEST_LEVEL = 1e-3       # ... with p-values below this, which a faithful sampler gives once in a thousand
TEST_POWER = 0.99       # ... with at least this probability


def chi_square_power(draws: int, cells: int, tv: float = SAMPLER_ERROR, alpha: float = TEST_LEVEL) -> float:
    """Power of Pearson's test at level ``alpha`` over ``cells`` cells against any sampler whose law q lies at
    total variation ``tv`` from the model's p.

    Under q the statistic is close to a noncentral chi-square with cells - 1 degrees of freedom and
    noncentrality draws * sum((q - p)^2 / p), and that sum is at least (sum |q - p|)^2 = 4 tv^2 (Cauchy-Schwarz
    with sum p = 1); the power grows with the noncentrality and falls with the degrees of freedom, so this is
    a lower bound over such samplers (to the accuracy of the asymptotic law).
    """
    k, lam = cells - 1, 4.0 * draws * tv * tv
    sf = lambda a, x: float(torch.special.gammaincc(torch.tensor(a, dtype=torch.float64),    # noqa: E731
                                                    torch.tensor(x, dtype=torch.float64)))
    lo, hi = 0.0, k + 50.0 * k ** 0.5 + 200.0            # the critical value: P(chi2_k > x) = alpha
    for _ in range(200):
        lo, hi = ((lo + hi) / 2, hi) if sf(k / 2, (lo + hi) / 4) > alpha else (lo, (lo + hi) / 2)
    # the noncentral law is a Poisson(lam / 2) mixture of central ones with k + 2j degrees of freedom
    terms = int(lam / 2 + 12 * (lam / 2) ** 0.5 + 50)
    log_w = [j * math.log(lam / 2) - lam / 2 - math.lgamma(j + 1) for j in range(terms)] if lam > 0 else [0.0]
    return sum(math.exp(w) * sf(k / 2 + j, hi / 2) for j, w in enumerate(log_w))


@functools.cache
def draws_for(cells: int, tv: float = SAMPLER_ERROR, alpha: float = TEST_LEVEL, power: float = TEST_POWER) -> int:
    """The fewest draws (a multiple of 500) for which a test over ``cells`` cells has that power at that ``tv``."""
    draws = 500
    while chi_square_power(draws, cells, tv, alpha) < power:
        draws += 500
    return draws
