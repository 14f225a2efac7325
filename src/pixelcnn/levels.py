"""Pixel values and the three scales they live on, converted in one place.

A model with L levels sees integer values v in [0, L). Files and screens hold 8-bit bytes
b in [0, 255]; networks and the logistic mixture read floats in [-1, 1]. The maps:

- ``to_bytes``: v -> round(255 v / (L - 1)), half up (L = 256 is the identity);
- ``from_bytes``: b -> round((L - 1) b / 255), half up, the nearest level (the inverse of
  ``to_bytes`` on its image, so a PNG written by the project reads back as the same values);
- ``to_unit``: v -> 2 v / (L - 1) - 1, the bin centres on [-1, 1] (Salimans et al. 2017).

Integer maps are exact in int64; ``to_unit`` is the one expression every network input and
every logistic bin centre is computed with, so they agree to the last bit.
"""

from __future__ import annotations

import torch
from torch import Tensor


def to_bytes(values: Tensor, levels: int) -> Tensor:
    """Integer values in [0, levels) -> int64 bytes in [0, 255], spread evenly."""
    x = values.long()
    return x if levels == 256 else (x * 255 + (levels - 1) // 2) // (levels - 1)


def from_bytes(data: Tensor, levels: int) -> Tensor:
    """int64 bytes in [0, 255] -> the nearest of ``levels`` values."""
    x = data.long()
    return x if levels == 256 else (x * (levels - 1) + 127) // 255


def to_unit(values: Tensor, levels: int, dtype: torch.dtype) -> Tensor:
    """Integer values in [0, levels) -> floats 2 v / (levels - 1) - 1 in [-1, 1], in ``dtype``."""
    return values.to(dtype) * (2.0 / (levels - 1)) - 1.0
