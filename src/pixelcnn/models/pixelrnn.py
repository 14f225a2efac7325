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

Sampling: ``cached_stepper`` keeps every layer's LSTM states and computes one pixel per step
(the first layer's taps on the rows above and the Row LSTM's state-to-state term once per row;
the Diagonal BiLSTM's right-to-left direction once a row is complete, as its output only
reaches the rows below). It gives the naive path's probabilities up to float rounding.

One statement of the network. :func:`~pixelcnn.models.common.stack` (the first layer with its conditioning
bias, the LSTM layers in turn, the output layers) is run by both paths: on whole maps, and by the
stepper at one pixel over each layer's incremental form, which sits beside its module, is built by
it (``cached``) and reads its weights through the module's own methods (the input-to-state
directions, the state-to-state taps, the whole-pixel term of the right-to-left gates, the output
1x1). What stays written twice is a layer's arithmetic, by design: the module evaluates a layer
over the whole image before the next (one convolution, then a recurrence over rows or skewed
columns), the step evaluates every layer at one pixel, and at these sizes a step costs the number
of tensor ops it issues, so it regroups the same sums into a few fused products on buffers laid out
for it (the bias and the state-to-state term of the row above added once per row, the residual and
the output bias inside the output product, the right-to-left direction run over a whole row when
the row below begins, which is its shift down a row; no skew, as raster order already visits a
pixel after its upper and left neighbours). A change to a layer's equations therefore needs both
forms; ``tests/test_generated.py`` checks them against each other over every declared branch.

Layout: the recurrences run on batch-last maps ((rows, cols, ..., B) inside the Diagonal
BiLSTM, (n, W, B) rows in the Row LSTM), so that a step's matrix products see whole feature
maps and a skewed column is one contiguous block (``recurrent.skew_columns``). The samplers keep
one row of batch-last (features, B) blocks per layer, so that every op of a step reads and
writes contiguous memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelcnn.errors import ConfigError
from pixelcnn.layers import Condition, ConditionBias, MaskedConv2d, channel_groups, horizontal_conv, raster_conv
from pixelcnn.models.base import AutoregressiveModel
from pixelcnn.models.common import MaskedModelConfig, OutputHead, check_kernel, masked_1x1, output_distribution, stack
from pixelcnn.models.incremental import PixelStepper, PointwiseHead
from pixelcnn.recurrent import LSTMGates, lstm_cell, skew_columns, unskew_columns

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
        "layers": "number of LSTM layers after the first (mask A) convolution",
        "first_kernel": "size of the first (mask A) convolution",
    }
    branches: ClassVar[dict[str, tuple]] = {**MaskedModelConfig.branches, "layers": (1, 2), "first_kernel": (1, 3)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_kernel(self, "first_kernel")
        if self.layers < 1:
            raise ConfigError(f"layers counts the LSTM layers: expected an integer >= 1, got {self.layers}")
        if self.hidden < 2 * self.channels:
            raise ConfigError(f"hidden must be at least {2 * self.channels} (each LSTM has hidden // 2 units, "
                              f"at least one per colour channel), got {self.hidden}")

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
    branches: ClassVar[dict[str, tuple]] = {**PixelRNNConfig.branches, "row_kernel": (1, 3)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_kernel(self, "row_kernel")


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


# ----- layers, each with its incremental form ---------------------------------------------------
#
# Each LSTM layer's module evaluates it on whole maps; beside it, its incremental form (``cached``
# builds it) evaluates it at one pixel for the sampler, reading its weights through the module's
# own methods. At n = 16 a step's matrices are tiny, so what a cached step costs is the number of
# tensor ops it issues, and whether they read strided memory. The buffers hold the current row,
# batch last: one pixel's features are a contiguous (features, B) block, the gates are rows of one
# (4n, B) block, and the Row LSTM's input-to-state window is one ((s + 1) * 2h, B) block. They are
# allocated at construction together with a view per column, so that a layer's step is a fixed
# sequence of out= and in-place ops on those views: two matrix products and six elementwise ops
# for a Row LSTM layer. What depends only on complete rows (the first layer's taps on the rows
# above, the Row LSTM's state-to-state term, the Diagonal BiLSTM's right-to-left pass) is computed
# once per row. The sums follow the network's equations in another order, so the probabilities
# agree with the naive path up to float rounding (~1e-7 in float32).


def patch_weight(conv: MaskedConv2d, rows: int) -> Tensor:
    """The masked kernel's top ``rows`` rows as a matrix over (row, col, in) patches: (out, rows * kw * in)."""
    w = conv.masked_weight()[:, :, :rows, :].permute(0, 2, 3, 1)       # (out, rows, kw, in)
    return w.reshape(w.shape[0], -1)


def row_windows(row: Tensor, width: int, taps: int) -> list[Tensor]:
    """Sliding windows along a batch-last row (width + taps - 1, F, B): ``width`` views (taps * F, B).

    Window j holds columns j .. j + taps - 1, flattened (column, feature): one contiguous block,
    which a matrix product reads in place. ``row`` must be contiguous.
    """
    _, features, batch = row.shape
    return list(row.as_strided((width, taps * features, batch), (features * batch, batch, 1),
                               row.storage_offset()).unbind(0))


class PixelBias:
    """A layer's constant bias plus its ConditionBias, batch last: (H', W', n, B') in ``value``.

    H' x W' x B' is 1 x 1 x 1 without conditioning, 1 x 1 x B for labels alone, or the image's
    size x B for a conditioning image (a per-position term).
    """

    def __init__(self, bias: Tensor, module: ConditionBias, cond: Condition | None):
        extra = module(cond)                                           # 0.0, (B, n, 1, 1) or (B, n, H, W)
        self.value = bias[:, None].expand(1, 1, -1, 1)                 # (1, 1, n, 1)
        if isinstance(extra, Tensor):
            self.value = self.value + extra.detach().permute(2, 3, 1, 0)   # (H', W', n, B)

    def row(self, i: int) -> Tensor:
        return self.value[min(i, self.value.shape[0] - 1)]            # (W', n, B'): W' is 1 or W


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
            h, c = lstm_cell(self.state_to_state(h, row), c, dim=0)    # (n, W, B)
            rows.append(h)
        states = torch.stack(rows).permute(3, 1, 0, 2)                 # (B, n, H, W)
        return u + self.output(states)                                 # (B, 2h, H, W)

    def output_weight(self) -> Tensor:
        """The output 1x1's (2h, n) matrix, masked."""
        return self.output.masked_weight()[:, :, 0, 0]

    def cached(self, cond: Condition | None, xp: Tensor, f: int, gates: LSTMGates) -> "RowLSTMCache":
        """This layer's incremental form (below) for the stepper's padded image ``xp`` (f + H, f + W + f, C, B)."""
        return RowLSTMCache(self, PixelBias(self.input_to_state.bias, self.cond_bias, cond), xp, xp.shape[1] - 2 * f,
                            gates)


class RowLSTMCache:
    """One Row LSTM layer's buffers for the current row, batch last, and its step at one pixel.

    * ``stream`` (s + W, 2h, B): the layer's input, s zero columns on the left, so that the
      input-to-state window of pixel j (columns j - s .. j) is one ((s + 1) * 2h, B) block;
    * ``terms`` (W, 4n, B): the gates' bias plus the state-to-state term of the row above,
      computed once per row, so a step adds only the input-to-state product;
    * ``cells`` (2, W, n, B): the row above's and this row's, alternating by row parity;
    * ``states`` (W, n + 1, B): h, and a constant 1 that carries the output layer's bias, so
      that u + 1x1(h) is one product.
    """

    def __init__(self, layer: RowLSTMLayer, bias: PixelBias, like: Tensor, width: int, gates: LSTMGates):
        n, hidden, s = layer.units, layer.output.weight.shape[0], layer.state_to_state.weight.shape[2] // 2
        batch = like.shape[-1]
        self.s, self.bias, self.gates = s, bias, gates
        self.w_in = patch_weight(layer.input_to_state, 1)              # (4n, (s + 1) * 2h), over (col, in)
        self.w_state = layer.state_to_state.weight.flatten(1)          # (4n, n * k), over (unit, tap)
        w_out = layer.output_weight()                                  # (2h, n)
        self.w_out = torch.cat([w_out, layer.output.bias[:, None]], 1)   # (2h, n + 1)
        stream = like.new_zeros(s + width, hidden, batch)
        self.terms = like.new_zeros(width, 4 * n, batch)
        self.cells = like.new_zeros(2, width, n, batch)
        self.states = like.new_zeros(width, n + 1, batch)
        self.states[:, n] = 1.0
        self.input_at = list(stream[s:].unbind(0))                     # (2h, B) each
        self.windows = row_windows(stream, width, s + 1)               # ((s + 1) * 2h, B) each
        self.terms_at = self.terms.unbind(0)
        self.cells_at = [self.cells[0].unbind(0), self.cells[1].unbind(0)]
        self.c_above_at = self.c_at = self.cells_at[0]
        self.states_at = self.states.unbind(0)                         # (n + 1, B)
        self.h_at = self.states[:, :n].unbind(0)                       # (n, B)
        self.output_at: list[Tensor] = []

    def begin_row(self, i: int) -> None:
        """Row i's terms: its bias plus the 1 x k state-to-state convolution of row i - 1's states."""
        self.c_above_at, self.c_at = self.cells_at[(i + 1) % 2], self.cells_at[i % 2]
        if i == 0:                                                     # zeros above the image
            self.cells[1].zero_()
            self.terms.copy_(self.bias.row(0).expand_as(self.terms))
            return
        s, (width, units, batch) = self.s, self.states.shape           # units: n + 1
        h = F.pad(self.states[:, : units - 1], (0, 0, 0, 0, s, s))     # (W + 2s, n, B), zeros off the row
        taps = h.unfold(0, 2 * s + 1, 1).transpose(2, 3).reshape(width, -1, batch)   # (W, n * k, B)
        torch.add(torch.matmul(self.w_state, taps), self.bias.row(i), out=self.terms)

    def step(self, u: Tensor, j: int) -> Tensor:
        """Pixel j from its input u (2h, B), ``input_at[j]``: gates = terms + input-to-state(window), the cell
        update from the pixel above, u + 1x1(h) into ``output_at[j]``, the next layer's input there."""
        gates = self.gates
        torch.addmm(self.terms_at[j], self.w_in, self.windows[j], out=gates.value)
        gates.update(self.c_above_at[j], self.c_at[j], self.h_at[j])
        return torch.addmm(u, self.w_out, self.states_at[j], out=self.output_at[j])


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
            h, c = lstm_cell(column + self.state_to_state(h, taps), c, dim=2)   # (H, 2, n, B)
            columns.append(h)
        return unskew_columns(torch.stack(columns), width)

    def cached(self, cond: Condition | None, xp: Tensor, f: int, gates: LSTMGates) -> "DiagonalLSTMCache":
        """This layer's incremental form (below) for the stepper's padded image ``xp`` (f + H, f + W + f, C, B)."""
        return DiagonalLSTMCache(self, PixelBias(self.input_to_state.bias, self.cond_bias, cond), xp, f, gates)


class DiagonalLSTMCache:
    """One Diagonal BiLSTM layer's buffers for the current row, batch last, and its step at one pixel.

    * ``stream`` (W, 2h, B): the layer's input;
    * ``hs``, ``cs`` (W + 1, n, B): left-to-right states and cells, a zero column on the left;
    * ``terms`` (W, 4n, B): the left-to-right gates' bias plus the term of the row above's states;
    * ``rs`` (W + 1, n, B): right-to-left states of the row above, a zero column on the right,
      and ``rl_out`` (W, 2h, B): their 1x1 output plus the output bias.

    ``begin_row(i)`` runs the right-to-left pass over row i - 1 (whose inputs are all known by
    then), so a step adds u, ``rl_out`` and 1x1(h).
    """

    def __init__(self, layer: DiagonalBiLSTMLayer, bias: PixelBias, xp: Tensor, f: int, gates: LSTMGates):
        n, hidden = layer.units, layer.output.weight.shape[0]
        width, batch = xp.shape[1] - 2 * f, xp.shape[3]
        self.xp, self.f, self.width, self.bias, self.units, self.gates = xp, f, width, bias, n, gates
        self.w_in, self.w_in_rl = layer.input_weights()                # (4n, 2h) each
        above, same = layer.state_to_state.tap_views()                 # (row above, same row), each (2, 4n, n)
        self.w_up, self.w_left = above[0], same[0].contiguous()        # (4n, n) each, per direction
        self.w_up_rl, self.w_right = above[1], same[1].contiguous()
        self.pixel_gates = None if layer.pixel_to_state is None else layer.pixel_gates
        self.w_out = layer.output_weight()                             # (2h, n)
        self.b_out = layer.output.bias[:, None]                        # (2h, 1)
        self.stream = xp.new_zeros(width, hidden, batch)
        self.hs, self.cs, self.rs, self.rl_cells = (xp.new_zeros(width + 1, n, batch) for _ in range(4))
        self.terms = xp.new_zeros(width, 4 * n, batch)
        self.rl_out = xp.new_zeros(width, hidden, batch)
        self.input_at, self.terms_at = self.stream.unbind(0), self.terms.unbind(0)
        self.rl_out_at = self.rl_out.unbind(0)
        self.h_at, self.c_at = self.hs.unbind(0), self.cs.unbind(0)   # pixel j at j + 1
        self.rs_at, self.rl_c_at = self.rs.unbind(0), self.rl_cells.unbind(0)   # pixel j at j
        self.output_at: list[Tensor] = []

    def begin_row(self, i: int) -> None:
        """Row i's terms from row i - 1: its left-to-right states, and its right-to-left pass."""
        n, width = self.units, self.width
        bias = self.bias.row(i)[:, : 4 * n]                            # (W', 4n, B'), left to right
        if i == 0:                                                     # zeros above the image
            self.rs.zero_()
            self.rl_out.copy_(self.b_out.expand_as(self.rl_out))
            self.terms.copy_(bias.expand_as(self.terms))
            return
        self.right_to_left(i - 1)
        torch.add(torch.matmul(self.w_out, self.rs[:width]), self.b_out, out=self.rl_out)
        torch.add(torch.matmul(self.w_up, self.hs[1:]), bias, out=self.terms)

    def right_to_left(self, i: int) -> None:
        """Row i's right-to-left states into ``rs``, from the row's inputs and row i - 1's states (in ``rs``)."""
        n, width, f = self.units, self.width, self.f
        pre = (torch.matmul(self.w_in_rl, self.stream) + self.bias.row(i)[:, 4 * n :]
               + torch.matmul(self.w_up_rl, self.rs[:width]))          # (W, 4n, B)
        if self.pixel_gates is not None:
            pre += self.pixel_gates(self.xp[i + f, f : f + width])     # the whole pixels (W, C, B)
        pre_at, h_at, c_at, gates = pre.unbind(0), self.rs_at, self.rl_c_at, self.gates
        for j in range(width - 1, -1, -1):
            torch.addmm(pre_at[j], self.w_right, h_at[j + 1], out=gates.value)
            gates.update(c_at[j + 1], c_at[j], h_at[j])

    def step(self, u: Tensor, j: int) -> Tensor:
        """Pixel j from its input u (2h, B), ``input_at[j]``: left-to-right gates from terms, u and the pixel
        to the left; u + 1x1(h + r) + b into ``output_at[j]``, the next layer's input there."""
        gates, out, h = self.gates, self.output_at[j], self.h_at[j + 1]
        torch.addmm(self.terms_at[j], self.w_in, u, out=gates.value)
        gates.value.addmm_(self.w_left, self.h_at[j])
        gates.update(self.c_at[j], self.c_at[j + 1], h)
        torch.add(u, self.rl_out_at[j], out=out)
        return out.addmm_(self.w_out, h)


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

    def make_distribution(self):
        return output_distribution(self.config)

    def network(self, x: Tensor, cond: Condition | None) -> Tensor:
        """The first (mask A) layer with its conditioning bias, the LSTM layers, the output layers: a
        :func:`~pixelcnn.models.common.stack`, which :class:`PixelRNNStepper` runs at one pixel."""
        return stack(lambda: self.input(x) + self.input_bias(cond),
                     self.layers, self.head, cond, x)

    def cached_stepper(self, x: Tensor, cond: Condition | None):
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


# ----- incremental sampling -------------------------------------------------------------------


class FirstLayerCache:
    """The first (mask A) convolution on the current row.

    ``above`` (W, 2h, B) holds the bias and the taps on the f rows above each pixel of the row,
    computed by ``begin_row(i)`` once rows i - f .. i - 1 are set; a pixel adds the taps of its
    own row (the f pixels to its left and its own earlier colours) from a window of the padded
    image ``xp`` (f + H, f + W + f, C, B), written straight into ``output_at[j]``.
    """

    def __init__(self, conv: MaskedConv2d, bias: PixelBias, xp: Tensor, f: int):
        w = conv.masked_weight()                                        # (2h, C, 2f + 1, 2f + 1)
        self.w_above = w[:, :, :f].permute(0, 2, 3, 1).reshape(w.shape[0], -1)       # (2h, f * (2f + 1) * C)
        self.w_row = w[:, :, f, : f + 1].permute(0, 2, 1).reshape(w.shape[0], -1)    # (2h, (f + 1) * C)
        self.xp, self.f, self.bias = xp, f, bias
        self.width = xp.shape[1] - 2 * f
        self.above = xp.new_zeros(self.width, w.shape[0], xp.shape[3])
        self.above_at = self.above.unbind(0)
        self.windows: list[Tensor] = []
        self.output_at: list[Tensor] = []                              # set by the stepper

    def begin_row(self, i: int) -> None:
        """Row i's taps on the rows above it (zero padding above the image), and its windows."""
        f, (width, _, batch) = self.f, self.above.shape
        taps = self.xp[i : i + f].unfold(1, 2 * f + 1, 1)             # (f, W, C, B, 2f + 1)
        taps = taps.permute(1, 0, 4, 2, 3).reshape(width, self.w_above.shape[1], batch)   # (W, f * (2f + 1) * C, B)
        torch.add(torch.matmul(self.w_above, taps), self.bias.row(i), out=self.above)
        self.windows = row_windows(self.xp[i + f], width, f + 1)      # pixel j's window: columns j - f .. j

    def step(self, j: int) -> Tensor:
        """(2h, B) output at pixel j, into ``output_at[j]``: the first LSTM layer's input there."""
        return torch.addmm(self.above_at[j], self.w_row, self.windows[j], out=self.output_at[j])


class PixelRNNStepper(PixelStepper):
    """Incremental sampler: one pixel of every layer per step, LSTM states kept between steps.

    The network is the same :func:`~pixelcnn.models.common.stack` over the first layer's and each LSTM
    layer's incremental form. Their buffers hold one row (``row``): what pixels of that row
    compute, and what they need from the rows above, prepared by ``begin_row`` (the first layer's
    taps on the rows above, the Row LSTM's state-to-state term, the Diagonal BiLSTM's right-to-left
    pass over the row above) when the row's first pixel is computed, at which point every pixel
    above is. Pixel states never depend on the pixel's own last channel (the first layer is mask
    A), so the column computed for the last channel's query is final; :class:`PixelStepper` keeps
    the raster order. Each layer's step writes its output straight into the next one's input buffer.
    """

    @torch.no_grad()
    def __init__(self, model: PixelRNN, x: Tensor, cond: Condition | None):
        super().__init__(model, x)
        self.f = f = model.config.first_kernel // 2
        self.row = -1
        xf = model.preprocess(x).permute(2, 3, 1, 0)                   # (H, W, C, B)
        self.xp = F.pad(xf, (0, 0, 0, 0, f, f, f, 0)).contiguous()     # (f + H, f + W + f, C, B)
        self.level_values = model.preprocess(torch.arange(model.levels, device=x.device))   # (L,)
        self.first = FirstLayerCache(model.input, PixelBias(model.input.bias, model.input_bias, cond), self.xp, f)
        gates = LSTMGates(self.xp, model.config.units, self.batch)
        self.caches = [layer.cached(cond, self.xp, f, gates) for layer in model.layers]
        self.steps = [cache.step for cache in self.caches]               # stack's layers: step(u, j)
        self.head = PointwiseHead(model.head)
        top = self.xp.new_zeros(model.config.hidden, self.batch)       # the last layer's output at the pixel
        outputs = [cache.input_at for cache in self.caches] + [[top] * self.width]
        self.first.output_at = outputs[0]                              # each layer's output is the next one's input
        for cache, out in zip(self.caches, outputs[1:]):
            cache.output_at = out

    def write(self, c: int, h: int, w: int, values: Tensor) -> None:
        self.xp[h + self.f, w + self.f, c] = self.level_values[values]   # the model's preprocess, by table

    @torch.no_grad()
    def column(self, i: int, j: int) -> Tensor:
        """Compute pixel (i, j) of every layer from the current values: (B, P) parameters."""
        while self.row < i:
            self.row += 1
            self.begin_row(self.row)
        return stack(partial(self.first.step, j), self.steps, self.head_of_column, j)

    def head_of_column(self, top: Tensor) -> Tensor:
        """(B, P) from the last layer's output at the pixel: the stream is (2h, B) here."""
        return self.head(top.t())

    def begin_row(self, i: int) -> None:
        """Prepare the buffers for row i; every pixel above it is computed."""
        self.first.begin_row(i)
        for cache in self.caches:
            cache.begin_row(i)
