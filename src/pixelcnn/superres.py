"""Super-resolution as conditioning: p(high-res image | its low-resolution version).

The low-resolution image is a function of the high-resolution one (the rounded mean of each
scale x scale block), so training and evaluation derive it from the data; a model created
with ``cond_shape=(C, H // scale, W // scale)`` takes it as ``cond_image``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from pixelcnn.errors import ConfigError


def cond_shape_for(image_shape: tuple[int, int, int], scale: int) -> tuple[int, int, int]:
    """The low-resolution shape of images ``image_shape`` at ``scale``; the sides must divide."""
    c, h, w = image_shape
    if not isinstance(scale, int) or scale < 2 or h % scale or w % scale:
        raise ConfigError(f"expected a scale >= 2 that divides the image's {h}x{w} pixels, got {scale!r}")
    return c, h // scale, w // scale


def downsample(x: Tensor, cond_shape: tuple[int, int, int]) -> Tensor:
    """Integer images (B, C, H, W) -> (B, C, h, w): the mean of each block, rounded (half to even)."""
    scale = x.shape[-1] // cond_shape[-1]
    return F.avg_pool2d(x.double(), scale).round().long()


def cond_images(model, x: Tensor) -> Tensor | None:
    """The conditioning images a super-resolution model needs for high-resolution x, else None."""
    shape = model.config.cond_shape
    return None if shape is None else downsample(x, shape)


def nearest_upsample(y: Tensor, size: tuple[int, int]) -> Tensor:
    """Integer images to a larger size by repeating pixels (for showing low-res inputs in grids)."""
    return F.interpolate(y.double(), size=size, mode="nearest").long()


