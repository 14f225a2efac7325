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

from pixelcnn.errors import ConfigError
from pixelcnn.layers import ClassBias, channel_groups, gate, horizontal_conv, shift_down, vertical_conv
from pixelcnn.models.base import AutoregressiveModel
from pixelcnn.models.common import MaskedModelConfig, OutputHead, check_kernel, gate_groups, masked_1x1, output_distribution

CONV_IMPLS = ("shaped", "masked")


@dataclass(frozen=True)
class GatedPixelCNNConfig(MaskedModelConfig):
    first_kernel: int = 7
    kernel_size: int = 3
    dilations: tuple[int, ...] = (1,)
    conv_impl: str = "shaped"

    help: ClassVar[dict[str, str]] = {
        **MaskedModelConfig.help,
        "first_kernel": "size of the first layer's kernels",
        "kernel_size": "size of the gated layers' kernels",
        "layers": "number of gated layers, the first (mask A) one included",
        "dilations": "dilation of gated layer i is dilations[i %% len(dilations)], e.g. 1,2,4",
        "conv_impl": "'shaped' (convolutions shaped to the mask, faster) or 'masked' (plain masked k x k)",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        check_kernel(self, "first_kernel")
        check_kernel(self, "kernel_size")
        dil = tuple(self.dilations) if isinstance(self.dilations, (list, tuple)) else (self.dilations,)
        if not dil or not all(isinstance(d, int) and d >= 1 for d in dil):
            raise ConfigError(f"dilations must be positive integers, got {self.dilations!r}")
        object.__setattr__(self, "dilations", dil)
        if self.conv_impl not in CONV_IMPLS:
            raise ConfigError(f"conv_impl must be one of {CONV_IMPLS}, got {self.conv_impl!r}")
        if self.layers < 1:
            raise ConfigError(f"layers counts the gated layers, the first included: expected >= 1, got {self.layers}")


class GatedLayer(nn.Module):
    """One gated layer: (v, h) -> (v', h'), with a residual on the horizontal stack unless first."""

    def __init__(self, in_channels: int, hidden: int, kernel: int, colours: int, num_classes: int | None,
                 first: bool, dilation: int, shaped: bool):
        super().__init__()
        pre = gate_groups(hidden, colours)
        in_groups = torch.arange(colours) if first else channel_groups(hidden, colours)
        self.first = first
        self.vertical = vertical_conv(in_channels, 2 * hidden, kernel, dilation, shaped)
        self.horizontal = horizontal_conv(in_channels, 2 * hidden, kernel, "A" if first else "B", colours,
                                          in_groups=in_groups, out_groups=pre, dilation=dilation, shaped=shaped)
        self.v_to_h = nn.Conv2d(2 * hidden, 2 * hidden, 1)      # from rows above: no colour mask needed
        self.h_out = masked_1x1(channel_groups(hidden, colours), channel_groups(hidden, colours), colours)
        self.v_bias = ClassBias(num_classes, 2 * hidden)
        self.h_bias = ClassBias(num_classes, 2 * hidden)

    def forward(self, v: Tensor, h: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        v_pre = self.vertical(v)                                           # (B, 2n, H, W), rows <= h
        h_pre = self.horizontal(h) + self.v_to_h(shift_down(v_pre))        # rows < h, and row h up to w
        v_out = gate(v_pre + self.v_bias(labels))                          # (B, n, H, W)
        h_out = self.h_out(gate(h_pre + self.h_bias(labels)))
        return v_out, h_out if self.first else h + h_out


class GatedPixelCNN(AutoregressiveModel):
    name = "gated_pixelcnn"
    config_class = GatedPixelCNNConfig

    def __init__(self, config: GatedPixelCNNConfig):
        super().__init__(config)
        c, n = config.channels, config.hidden
        shaped = config.conv_impl == "shaped"
        layers = [GatedLayer(c, n, config.first_kernel, c, config.num_classes, True, 1, shaped)]
        for i in range(1, config.layers):
            d = config.dilations[i % len(config.dilations)]
            layers.append(GatedLayer(n, n, config.kernel_size, c, config.num_classes, False, d, shaped))
        self.layers = nn.ModuleList(layers)
        self.head = OutputHead(n, config.output_hidden, self.distribution, c)

    def make_distribution(self):
        return output_distribution(self.config)

    def network(self, x: Tensor, labels: Tensor | None) -> Tensor:
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, labels)
        return self.head(h)                                                # (B, P, H, W)
