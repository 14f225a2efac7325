"""Output distributions: network parameters -> probabilities of pixel values.

A network outputs a (B, P, H, W) map of parameters; the distribution object turns the P
parameters of a pixel into probabilities of its C channel values, each an integer in
[0, levels). Three families:

* :class:`Categorical`: a softmax over ``levels`` values for each channel (PixelCNN, PixelRNN).
* :class:`Bernoulli`: one logit per channel for binary images (``levels == 2``).
* :class:`DiscretizedLogisticMixture`: PixelCNN++'s mixture, built on the mathematics of ``logistic_mixture.py``.

Every distribution answers the same questions, so training, evaluation, sampling, completion
and compression share one implementation:

* ``log_prob(params, x)``: (B,) log-probability of whole images in nats;
* ``conditional(pixel_params, x_pixel, c)``: (B, L) log-probabilities of the values of colour
  channel c of one pixel, given the pixel's earlier channels ``x_pixel[:, :c]``;
* ``param_groups()``: for the masked networks, the colour group of each parameter map (a
  parameter of group g may depend on the channels < g of its own pixel and nothing later).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pixelcnn.distributions.logistic_mixture import LevelConstants, PixelMixture, coupling_scatter, level_edges, log_bin_mass
from pixelcnn.levels import to_unit


class OutputDistribution:
    """Interface of an output distribution over C channels with ``levels`` values each."""

    def __init__(self, channels: int, levels: int):
        self.channels = channels
        self.levels = levels

    @property
    def num_params(self) -> int:
        raise NotImplementedError

    def param_groups(self) -> Tensor:
        raise NotImplementedError

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """(B,) log p of each image."""
        raise NotImplementedError

    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        """(B,) -log p of each image in the form that trains with the least memory: the training loss."""
        raise NotImplementedError

    def log_prob_per_pixel(self, params: Tensor, x: Tensor) -> Tensor:
        """(B, H, W) log p of each pixel's channels given what comes before; sums to ``log_prob``."""
        raise NotImplementedError

    def log_prob_per_channel(self, params: Tensor, x: Tensor) -> Tensor:
        """(B, C, H, W) log p of each sub-pixel given everything before it (earlier pixels, earlier channels)."""
        raise NotImplementedError

    def conditional(self, pixel_params: Tensor, x_pixel: Tensor, c: int) -> Tensor:
        raise NotImplementedError


class SubpixelDistribution(OutputDistribution):
    """A distribution whose parameters give each sub-pixel its own conditional: the log-probabilities
    of pixels and images are sums of :meth:`nll_per_subpixel`'s (B, C, H, W) terms."""

    def nll_per_subpixel(self, params: Tensor, x: Tensor) -> Tensor:
        """(B, C, H, W) -log p of each sub-pixel given everything before it."""
        raise NotImplementedError

    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        return self.nll_per_subpixel(params, x).flatten(1).sum(1)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return -self.nll_per_subpixel(params, x).flatten(1).sum(1)

    def log_prob_per_pixel(self, params: Tensor, x: Tensor) -> Tensor:
        """(B, H, W) log p of each pixel (its channels together) given the pixels before it."""
        return -self.nll_per_subpixel(params, x).sum(1)

    def log_prob_per_channel(self, params: Tensor, x: Tensor) -> Tensor:
        return -self.nll_per_subpixel(params, x)


class Categorical(SubpixelDistribution):
    """A softmax over ``levels`` values per channel; parameters are laid out channel-major (c * L + v)."""

    @property
    def num_params(self) -> int:
        return self.channels * self.levels

    def param_groups(self) -> Tensor:
        return torch.arange(self.num_params) // self.levels

    def levels_last(self, params: Tensor) -> Tensor:
        """(B, H, W, C, L) logits: the softmax runs over contiguous memory (a view of channels-last parameters)."""
        b, _, h, w = params.shape
        return params.permute(0, 2, 3, 1).reshape(b, h, w, self.channels, self.levels)

    def nll_per_subpixel(self, params: Tensor, x: Tensor) -> Tensor:
        """(B, C, H, W) negative log-likelihood; cross-entropy keeps training memory low."""
        logits = self.levels_last(params)                                    # (B, H, W, C, L)
        nll = F.cross_entropy(logits.reshape(-1, self.levels), x.long().permute(0, 2, 3, 1).reshape(-1), reduction="none")
        return nll.view(logits.shape[:-1]).permute(0, 3, 1, 2)

    def conditional(self, pixel_params: Tensor, x_pixel: Tensor, c: int) -> Tensor:
        logits = pixel_params[:, c * self.levels : (c + 1) * self.levels]
        return F.log_softmax(logits, dim=1)


class Bernoulli(SubpixelDistribution):
    """One logit per channel: log p(1) = logsigmoid(z), log p(0) = logsigmoid(-z)."""

    def __init__(self, channels: int, levels: int = 2):
        if levels != 2:
            raise ValueError(f"a Bernoulli output needs levels=2, got levels={levels}")
        super().__init__(channels, levels)

    @property
    def num_params(self) -> int:
        return self.channels

    def param_groups(self) -> Tensor:
        return torch.arange(self.channels)

    def nll_per_subpixel(self, params: Tensor, x: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(params, x.to(params.dtype), reduction="none")

    def conditional(self, pixel_params: Tensor, x_pixel: Tensor, c: int) -> Tensor:
        z = pixel_params[:, c]
        return torch.stack([F.logsigmoid(-z), F.logsigmoid(z)], dim=1)


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
        self._constants: dict[tuple[torch.dtype, torch.device], LevelConstants] = {}

    def constants(self, like: Tensor) -> LevelConstants:
        """The :class:`LevelConstants` in the dtype and on the device of ``like``, made once for each."""
        key = (like.dtype, like.device)
        if key not in self._constants:
            levels = torch.arange(self.levels, device=like.device)
            self._constants[key] = LevelConstants(self.scale_values(levels, like.dtype),
                                                  level_edges(self.levels, like.dtype, like.device),
                                                  coupling_scatter(self.channels, self.mixtures, like.dtype, like.device))
        return self._constants[key]

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
        return to_unit(x, self.levels, dtype)

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

    def log_prob_per_channel(self, params: Tensor, x: Tensor) -> Tensor:
        """(B, C, H, W) log p(x_c | x_<c) of each channel: differences of log p(x_<=c), each a
        logsumexp over components of the weights times the masses of channels <= c."""
        logits, means, log_scales, coeffs = self.split(params)
        joint, x = F.log_softmax(logits, dim=1), x.long()                      # (B, K, H, W)
        before, out = torch.zeros_like(joint[:, 0]), []
        for c in range(self.channels):
            joint = joint + self.observed_log_mass(means, log_scales, coeffs, x, c)
            upto = torch.logsumexp(joint, dim=1)                               # log p(x_<=c), (B, H, W)
            out.append(upto - before)
            before = upto
        return torch.stack(out, dim=1)

    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        return (-self.log_prob_per_pixel(params, x.long())).flatten(1).sum(1)

    def pixel(self, pixel_params: Tensor) -> PixelMixture:
        """The mixture of one pixel, (B, P) parameters, unpacked once for the conditionals of its channels."""
        split = self.split(pixel_params)
        return PixelMixture(split, self.constants(split[1]), self.half_width)

    def conditional(self, pixel_params: Tensor, x_pixel: Tensor, c: int) -> Tensor:
        """(B, L) log p(x_c = v | x_<c) of one pixel for every v, given the values (B, C) of its channels < c.

        Goes through the channels before c as :class:`PixelMixture` does (a caller that visits the
        channels in turn keeps one instead), so every path computes the same numbers.
        """
        mixture = self.pixel(pixel_params)
        x_pixel = x_pixel.long()
        for j in range(c):
            mixture.observe(x_pixel[:, j])
        return mixture.levels()


def make_distribution(kind: str, channels: int, levels: int, **kwargs) -> OutputDistribution:
    """Build an output distribution by name: 'categorical', 'bernoulli' or 'logistic_mixture'."""
    if kind == "categorical":
        return Categorical(channels, levels)
    if kind == "bernoulli":
        return Bernoulli(channels, levels)
    if kind == "logistic_mixture":
        return DiscretizedLogisticMixture(channels, levels, **kwargs)
    raise ValueError(f"unknown output distribution {kind!r}; expected 'categorical', 'bernoulli' or 'logistic_mixture'")


def sample_inverse_cdf(log_probs: Tensor, u: Tensor, temperature: float = 1.0) -> Tensor:
    """Draw values from (B, L) log-probabilities with uniforms ``u`` in [0, 1): (B,) long.

    Temperature T rescales log-probabilities to log p / T before renormalising: T = 1 is exact
    sampling, T < 1 sharpens, T -> 0 approaches the most likely value. The inverse CDF is
    evaluated in float64 so that the same uniforms give the same values on every path whose
    probabilities agree to far better than float32 precision.
    """
    logits = log_probs.double() / temperature
    probs = torch.softmax(logits, dim=1)
    cdf = probs.cumsum(dim=1)
    target = u.double().unsqueeze(1) * cdf[:, -1:]
    # The first value whose cumulative mass exceeds the target; values of zero mass are never
    # chosen because their cdf equals the previous one. The clamp guards u * total rounding up.
    values = torch.searchsorted(cdf, target, right=True).squeeze(1)
    return values.clamp_(max=log_probs.shape[1] - 1)


def bits_per_dim(nll_nats: float | Tensor, dims: int) -> float | Tensor:
    """Negative log-likelihood per image in nats -> bits per sub-pixel."""
    return nll_nats / (dims * math.log(2.0))
