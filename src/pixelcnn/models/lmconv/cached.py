"""LMConv one pixel at a time, in any order: each layer's output at the visited pixel only (the machinery of
``incremental.py`` over the split locally masked convolution's cached form, ``local_conv.LocalCachedConv``).
It reads the modules of an ``LMConv`` without importing the model's file: the model builds its stepper."""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from pixelcnn.models.common import stack
from pixelcnn.models.incremental import CachedStepper, Pointwise, PointwiseHead, class_bias
from pixelcnn.models.layers import Condition
from pixelcnn.models.lmconv.local_conv import LocalCachedConv
from pixelcnn.models.order import Order


class CachedLMConvBlock:
    """An LMConvBlock at one position: it caches its input, which its convolution reads."""

    def __init__(self, block: nn.Module, stepper: CachedStepper, masks: dict, cond: Condition | None):
        taps = block.conv.taps()
        self.combine = block.combine
        self.source = stepper.feature_map(taps.in_channels, [taps])
        self.conv = LocalCachedConv(taps, self.source, masks[block.conv.key], class_bias(block.cond_bias, cond))
        self.out = Pointwise(block.out)

    def __call__(self, x: Tensor, h: int, w: int) -> Tensor:
        """(B, hidden) block input at (h, w) -> (B, hidden) output."""
        self.source.at(h, w).copy_(x)
        return self.combine(x, self.conv.at(h, w), self.out)


class CachedLMConv(CachedStepper):
    """LMConv one pixel at a time in any order: each layer's output at the visited pixel only."""

    def __init__(self, model: nn.Module, x: Tensor, cond: Condition | None, order: Order):
        first = model.input.taps()
        super().__init__(model, x, [first], ones_channel=True, order=order)
        masks = model.tap_masks(order)
        self.input = LocalCachedConv(first, self.inputs, masks[model.input.key], class_bias(model.input_bias, cond))
        self.blocks = [CachedLMConvBlock(block, self, masks, cond) for block in model.blocks]
        self.head = PointwiseHead(model.head)

    def column(self, h: int, w: int) -> Tensor:
        return stack(partial(self.input.at, h, w), self.blocks, self.head, h, w)

