"""Probabilities -> the fixed-point distributions the entropy coder uses: one function, both sides.

constriction's default range coder works with probabilities in fixed point: every symbol gets an
integer weight out of ``TOTAL = 2**24`` and the coder is exact on those integers. This module
owns the one step where floating point meets integers. Encoder and decoder both call
:func:`quantized_weights` on the same float tensor, so they obtain the same integers; from format
version 3 on, its softmax is :func:`pixelcnn.coding.exact.softmax`, whose bits do not depend on
the machine, and the rest (a product, a floor, integer sums, an argmax) is exact everywhere.

How constriction sees the weights: ``Categorical(perfect=False)`` ("leaky, fast" quantisation)
turns a row of non-negative floats ``q`` of length ``L`` into the cumulative integers

    left_cumulative(s) = floor(sum_{j<s} q_j * scale) + s,   scale = (TOTAL - L) / sum_j q_j

(``fast_quantized_cdf`` / ``LazyContiguousCategoricalEntropyModel`` in constriction's source).
We hand it the *excess* ``q_j = weight_j - 1``: integers that sum to exactly ``TOTAL - L``. Every
partial sum is an integer below 2**24, exact in float32 and float64, ``scale`` is x / x = 1.0
exactly, and so ``left_cumulative(s) = sum_{j<s} weight_j``: constriction codes with our
integers, bit for bit, with no rounding of its own.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from pixelcnn.errors import CompressionError

PRECISION = 24                  # bits of constriction's default RangeEncoder/RangeDecoder models
TOTAL = 1 << PRECISION          # every distribution's integer weights sum to this


def quantized_weights(log_probs: Tensor, softmax: Callable[..., Tensor] = torch.softmax) -> np.ndarray:
    """(B, L) log-probabilities -> (B, L) float64 excess weights for constriction.

    Symbol s is coded with probability ``(excess[s] + 1) / 2**24``: every symbol has non-zero
    mass (at least 2**-24) however small its model probability, so any value can be coded.
    The result is a deterministic function of the input bits and of ``softmax``: with
    ``torch.softmax`` (format versions 1 and 2) on one machine, with
    :func:`pixelcnn.coding.exact.softmax` (version 3) on every machine.
    """
    log_probs = log_probs.detach().to(torch.float64)
    p = softmax(log_probs, dim=1).cpu()                                          # (B, L), renormalised
    if not torch.isfinite(p).all() or torch.isnan(log_probs).any():
        raise CompressionError("the model produced non-finite probabilities (NaN or inf); cannot code with it")
    levels = p.shape[1]
    free = float(TOTAL - levels)                 # what is left after one unit for every symbol
    excess = torch.floor(p * free)               # (B, L) integers; sum <= free up to rounding
    # Give what flooring dropped (at most L units; a unit or two taken back if rounding overshot)
    # to each row's most likely symbol, so that every row sums to exactly TOTAL - L.
    rows = torch.arange(p.shape[0])
    top = p.argmax(dim=1)
    excess[rows, top] += free - excess.sum(dim=1)
    return excess.numpy()

