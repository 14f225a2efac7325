"""PixelCNN++'s discretized logistic mixture, with linear coupling of colours inside a pixel.

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
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pixelcnn.distributions import OutputDistribution

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


class DiscretizedLogisticMixture(OutputDistribution):
    """Mixture of K discretized logistics per pixel with in-pixel linear colour coupling (PixelCNN++).

    ``min_log_scale`` is the reference's floor on log-scales (-7): it keeps the loss from
    rewarding infinitely sharp components early in training; it changes no normalisation.
    """

    def __init__(self, channels: int, levels: int, mixtures: int = 10, min_log_scale: float = -7.0):
        if channels < 1 or levels < 2 or mixtures < 1:
            raise ValueError(f"expected channels >= 1, levels >= 2, mixtures >= 1, got {channels}, {levels}, {mixtures}")
        super().__init__(channels, levels)
        self.mixtures = mixtures
        self.min_log_scale = min_log_scale
        self.num_coeffs = channels * (channels - 1) // 2
        self.half_width = 1.0 / (levels - 1)

    @property
    def num_params(self) -> int:
        return self.mixtures * (1 + 2 * self.channels + self.num_coeffs)

    def param_groups(self) -> Tensor:
        """All 0: the network sees no channel of the current pixel; channel coupling is inside the distribution."""
        return torch.zeros(self.num_params, dtype=torch.long)

    # ----- unpacking ------------------------------------------------------------------------

    def split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(B, P, *S) -> logits (B, K, *S), means (B, C, K, *S), log-scales (B, C, K, *S), coeffs (B, C(C-1)/2, K, *S)."""
        if params.shape[1] != self.num_params:
            raise ValueError(f"expected {self.num_params} parameters per pixel, got {params.shape[1]}")
        k, c, n = self.mixtures, self.channels, self.num_coeffs
        b, rest = params.shape[0], params.shape[2:]
        logits, means, log_scales, coeffs = params.split([k, c * k, c * k, n * k], dim=1)
        means = means.reshape(b, c, k, *rest)
        log_scales = log_scales.reshape(b, c, k, *rest).clamp(min=self.min_log_scale)
        coeffs = torch.tanh(coeffs.reshape(b, n, k, *rest))
        return logits, means, log_scales, coeffs

    def scale_values(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        """Integer values -> bin centres in [-1, 1] (the same map as the model's preprocessing)."""
        return x.to(dtype) * (2.0 / (self.levels - 1)) - 1.0

    def channel_mean(self, means: Tensor, coeffs: Tensor, y: Tensor, c: int) -> Tensor:
        """(B, K, *S) mean of channel c, shifted by the earlier channels' values y (B, C, *S) (eq. 3)."""
        mean = means[:, c]
        for j in range(c):
            mean = mean + coeffs[:, c * (c - 1) // 2 + j] * y[:, j].unsqueeze(1)
        return mean

    def observed_log_mass(self, means: Tensor, log_scales: Tensor, coeffs: Tensor, x: Tensor, c: int) -> Tensor:
        """(B, K, *S) log P_k(x_c | x_<c) of the observed value of channel c under each component."""
        y = self.scale_values(x, means.dtype)                                  # (B, C, *S)
        centred = y[:, c].unsqueeze(1) - self.channel_mean(means, coeffs, y, c)
        xc = x[:, c].unsqueeze(1)
        return log_bin_mass(centred, torch.exp(-log_scales[:, c]), self.half_width, xc == 0, xc == self.levels - 1)

    # ----- the interface ----------------------------------------------------------------------

    def log_prob_per_pixel(self, params: Tensor, x: Tensor) -> Tensor:
        """(B, H, W) log p(x_pixel): gathers the observed bins only, then logsumexp over components."""
        logits, means, log_scales, coeffs = self.split(params)
        joint = F.log_softmax(logits, dim=1)                                   # (B, K, H, W)
        for c in range(self.channels):
            joint = joint + self.observed_log_mass(means, log_scales, coeffs, x, c)
        return torch.logsumexp(joint, dim=1)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return self.log_prob_per_pixel(params, x.long()).flatten(1).sum(1)

    def nll_per_pixel(self, params: Tensor, x: Tensor) -> Tensor:
        """(B, H, W) negative log-likelihood of each pixel (all its channels), for training."""
        return -self.log_prob_per_pixel(params, x.long())

    def conditional(self, pixel_params: Tensor, x_pixel: Tensor, c: int) -> Tensor:
        """(B, L) log p(x_c = v | x_<c) of one pixel for every v: the mixture reweighted by the earlier channels.

        p(x_c | x_<c) = sum_k w_k p_k(x_c | x_<c) with posterior weights
        w_k = pi_k prod_{j<c} p_k(x_j | x_<j) / sum_k' (same), so the product of the C conditionals
        is exactly the joint p(x) = sum_k pi_k prod_c p_k(x_c | x_<c).
        """
        logits, means, log_scales, coeffs = self.split(pixel_params)           # (B, K), (B, C, K), ...
        x_pixel = x_pixel.long()
        log_w = F.log_softmax(logits, dim=1)
        for j in range(c):
            log_w = log_w + self.observed_log_mass(means, log_scales, coeffs, x_pixel, j)
        log_w = F.log_softmax(log_w, dim=1)                                    # (B, K) posterior weights
        y = self.scale_values(x_pixel, means.dtype)
        mean = self.channel_mean(means, coeffs, y, c).unsqueeze(2)            # (B, K, 1)
        values = torch.arange(self.levels, device=pixel_params.device)        # (L,)
        centred = self.scale_values(values, means.dtype) - mean               # (B, K, L)
        inv_scale = torch.exp(-log_scales[:, c]).unsqueeze(2)
        mass = log_bin_mass(centred, inv_scale, self.half_width, values == 0, values == self.levels - 1)
        return torch.logsumexp(log_w.unsqueeze(2) + mass, dim=1)               # (B, L)
