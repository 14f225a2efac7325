"""PixelSNAIL one pixel at a time: convolution caches for the neighbourhood, a key/value cache for the past.

The convolutions are those of the masked families (``incremental.py``): each gated residual layer keeps
the input of its k x k convolution in a cache and reads a window of it at the current pixel. Each
attention layer keeps, per head, the keys and values of the pixels already final, (B, heads, 1 + H W, d)
with slot 0 the zero key and value that every pixel sees and slot p + 1 those of pixel p. At pixel p
the layer's query reads slots 0..p (the zero slot and the pixels before p, as the network's shifted,
causal attention does), then writes the part of pixel p's key and value that comes from its features
into slot p + 1. The part that comes from the pixel's own values joins the slot when the next pixel
starts (:meth:`CachedAttention.add_values_before`): the stepper computes a pixel's column when its
last channel is asked for, before that value is set, and the features, which never see their own
pixel, are final then; its values are final only once the loop has moved on.

Per step the attention costs one (1 x d) @ (d x (p + 1)) product and one (1 x (p + 1)) @ ((p + 1) x d)
product per head: a whole sample is O((H W)^2 d) per layer, the network's own cost once, where sampling
with the network costs it once per sub-pixel. Like ``pixelcnn_pp/cached.py``, this file reads the
modules of a model without importing the model's file.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from pixelcnn.models.common import stack
from pixelcnn.models.incremental import (CachedConv, CachedStepper, ConvTaps, Pointwise, PointwiseHead, PositionConv,
                                         class_bias)
from pixelcnn.models.layers import Condition


class CachedGatedResidual:
    """A GatedResidual at one position, through the module's ``combine``: its convolution caches its input and
    includes the conditioning bias."""

    def __init__(self, layer: nn.Module, stepper: CachedStepper, cond: Condition | None):
        self.combine, self.proj = layer.combine, Pointwise(layer.proj)
        self.conv = PositionConv(layer.conv, stepper, class_bias(layer.cond_bias, cond))   # ReLU of the layer's input

    def __call__(self, x: Tensor, h: int, w: int) -> Tensor:
        """(B, n) input at (h, w) -> (B, n) output."""
        return self.combine(x, lambda v: self.conv(v, h, w), self.proj)


class CachedAttention:
    """A CausalAttention at one position, over the keys and values of the pixels before it (see the module).

    The layer's three projections of its input are one product, (B, n) @ (n, 3 heads d), whose bias at position
    p holds the projections' biases, the positional terms and, for the queries, the attention's scale; the
    projections of a pixel's values into its key and value are one more, (B, C) @ (C, 2 heads d).
    """

    def __init__(self, layer: nn.Module, stepper: CachedStepper):
        query, key, value = (Pointwise(m) for m in (layer.query, layer.key, layer.value))
        self.out = Pointwise(layer.out)
        self.heads, self.channels, self.scale = layer.heads, layer.head_channels, layer.scale
        self.width, self.size = stepper.width, layer.heads * layer.head_channels

        def by_position(projection: nn.Module) -> Tensor:                    # (H W, heads d), positions in raster order
            return projection(layer.positions).detach().flatten(2)[0].t()

        queries = (query.bias + by_position(layer.query_position)) * self.scale
        keys = key.bias + by_position(layer.key_position)
        self.bias = torch.cat([queries, keys, value.bias.expand_as(keys)], 1).contiguous()      # (H W, 3 heads d)
        self.weight = torch.cat([query.weight * self.scale, key.weight, value.weight], 1)      # (n, 3 heads d)
        self.image_weight = torch.cat([Pointwise(layer.key_image).weight, Pointwise(layer.value_image).weight], 1)
        self.filled = 0                                                      # slots 1..filled hold their values' terms
        pixels = stepper.height * stepper.width
        slots = (stepper.batch, self.heads, 1 + pixels, self.channels)
        self.keys, self.values = stepper.like.new_zeros(slots), stepper.like.new_zeros(slots)
        # Views built once: what the query at p reads (slots 0..p, keys transposed) and pixel p's slot, p + 1.
        self.keys_before = [self.keys[:, :, : p + 1].transpose(-1, -2) for p in range(pixels)]
        self.values_before = [self.values[:, :, : p + 1] for p in range(pixels)]
        self.key_slot = [self.keys[:, :, p + 1] for p in range(pixels)]      # (B, heads, d) each
        self.value_slot = [self.values[:, :, p + 1] for p in range(pixels)]
        self.pixel_values = [stepper.inputs.at(*divmod(p, stepper.width)) for p in range(pixels)]   # (B, C) each

    def __call__(self, x: Tensor, h: int, w: int) -> Tensor:
        """(B, n) input at (h, w) -> (B, n) output; the pixel's key and value from its features into slot p + 1."""
        p, b, a = h * self.width + w, x.shape[0], self.size
        self.add_values_before(p)
        qkv = torch.addmm(self.bias[p], x, self.weight).view(b, 3, self.heads, 1, self.channels)   # queries scaled
        # the zero slot and pixels 0..p-1
        weights = torch.softmax(torch.matmul(qkv[:, 0], self.keys_before[p]), dim=-1)    # (B, heads, 1, p + 1)
        out = torch.matmul(weights, self.values_before[p]).view(b, a)       # (B, heads d)
        self.key_slot[p].copy_(qkv[:, 1, :, 0])
        self.value_slot[p].copy_(qkv[:, 2, :, 0])
        return x + self.out(out)

    def add_values_before(self, p: int) -> None:
        """The terms of the pixels' own values into the slots of pixels ``filled``..p - 1, which are final now.

        A pixel's column is last computed when its last channel is asked for, before that value is set,
        so its values join its key and value here, when the next pixel starts, once each."""
        for q in range(self.filled, p):
            kv = torch.mm(self.pixel_values[q], self.image_weight).view(-1, 2, self.heads, self.channels)
            self.key_slot[q].add_(kv[:, 0])
            self.value_slot[q].add_(kv[:, 1])
        self.filled = max(self.filled, p)


class CachedPixelSNAIL(CachedStepper):
    """PixelSNAIL one pixel column at a time: ``stack`` over the layers' incremental forms."""

    def __init__(self, model: nn.Module, x: Tensor, cond: Condition | None):
        first = ConvTaps.of(model.input)
        super().__init__(model, x, [first])
        self.input = CachedConv(first, self.inputs, class_bias(model.input_bias, cond))
        self.layers = [CachedAttention(layer, self) if hasattr(layer, "query") else CachedGatedResidual(layer, self, cond)
                       for layer in model.layers]
        self.head = PointwiseHead(model.head)

    def column(self, h: int, w: int) -> Tensor:
        return stack(partial(self.input.at, h, w), self.layers, self.head, h, w)
