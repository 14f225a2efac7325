"""PixelRNN: the Row LSTM and the Diagonal BiLSTM.

van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural Networks" (ICML):

* section 3.1, the **Row LSTM**: an input-to-state 1 x k convolution along the row, masked (mask
  B), computed for the whole image at once; a state-to-state 1 x k convolution of the previous
  row's hidden state, applied row by row; the LSTM update of equation (3) with the cell state of
  the pixel above. Its receptive field is a triangle above the pixel (see below).
* section 3.2 and figure 3, the **Diagonal BiLSTM**: the input is skewed (row i shifted right by
  i) so that the diagonals become columns; a 1x1 mask-B input-to-state convolution; a 2x1
  state-to-state convolution applied column by column, so a pixel's state comes from the pixel
  above and the pixel to its left; a second direction runs right to left (on the mirrored
  image) and its output is shifted down one row so that no pixel sees the future; the two are
  unskewed and summed. Its receptive field is the whole past (with the addition below).
* section 3.3 and figure 5, **residual connections**: the stream between LSTM layers has 2h
  feature maps, each LSTM has h units, and a 1x1 convolution takes its output back to 2h
  before it is added to the layer's input.
* section 3.4, **masks**: a 7x7 mask-A first layer; every convolution that reads the current
  pixel afterwards is mask B, with feature maps split into C colour groups
  (``layers.channel_groups``); the four gates of an LSTM are grouped like its h units. The
  state-to-state convolutions read only earlier pixels (the row above, or the pixel above and
  the one to the left), so they need no mask: every group of an earlier pixel is in the past.
* 1x1 mask-B output layers (``common.OutputHead``) and the shared output distributions; the
  conditioning (a class label, or a conditioning image's per-position features) enters as a
  learned bias (``layers.ConditionBias``) on the first layer and on every LSTM's gates.

One addition to the paper: the last pixel of row i - 1 is in no feature map of row i - 1 (the
first layer is mask A, and every later map at a pixel sees only what came before it), so the
right-to-left pass, which reads row i - 1 only, never sees it, and the left-to-right pass of row
i reaches it only through first-layer maps within first_kernel // 2 columns of the right edge.
As the paper describes it, pixel (i, j) is blind to pixel (i - 1, W - 1) for
j < W - 1 - first_kernel // 2, at every depth. Because the right-to-left output is used one row
down, its input may see the whole current pixel: the first layer's right-to-left gates also
read the image through an unmasked 1x1 convolution, which closes the blind spot.

Configuration: ``hidden`` is the width of the stream (2h in the paper), each LSTM has
``hidden // 2`` units. The defaults are the paper's MNIST model, 7 layers with h = 16
(``hidden=32``), with a 64-wide output layer: small enough to train and sample on a CPU.

Row LSTM receptive field. With f = first_kernel // 2, s = row_kernel // 2 and L layers, the
parameters of pixel (i, j) depend on pixel (i - D, j + dj) (besides the earlier colours of
pixel (i, j) itself) exactly when it lies in the image and

    D = 0:   -(L*s + f) <= dj <= -1
    D >= 1:  -(s*D + L*s + f) <= dj <= max(s*(D - 1) + f, s*D - 1)

a triangle whose right edge climbs s columns per row (each LSTM reaches s columns further per
row up, the first layer f columns, the input-to-state s columns to the left on every layer).

Sampling: ``cached_stepper`` computes one pixel per step, keeping every layer's LSTM states
(``cached.py``). Both paths run one statement of the network,
:func:`~pixelcnn.models.common.stack` over the first layer, the LSTM layers and the output layers,
and :class:`LSTMGates` for every LSTM update; each layer builds its incremental form (``cached``),
which reads its weights through the layer's own methods.

Layout: the recurrences run on batch-last maps ((rows, cols, ..., B) inside the Diagonal
BiLSTM, (n, W, B) rows in the Row LSTM), so that a step's matrix products see whole feature
maps and a skewed column is one contiguous block (``recurrent.skew_columns``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelcnn.models.layers import Condition, ConditionBias, channel_groups, horizontal_conv, raster_conv
from pixelcnn.models.base import AutoregressiveModel
from pixelcnn.models.order import Order
from pixelcnn.models.common import KERNEL, MaskedModelConfig, OutputHead, masked_1x1, shared_help, shared_limits, stack
from pixelcnn.models.pixelrnn.cached import DiagonalLSTMCache, PixelRNNStepper, RowLSTMCache
from pixelcnn.models.pixelrnn.recurrent import LSTMGates, skew_columns, unskew_columns
from pixelcnn.validation import Integer

FORGET_BIAS = 1.0   # initial forget-gate bias: cells start by keeping their state (a common LSTM choice)


# ----- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class PixelRNNConfig(MaskedModelConfig):
    """Fields of both PixelRNN families; defaults are the paper's MNIST model (7 layers, h = 16)."""

    hidden: int = 32
    layers: int = 7
    output_hidden: int = 64
    first_kernel: int = 7

    help: ClassVar[dict[str, str]] = {
        **MaskedModelConfig.help,
        "hidden": "feature maps in the stream between LSTM layers (2h); each LSTM has hidden // 2 units",
        **shared_help("first_kernel"),
        "layers": "number of LSTM layers after the first (mask A) convolution",
    }
    limits: ClassVar[dict] = {**MaskedModelConfig.limits, **shared_limits("first_kernel"), "layers": Integer(1)}

    def __post_init__(self) -> None:
        super().__post_init__()
        Integer(2 * self.channels)(self.hidden, "hidden (each LSTM has hidden // 2 units, one per colour at least)")

    @property
    def units(self) -> int:
        return self.hidden // 2


@dataclass(frozen=True)
class RowLSTMConfig(PixelRNNConfig):
    row_kernel: int = 3

    help: ClassVar[dict[str, str]] = {
        **PixelRNNConfig.help,
        "row_kernel": "width k of the 1 x k input-to-state and state-to-state convolutions along the row",
    }
    limits: ClassVar[dict] = {**PixelRNNConfig.limits, "row_kernel": KERNEL}


@dataclass(frozen=True)
class DiagonalBiLSTMConfig(PixelRNNConfig):
    pass


def lstm_groups(units: int, colours: int, directions: int = 1) -> Tensor:
    """Colour groups of the gate pre-activations [i, f, o, g] (per direction): each grouped like the units."""
    return channel_groups(units, colours).repeat(4 * directions)


def init_forget_bias(conv: nn.Module, units: int, directions: int = 1) -> None:
    with torch.no_grad():
        for d in range(directions):
            conv.bias[(4 * d + 1) * units : (4 * d + 2) * units] += FORGET_BIAS


# ----- layers -----------------------------------------------------------------------------------


class RowStateConv(nn.Module):
    """Row LSTM state-to-state: a 1 x k convolution of the previous row's states, as one matrix product.

    On the scan's batch-last layout, (n, W, B) states -> (4n, W, B) gate terms, with ``pre``
    (4n, W, B) added in the same product. The weight has nn.Conv1d's (4n, n, k) shape.
    """

    def __init__(self, units: int, kernel: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(4 * units, units, kernel))
        nn.init.uniform_(self.weight, -(units * kernel) ** -0.5, (units * kernel) ** -0.5)

    def forward(self, h: Tensor, pre: Tensor) -> Tensor:
        n, width, batch = h.shape
        k = self.weight.shape[2]
        padded = F.pad(h, (0, 0, k // 2, k // 2))                      # (n, W + k - 1, B), zeros off the row
        taps = torch.cat([padded[:, t : t + width] for t in range(k)])  # (k * n, W, B)
        w = self.weight.permute(0, 2, 1).reshape(self.weight.shape[0], k * n)   # (4n, k * n), tap-major
        out = torch.addmm(pre.reshape(-1, width * batch), w, taps.view(k * n, width * batch))
        return out.view(-1, width, batch)                              # (4n, W, B)


class DiagonalStateConv(nn.Module):
    """Diagonal BiLSTM state-to-state for both directions: a 2x1 convolution down a skewed column.

    On the scan's layout, (H, 2, n, B) states of the previous column -> (H, 2, 4n, B) gate
    terms: tap 1 reads the same row (the pixel to the left, or to the right when mirrored), tap
    0 the row above (nothing for the top row). The weight has the (8n, n, 2) shape of
    nn.Conv1d(2n, 8n, 2, groups=2).
    """

    def __init__(self, units: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(8 * units, units, 2))
        nn.init.uniform_(self.weight, -(2 * units) ** -0.5, (2 * units) ** -0.5)

    def tap_views(self) -> tuple[Tensor, Tensor]:
        """(row above, same row) kernels, each (2, 4n, n) over (direction, gate, unit): views of the weight."""
        w = self.weight.view(2, -1, *self.weight.shape[1:])          # (2, 4n, n, 2)
        return w[..., 0], w[..., 1]

    def taps(self) -> tuple[Tensor, Tensor]:
        """:meth:`tap_views`, contiguous."""
        above, same = self.tap_views()
        return above.contiguous(), same.contiguous()

    def forward(self, h: Tensor, taps: tuple[Tensor, Tensor]) -> Tensor:
        above, same = taps
        out = torch.matmul(same, h)                                    # (H, 2, 4n, B)
        if h.shape[0] > 1:
            out[1:] += torch.matmul(above, h[:-1])
        return out


class RowLSTMLayer(nn.Module):
    """u + 1x1(Row LSTM(u)): gates from a masked 1 x k row convolution and the previous row's state."""

    def __init__(self, config: RowLSTMConfig):
        super().__init__()
        hidden, n, colours, k = config.hidden, config.units, config.channels, config.row_kernel
        self.units = n
        self.input_to_state = horizontal_conv(hidden, 4 * n, k, "B", colours, out_groups=lstm_groups(n, colours))
        self.state_to_state = RowStateConv(n, k)
        self.output = masked_1x1(channel_groups(n, colours), channel_groups(hidden, colours), colours)
        self.cond_bias = ConditionBias(config, 4 * n)
        init_forget_bias(self.input_to_state, n)

    def forward(self, u: Tensor, cond: Condition | None, pixels: Tensor | None = None) -> Tensor:
        """``pixels``: the image, which only a Diagonal BiLSTM's first layer reads (every layer's interface)."""
        pre = self.input_to_state(u) + self.cond_bias(cond)            # (B, 4n, H, W)
        pre = pre.permute(2, 1, 3, 0).contiguous()                     # (H, 4n, W, B): a row per step, batch last
        _, _, width, batch = pre.shape
        h = c = u.new_zeros(self.units, width, batch)                  # the row above the image
        rows = []
        for row in pre.unbind(0):                                      # (4n, W, B), one step per row
            h, c = LSTMGates(self.state_to_state(h, row)).update(c)     # (n, W, B)
            rows.append(h)
        states = torch.stack(rows).permute(3, 1, 0, 2)                 # (B, n, H, W)
        return u + self.output(states)                                 # (B, 2h, H, W)

    def output_weight(self) -> Tensor:
        """The output 1x1's (2h, n) matrix, masked."""
        return self.output.masked_weight()[:, :, 0, 0]

    def incremental(self, stepper: PixelRNNStepper, cond: Condition | None) -> RowLSTMCache:
        """This layer's incremental form (``cached.py``) for ``stepper``."""
        return RowLSTMCache(self, stepper, cond, LSTMGates.buffer(stepper.like, self.units, stepper.batch))


class DiagonalBiLSTMLayer(nn.Module):
    """u + 1x1(left-to-right + right-to-left diagonal LSTM, shifted down one row)."""

    def __init__(self, config: DiagonalBiLSTMConfig, image_channels: int = 0):
        super().__init__()
        hidden, n, colours = config.hidden, config.units, config.channels
        self.units = n
        self.input_to_state = masked_1x1(channel_groups(hidden, colours), lstm_groups(n, colours, 2), colours)
        # The whole current pixel, for the right-to-left direction only (its output moves down a row).
        self.pixel_to_state = nn.Conv2d(image_channels, 4 * n, 1, bias=False) if image_channels else None
        self.state_to_state = DiagonalStateConv(n)
        self.output = masked_1x1(channel_groups(n, colours), channel_groups(hidden, colours), colours)
        self.cond_bias = ConditionBias(config, 8 * n)
        init_forget_bias(self.input_to_state, n, 2)

    def forward(self, u: Tensor, cond: Condition | None, pixels: Tensor | None = None) -> Tensor:
        """``pixels``: the image (B, C, H, W), read by a layer built with ``image_channels``."""
        x = u.permute(2, 3, 1, 0)                                      # (H, W, 2h, B)
        both = torch.stack([x, x.flip(1)], 2)                          # (H, W, 2, 2h, B): mirrored for right to left
        pre = torch.matmul(self.input_weights(), both) + self.gate_bias(cond)   # (H, W, 2, 4n, B)
        if self.pixel_to_state is not None:
            image = pixels.permute(2, 3, 1, 0).flip(1)                 # (H, W, C, B), mirrored
            pre[:, :, 1] += self.pixel_gates(image)
        left, right = self.scan(pre).unbind(2)                         # (H, W, n, B) each
        right = torch.cat([torch.zeros_like(right[:1]), right[:-1].flip(1)])   # unmirror, shift down a row
        out = torch.matmul(self.output_weight(), left + right)          # (H, W, 2h, B)
        return u + out.permute(3, 2, 0, 1) + self.output.bias[:, None, None]      # (B, 2h, H, W)

    def output_weight(self) -> Tensor:
        """The output 1x1's (2h, n) matrix, masked."""
        return self.output.masked_weight()[:, :, 0, 0]

    def pixel_gates(self, image: Tensor) -> Tensor:
        """The right-to-left gates' term of the whole current pixel: (..., C, B) -> (..., 4n, B)."""
        return torch.matmul(self.pixel_to_state.weight[:, :, 0, 0], image)

    def input_weights(self) -> Tensor:
        """The input-to-state 1x1, masked, one (4n, 2h) matrix per direction: (left to right, right to left)."""
        w = self.input_to_state.masked_weight()[:, :, 0, 0]            # (8n, 2h)
        return w.view(2, 4 * self.units, -1)                           # (2, 4n, 2h)

    def gate_bias(self, cond: Condition | None) -> Tensor:
        """The gates' bias on the (H, W, 2, 4n, B) layout, the right-to-left half mirrored like its input."""
        bias = self.input_to_state.bias.view(2, -1, 1)                 # (2, 4n, 1)
        extra = self.cond_bias(cond)                                   # 0.0, (B, 8n, 1, 1) or (B, 8n, H, W)
        if not isinstance(extra, Tensor):
            return bias
        extra = extra.permute(2, 3, 1, 0).unflatten(2, (2, -1))        # (H', W', 2, 4n, B)
        return bias + torch.stack([extra[:, :, 0], extra[:, :, 1].flip(1)], 2)

    def scan(self, pre: Tensor) -> Tensor:
        """Both directions, one anti-diagonal (skewed column) per step: (H, W, 2, 4n, B) -> (H, W, 2, n, B).

        Rows outside the image in a column get zero gates: left of it (i > s) their states stay
        zero, as the border's are for the incremental sampler; right of it (s - i >= W) they
        are computed and never read.
        """
        height, width = pre.shape[:2]
        taps = self.state_to_state.taps()
        h = c = pre.new_zeros(height, 2, self.units, pre.shape[-1])   # (H, 2, n, B)
        columns = []
        for column in skew_columns(pre).unbind(0):                     # (H, 2, 4n, B), one step per diagonal
            h, c = LSTMGates(column + self.state_to_state(h, taps), dim=2).update(c)   # (H, 2, n, B)
            columns.append(h)
        return unskew_columns(torch.stack(columns), width)

    def incremental(self, stepper: PixelRNNStepper, cond: Condition | None) -> DiagonalLSTMCache:
        """This layer's incremental form (``cached.py``) for ``stepper``."""
        return DiagonalLSTMCache(self, stepper, cond, LSTMGates.buffer(stepper.like, self.units, stepper.batch))


# ----- models ---------------------------------------------------------------------------------


class PixelRNN(AutoregressiveModel):
    """First mask-A convolution, residual LSTM layers, 1x1 mask-B output layers."""

    def __init__(self, config: PixelRNNConfig):
        super().__init__(config)
        c = config.channels
        self.input = raster_conv(c, config.hidden, config.first_kernel, "A", c)
        self.input_bias = ConditionBias(config, config.hidden)
        self.layers = nn.ModuleList(self.make_layer(k) for k in range(config.layers))
        self.head = OutputHead(config.hidden, config.output_hidden, self.distribution, c)

    def make_layer(self, index: int) -> nn.Module:
        raise NotImplementedError

    def network(self, x: Tensor, cond: Condition | None, order: Order | None = None) -> Tensor:
        """The first (mask A) layer with its conditioning bias, the LSTM layers, the output layers: a
        :func:`~pixelcnn.models.common.stack`, which :class:`PixelRNNStepper` runs at one pixel."""
        self.own_order_only(order)
        return stack(lambda: self.input(x) + self.input_bias(cond),
                     self.layers, self.head, cond, x)

    def cached_stepper(self, x: Tensor, cond: Condition | None, order: Order | None = None) -> PixelRNNStepper:
        """One pixel of every layer per step, LSTM states kept between steps (``cached.py``)."""
        self.own_order_only(order)
        return PixelRNNStepper(self, x, cond)


class RowLSTM(PixelRNN):
    name = "row_lstm"
    config_class = RowLSTMConfig

    def make_layer(self, index: int) -> nn.Module:
        return RowLSTMLayer(self.config)


class DiagonalBiLSTM(PixelRNN):
    name = "diagonal_bilstm"
    config_class = DiagonalBiLSTMConfig

    def make_layer(self, index: int) -> nn.Module:
        image = self.config.channels if index == 0 else 0             # see "One addition" above
        return DiagonalBiLSTMLayer(self.config, image)

