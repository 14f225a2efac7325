"""Output distributions: network parameters -> probabilities of pixel values.

A network outputs a (B, P, H, W) map of parameters; the distribution object turns the P
parameters of a pixel into probabilities of its C channel values, each an integer in
[0, levels). Three families:

* :class:`Categorical`: a softmax over ``levels`` values for each channel (PixelCNN, PixelRNN).
* :class:`Bernoulli`: one logit per channel for binary images (``levels == 2``).
* :class:`DiscretizedLogisticMixture`: PixelCNN++'s mixture, defined in ``dlm.py``'s terms below.

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
        raise NotImplementedError

    def log_prob_per_pixel(self, params: Tensor, x: Tensor) -> Tensor:
        """(B, H, W) log p of each pixel's channels given what comes before; sums to ``log_prob``."""
        raise NotImplementedError

    def conditional(self, pixel_params: Tensor, x_pixel: Tensor, c: int) -> Tensor:
        raise NotImplementedError


class Categorical(OutputDistribution):
    """A softmax over ``levels`` values per channel; parameters are laid out channel-major (c * L + v)."""

    @property
    def num_params(self) -> int:
        return self.channels * self.levels

    def param_groups(self) -> Tensor:
        return torch.arange(self.num_params) // self.levels

    def logits(self, params: Tensor) -> Tensor:
        b, _, h, w = params.shape
        return params.view(b, self.channels, self.levels, h, w)          # (B, C, L, H, W)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        logp = F.log_softmax(self.logits(params), dim=2)
        return logp.gather(2, x.long().unsqueeze(2)).flatten(1).sum(1)

    def log_prob_per_pixel(self, params: Tensor, x: Tensor) -> Tensor:
        """(B, H, W) log p of each pixel (its channels together) given the pixels before it."""
        return -self.nll_per_pixel(params, x).sum(1)

    def nll_per_pixel(self, params: Tensor, x: Tensor) -> Tensor:
        """(B, C, H, W) negative log-likelihood; cross-entropy keeps training memory low."""
        return F.cross_entropy(self.logits(params).transpose(1, 2), x.long(), reduction="none")   # classes on dim 1

    def conditional(self, pixel_params: Tensor, x_pixel: Tensor, c: int) -> Tensor:
        logits = pixel_params[:, c * self.levels : (c + 1) * self.levels]
        return F.log_softmax(logits, dim=1)


class Bernoulli(OutputDistribution):
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

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return -self.nll_per_pixel(params, x).flatten(1).sum(1)

    def log_prob_per_pixel(self, params: Tensor, x: Tensor) -> Tensor:
        """(B, H, W) log p of each pixel (its channels together) given the pixels before it."""
        return -self.nll_per_pixel(params, x).sum(1)

    def nll_per_pixel(self, params: Tensor, x: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(params, x.to(params.dtype), reduction="none")

    def conditional(self, pixel_params: Tensor, x_pixel: Tensor, c: int) -> Tensor:
        z = pixel_params[:, c]
        return torch.stack([F.logsigmoid(-z), F.logsigmoid(z)], dim=1)


def make_distribution(kind: str, channels: int, levels: int, **kwargs) -> OutputDistribution:
    """Build an output distribution by name: 'categorical', 'bernoulli' or 'logistic_mixture'."""
    if kind == "categorical":
        return Categorical(channels, levels)
    if kind == "bernoulli":
        return Bernoulli(channels, levels)
    if kind == "logistic_mixture":
        from pixelcnn.dlm import DiscretizedLogisticMixture

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
