"""The mathematics of PixelCNN++'s discretized logistic mixture, with linear coupling of colours inside a pixel.

The distribution object (``distributions.DiscretizedLogisticMixture``) is built on these functions;
this module depends on nothing in the package.

Salimans, Karpathy, Chen & Kingma 2017, "PixelCNN++", section 2.1 and 2.2 (equations 1-3).
A sub-pixel value v in [0, L) sits at the centre y_v = 2 v / (L - 1) - 1 of a bin of width
2 / (L - 1) on [-1, 1]. Under a logistic with mean mu and scale s its probability is

    P(v) = sigmoid((y_v + h - mu) / s) - sigmoid((y_v - h - mu) / s),    h = 1 / (L - 1),   (eq. 2)

with the edge bins extended to infinity: P(0) = sigmoid((y_0 + h - mu) / s) and
P(L-1) = 1 - sigmoid((y_{L-1} - h - mu) / s), so the L bins hold all the mass of the logistic.

A pixel with C channels is a mixture of K components. Component k is itself autoregressive over
the channels (eq. 3): the mean of channel c is shifted linearly by the pixel's earlier channels,

    mu_{c,k}(x_<c) = m_{c,k} + sum_{j<c} tanh(a_{c,j,k}) * y_{x_j},

so p(x) = sum_k pi_k prod_c P_k(x_c | x_<c). For C = 3 these are the paper's G-on-R and
B-on-R,G coefficients; for general C there are C (C - 1) / 2 of them per component.

Parameter layout per pixel (P = K (1 + 2 C + C (C - 1) / 2); 100 for C = 3, K = 10):

    [ logits (K) | means (C, K) | log-scales (C, K) | coefficients (C (C - 1) / 2, K) ]

with the coefficients ordered (c, j) = (1, 0), (2, 0), (2, 1), ... as in the reference code.

Numerics. The reference computes log(sigmoid(a) - sigmoid(b)) directly and, where that
difference falls below 1e-5, falls back on the log-density at the bin centre times the bin
width. Here the difference is computed stably everywhere instead, from the identity

    sigmoid(a) - sigmoid(b) = sigmoid(a) * sigmoid(-b) * (1 - exp(-(a - b))),    a > b,

whose logarithm logsigmoid(a) + logsigmoid(-b) + log1mexp(a - b) has no cancellation: both
logsigmoid terms are accurate for any argument, and a - b = 2 h / s is formed directly (not as
a difference of two large numbers) and is always positive. Far in either tail one of the
logsigmoid terms carries the (tiny) mass with full relative precision, so no clamping of
probabilities is needed and the bins still sum to one.

Every level at once (sampling, coding). A conditional needs the mass of all L levels under all
K components. The L bins share L - 1 interior edges, so each edge is standardised once,
u = (edge - mu) / s, and the edge bins get the edges -inf and +inf. Writing
sigmoid(u) = exp(min(u, 0)) sigmoid(|u|), the mass of the bin between edges l < u is

    P = exp(min(u, -l, 0) + log1mexp(u - l)) * sigmoid(|u|) * sigmoid(|l|)

(min(u, 0) - max(l, 0) = min(u, -l, 0) because l < u; the log1mexp term is 0 for the edge bins).
The exponent carries the tails exactly, down to -|u| and beyond any underflow, and the two
sigmoid factors lie in [1/2, 1]. The mixture sum over components is taken after shifting each
level's exponents by their maximum over components: the largest term is then at least 1/4, and
a term that underflows is below float precision relative to it. So each edge costs one sigmoid
and each bin one exp, with the relative precision of the log-space formula above.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2 = math.log(2.0)


def log1mexp(d: Tensor) -> Tensor:
    """log(1 - exp(-d)) for d > 0, accurate everywhere (Maechler 2012, "Accurately computing log(1 - exp(-|a|))").

    For small d, 1 - exp(-d) suffers cancellation, so use expm1; for large d, exp(-d) is tiny and
    log1p keeps it. Each branch sees its input clamped to its own range so that the branch not
    taken never produces inf/nan whose zero gradient would still poison the backward pass.
    """
    # The floor at the smallest normal number only matters when d = 2 h exp(-log_scale) falls
    # below it (log-scales above ~80 in float32, ~700 in float64): the interior bins then get
    # mass ~1e-38 (float32) instead of an exact 0, whose log would have an infinite gradient.
    tiny = torch.finfo(d.dtype).tiny
    small = torch.log(-torch.expm1(-d.clamp(min=tiny, max=LOG_2)))
    large = torch.log1p(-torch.exp(-d.clamp(min=LOG_2)))
    return torch.where(d <= LOG_2, small, large)


def log_bin_mass(centred: Tensor, inv_scale: Tensor, half_width: float, first: Tensor, last: Tensor) -> Tensor:
    """log P(bin) under a logistic: ``centred`` is (bin centre - mean), all arguments broadcast.

    ``first`` / ``last`` mark the edge bins, whose lower / upper edge is at -inf / +inf.
    """
    upper = inv_scale * (centred + half_width)           # standardised upper bin edge
    lower = inv_scale * (centred - half_width)           # standardised lower bin edge
    log_cdf_upper = F.logsigmoid(upper)                  # log P(X <= upper): the whole first bin
    log_sf_lower = F.logsigmoid(-lower)                  # log P(X > lower): the whole last bin
    # Interior: sigmoid(upper) - sigmoid(lower), via the identity in the module docstring.
    interior = log_cdf_upper + log_sf_lower + log1mexp(inv_scale * (2.0 * half_width))
    return torch.where(first, log_cdf_upper, torch.where(last, log_sf_lower, interior))


class LevelConstants(NamedTuple):
    """What the per-level evaluation reads for a given dtype and device, made once (``DiscretizedLogisticMixture.constants``)."""

    centres: Tensor      # (L,) bin centres y_v, exactly as ``scale_values`` gives them
    edges: Tensor        # (L + 1,) bin edges: -inf, y_v + h for v < L - 1, +inf
    scatter: Tensor      # (C(C-1)/2 K, C C K) 0/1 matrix placing the coefficients in :func:`coupling_matrix`'s slots


class LevelTable(NamedTuple):
    """One channel's conditional over every level, and what :func:`observed_weights` reads off it."""

    log_probs: Tensor    # (B, L) log sum_k w_k P_k(v)
    exponents: Tensor    # (B, K, L) log w_k + log P_k(v) - log(halves) - shift_v (shift_v: common to all k)
    halves: Tensor       # (B, K, L) sigmoid(|upper|) sigmoid(|lower|), in [1/4, 1]


def level_edges(levels: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(L + 1,) the bin edges of the L levels on [-1, 1]: -inf, y_v + h for v < L - 1, +inf.

    Formed in float64 and rounded once, so each edge is the nearest float to its exact value.
    """
    inner = torch.arange(levels - 1, dtype=torch.float64).mul_(2.0).add_(1.0).div_(levels - 1).sub_(1.0)
    infinity = torch.tensor([math.inf], dtype=torch.float64)
    return torch.cat([-infinity, inner, infinity]).to(device=device, dtype=dtype)


def coupling_scatter(channels: int, mixtures: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(n K, C C K) 0/1 matrix S with S[p K + k, (j C + c) K + k] = 1 for the p-th pair (c, j) = (1, 0), (2, 0), (2, 1), ..."""
    n, k = channels * (channels - 1) // 2, mixtures
    scatter = torch.zeros(n, k, channels, channels, k, dtype=dtype, device=device)
    rows, cols = torch.tril_indices(channels, channels, offset=-1).tolist()
    for p, (c, j) in enumerate(zip(rows, cols)):
        scatter[p, range(k), j, c, range(k)] = 1.0
    return scatter.view(n * k, channels * channels * k)


def mixture_levels(mean: Tensor, inv_scale: Tensor, log_weight: Tensor, log_gap: Tensor, edges: Tensor) -> LevelTable:
    """log sum_k w_k P_k(v) for every level v, from (B, K, 1) means, 1/s, log w_k and log(1 - exp(-2 h / s)).

    ``edges`` (L + 1,) from :func:`level_edges`; the formula is the module docstring's "every level at
    once". Not differentiable (it works in place): training goes through ``log_prob``.
    """
    u = torch.sub(edges, mean).mul_(inv_scale)                             # (B, K, L + 1) standardised edges
    halves = torch.sigmoid(u.abs())                                        # sigmoid(|u|), in [1/2, 1]
    halves = halves[..., 1:] * halves[..., :-1]                            # (B, K, L): both edges of each bin
    # min(upper, -lower, 0), the exponent that carries each bin's tail: at the first bin min(upper, +inf),
    # at the last min(+inf, -lower).
    exponent = torch.minimum(u[..., 1:], u[..., :-1].neg()).clamp_(max=0.0)   # (B, K, L)
    exponent.add_(log_weight + log_gap)
    exponent[..., :: exponent.shape[2] - 1].sub_(log_gap)                  # the edge bins have no gap factor
    shift = exponent.amax(dim=1, keepdim=True)                             # (B, 1, L): the largest term is >= 1/4
    terms = exponent.sub_(shift).exp().mul_(halves)                        # w_k P_k(v) / exp(shift_v)
    log_probs = terms.sum(dim=1).log_().add_(shift.view(shift.shape[0], -1))
    return LevelTable(log_probs, exponent, halves)


def observed_weights(table: LevelTable, values: Tensor) -> Tensor:
    """(B, K, 1) log posterior weights w'_k = w_k P_k(x) / sum (same) once the table's channel is x = ``values`` (B,).

    Read off the table in log space, so a component whose weight falls far below the others keeps it
    (tiny, not 0): log w_k P_k(x) = exponents + log(halves) + shift_x, and the shift cancels out.
    """
    b, k, _ = table.exponents.shape
    index = values.view(b, 1, 1).expand(b, k, 1)
    joint = table.exponents.gather(2, index) + table.halves.gather(2, index).log_()
    return F.log_softmax(joint, dim=1)


class PixelMixture:
    """One pixel's mixture, visited a channel at a time: the conditional of each channel given the earlier ones.

    :meth:`levels` gives channel c's conditional over every level; :meth:`observe` then records
    channel c's values and moves to channel c + 1. The conditional is

        p(x_c | x_<c) = sum_k w_k p_k(x_c | x_<c),   w_k = pi_k prod_{j<c} p_k(x_j | x_<j) / sum_k' (same),

    so the product of the C conditionals is exactly the joint p(x) = sum_k pi_k prod_c p_k(x_c | x_<c).
    What depends on the parameters alone (the split, log pi_k, 1/s, the interior bins' gap factor
    for every channel, the colour coupling) is computed once, at construction; observing a value
    costs a few (B, K) operations, because its mass under each component is read off the table of
    the channel's conditional (:func:`observed_weights`) and the later channels' means move by the
    coupling (eq. 3).
    """

    def __init__(self, split: tuple[Tensor, Tensor, Tensor, Tensor], constants: LevelConstants, half_width: float):
        """``split``: the pixel's (B, K) logits, (B, C, K) means and log-scales, (B, n, K) coefficients
        (``DiscretizedLogisticMixture.split``); ``constants`` in their dtype; h = 1 / (L - 1)."""
        logits, means, log_scales, coeffs = split
        b, c, k = means.shape
        self.constants = constants
        self.channel = 0                                                       # the channel :meth:`levels` answers for
        self.table: LevelTable | None = None                                   # its conditional, once computed
        # Per component quantities are kept as (..., K, 1) columns, to broadcast against the L levels.
        self.log_weights = F.log_softmax(logits, dim=1).unsqueeze(2)           # (B, K, 1) log pi_k, then posterior
        self.means = means.unsqueeze(3)                                        # (B, C, K, 1), then shifted (eq. 3)
        # A log-scale so large that exp(-log_scale) underflows to 0 would make 0 * inf at the edges
        # -inf / +inf; the floor at the smallest normal number leaves every finite edge within 1e-38 of 0.
        self.inv_scales = torch.exp(-log_scales).clamp_(min=torch.finfo(log_scales.dtype).tiny).unsqueeze(3)
        self.log_gaps = log_gap(self.inv_scales, half_width)              # (B, C, K, 1), as inv_scales
        self.coupling = coupling_matrix(coeffs, self.constants.scatter, c)     # (B, C, C, K, 1)

    def levels(self) -> Tensor:
        """(B, L) log p(x_c = v | x_<c) for every level v of the current channel c."""
        c = self.channel
        self.table = mixture_levels(self.means[:, c], self.inv_scales[:, c], self.log_weights, self.log_gaps[:, c],
                                    self.constants.edges)
        return self.table.log_probs

    def observe(self, values: Tensor) -> None:
        """Record the current channel's (B,) integer values and move to the next channel."""
        if self.table is None:                                                 # values set without asking
            self.levels()
        c = self.channel
        self.log_weights = observed_weights(self.table, values)
        y = torch.take(self.constants.centres, values)                         # (B,) bin centres
        # The later channels' means move by tanh(a_{c',c,k}) y (eq. 3); the coupling of the others is 0.
        self.means = torch.addcmul(self.means, self.coupling[:, c], y.view(-1, 1, 1, 1))
        self.channel, self.table = c + 1, None


def log_gap(inv_scale: Tensor, half_width: float) -> Tensor:
    """log(1 - exp(-2 h / s)), the interior bins' factor in the identity of the module docstring.

    Computed as log(-expm1(-d)): accurate to float precision in absolute terms for every d > 0, which
    is what a term added to a log-mass needs (:func:`log1mexp`'s branch for large d keeps the relative
    precision of its tiny result, which matters only for that result alone and for its gradient).
    The floor at the smallest normal number is :func:`log1mexp`'s.
    """
    d = (inv_scale * (2.0 * half_width)).clamp_(min=torch.finfo(inv_scale.dtype).tiny)
    return torch.expm1(d.neg_()).neg_().log_()


def coupling_matrix(coeffs: Tensor, scatter: Tensor, channels: int) -> Tensor:
    """(B, C, C, K, 1) coupling M of the coefficients (B, n, K): M[j, c, k] = tanh(a_{c,j,k}) for j < c, else 0.

    ``M[:, j]`` is what channel j's value shifts every channel's means by (eq. 3). Placed by a product
    with the 0/1 ``scatter`` (:func:`coupling_scatter`), which copies each coefficient exactly.
    """
    b = coeffs.shape[0]
    return torch.mm(coeffs.reshape(b, -1), scatter).view(b, channels, channels, -1, 1)
