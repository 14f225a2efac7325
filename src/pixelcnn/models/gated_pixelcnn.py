"""Gated PixelCNN: vertical and horizontal stacks with gated units and no blind spot.

van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu 2016, "Conditional Image
Generation with PixelCNN Decoders", figure 2 and equation (2):

    y = tanh(W_f * x + V_f h) . sigmoid(W_g * x + V_g h)

The vertical stack's output row h sees the input rows <= h; shifted down one row before it
joins the horizontal stack, it gives every pixel the whole region above it. The horizontal
stack sees the current row up to the current pixel (mask A in the first layer, B after) and
has a residual connection. Together they cover every earlier pixel: no blind spot.

The stacks use convolutions shaped to their masks ((k//2+1) x k and 1 x (k//2+1) on shifted
inputs), which skips the multiplications by zero of the plain masked k x k version; set
``conv_impl="masked"`` for the plain version (same function, used as the speed reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from pixelcnn.models.layers import (Condition, ConditionBias, Conv1x1, add_shifted_down, channel_groups, gate, horizontal_conv,
                             vertical_conv)
from pixelcnn.models.base import AutoregressiveModel
from pixelcnn.models.order import Order
from pixelcnn.models.common import (MaskedModelConfig, OutputHead, dilations_help, gate_groups, masked_1x1, shared_help,
                                    shared_limits)
from pixelcnn.models.incremental import (CachedConv, CachedStepper, ConvTaps, FeatureMap, Pointwise, PointwiseHead,
                                         bias_row, class_bias)
from pixelcnn.validation import Integer, OneOf

CONV_IMPLS = ("shaped", "masked")


@dataclass(frozen=True)
class GatedPixelCNNConfig(MaskedModelConfig):
    first_kernel: int = 7
    kernel_size: int = 3
    dilations: tuple[int, ...] = (1,)
    conv_impl: str = "shaped"

    help: ClassVar[dict[str, str]] = {
        **MaskedModelConfig.help,
        **shared_help("first_kernel", "kernel_size"),
        "layers": "number of gated layers, the first (mask A) one included",
        "dilations": dilations_help("gated layer"),
        "conv_impl": "'shaped' (convolutions shaped to the mask, faster) or 'masked' (plain masked k x k)",
    }
    limits: ClassVar[dict] = {**MaskedModelConfig.limits, **shared_limits("first_kernel", "kernel_size", "dilations"),
                              "conv_impl": OneOf(CONV_IMPLS), "layers": Integer(1)}


def stacks(v_pre: Tensor, h_pre: Tensor, h_out, residual: Tensor | None, dim: int = 1,
           overwrite: bool = False) -> tuple[Tensor, Tensor]:
    """The layer's outputs from its gates' pre-activations (biases and the vertical-to-horizontal link included),
    for both paths: gate(v_pre), and h_out(gate(h_pre)) plus the layer's input unless it is the first.

    ``dim`` is the channels' dimension (-1 on the cached path's rows); either stack may be absent (None).
    ``overwrite``: the pre-activations are not read again, so the gates may work in them (see :func:`gate`).
    """
    v_out = None if v_pre is None else gate(v_pre, dim, overwrite)
    if h_pre is None:
        return v_out, None
    out = h_out(gate(h_pre, dim, overwrite))
    return v_out, out if residual is None else residual + out


class GatedLayer(nn.Module):
    """One gated layer: (v, h) -> (v', h'), with a residual on the horizontal stack unless first."""

    def __init__(self, in_channels: int, hidden: int, kernel: int, colours: int, config: GatedPixelCNNConfig,
                 first: bool, dilation: int, shaped: bool, last: bool = False):
        super().__init__()
        pre = gate_groups(hidden, colours)
        in_groups = torch.arange(colours) if first else channel_groups(hidden, colours)
        self.first = first
        self.last = last                                                   # no layer reads its vertical output
        self.vertical = vertical_conv(in_channels, 2 * hidden, kernel, dilation, shaped)
        self.horizontal = horizontal_conv(in_channels, 2 * hidden, kernel, "A" if first else "B", colours,
                                          in_groups=in_groups, out_groups=pre, dilation=dilation, shaped=shaped)
        self.v_to_h = Conv1x1(2 * hidden, 2 * hidden)          # from rows above: no colour mask needed
        self.h_out = masked_1x1(channel_groups(hidden, colours), channel_groups(hidden, colours), colours)
        self.v_bias = ConditionBias(config, 2 * hidden)
        self.h_bias = ConditionBias(config, 2 * hidden)

    def forward(self, v: Tensor, h: Tensor, cond: Condition | None) -> tuple[Tensor, Tensor]:
        v_pre = self.vertical(v)                                           # (B, 2n, H, W), rows <= h
        # horizontal(h) + v_to_h(shift_down(v_pre)): rows < h, and row h up to w
        h_pre = add_shifted_down(self.horizontal(h), self.v_to_h(v_pre), self.v_to_h.bias)
        if cond is not None:                                               # unconditional: no zero biases to add
            v_pre, h_pre = v_pre + self.v_bias(cond), h_pre + self.h_bias(cond)
        v_pre = None if self.last else v_pre                               # v' = None: nothing reads it
        return stacks(v_pre, h_pre, self.h_out, None if self.first else h, overwrite=True)   # v_to_h has read v_pre


class GatedPixelCNN(AutoregressiveModel):
    name = "gated_pixelcnn"
    config_class = GatedPixelCNNConfig

    def __init__(self, config: GatedPixelCNNConfig):
        super().__init__(config)
        c, n = config.channels, config.hidden
        shaped = config.conv_impl == "shaped"
        last = config.layers - 1
        layers = [GatedLayer(c, n, config.first_kernel, c, config, True, 1, shaped, last=last == 0)]
        for i in range(1, config.layers):
            d = config.dilations[i % len(config.dilations)]
            layers.append(GatedLayer(n, n, config.kernel_size, c, config, False, d, shaped, last=i == last))
        self.layers = nn.ModuleList(layers)
        self.head = OutputHead(n, config.output_hidden, self.distribution, c)

    def network(self, x: Tensor, cond: Condition | None, order: Order | None = None) -> Tensor:
        self.own_order_only(order)
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, cond)
        return self.head(h)                                                # (B, P, H, W)

    def cached_stepper(self, x: Tensor, cond: Condition | None, order: Order | None = None) -> "CachedGatedPixelCNN":
        self.own_order_only(order)
        return CachedGatedPixelCNN(self, x, cond)


class CachedGatedLayer:
    """A GatedLayer evaluated incrementally: its vertical stack a row at a time, its horizontal stack a pixel at a time.

    ``taps`` are those of its vertical and horizontal convolutions. It reads the caches ``v_in``
    and ``h_in`` and writes ``v_next`` and ``h_next``, the next layer's (None for the last layer).
    """

    def __init__(self, layer: GatedLayer, taps: tuple[ConvTaps, ConvTaps], v_in: FeatureMap, h_in: FeatureMap,
                 v_next: FeatureMap | None, h_next: FeatureMap | None, cond: Condition | None):
        self.vertical, self.horizontal = CachedConv(taps[0], v_in), CachedConv(taps[1], h_in)
        self.v_to_h, self.h_out = Pointwise(layer.v_to_h), Pointwise(layer.h_out)
        self.v_bias, self.h_bias = class_bias(layer.v_bias, cond), class_bias(layer.h_bias, cond)
        self.v_next, self.h_next = v_next, h_next
        self.first = layer.first                                           # no residual connection
        self.width, self.batch = h_in.width, h_in.buf.shape[0]
        self.row_bias: Tensor | None = None                                # (W, B, 2n)

    def start_row(self, h: int) -> None:
        """Compute what row h's pixels need from the rows above: the vertical stack's row h - 1."""
        if h == 0:                                                         # shift_down fills row 0 with zeros
            v_to_h = self.v_to_h.bias.expand(self.width, self.batch, -1)
        else:
            v_pre = self.vertical.row(h - 1)                               # (W, B, 2n)
            if self.v_next is not None:
                v_gated = v_pre if self.v_bias is None else v_pre + bias_row(self.v_bias, h - 1)
                self.v_next.write_row(h - 1, stacks(v_gated, None, None, None, dim=-1)[0])   # (B, W, n) in the cache
            v_to_h = self.v_to_h.rows(v_pre)
        bias = v_to_h + self.horizontal.bias
        self.row_bias = (bias if self.h_bias is None else bias + bias_row(self.h_bias, h)).contiguous()

    def step(self, h: int, w: int, residual: Tensor | None) -> Tensor:
        """(B, n): the horizontal stack's output at (h, w), also written to ``h_next``.

        ``residual`` is the layer's input at (h, w), the previous layer's output; None for the first layer.
        """
        _, out = stacks(None, self.horizontal.at(h, w, bias=self.row_bias[w]), self.h_out, residual)   # (B, n)
        return out if self.h_next is None else self.h_next.at(h, w).copy_(out)


class CachedGatedPixelCNN(CachedStepper):
    """Gated PixelCNN one pixel at a time (van den Oord et al. 2016 with Ramachandran et al. 2017's caching)."""

    def __init__(self, model: GatedPixelCNN, x: Tensor, cond: Condition | None):
        vertical = [ConvTaps.of(layer.vertical) for layer in model.layers]
        horizontal = [ConvTaps.of(layer.horizontal) for layer in model.layers]
        super().__init__(model, x, [vertical[0], horizontal[0]])
        n = model.config.hidden
        v_maps = [self.inputs] + [self.feature_map(n, [taps]) for taps in vertical[1:]] + [None]
        h_maps = [self.inputs] + [self.feature_map(n, [taps]) for taps in horizontal[1:]] + [None]
        self.layers = [CachedGatedLayer(layer, (vertical[i], horizontal[i]), v_maps[i], h_maps[i], v_maps[i + 1],
                                        h_maps[i + 1], cond) for i, layer in enumerate(model.layers)]
        self.head = PointwiseHead(model.head)
        self.row = -1                                                      # the row whose vertical inputs are ready
        self.kernel = None           # the same column in compiled exact arithmetic (pixelcnn.coding.fused), or None

    def column(self, h: int, w: int) -> Tensor:
        if self.kernel is not None:
            return self.kernel(h, w)
        if h != self.row:                                                  # raster order: row h - 1 is complete
            for layer in self.layers:
                layer.start_row(h)
            self.row = h
        out = None
        for layer in self.layers:
            out = layer.step(h, w, None if layer.first else out)           # (B, n)
        return self.head(out)                                              # (B, P)
