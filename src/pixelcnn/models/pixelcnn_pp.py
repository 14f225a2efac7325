"""PixelCNN++: shifted convolutions, gated ResNet blocks, a U-Net of resolutions, a logistic mixture.

Salimans, Karpathy, Chen & Kingma 2017, "PixelCNN++: Improving the PixelCNN with Discretized
Logistic Mixture Likelihood and Other Modifications" (ICLR), and the reference code
github.com/openai/pixel-cnn (pixel_cnn_pp/model.py, nn.py):

* section 2.1-2.2: the output is a discretized logistic mixture over whole pixels (``dlm.py``);
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

The composition is written once: :meth:`PixelCNNPP.u_net` (the U-Net: its stages, resampling,
shortcuts and output), :meth:`StreamBlock.combine` (the two streams' order) and
:meth:`GatedResnet.combine` (a block), over layers that :class:`WholeMaps` evaluates on whole maps
and the cached stepper (``pixelcnn_pp_cached.py``) at one pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelcnn.config import ModelConfig
from pixelcnn.distributions import make_distribution
from pixelcnn.errors import ConfigError
from pixelcnn.layers import Condition, ConditionBias, concat_elu, gated_residual, shift_down, shift_right
from pixelcnn.models.base import AutoregressiveModel
from pixelcnn.models.common import check_int
from pixelcnn.models.pixelcnn_pp_cached import CachedPixelCNNPP
from pixelcnn.shifted import (DownRightShiftedConv2d, DownRightShiftedConvTranspose2d, DownShiftedConv2d,
                              DownShiftedConvTranspose2d)


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
    branches: ClassVar[dict[str, tuple]] = {**ModelConfig.branches, "resnet_blocks": (0, 1, 2), "stages": (1, 2, 3),
                                            "mixtures": (1, 3), "dropout": (0.0, 0.5)}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stages is None:
            object.__setattr__(self, "stages", min(PAPER_STAGES, max_stages(self.image_shape)))
        check_int(self, "filters", minimum=1)
        check_int(self, "resnet_blocks", minimum=0)
        check_int(self, "stages", minimum=1)
        check_int(self, "mixtures", minimum=1)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be a probability in [0, 1), got {self.dropout!r}")
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
        return self.combine(partial(self.u, cond=cond), partial(self.ul, cond=cond), u, ul, u_skip, ul_skip)

    @staticmethod
    def combine(u_block, ul_block, u, ul, u_skip=None, ul_skip=None) -> tuple:
        """The two streams' order, for both paths: u from itself and its shortcut (down pass), then ul from
        itself, the new u and its shortcut (down pass): the shortcuts of the U-Net enter here."""
        u = u_block(u, u_skip)
        return u, ul_block(ul, u, ul_skip)


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
        blocks = [config.resnet_blocks] + [config.resnet_blocks + 1] * (s - 1)
        self.down_pass = nn.ModuleList(self._stage(n, True) for n in blocks)
        self.up_u = nn.ModuleList(DownShiftedConvTranspose2d(f, f, (2, 3), stride=2) for _ in range(s - 1))
        self.up_ul = nn.ModuleList(DownRightShiftedConvTranspose2d(f, f, (2, 2), stride=2) for _ in range(s - 1))
        self.out = nn.Conv2d(f, self.distribution.num_params, 1)

    def _stage(self, blocks: int, down_pass: bool) -> nn.ModuleList:
        cfg = self.config
        return nn.ModuleList(StreamBlock(cfg.filters, cfg.dropout, cfg, down_pass) for _ in range(blocks))

    def make_distribution(self):
        return make_distribution("logistic_mixture", self.config.channels, self.config.levels, mixtures=self.config.mixtures)

    def network(self, x: Tensor, cond: Condition | None) -> Tensor:
        return self.u_net(WholeMaps(self, x, cond), range(self.config.stages))

    def cached_stepper(self, x: Tensor, cond: Condition | None) -> CachedPixelCNNPP:
        """One pixel at a time, computing only what each new pixel makes final (``pixelcnn_pp_cached.py``)."""
        return CachedPixelCNNPP(self, x, cond)

    def first_layer(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(u, ul), each (B, F, H, W), from the image x (B, C, H, W)."""
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)     # (B, C+1, H, W): ones tell image from padding
        u = shift_down(self.u_in(x))                             # (B, F, H, W): rows < i
        return u, shift_down(self.ul_in_above(x)) + shift_right(self.ul_in_left(x))   # and row i, columns < j

    def u_net(self, net, stages: range) -> Tensor:
        """The network's composition, for both paths: (B, P, ...) parameters from what ``net`` evaluates.

        ``net`` evaluates the layers: :class:`WholeMaps` on whole maps, or the cached stepper at one
        pixel, for the ``stages`` that have a position there (a prefix; all of them on whole maps).
        It gives ``first()``, the blocks ``up[s]`` and ``down[s]`` of stage s (``StreamBlock``'s
        call), ``downsample(s, u, ul)`` from stage s - 1, ``upsample(s, u, ul)`` from stage s + 1,
        ``keep(s, u, ul, down)``, told each stage's last output (what a resampling layer of another
        stage reads), and ``out``. The up pass keeps every block's input and its last output for the
        down pass's shortcuts, which consume them in reverse, one per block.
        """
        u, ul = net.first()
        skips = []
        for s in stages:
            if s > 0:                                            # (B, F, ceil(H/2), ceil(W/2))
                u, ul = net.downsample(s, u, ul)
            for block in net.up[s]:
                skips.append((u, ul))
                u, ul = block(u, ul)
            net.keep(s, u, ul)
            skips.append((u, ul))
        u = ul = None                                            # a pixel without the coarsest stage: see upsample
        for s in reversed(stages):
            if s == self.config.stages - 1:
                u, ul = skips.pop()                              # the up pass's last output starts the down pass
            else:                                                # the coarser stage's, back to this stage's size
                u, ul = net.upsample(s, u, ul)
            for block in net.down[s]:
                u, ul = block(u, ul, *skips.pop())
            net.keep(s, u, ul, down=True)
        return net.out(F.elu(ul))                                # (B, P, H, W)


class WholeMaps:
    """The layers that :meth:`PixelCNNPP.u_net` composes, evaluated on whole maps (the module's forward)."""

    def __init__(self, model: PixelCNNPP, x: Tensor, cond: Condition | None):
        self.model, self.x = model, x
        self.up = [[partial(block, cond=cond) for block in stage] for stage in model.up_pass]
        self.down = [[partial(block, cond=cond) for block in stage] for stage in reversed(model.down_pass)]
        self.out = model.out
        self.sizes: dict[int, tuple[int, int]] = {}

    def first(self) -> tuple[Tensor, Tensor]:
        return self.model.first_layer(self.x)

    def downsample(self, s: int, u: Tensor, ul: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.down_u[s - 1](u), self.model.down_ul[s - 1](ul)

    def keep(self, s: int, u: Tensor, ul: Tensor, down: bool = False) -> None:
        """The up pass's stage sizes: upsampling into a stage crops to its exact size."""
        if not down:
            self.sizes[s] = tuple(u.shape[-2:])

    def upsample(self, s: int, u: Tensor, ul: Tensor) -> tuple[Tensor, Tensor]:
        layer = self.model.config.stages - 2 - s                 # model.up_u runs coarsest first
        return self.model.up_u[layer](u, self.sizes[s]), self.model.up_ul[layer](ul, self.sizes[s])
