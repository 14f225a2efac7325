"""Multi-scale generation: a coarse grid by a raster model, then finer levels in groups of pixels.

Reed, van den Oord, Kalchbrenner, Colmenarejo, Wang, Belov & de Freitas 2017, "Parallel Multiscale
Autoregressive Density Estimation" (ICML), section 3 and figure 2. With S = 2 ** scales:

* the **base grid**, the pixels (h, w) with h and w multiples of S (the image subsampled, not
  averaged, so no pixel is counted twice), is modelled by a raster family (``base``) as an image of
  its own, ceil(H / S) x ceil(W / S);
* level k = 1 .. scales adds the pixels on the grid of stride s = S / 2 ** k that are not on the
  coarser one, in three **groups**: (even, odd), (odd, even), (odd, odd) positions of that grid.
  Every pixel of a group is conditioned on every pixel of the coarser levels and of the earlier
  groups, through a non-causal network over the level's grid (``GroupNetwork``), and on its own
  earlier colour channels (R, then G given R, then B given R and G).

Within a group the pixels are conditionally independent (``within_group="independent"``: one
network pass per group, then a pointwise head per pixel) or autoregressive in raster order over
the group's own pixels (``within_group="raster"``: a 3x3 mask-A convolution over them joins the
head). The likelihood is the exact product of these normalised conditionals; sampling, completion
and the codec visit the pixels in this order (:meth:`Multiscale.default_order`), and the cached
stepper runs the group network once per group: O(scales) network passes instead of O(H W).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelcnn.errors import ConfigError
from pixelcnn.models.layers import Condition, ConditionBias, channel_groups, raster_conv
from pixelcnn.models.base import AutoregressiveModel
from pixelcnn.models.order import Order
from pixelcnn.models.common import MaskedModelConfig, OutputHead
from pixelcnn.models.gated_pixelcnn import GatedPixelCNN
from pixelcnn.models.incremental import PointwiseHead
from pixelcnn.models.pixelcnn import PixelCNN
from pixelcnn.models.pixelrnn import DiagonalBiLSTM, RowLSTM
from pixelcnn.models.stepper import OrderedStepper
from pixelcnn.validation import Integer, OneOf

# The raster families that can model the base grid: those whose output is a categorical or Bernoulli
# over each sub-pixel, the distribution the groups' head outputs too.
BASES: dict[str, type[AutoregressiveModel]] = {cls.name: cls for cls in (GatedPixelCNN, PixelCNN, RowLSTM, DiagonalBiLSTM)}
WITHIN_GROUP = {"independent": 1, "raster": 3}        # kernel of the mask-A convolution over a group's own pixels
# The groups of a level, as (row, column) parities on its grid, in the order they are generated.
OFFSETS = ((0, 1), (1, 0), (1, 1))


@dataclass(frozen=True)
class MultiscaleConfig(MaskedModelConfig):
    layers: int = 4                 # three passes of this network per level: a raster family's depth costs 3x
    base: str = "gated_pixelcnn"
    scales: int = 2
    within_group: str = "independent"

    help: ClassVar[dict[str, str]] = {
        **MaskedModelConfig.help,
        "base": f"family of the raster model of the coarsest grid: one of {', '.join(BASES)}",
        "scales": "levels of doubling above the base grid: the base grid takes every 2**scales-th row and column",
        "within_group": "'independent' (the pixels of a group given the earlier groups: one network pass per group) "
                        "or 'raster' (also each one given the group's pixels before it)",
        "layers": "residual blocks of the groups' network; also the base model's layers",
        "hidden": "feature maps of the groups' network and of the base model",
    }
    limits: ClassVar[dict] = {**MaskedModelConfig.limits, "base": OneOf(tuple(BASES)), "scales": Integer(1),
                              "within_group": OneOf(tuple(WITHIN_GROUP))}

    def __post_init__(self) -> None:
        super().__post_init__()
        self.base_config()                                         # the base family refuses what it cannot build

    @property
    def stride(self) -> int:
        """S: the base grid takes every S-th row and column."""
        return 2 ** self.scales

    def base_config(self) -> MaskedModelConfig:
        """The configuration of the base grid's raster model."""
        c, h, w = self.image_shape
        shape = (c, math.ceil(h / self.stride), math.ceil(w / self.stride))
        return BASES[self.base].config_class(image_shape=shape, levels=self.levels, num_classes=self.num_classes,
                                             cond_shape=self.cond_shape, cond_features=self.cond_features,
                                             hidden=self.hidden, layers=self.layers,
                                             output_hidden=self.output_hidden, output=self.output)


def group_positions(height: int, width: int, stride: int, offset: tuple[int, int]) -> tuple[range, range]:
    """The rows and columns of the image in the group at ``offset`` of the level of grid ``stride``."""
    return range(offset[0] * stride, height, 2 * stride), range(offset[1] * stride, width, 2 * stride)


class GroupNetwork(nn.Module):
    """The parameters of one group's pixels from the level's grid (B, C, h, w) in [-1, 1].

    Input: the grid with every pixel not yet generated set to 0, beside the 0/1 map of those that
    are (B, C + 1, h, w); a 3x3 convolution, a learned bias per group and class, residual blocks of
    dilated 3x3 convolutions (dilations 1, 2, 4, 1, ...) reaching across the grid. The head adds,
    at each of the group's pixels, a mask-A convolution over the group's own pixels (its earlier
    colour channels; with ``within_group="raster"`` also the group's pixels before it), then the
    masked families' output layers.
    """

    def __init__(self, config: MultiscaleConfig, dist):
        super().__init__()
        c, n = config.channels, config.hidden
        self.stem = nn.Conv2d(c + 1, n, 3, padding=1)
        self.group_bias = nn.Parameter(torch.zeros(3 * config.scales, n))
        self.class_bias = ConditionBias(config, n)
        self.blocks = nn.ModuleList(nn.Conv2d(n, n, 3, padding=2 ** (i % 3), dilation=2 ** (i % 3))
                                    for i in range(config.layers))
        self.within = raster_conv(c, n, WITHIN_GROUP[config.within_group], "A", c, in_groups=torch.arange(c),
                                  out_groups=channel_groups(n, c))
        self.head = OutputHead(n, config.output_hidden, dist, c)

    def features(self, grid: Tensor, group: int, cond: Condition | None) -> Tensor:
        """(B, n, h, w) features of the level's grid for ``group`` (3 (level - 1) + its offset's index)."""
        seen = visible(grid.shape[-2:], group % 3, grid)                   # (1, 1, h, w)
        b = grid.shape[0]
        h = self.stem(torch.cat([grid * seen, seen.expand(b, 1, *grid.shape[-2:])], dim=1))
        h = h + self.group_bias[group][:, None, None] + self.class_bias(cond)
        for conv in self.blocks:
            h = h + within_reach(conv, torch.relu(h))
        return h

    def forward(self, grid: Tensor, group: int, cond: Condition | None) -> Tensor:
        """(B, P, h', w') parameters of the group's pixels, the group's own sub-grid of the level's grid."""
        r, c = OFFSETS[group % 3]
        return self.params(self.features(grid, group, cond)[:, :, r::2, c::2], grid[:, :, r::2, c::2])

    def params(self, features: Tensor, own: Tensor) -> Tensor:
        """(B, P, h', w') from the group's features (B, n, h', w') and its own pixels' values (B, C, h', w')."""
        return self.head(features + self.within(own))


def within_reach(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)`` for a 3x3 'same' convolution, without the taps that read only zero padding: on a grid
    of at most ``dilation`` rows (columns) the rows (columns) of taps off the centre never reach inside."""
    d = conv.dilation[0]
    rows, cols = (slice(1, 2) if d >= size else slice(0, 3) for size in x.shape[-2:])
    weight = conv.weight[:, :, rows, cols]
    return F.conv2d(x, weight, conv.bias, padding=(d * (weight.shape[2] // 2), d * (weight.shape[3] // 2)), dilation=d)


def at_stride(cond: Condition | None, stride: int) -> Condition | None:
    """The conditioning of the grid of every ``stride``-th row and column: the labels, and the conditioning
    image's features at the grid's pixels. A completion model's term (``output``) is added by the caller."""
    if cond is None:
        return None
    features = None if cond.features is None else cond.features[:, :, ::stride, ::stride]
    return Condition(labels=cond.labels, features=features)


def visible(size: tuple[int, int], index: int, like: Tensor) -> Tensor:
    """(1, 1, h, w) 1.0 where a pixel of a level's grid is generated before group ``index`` of the level:
    the coarser grid (even, even) and the earlier groups."""
    rows = torch.arange(size[0], device=like.device)[:, None] & 1      # parities (no % under exact arithmetic)
    cols = torch.arange(size[1], device=like.device)[None, :] & 1
    seen = (rows == 0) & (cols == 0)
    for r, c in OFFSETS[:index]:
        seen = seen | ((rows == r) & (cols == c))
    return seen.to(like.dtype)[None, None]


class Multiscale(AutoregressiveModel):
    """Coarse-to-fine generation (Reed et al. 2017): a raster base grid, then three groups per level."""

    name = "multiscale"
    config_class = MultiscaleConfig
    generation_order = "coarse_to_fine"

    @property
    def draws_groups(self) -> bool:
        """A group's pixels are conditionally independent given the earlier groups: its stepper offers them whole."""
        return self.config.within_group == "independent"
    # A pass of the group network is the unit: its blocks are weights that ``within_reach`` reads, not
    # modules it calls, and a block alone would keep its input, as much as it keeps without checkpointing.
    checkpoint_whole = ("groups",)

    def __init__(self, config: MultiscaleConfig):
        super().__init__(config)
        self.base = BASES[config.base](config.base_config())
        self.base.cond_net = None               # it reads this model's features of the conditioning image
        self.groups = GroupNetwork(config, self.distribution)

    def network(self, x: Tensor, cond: Condition | None, order: Order | None = None) -> Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, P, H, W), coarse to fine (``order``: None or that one)."""
        self.own_order_only(order)
        stride = self.config.stride
        params = x.new_zeros(x.shape[0], self.distribution.num_params, *x.shape[2:])
        params[:, :, ::stride, ::stride] = self.base.network(x[:, :, ::stride, ::stride], at_stride(cond, stride))
        for level in range(1, self.config.scales + 1):
            s = stride >> level
            grid, out = x[:, :, ::s, ::s], params[:, :, ::s, ::s]          # the level's grid; a view of params
            for index, (r, c) in enumerate(OFFSETS):
                if grid.shape[2] > r and grid.shape[3] > c:                # a group with no pixel needs no pass
                    out[:, :, r::2, c::2] = self.groups(grid, 3 * (level - 1) + index, at_stride(cond, s))
        return params

    def default_order(self) -> Order:
        """Coarse to fine: the base grid in raster order, then each level's groups in turn, each group's pixels in
        raster order."""
        _, height, width = self.image_shape
        stride = self.config.stride
        pixels = [(h, w) for h in range(0, height, stride) for w in range(0, width, stride)]
        pixels += [pixel for group in self.groups_of_order() for pixel in group]
        return Order(torch.tensor([h * width + w for h, w in pixels], dtype=torch.long), height, width)

    def groups_of_order(self) -> list[list[tuple[int, int]]]:
        """The pixels (h, w) of each group, coarse to fine, each in raster order (the base grid not included)."""
        _, height, width = self.image_shape
        out = []
        for level in range(1, self.config.scales + 1):
            for offset in OFFSETS:
                rows, cols = group_positions(height, width, self.config.stride >> level, offset)
                if rows and cols:
                    out.append([(h, w) for h in rows for w in cols])
        return out

    def visiting_order(self, order: object, known: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Order | None:
        if order is None or order == "coarse_to_fine":
            return None
        raise ConfigError(f"model {self.name!r} generates coarse to fine: expected order None or 'coarse_to_fine', "
                          f"got {order if isinstance(order, str) else type(order).__name__!r}")

    def cached_stepper(self, x: Tensor, cond: Condition | None, order: Order | None = None) -> "MultiscaleStepper":
        self.own_order_only(order)
        return MultiscaleStepper(self, x, cond)


class MultiscaleStepper(OrderedStepper):
    """The pixels in :meth:`Multiscale.default_order`: the base grid through the base family's cached
    stepper; a group's features computed once, when its first pixel is asked for or set (every
    earlier group is complete then), and each sub-pixel's parameters from them and the group's
    pixels set so far. With ``within_group="independent"`` the first channel of every pixel of the
    group depends on nothing set inside the group, so its parameters come from the same one pass, and
    the stepper offers the group's channels whole (``groups``, :meth:`group_log_probs`): each row of
    those has the bits :meth:`log_probs` gives its pixel in the codec's exact arithmetic (in float, the
    same numbers up to the kernels' rounding)."""

    def __init__(self, model: Multiscale, x: Tensor, cond: Condition | None):
        super().__init__(x, model.default_order())
        self.model, self.distribution = model, model.distribution
        self.cond, self.stride = cond, model.config.stride
        self.base = model.base.cached_stepper(x[:, :, :: self.stride, :: self.stride], at_stride(cond, self.stride))
        within = model.groups.within
        self.kernel = within.kernel_size[0]
        self.within_weight = within.masked_weight().detach().flatten(1).t().contiguous()   # (C k k, n)
        self.within_bias = within.bias.detach()
        self.head = PointwiseHead(model.groups.head)
        self.table = model.preprocess(torch.arange(model.levels, device=x.device))         # value -> input
        self.output_map: Tensor | None = None                              # (B, P, H, W) completion term
        self.output: Tensor | None = None                                  # its part on the current group, (h', w', B, P)
        self.group: int | None = None
        self.feature_map: Tensor | None = None                             # (B, n, h', w') of the current group
        self.features: Tensor | None = None                                # the same, (h', w', B, n)
        self.first: Tensor | None = None                                   # (h', w', B, P): first channel's
        self.own: Tensor | None = None                                     # (B, C, h' + 2p, w' + 2p) in [-1, 1]
        self.slices: tuple[slice, slice] | None = None                     # the current group's rows and columns
        if self.kernel == 1:                 # independent: a group's channel is drawn at once (Stepper.groups)
            self.groups = ([[pixel] for pixel in self.order if self.on_base(*pixel)] +
                           [list(g) for g in model.groups_of_order()])

    def add_output(self, output: Tensor) -> None:
        self.output_map = output
        self.base.add_output(output[:, :, :: self.stride, :: self.stride])

    def on_base(self, h: int, w: int) -> bool:
        return h % self.stride == 0 and w % self.stride == 0

    def level_of(self, h: int, w: int) -> tuple[int, int]:
        """(level, grid stride) of a pixel off the base grid."""
        level = self.model.config.scales
        while h % (self.stride >> (level - 1)) == 0 and w % (self.stride >> (level - 1)) == 0:
            level -= 1
        return level, self.stride >> level

    def log_probs(self, c: int, h: int, w: int) -> Tensor:
        self.check_order(c, h, w)
        if self.on_base(h, w):
            return self.base.log_probs(c, h // self.stride, w // self.stride)
        i, j = self.enter(h, w)
        params = self.first[i, j] if c == 0 and self.first is not None else self.pixel_params(i, j)
        return self.distribution.conditional(params, self.x[:, :, h, w], c)

    def pixel_params(self, i: int, j: int) -> Tensor:
        """(B, P) of the pixel at (i, j) of the current group's grid, from the values set so far."""
        window = self.own[:, :, i : i + self.kernel, j : j + self.kernel].reshape(self.batch, -1)   # (B, C k k)
        return self.head_rows(self.features[i, j], window, None if self.output is None else self.output[i, j])

    def head_rows(self, features: Tensor, windows: Tensor, output: Tensor | None) -> Tensor:
        """(N, P) parameters of N pixels (rows) from their features (N, n), the group's values in the
        within-group kernel's window around each (N, C k k) and their completion terms (N, P) or None.
        Every operation works row by row, and the codec's exact arithmetic rounds each row of a product
        as a block of its own: a row has the same bits whether computed alone or with others."""
        params = self.head(features + torch.addmm(self.within_bias, windows, self.within_weight))
        return params if output is None else params + output

    def group_log_probs(self, c: int, group: list[tuple[int, int]]) -> Tensor:
        """(n, B, L) log-probabilities of channel c of the pixels of ``group`` (one of ``groups``), once channels
        0 .. c - 1 of the group are set; row k is what ``log_probs(c, *group[k])`` would return, bit for bit."""
        if self.on_base(*group[0]):
            return self.log_probs(c, *group[0])[None]
        self.check_order(c, *group[0])
        self.enter(*group[0])
        params = self.first if c == 0 else self.group_params()           # (h', w', B, P)
        x = self.x[:, :, self.slices[0], self.slices[1]].permute(2, 3, 0, 1).reshape(-1, self.channels)
        log_probs = self.distribution.conditional(params.reshape(x.shape[0], -1), x, c)
        return log_probs.view(len(group), self.batch, -1)

    def group_params(self) -> Tensor:
        """(h', w', B, P) parameters of every pixel of an independent group from the values set so far (its
        later channels): each pixel's row as :meth:`pixel_params` computes it, so that a group's channel has
        the same bits, in the codec's exact arithmetic, as its pixels asked for one at a time."""
        rows, cols = self.features.shape[:2]
        windows = self.own.permute(2, 3, 0, 1).reshape(-1, self.channels)     # (h' w' B, C); kernel 1: no padding
        output = None if self.output is None else self.output.reshape(windows.shape[0], -1)
        params = self.head_rows(self.features.reshape(windows.shape[0], -1), windows, output)
        return params.view(rows, cols, self.batch, -1)

    def first_params(self) -> Tensor:
        """(h', w', B, P) parameters of the first channel of every pixel of an independent group, before any
        of its values is set: one pass of the group network's whole-map head."""
        params = self.model.groups.params(self.feature_map, self.own).permute(2, 3, 0, 1)
        return params if self.output is None else params + self.output

    def set_group(self, c: int, group: list[tuple[int, int]], values: Tensor) -> None:
        """Record the (n, B) values of channel c of the pixels of ``group``."""
        if self.on_base(*group[0]):
            return self.set(c, *group[0], values[0])
        self.check_order(c, *group[0])
        rows, cols = self.slices
        grid = values.reshape(*self.features.shape[:2], self.batch).permute(2, 0, 1)   # (B, h', w')
        self.x[:, c, rows, cols] = grid
        self.own[:, c] = self.table[grid]
        self.position += len(group) if c == self.channels - 1 else 0

    def set(self, c: int, h: int, w: int, values: Tensor) -> None:
        self.check_order(c, h, w)
        self.x[:, c, h, w] = values
        if self.on_base(h, w):
            self.base.set(c, h // self.stride, w // self.stride, values)
        else:
            i, j = self.enter(h, w)
            p = self.kernel // 2
            self.own[:, c, i + p, j + p] = self.table.index_select(0, values)
        self.position += c == self.channels - 1

    def enter(self, h: int, w: int) -> tuple[int, int]:
        """The position of pixel (h, w) on its group's own grid, once the group's features are computed."""
        level, s = self.level_of(h, w)
        i, j = h // s, w // s                                              # on the level's grid
        group = 3 * (level - 1) + OFFSETS.index((i & 1, j & 1))
        if group != self.group:
            self.start_group(group, s)
        return i // 2, j // 2

    def start_group(self, group: int, s: int) -> None:
        groups, (r, c), p = self.model.groups, OFFSETS[group % 3], self.kernel // 2
        grid = self.table[self.x[:, :, ::s, ::s]]                          # the level's grid in [-1, 1]
        self.feature_map = groups.features(grid, group, at_stride(self.cond, s))[:, :, r::2, c::2]   # (B, n, h', w')
        self.features = self.feature_map.permute(2, 3, 0, 1).contiguous()
        self.slices = (slice(r * s, None, 2 * s), slice(c * s, None, 2 * s))
        self.own = F.pad(grid[:, :, r::2, c::2], (p, p, p, p))
        output = None if self.output_map is None else self.output_map[:, :, ::s, ::s][:, :, r::2, c::2]
        self.output = None if output is None else output.permute(2, 3, 0, 1).contiguous()   # (h', w', B, P)
        # independent: no first channel reads the group's values, so one pass gives every pixel's
        self.first = self.first_params().contiguous() if self.kernel == 1 else None
        self.group = group
