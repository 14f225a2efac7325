"""PixelSNAIL: masked convolutions for the neighbourhood, causal self-attention for the whole past.

Chen, Mishra, Rohaninejad & Abbeel 2018, "PixelSNAIL: An Improved Autoregressive Generative Model"
(ICML): blocks of gated residual convolutions, each followed by multi-head self-attention in which
every pixel reads every pixel before it in raster order. The convolutions give the local texture in
a few layers; the attention gives every pixel the whole past in one layer, so a dependency between
the first row and the last costs no depth (``pixelcnn receptive-field pixelsnail`` shows the whole
past; a convolution stack's window is bounded).

Here, on this package's masked convolutions (the PixelCNN family's colour groups: R, then G given R,
then B given R and G):

* the first layer a k x k mask-A convolution; each block ``residual_blocks`` gated residual layers,
  x + 1x1(gate(k x k mask B(ReLU x))), then one attention layer, x + 1x1(attention);
* keys and values come from the pixels strictly before the current one, from their features and
  from their own values (the network's input): a pixel's features never hold its own value (mask A),
  so keys of features alone would leave the pixels that only later windows read, such as the end of
  the row above, unseen by every attention layer. Keys and values are shifted one position along the
  raster sequence, and slot 0 holds a zero key and value that every pixel also sees (the first pixel
  then attends to it alone: no empty softmax, no NaN). The causal mask then includes the diagonal,
  which is what ``scaled_dot_product_attention(is_causal=True)`` computes in its memory-efficient
  kernels;
* queries come from the current pixel's features, by colour group: the heads are split among the
  colour groups, and group g's queries read feature groups <= g (a mask-B 1x1), so its attention
  output, written back into group g, never carries the pixel's own later colours;
* positions reach queries and keys through learned projections of fixed features: triangle waves of
  the row and the column at 4 frequencies each, in IEEE arithmetic only (the codec needs the same
  bits on every machine, which sin and cos do not promise).

The cached stepper (``cached.py``) keeps each attention layer's keys and values as pixels become
final and reads them with one query per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelcnn.models.base import AutoregressiveModel
from pixelcnn.models.order import Order
from pixelcnn.models.common import MaskedModelConfig, OutputHead, gate_groups, masked_1x1, shared_help, shared_limits
from pixelcnn.models.layers import Condition, ConditionBias, Conv1x1, channel_groups, gate, raster_conv
from pixelcnn.models.pixelsnail.cached import CachedPixelSNAIL
from pixelcnn.validation import Integer

# Frequencies of the positional triangle waves per axis: periods of 2, 1, 1/2 and 1/4 of the side.
FREQUENCIES = 4
POSITION_FEATURES = 4 * FREQUENCIES                                         # rows and columns, two phases each


@dataclass(frozen=True)
class PixelSNAILConfig(MaskedModelConfig):
    layers: int = 4
    residual_blocks: int = 2
    first_kernel: int = 5
    kernel_size: int = 3
    heads: int = 2
    head_channels: int = 16

    help: ClassVar[dict[str, str]] = {
        **MaskedModelConfig.help,
        "layers": "number of blocks, each residual_blocks gated convolutions then one causal self-attention layer",
        **shared_help("first_kernel", "kernel_size"),
        "residual_blocks": "gated residual convolutions (mask B) before each attention layer",
        "heads": "attention heads per colour channel (their queries read that channel's features)",
        "head_channels": "channels of each head's queries, keys and values",
    }
    limits: ClassVar[dict] = {**MaskedModelConfig.limits, **shared_limits("first_kernel", "kernel_size"),
                              "residual_blocks": Integer(0), "heads": Integer(1), "head_channels": Integer(1)}

    @property
    def attention_channels(self) -> int:
        """Channels of the queries (keys, values) of all heads together: colours x heads x head_channels."""
        return self.channels * self.heads * self.head_channels


def triangle(t: float) -> float:
    """A triangle wave of period 2 in [-1, 1]: 1 at even t, -1 at odd t, linear between (IEEE + - * only)."""
    r = t - 2.0 * float(int(t / 2.0))                                       # t >= 0: t mod 2, exactly
    return abs(r - 1.0) * 2.0 - 1.0


def position_features(height: int, width: int) -> Tensor:
    """(1, POSITION_FEATURES, H, W) float32: triangle waves of the row and of the column at FREQUENCIES
    frequencies, in two phases. Every value is a few correctly rounded operations on small numbers, so
    the same on every machine."""
    def axis(size: int) -> list[list[float]]:
        waves = []
        for k in range(FREQUENCIES):
            for phase in (0.0, 0.5):
                waves.append([triangle((i + 0.5) * float(1 << k) / size + phase) for i in range(size)])
        return waves                                                         # (2 FREQUENCIES, size)

    rows = torch.tensor(axis(height), dtype=torch.float64)[:, :, None].expand(-1, height, width)
    cols = torch.tensor(axis(width), dtype=torch.float64)[:, None, :].expand(-1, height, width)
    return torch.cat([rows, cols]).float()[None]


def causal_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """(B, heads, L, d) outputs of each position attending to the keys and values of the positions before it
    and to a zero slot: k and v shifted one position along L, then attention with the diagonal included."""
    k, v = F.pad(k, (0, 0, 1, -1)), F.pad(v, (0, 0, 1, -1))                 # slot 0: zeros; position L - 1 dropped
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)


class GatedResidual(nn.Module):
    """x + 1x1 mask B(gate(k x k mask B(ReLU x)))."""

    def __init__(self, channels: int, kernel_size: int, colours: int, config: PixelSNAILConfig):
        super().__init__()
        groups = channel_groups(channels, colours)
        self.conv = raster_conv(channels, 2 * channels, kernel_size, "B", colours, out_groups=gate_groups(channels, colours))
        self.proj = masked_1x1(groups, groups, colours)
        self.cond_bias = ConditionBias(config, 2 * channels)

    @staticmethod
    def combine(x: Tensor, conv, proj) -> Tensor:
        """The layer's composition, for both paths: x + proj(gate(conv(ReLU x))), channels in dim 1 ((B, n, H, W)
        or (B, n) at one position); ``conv`` includes the conditioning bias."""
        return x + proj(gate(conv(torch.relu(x)), 1))

    def forward(self, x: Tensor, cond: Condition | None) -> Tensor:
        return self.combine(x, lambda h: self.conv(h) + self.cond_bias(cond), self.proj)


class CausalAttention(nn.Module):
    """x + 1x1 mask B(multi-head attention): queries by colour group from the current pixel, keys and values
    from the features and the values of the pixels before it, positions added to queries and keys."""

    def __init__(self, channels: int, config: PixelSNAILConfig):
        super().__init__()
        colours, a = config.channels, config.attention_channels
        self.heads, self.head_channels = colours * config.heads, config.head_channels
        self.scale = config.head_channels ** -0.5
        features, heads = channel_groups(channels, colours), channel_groups(a, colours)
        self.query = masked_1x1(features, heads, colours)                   # group g reads feature groups <= g
        self.key, self.value = Conv1x1(channels, a), Conv1x1(channels, a)   # earlier pixels: every group
        self.key_image = Conv1x1(colours, a, bias=False)                    # and every colour of their values
        self.value_image = Conv1x1(colours, a, bias=False)
        self.query_position = Conv1x1(POSITION_FEATURES, a, bias=False)
        self.key_position = Conv1x1(POSITION_FEATURES, a, bias=False)
        self.out = masked_1x1(heads, features, colours)
        self.register_buffer("positions", position_features(*config.image_shape[1:]), persistent=False)

    def split(self, t: Tensor) -> Tensor:
        """(B, heads d, H, W) -> (B, heads, H W, d); head j holds channels j d .. (j + 1) d - 1 (colour group
        j // (heads per colour))."""
        b, _, h, w = t.shape
        return t.reshape(b, self.heads, self.head_channels, h * w).transpose(-1, -2)

    def forward(self, x: Tensor, image: Tensor) -> Tensor:
        """x (B, n, H, W) features, ``image`` (B, C, H, W) the network's input."""
        q = self.split(self.query(x) + self.query_position(self.positions))
        k = self.split(self.key(x) + self.key_image(image) + self.key_position(self.positions))
        v = self.split(self.value(x) + self.value_image(image))
        out = causal_attention(q, k, v, self.scale)                                   # (B, heads, H W, d)
        return x + self.out(out.transpose(-1, -2).reshape(x.shape[0], -1, *x.shape[2:]))


class PixelSNAIL(AutoregressiveModel):
    name = "pixelsnail"
    config_class = PixelSNAILConfig

    def __init__(self, config: PixelSNAILConfig):
        super().__init__(config)
        c, n = config.channels, config.hidden
        self.input = raster_conv(c, n, config.first_kernel, "A", c)
        self.input_bias = ConditionBias(config, n)
        layers: list[nn.Module] = []
        for _ in range(config.layers):
            layers += [GatedResidual(n, config.kernel_size, c, config) for _ in range(config.residual_blocks)]
            layers.append(CausalAttention(n, config))
        self.layers = nn.ModuleList(layers)
        self.head = OutputHead(n, config.output_hidden, self.distribution, c)

    def network(self, x: Tensor, cond: Condition | None, order: Order | None = None) -> Tensor:
        self.own_order_only(order)
        h = self.input(x) + self.input_bias(cond)
        for layer in self.layers:
            h = layer(h, x) if isinstance(layer, CausalAttention) else layer(h, cond)
        return self.head(h)                                                  # (B, P, H, W)

    def cached_stepper(self, x: Tensor, cond: Condition | None, order: Order | None = None) -> CachedPixelSNAIL:
        """One pixel at a time: the convolutions from their caches, each attention layer one query against the
        keys and values of the pixels before (``cached.py``)."""
        self.own_order_only(order)
        return CachedPixelSNAIL(self, x, cond)
