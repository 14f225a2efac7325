"""Pieces the masked families (PixelCNN, Gated PixelCNN, PixelRNN, lmconv) share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable

import torch
from torch import Tensor, nn

from pixelcnn.config import ModelConfig
from pixelcnn.distributions import OutputDistribution
from pixelcnn.errors import ConfigError
from pixelcnn.models.layers import MaskedConv2d, channel_groups, raster_conv
from pixelcnn.validation import Integer, Integers, OneOf, fail

OUTPUTS = ("auto", "categorical", "bernoulli")


def stack(first: Callable[[], Tensor], layers: Iterable[Callable[..., Tensor]], head: Callable[[Tensor], Tensor],
          *args):
    """A network that is a stack, for both of its paths: the first layer, each layer on the stream
    in turn (its residual inside; called as ``layer(h, *args)``), the output layers. On whole maps
    (the module's ``network``, with the modules) or at one position (a cached stepper, with each
    layer's incremental form)."""
    h = first()                                                   # (B, n, H, W), or (B, n) at a position
    for layer in layers:
        h = layer(h, *args)
    return head(h)                                                # (B, P, H, W), or (B, P)


def dilations_help(layer: str) -> str:
    """The --dilations help of a family whose ``layer`` i takes dilation ``dilations[i % len(dilations)]``."""
    return f"dilation of {layer} i is dilations[i %% len(dilations)], e.g. 1,2,4"


@dataclass(frozen=True)
class MaskedModelConfig(ModelConfig):
    """Fields of every masked family: stream width, depth and output head."""

    hidden: int = 64
    layers: int = 7
    output_hidden: int = 256
    output: str = "auto"

    help: ClassVar[dict[str, str]] = {
        **ModelConfig.help,
        "hidden": "feature maps in the network's main stream",
        "layers": "number of residual blocks (PixelCNN) or LSTM layers (PixelRNN) after the first convolution",
        "output_hidden": "feature maps of the 1x1 output layer before the logits (0: none)",
        "output": "output distribution: categorical (softmax over levels), bernoulli (levels=2) or auto",
    }

    limits: ClassVar[dict] = {**ModelConfig.limits, "layers": Integer(0), "output_hidden": Integer(0),
                              "output": OneOf(OUTPUTS)}

    def __post_init__(self) -> None:
        super().__post_init__()
        c = self.channels
        Integer(c)(self.hidden, "hidden")                   # one feature map per colour group at least
        if 0 < self.output_hidden < c:
            fail("output_hidden", f"0 or at least the {c} colour channels", self.output_hidden)
        if self.output == "bernoulli" and self.levels != 2:
            raise ConfigError(f"output='bernoulli' needs levels=2, got levels={self.levels}")

    @property
    def output_kind(self) -> str:
        if self.output == "auto":
            return "bernoulli" if self.levels == 2 else "categorical"
        return self.output


KERNEL = Integer(1, odd=True)
DILATIONS = Integers(1)

# Fields that several masked families declare, each described and checked once: a flag that families share shows
# the first family's help (flags.add_model_flags), so its words must suit every one of them.
SHARED_HELP = {
    "first_kernel": "size of the first (mask A) convolution",
    "kernel_size": "size of the convolutions after the first",
}
SHARED_LIMITS = {"first_kernel": KERNEL, "kernel_size": KERNEL, "dilations": DILATIONS}


def shared_help(*names: str) -> dict[str, str]:
    """The help of the shared fields ``names``."""
    return {name: SHARED_HELP[name] for name in names}


def shared_limits(*names: str) -> dict:
    """The checks of the shared fields ``names``."""
    return {name: SHARED_LIMITS[name] for name in names}


class OutputHead(nn.Module):
    """ReLU, 1x1 mask-B convolution, ReLU, 1x1 mask-B convolution to the distribution's parameters."""

    def __init__(self, in_channels: int, hidden: int, dist: OutputDistribution, colours: int):
        super().__init__()
        out_groups = dist.param_groups()
        if hidden:
            self.hidden = raster_conv(in_channels, hidden, 1, "B", colours)
            self.out = raster_conv(hidden, dist.num_params, 1, "B", colours, out_groups=out_groups)
        else:
            self.hidden = None
            self.out = raster_conv(in_channels, dist.num_params, 1, "B", colours, out_groups=out_groups)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(x)
        if self.hidden is not None:
            x = torch.relu(self.hidden(x))
        return self.out(x)


def masked_1x1(in_groups: Tensor, out_groups: Tensor, colours: int) -> MaskedConv2d:
    """A 1x1 mask-B convolution between feature maps with the given colour groups."""
    return raster_conv(len(in_groups), len(out_groups), 1, "B", colours, in_groups=in_groups, out_groups=out_groups)


def gate_groups(channels: int, colours: int) -> Tensor:
    """Colour groups of the 2n pre-activations of a gate: both halves grouped like the n outputs."""
    g = channel_groups(channels, colours)
    return torch.cat([g, g])
