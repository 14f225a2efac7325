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
(the Row LSTM's state-to-state term once per row; the Diagonal BiLSTM's right-to-left
direction once a row is complete, as its output only reaches the rows below). It gives the
naive path's probabilities up to float rounding.

Layout: the recurrences run on batch-last maps ((rows, cols, ..., B) inside the Diagonal
BiLSTM, (n, W, B) rows in the Row LSTM), so that a step's matrix products see whole feature
maps and a skewed column is one contiguous block (``layers.skew_columns``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelcnn.errors import ConfigError
from pixelcnn.layers import (Condition, ConditionBias, MaskedConv2d, channel_groups, horizontal_conv, lstm_cell,
                             raster_conv, skew_columns, unskew_columns)
from pixelcnn.models.base import AutoregressiveModel
from pixelcnn.models.common import MaskedModelConfig, OutputHead, check_kernel, masked_1x1, output_distribution
from pixelcnn.models.incremental import PointwiseHead

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

    def __post_init__(self) -> None:
        super().__post_init__()
        check_kernel(self, "row_kernel")


@dataclass(frozen=True)
class DiagonalBiLSTMConfig(PixelRNNConfig):
    pass


def lstm_groups(units: int, colours: int, directions: int = 1) -> Tensor:
    """Colour groups of the gate pre-activations [i, f, o, g] (per direction): each grouped like the units."""
    return channel_groups(units, colours).repeat(4 * directions)


def masked_weight(conv: MaskedConv2d) -> Tensor:
    """A masked convolution's effective kernel (the mask applied, as in its forward)."""
    return conv.weight * conv.mask


def init_forget_bias(conv: nn.Module, units: int, directions: int = 1) -> None:
    with torch.no_grad():
        for d in range(directions):
            conv.bias[(4 * d + 1) * units : (4 * d + 2) * units] += FORGET_BIAS


# ----- layers ---------------------------------------------------------------------------------


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

    def taps(self) -> tuple[Tensor, Tensor]:
        """(row above, same row) kernels, each (2, 4n, n)."""
        w = self.weight.view(2, -1, *self.weight.shape[1:])          # (2, 4n, n, 2)
        return w[..., 0].contiguous(), w[..., 1].contiguous()

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

    def forward(self, u: Tensor, cond: Condition | None) -> Tensor:
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
            pre[:, :, 1] += torch.matmul(self.pixel_to_state.weight[:, :, 0, 0], image)
        left, right = self.scan(pre).unbind(2)                         # (H, W, n, B) each
        right = torch.cat([torch.zeros_like(right[:1]), right[:-1].flip(1)])   # unmirror, shift down a row
        out = torch.matmul(masked_weight(self.output)[:, :, 0, 0], left + right)   # (H, W, 2h, B)
        return u + out.permute(3, 2, 0, 1) + self.output.bias[:, None, None]      # (B, 2h, H, W)

    def input_weights(self) -> Tensor:
        w = masked_weight(self.input_to_state)[:, :, 0, 0]            # (8n, 2h)
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
        u = self.input(x) + self.input_bias(cond)                      # (B, 2h, H, W)
        for layer in self.layers:
            u = layer(u, cond)
        return self.head(u)                                            # (B, P, H, W)


class RowLSTM(PixelRNN):
    name = "row_lstm"
    config_class = RowLSTMConfig

    def make_layer(self, index: int) -> nn.Module:
        return RowLSTMLayer(self.config)

    def cached_stepper(self, x: Tensor, cond: Condition | None):
        return RowLSTMStepper(self, x, cond)


class DiagonalBiLSTM(PixelRNN):
    name = "diagonal_bilstm"
    config_class = DiagonalBiLSTMConfig

    def make_layer(self, index: int) -> nn.Module:
        image = self.config.channels if index == 0 else 0             # see "One addition" above
        return DiagonalBiLSTMLayer(self.config, image)

    def network(self, x: Tensor, cond: Condition | None) -> Tensor:
        u = self.input(x) + self.input_bias(cond)                      # (B, 2h, H, W)
        for layer in self.layers:
            u = layer(u, cond, x)
        return self.head(u)                                            # (B, P, H, W)

    def cached_stepper(self, x: Tensor, cond: Condition | None):
        return DiagonalBiLSTMStepper(self, x, cond)


# ----- incremental sampling -------------------------------------------------------------------
#
# The steppers keep their buffers position-major, (rows, cols, B, features), so that one
# pixel's features are a contiguous (B, features) block: reads and writes of a step touch no
# strided memory. Each step's sums follow the network's equations in another order, so the
# probabilities agree with the naive path up to float rounding (~1e-7 in float32).


def patch_weight(conv: MaskedConv2d, rows: int) -> Tensor:
    """The masked kernel's top ``rows`` rows as a matrix over (row, col, in) patches: (out, rows * kw * in)."""
    w = masked_weight(conv)[:, :, :rows, :].permute(0, 2, 3, 1)       # (out, rows, kw, in)
    return w.reshape(w.shape[0], -1)


class PixelBias:
    """A layer's constant bias plus its ConditionBias, read at one position: (B, n) from ``at(i, j)``.

    Kept as (H', W', B, n) where H' x W' is 1 x 1 (no conditioning, or labels alone) or the
    image's size (a conditioning image's per-position term).
    """

    def __init__(self, bias: Tensor, module: ConditionBias, cond: Condition | None, batch: int):
        extra = module(cond)                                           # 0.0, (B, n, 1, 1) or (B, n, H, W)
        if isinstance(extra, Tensor):
            self.value = bias + extra.detach().permute(2, 3, 0, 1)     # (H', W', B, n)
        else:
            self.value = bias.expand(1, 1, batch, -1)

    def at(self, i: int, j: int) -> Tensor:
        rows, cols = self.value.shape[:2]
        return self.value[min(i, rows - 1), min(j, cols - 1)]          # (B, n)

    def row(self, i: int) -> Tensor:
        return self.value[min(i, self.value.shape[0] - 1)]            # (W', B, n): W' is 1 or W


class PixelRNNStepper:
    """Incremental sampler: one pixel of every layer per step, LSTM states kept between steps.

    Two kinds of state, each with a high-water mark moved back when an earlier value is set:

    * pixel states (stream and left-to-right LSTM states of every layer at a pixel): final once
      every channel they depend on is set. They never depend on the pixel's own last channel
      (the first layer is mask A), so they are final after the query of that channel.
      ``done`` counts the final pixels in raster order.
    * row terms (what row i + 1 needs from the whole of row i: the Row LSTM's state-to-state
      term, the Diagonal BiLSTM's right-to-left pass): computed by ``end_row(i)`` when row
      i + 1 is first needed, at which point every value of row i is set. ``rows_ready`` counts
      the rows whose ``end_row`` is valid.
    """

    def __init__(self, model: PixelRNN, x: Tensor, cond: Condition | None):
        self.model, self.cond = model, cond
        self.x = x.clone()
        self.batch, self.channels, self.height, self.width = x.shape
        self.f = f = model.config.first_kernel // 2
        self.done = self.rows_ready = 0
        with torch.no_grad():
            xf = model.preprocess(x).permute(2, 3, 0, 1)               # (H, W, B, C)
            self.xp = F.pad(xf, (0, 0, 0, 0, f, f, f, 0)).contiguous()  # (f + H, f + W + f, B, C)
            self.w_in = patch_weight(model.input, f + 1)               # rows below the pixel are masked
            self.b_in = PixelBias(model.input.bias, model.input_bias, cond, self.batch)
            self.head = PointwiseHead(model.head)

    def new(self, rows: int, cols: int, features: int) -> Tensor:
        return self.xp.new_zeros(rows, cols, self.batch, features)

    @torch.no_grad()
    def log_probs(self, c: int, h: int, w: int) -> Tensor:
        index = h * self.width + w
        while self.done < index:
            self.pixel(*divmod(self.done, self.width))
            self.done += 1
        params = self.pixel(h, w)                                      # (B, P)
        if c == self.channels - 1 and self.done == index:
            self.done += 1
        return self.model.distribution.conditional(params, self.x[:, :, h, w], c)

    @torch.no_grad()
    def set(self, c: int, h: int, w: int, values: Tensor) -> None:
        self.x[:, c, h, w] = values
        self.xp[h + self.f, w + self.f, :, c] = self.model.preprocess(values)
        index = h * self.width + w
        self.done = min(self.done, index + 1 if c == self.channels - 1 else index)
        self.rows_ready = min(self.rows_ready, h)

    def pixel(self, i: int, j: int) -> Tensor:
        """Compute pixel (i, j) of every layer from the current values: (B, P) parameters."""
        while self.rows_ready < i:
            self.end_row(self.rows_ready)
            self.rows_ready += 1
        f = self.f
        patch = self.xp[i : i + f + 1, j : j + 2 * f + 1]             # (f + 1, 2f + 1, B, C)
        u = F.linear(patch.permute(2, 0, 1, 3).reshape(self.batch, -1), self.w_in) + self.b_in.at(i, j)   # (B, 2h)
        for l, layer in enumerate(self.model.layers):
            u = self.layer_step(l, layer, i, j, u)
        return self.head(u)                                            # (B, P)

    def layer_step(self, l: int, layer: nn.Module, i: int, j: int, u: Tensor) -> Tensor:
        raise NotImplementedError

    def end_row(self, i: int) -> None:
        """Row i is complete: compute what row i + 1 needs from it."""
        raise NotImplementedError


class RowLSTMStepper(PixelRNNStepper):
    """Row LSTM states of every layer; the state-to-state term of a row is computed once."""

    def __init__(self, model: RowLSTM, x: Tensor, cond: Condition | None):
        super().__init__(model, x, cond)
        n, hidden, H, W = model.config.units, model.config.hidden, self.height, self.width
        self.s = model.config.row_kernel // 2
        layers = model.layers
        self.streams = [self.new(H, self.s + W, hidden) for _ in layers]   # layer inputs, padded left
        self.hs = [self.new(H, W, n) for _ in layers]
        self.cs = [self.new(H + 1, W, n) for _ in layers]                 # row 0: the row above the image
        self.recurrent = [self.new(H, W, 4 * n) for _ in layers]           # state-to-state terms; row 0 is 0
        with torch.no_grad():
            self.w_is = [patch_weight(m.input_to_state, 1) for m in layers]                 # (4n, (s + 1) * 2h)
            self.b_is = [PixelBias(m.input_to_state.bias, m.cond_bias, cond, self.batch) for m in layers]
            self.w_out = [masked_weight(m.output)[:, :, 0, 0] for m in layers]             # (2h, n)

    def layer_step(self, l: int, layer: RowLSTMLayer, i: int, j: int, u: Tensor) -> Tensor:
        s = self.s
        self.streams[l][i, j + s] = u
        patch = self.streams[l][i, j : j + s + 1].transpose(0, 1)     # (B, s + 1, 2h)
        gates = F.linear(patch.reshape(self.batch, -1), self.w_is[l]) + self.b_is[l].at(i, j) + self.recurrent[l][i, j]
        h, c = lstm_cell(gates, self.cs[l][i, j])                      # (B, n), cell of the pixel above
        self.hs[l][i, j], self.cs[l][i + 1, j] = h, c
        return u + F.linear(h, self.w_out[l], layer.output.bias)       # (B, 2h)

    def end_row(self, i: int) -> None:
        if i + 1 == self.height:
            return
        for l, layer in enumerate(self.model.layers):
            h = self.hs[l][i].permute(2, 0, 1)                         # (n, W, B)
            zero = h.new_zeros(4 * h.shape[0], *h.shape[1:])
            self.recurrent[l][i + 1] = layer.state_to_state(h, zero).permute(1, 2, 0)   # (W, B, 4n)


class DiagonalBiLSTMStepper(PixelRNNStepper):
    """Left-to-right states one pixel at a time; the right-to-left pass over a row once it is set."""

    def __init__(self, model: DiagonalBiLSTM, x: Tensor, cond: Condition | None):
        super().__init__(model, x, cond)
        n, hidden, H, W = model.config.units, model.config.hidden, self.height, self.width
        layers = model.layers
        self.streams = [self.new(H, W, hidden) for _ in layers]
        self.hs = [self.new(H + 1, W + 1, n) for _ in layers]          # left to right; padded top and left
        self.cs = [self.new(H + 1, W + 1, n) for _ in layers]
        self.rs = [self.new(H + 1, W + 1, n) for _ in layers]          # right to left; padded top and right
        with torch.no_grad():
            self.w_is = [masked_weight(m.input_to_state)[:, :, 0, 0].chunk(2) for m in layers]   # 2 x (4n, 2h)
            self.b_is = [PixelBias(m.input_to_state.bias, m.cond_bias, cond, self.batch) for m in layers]
            self.w_ss = [m.state_to_state.weight.chunk(2) for m in layers]                     # 2 x (4n, n, 2)
            self.w_out = [masked_weight(m.output)[:, :, 0, 0] for m in layers]                 # (2h, n)

    def layer_step(self, l: int, layer: DiagonalBiLSTMLayer, i: int, j: int, u: Tensor) -> Tensor:
        self.streams[l][i, j] = u
        w_ss = self.w_ss[l][0]
        up, left = self.hs[l][i, j + 1], self.hs[l][i + 1, j]          # (B, n) each
        bias = self.b_is[l].at(i, j).chunk(2, -1)[0]                   # (B, 4n), left to right
        gates = F.linear(u, self.w_is[l][0]) + bias + F.linear(up, w_ss[:, :, 0]) + F.linear(left, w_ss[:, :, 1])
        h, c = lstm_cell(gates, self.cs[l][i + 1, j])                  # cell of the pixel to the left
        self.hs[l][i + 1, j + 1], self.cs[l][i + 1, j + 1] = h, c
        above = self.rs[l][i, j]                                       # right to left, one row up
        return u + F.linear(h + above, self.w_out[l], layer.output.bias)  # (B, 2h)

    def end_row(self, i: int) -> None:
        for l, layer in enumerate(self.model.layers):
            self.right_to_left(l, layer, i)

    def right_to_left(self, l: int, layer: DiagonalBiLSTMLayer, i: int) -> None:
        """Layer l's right-to-left states of row i, from the row's inputs and row i - 1."""
        w_ss, W = self.w_ss[l][1], self.width
        bias = self.b_is[l].row(i).chunk(2, -1)[1]                     # (W or 1, B, 4n), right to left
        pre = (F.linear(self.streams[l][i], self.w_is[l][1]) + bias
               + F.linear(self.rs[l][i, :W], w_ss[:, :, 0]))           # (W, B, 4n): input, row i - 1
        if layer.pixel_to_state is not None:
            pixels = self.xp[i + self.f, self.f : self.f + W]          # (W, B, C), the whole pixels
            pre = pre + F.linear(pixels, layer.pixel_to_state.weight[:, :, 0, 0])
        h = c = self.rs[l][i + 1, W]                                   # zeros right of the image
        for j in range(W - 1, -1, -1):
            h, c = lstm_cell(pre[j] + F.linear(h, w_ss[:, :, 1]), c)
            self.rs[l][i + 1, j] = h
