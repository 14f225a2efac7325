"""PixelCNN++: shifted convolutions, gated ResNet blocks, a U-Net of resolutions, a logistic mixture.

Salimans, Karpathy, Chen & Kingma 2017, "PixelCNN++: Improving the PixelCNN with Discretized
Logistic Mixture Likelihood and Other Modifications" (ICLR), and the reference code
github.com/openai/pixel-cnn (pixel_cnn_pp/model.py, nn.py):

* section 2.1-2.2: the output is a discretized logistic mixture over whole pixels (``pixelcnn.distributions.logistic_mixture``);
  the network conditions on whole earlier pixels only, the colours are coupled inside the
  distribution, so one network pass serves all channels of a pixel (``pixel_level_network``);
* section 2.3 and figure 2: two streams of shifted (unmasked) convolutions, u for the rows
  above and ul for the rows above plus the pixels to the left, no blind spot; an "up pass" of
  ``stages`` resolutions joined by stride-2 downsampling, then a "down pass" back up with
  transposed convolutions, each block of the down pass taking the matching up-pass output
  through a 1x1 shortcut (the U-Net-like connections, section 2.4);
* gated ResNet blocks with concat_elu (section 2.3): x + a * sigmoid(b), [a, b] =
  conv(dropout(concat_elu(conv(concat_elu(x)) + nin(concat_elu(shortcut))))), dropout as in
  section 2.6. Conditioning (a class, or a conditioning image) adds a learned bias to [a, b] in every block.

Differences from the reference: no weight normalisation with data-dependent initialisation
(plain PyTorch initialisation, the gate's last convolution scaled by 0.1 as the reference's
``init_scale=0.1``), and images whose sides are not multiples of 2^(stages-1) are allowed:
a downsampled map has ceil(n/2) rows and columns and upsampling crops back to the exact size.

:meth:`PixelCNNPP.network` is the reference's forward pass written out: the first layer, the up
pass appending every stage's activations to ``u_list`` and ``ul_list``, the down pass popping them
into its blocks' shortcuts, the output head. The cached stepper (``cached.py``) runs the
same passes at one pixel, over the stages with a position there, with this file's blocks in their
incremental form; :meth:`GatedResnet.combine`, the composition of a block, serves both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelcnn.config import ModelConfig
from pixelcnn.distributions import make_distribution
from pixelcnn.errors import ConfigError
from pixelcnn.models.layers import Condition, ConditionBias, concat_elu, gated_residual, shift_down, shift_right
from pixelcnn.models.base import AutoregressiveModel
from pixelcnn.models.order import Order
from pixelcnn.models.pixelcnn_pp.cached import CachedPixelCNNPP
from pixelcnn.models.pixelcnn_pp.shifted import (DownRightShiftedConv2d, DownRightShiftedConvTranspose2d, DownShiftedConv2d,
                              DownShiftedConvTranspose2d)
from pixelcnn.validation import Integer, Real


def max_stages(image_shape: tuple[int, int, int]) -> int:
    """The most resolution stages an image allows: each of the stages - 1 halvings needs >= 2 rows and columns."""
    return min(image_shape[1:]).bit_length()


PAPER_STAGES = 3


@dataclass(frozen=True)
class PixelCNNPPConfig(ModelConfig):
    """Defaults are the paper's CIFAR-10 model (section 3)."""

    filters: int = 160
    resnet_blocks: int = 5
    stages: int | None = None       # None: the paper's 3, or as many as a smaller image allows
    mixtures: int = 10
    dropout: float = 0.5

    help: ClassVar[dict[str, str]] = {
        **ModelConfig.help,
        "filters": "feature maps of both streams in every block",
        "resnet_blocks": "gated ResNet blocks per stage in the up pass (the down pass has one more in every stage but the first)",
        "stages": "resolutions: the image is halved stages - 1 times; needs sides of at least 2^(stages - 1) "
                  "(default: 3, or fewer for images smaller than 4x4)",
        "mixtures": "components of the discretized logistic mixture",
        "dropout": "dropout probability inside every gated ResNet block (training only)",
    }
    limits: ClassVar[dict] = {**ModelConfig.limits, "filters": Integer(1), "resnet_blocks": Integer(0), "stages": Integer(1),
                              "mixtures": Integer(1), "dropout": Real(0, 1, open_max=True)}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stages is None:
            object.__setattr__(self, "stages", min(PAPER_STAGES, max_stages(self.image_shape)))
        self._check_image_size()
        conditioned = self.num_classes is not None or self.cond_shape is not None
        if conditioned and self.resnet_blocks == 0 and self.stages == 1:     # the biases enter the blocks only
            raise ConfigError("a conditional pixelcnn_pp needs a gated ResNet block, where its conditioning enters: "
                              "expected resnet_blocks >= 1 or stages >= 2, got resnet_blocks=0 and stages=1")

    def _check_image_size(self) -> None:
        _, h, w = self.image_shape
        need = 2 ** (self.stages - 1)
        if h < need or w < need:
            raise ConfigError(
                f"pixelcnn_pp with stages={self.stages} halves the image {self.stages - 1} time(s) and needs images "
                f"of at least {need}x{need} pixels, got {h}x{w}; use stages <= {max_stages(self.image_shape)} "
                f"for this size, or larger images")


class GatedResnet(nn.Module):
    """x + a * sigmoid(b), [a, b] = conv(dropout(concat_elu(conv(concat_elu(x)) + nin(concat_elu(aux))))) + class bias."""

    def __init__(self, filters: int, conv: Callable[[int, int], nn.Module], aux_streams: int, dropout: float,
                 config: ModelConfig):
        super().__init__()
        self.conv_in = conv(2 * filters, filters)
        self.aux = nn.Conv2d(2 * aux_streams * filters, filters, 1) if aux_streams else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = conv(2 * filters, 2 * filters)
        self.cond_bias = ConditionBias(config, 2 * filters)
        with torch.no_grad():                    # small residual branches at initialisation
            self.conv_out.weight.mul_(0.1)

    def forward(self, x: Tensor, *aux: Tensor | None, cond: Condition | None) -> Tensor:
        """``aux``: the streams the shortcut reads (None where a pass has none), concatenated along the channels."""
        streams = [a for a in aux if a is not None]
        shortcut = None
        if streams:                              # from the other stream / the up pass
            shortcut = self.aux(concat_elu(streams[0] if len(streams) == 1 else torch.cat(streams, dim=1)))
        bias = self.cond_bias(cond, x.shape[-2:])
        return self.combine(x, concat_elu(x), self.conv_in, lambda h: self.conv_out(self.dropout(h)) + bias, shortcut)

    @staticmethod
    def combine(x: Tensor, x_elu: Tensor, conv_in, conv_out, shortcut: Tensor | None = None, dim: int = 1,
                elu=concat_elu) -> Tensor:
        """The block's composition, for both paths: x + a * sigmoid(b), [a, b] = conv_out(elu(conv_in(x_elu) + shortcut)).

        ``x_elu`` is concat_elu(x), the caller's (the cached path keeps it for the shortcuts that read it);
        ``conv_out`` includes dropout and the conditioning bias. On whole maps the convolutions are the
        modules; the cached path's read windows of caches that it writes the concat_elus into (``elu``
        writes straight into the cache at one position; the shortcut may be folded into ``conv_in``'s bias).
        """
        h = conv_in(x_elu)                                             # (B, F, H, W)
        if shortcut is not None:
            h = h + shortcut
        return gated_residual(x, conv_out(elu(h, dim)), dim)           # conv_out: (B, 2F, H, W)


def _u_conv(cin: int, cout: int) -> nn.Module:
    return DownShiftedConv2d(cin, cout, (2, 3))


def _ul_conv(cin: int, cout: int) -> nn.Module:
    return DownRightShiftedConv2d(cin, cout, (2, 2))


class StreamBlock(nn.Module):
    """One gated ResNet on each stream; the ul block sees the new u (and, in the down pass, the shortcuts)."""

    def __init__(self, filters: int, dropout: float, config: ModelConfig, down_pass: bool):
        super().__init__()
        self.u = GatedResnet(filters, _u_conv, 1 if down_pass else 0, dropout, config)
        self.ul = GatedResnet(filters, _ul_conv, 2 if down_pass else 1, dropout, config)

    def forward(self, u: Tensor, ul: Tensor, u_skip: Tensor | None = None, ul_skip: Tensor | None = None, *,
                cond: Condition | None) -> tuple[Tensor, Tensor]:
        """(u, ul) from (u, ul) and, in the down pass, the up pass's (u_skip, ul_skip) (the U-Net's shortcuts):
        u from itself and u_skip, then ul from itself, the new u and ul_skip (the reference's concat([u, ul_skip]))."""
        u = self.u(u, u_skip, cond=cond)
        return u, self.ul(ul, u, ul_skip, cond=cond)


class PixelCNNPP(AutoregressiveModel):
    name = "pixelcnn_pp"
    config_class = PixelCNNPPConfig
    pixel_level_network = True

    def __init__(self, config: PixelCNNPPConfig):
        super().__init__(config)
        f, c, s = config.filters, config.channels, config.stages
        # First layer (reference model.py): u sees the rows above; ul the rows above (1x3, shifted
        # down) plus the pixels to the left (2x1, shifted right). Input has a channel of ones.
        self.u_in = DownShiftedConv2d(c + 1, f, (2, 3))
        self.ul_in_above = DownShiftedConv2d(c + 1, f, (1, 3))
        self.ul_in_left = DownRightShiftedConv2d(c + 1, f, (2, 1))
        self.up_pass = nn.ModuleList(self._stage(config.resnet_blocks, False) for _ in range(s))
        self.down_u = nn.ModuleList(DownShiftedConv2d(f, f, (2, 3), stride=2) for _ in range(s - 1))
        self.down_ul = nn.ModuleList(DownRightShiftedConv2d(f, f, (2, 2), stride=2) for _ in range(s - 1))
        blocks = [config.resnet_blocks] + [config.resnet_blocks + 1] * (s - 1)   # coarsest stage first
        self.down_pass = nn.ModuleList(self._stage(n, True) for n in blocks)
        self.up_u = nn.ModuleList(DownShiftedConvTranspose2d(f, f, (2, 3), stride=2) for _ in range(s - 1))
        self.up_ul = nn.ModuleList(DownRightShiftedConvTranspose2d(f, f, (2, 2), stride=2) for _ in range(s - 1))
        self.out = nn.Conv2d(f, self.distribution.num_params, 1)

    def _stage(self, blocks: int, down_pass: bool) -> nn.ModuleList:
        cfg = self.config
        return nn.ModuleList(StreamBlock(cfg.filters, cfg.dropout, cfg, down_pass) for _ in range(blocks))

    def make_distribution(self):
        return make_distribution("logistic_mixture", self.config.channels, self.config.levels, mixtures=self.config.mixtures)

    def network(self, x: Tensor, cond: Condition | None, order: Order | None = None) -> Tensor:
        """(B, P, H, W) mixture parameters: the reference's forward pass (model.py), a U-Net of ``stages`` stages.

        The up pass runs the stages from the image's resolution to the coarsest, halving both streams
        with a stride-2 convolution between stages; ``u_list`` and ``ul_list`` keep the first layer's
        output, every downsampled map and every block's output. The down pass runs the stages back,
        upsampling both streams to the size each stage had, and each block takes the last kept pair
        (popped, so in mirror order) through its shortcut: ``stages * (resnet_blocks + 1)`` pairs in all.
        """
        self.own_order_only(order)
        u, ul = self.first_layer(x)                                     # (B, F, H, W) each
        u_list, ul_list, sizes = [u], [ul], []
        for s, blocks in enumerate(self.up_pass):                       # towards the coarsest maps
            if s > 0:                                                   # (B, F, ceil(h / 2), ceil(w / 2))
                u, ul = self.down_u[s - 1](u), self.down_ul[s - 1](ul)
                u_list.append(u)
                ul_list.append(ul)
            sizes.append(u.shape[-2:])
            for block in blocks:
                u, ul = block(u, ul, cond=cond)
                u_list.append(u)
                ul_list.append(ul)
        u, ul = u_list.pop(), ul_list.pop()                             # the coarsest stage's last output
        for k, blocks in enumerate(self.down_pass):                     # coarsest first, back to (H, W)
            if k > 0:                                                   # to the size of the up pass's stage
                size = sizes[-1 - k]
                u, ul = self.up_u[k - 1](u, size), self.up_ul[k - 1](ul, size)
            for block in blocks:
                u, ul = block(u, ul, u_list.pop(), ul_list.pop(), cond=cond)
        return self.out(F.elu(ul))                                      # (B, P, H, W)

    def cached_stepper(self, x: Tensor, cond: Condition | None, order: Order | None = None) -> CachedPixelCNNPP:
        """One pixel at a time, computing only what each new pixel makes final (``cached.py``)."""
        self.own_order_only(order)
        return CachedPixelCNNPP(self, x, cond)

    def first_layer(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(u, ul), each (B, F, H, W), from the image x (B, C, H, W)."""
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)     # (B, C+1, H, W): ones tell image from padding
        u = shift_down(self.u_in(x))                             # (B, F, H, W): rows < i
        return u, shift_down(self.ul_in_above(x)) + shift_right(self.ul_in_left(x))   # and row i, columns < j
