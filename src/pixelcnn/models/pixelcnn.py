"""PixelCNN: masked convolutions with residual blocks.

van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural Networks", section 3.5
and figure 5: a 7x7 mask-A convolution, residual blocks (1x1 2h->h, 3x3 mask B, 1x1 h->2h,
each after a ReLU), then ReLU and 1x1 mask-B output layers. The receptive field of the 3x3
masks has the well-known blind spot to the upper right; Gated PixelCNN removes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
from torch import Tensor, nn

from pixelcnn.models.layers import Condition, ConditionBias, channel_groups, raster_conv
from pixelcnn.models.base import AutoregressiveModel
from pixelcnn.models.order import Order
from pixelcnn.models.common import MaskedModelConfig, OutputHead, masked_1x1, shared_help, shared_limits, stack
from pixelcnn.models.incremental import (CachedConv, CachedStepper, ConvTaps, Pointwise, PointwiseHead, PositionConv,
                                         class_bias)
from pixelcnn.validation import Integer


@dataclass(frozen=True)
class PixelCNNConfig(MaskedModelConfig):
    first_kernel: int = 7
    kernel_size: int = 3

    help: ClassVar[dict[str, str]] = {**MaskedModelConfig.help, **shared_help("first_kernel", "kernel_size")}
    limits: ClassVar[dict] = {**MaskedModelConfig.limits, **shared_limits("first_kernel", "kernel_size")}

    def __post_init__(self) -> None:
        super().__post_init__()
        Integer(2 * self.channels)(self.hidden, "hidden (halved inside each block)")


def residual(x: Tensor, reduce, conv, expand) -> Tensor:
    """The block's composition, for both paths: x + expand(ReLU(conv(ReLU(reduce(ReLU(x)))))).

    ``conv`` includes the conditioning bias. On whole maps the layers are the modules; at one position
    (:class:`CachedPixelCNN`) 1x1 products and a convolution reading a window of its input's cache.
    """
    h = reduce(torch.relu(x))
    return x + expand(torch.relu(conv(torch.relu(h))))


class ResidualBlock(nn.Module):
    """x + 1x1(ReLU(k x k mask B(ReLU(1x1(ReLU(x)))))), halving the width in between."""

    def __init__(self, channels: int, kernel_size: int, colours: int, config: PixelCNNConfig):
        super().__init__()
        wide, narrow = channel_groups(channels, colours), channel_groups(channels // 2, colours)
        self.reduce = masked_1x1(wide, narrow, colours)
        self.conv = raster_conv(channels // 2, channels // 2, kernel_size, "B", colours)
        self.expand = masked_1x1(narrow, wide, colours)
        self.cond_bias = ConditionBias(config, channels // 2)

    def forward(self, x: Tensor, cond: Condition | None) -> Tensor:
        return residual(x, self.reduce, lambda h: self.conv(h) + self.cond_bias(cond), self.expand)


class PixelCNN(AutoregressiveModel):
    name = "pixelcnn"
    config_class = PixelCNNConfig

    def __init__(self, config: PixelCNNConfig):
        super().__init__(config)
        c = config.channels
        self.input = raster_conv(c, config.hidden, config.first_kernel, "A", c)
        self.input_bias = ConditionBias(config, config.hidden)
        self.blocks = nn.ModuleList(
            ResidualBlock(config.hidden, config.kernel_size, c, config) for _ in range(config.layers)
        )
        self.head = OutputHead(config.hidden, config.output_hidden, self.distribution, c)

    def network(self, x: Tensor, cond: Condition | None, order: Order | None = None) -> Tensor:
        self.own_order_only(order)
        return stack(lambda: self.input(x) + self.input_bias(cond), self.blocks, self.head, cond)

    def cached_stepper(self, x: Tensor, cond: Condition | None, order: Order | None = None) -> "CachedPixelCNN":
        self.own_order_only(order)
        return CachedPixelCNN(self, x, cond)


class CachedResidualBlock:
    """A ResidualBlock at one position, through the block's own :func:`residual`; its k x k convolution caches
    its input and includes the conditioning bias (as in the module's form)."""

    def __init__(self, block: ResidualBlock, stepper: CachedStepper, cond: Condition | None):
        self.reduce, self.expand = Pointwise(block.reduce), Pointwise(block.expand)
        self.conv = PositionConv(block.conv, stepper, class_bias(block.cond_bias, cond))   # ReLU(reduce(ReLU(x)))

    def __call__(self, x: Tensor, h: int, w: int) -> Tensor:
        """(B, hidden) block input at (h, w) -> (B, hidden) output."""
        return residual(x, self.reduce, lambda v: self.conv(v, h, w), self.expand)


class CachedPixelCNN(CachedStepper):
    """PixelCNN one pixel column at a time: each masked convolution reads a window of its cache."""

    def __init__(self, model: PixelCNN, x: Tensor, cond: Condition | None):
        first = ConvTaps.of(model.input)
        super().__init__(model, x, [first])
        self.input = CachedConv(first, self.inputs, class_bias(model.input_bias, cond))
        self.blocks = [CachedResidualBlock(block, self, cond) for block in model.blocks]
        self.head = PointwiseHead(model.head)

    def column(self, h: int, w: int) -> Tensor:
        return stack(partial(self.input.at, h, w), self.blocks, self.head, h, w)
