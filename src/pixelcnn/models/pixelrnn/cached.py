"""PixelRNN sampled one pixel at a time: every layer's LSTM states kept between steps.

The Row LSTM and the Diagonal BiLSTM of ``network.py`` evaluated incrementally on the machinery
of ``incremental.py``: the stepper is a :class:`CachedStepper` whose image cache is a batch-last
:class:`FeatureMap`, the first (mask A) convolution and the Row LSTM's input-to-state convolution
are :class:`BatchLastConv` over cached maps, and the conditioning biases come from
:func:`class_bias`. The model builds its stepper, and each layer builds its incremental form
(``cached``), so the imports point one way, from the network to this file.

One statement of the network. :func:`~pixelcnn.models.common.stack` (the first layer with its
conditioning bias, the LSTM layers in turn, the output layers) is run by both paths: on whole maps,
and by the stepper at one pixel over each layer's incremental form, which reads its weights through
the layer's own methods (the input-to-state directions, the state-to-state taps, the whole-pixel
term of the right-to-left gates, the output 1x1). Every LSTM update on either path is
:meth:`LSTMGates.update <pixelcnn.models.pixelrnn.recurrent.LSTMGates.update>`. What stays written twice is
the order of a layer's sums, by design: the module evaluates a layer over the whole image before the
next (one convolution, then a recurrence over rows or skewed columns), the step evaluates every
layer at one pixel, and at these sizes a step costs the number of tensor ops it issues, so it
regroups the same sums into a few fused products on buffers laid out for it (the bias and the
state-to-state term of the row above added once per row, the residual and the output bias inside
the output product, the right-to-left direction run over a whole row when the row below begins,
which is its shift down a row; no skew, as raster order already visits a pixel after its upper and
left neighbours). ``tests/test_generated.py`` checks the two paths against each other over every
declared branch.

Buffers. At n = 16 a step's matrices are tiny, so what a step costs is the number of tensor ops
it issues, and whether they read strided memory. The buffers hold the current row, batch last: one
pixel's features are a contiguous (features, B) block, the gates are rows of one (4n, B) block, and
a window of one row of convolution taps is one contiguous (K, B) block of a batch-last feature map.
They are allocated at construction together with a view per column, so that a layer's step is a
fixed sequence of out= and in-place ops on those views: two matrix products and six elementwise ops
for a Row LSTM layer. What depends only on complete rows (the first layer's taps on the rows above,
the Row LSTM's state-to-state term, the Diagonal BiLSTM's right-to-left pass) is computed once per
row, when the row's first pixel is. The sums follow the network's equations in another order, so
the probabilities agree with the naive path up to float rounding (~1e-7 in float32).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelcnn.models.layers import Condition, MaskedConv2d
from pixelcnn.models.common import stack
from pixelcnn.models.incremental import (BatchLastConv, CachedStepper, ConvTaps, FeatureMap, PointwiseHead,
                                         PositionBias, class_bias, column_bias)
from pixelcnn.models.pixelrnn.recurrent import LSTMGates


def first_layer_taps(conv: MaskedConv2d) -> tuple[ConvTaps, ConvTaps]:
    """The first (mask A) convolution in the two parts the stepper computes at different times: its
    taps on the f rows above a pixel (every column), once per row, and on the pixel's own row up to
    it (the f pixels to its left and its own earlier colours), at each step."""
    kh, kw = conv.kernel_size
    f = kh // 2
    above = torch.zeros(kh, kw, dtype=torch.bool, device=conv.weight.device)
    own = above.clone()
    above[:f] = True
    own[f, : f + 1] = True
    return ConvTaps.of(conv, above), ConvTaps.of(conv, own)


class FirstLayerCache:
    """The first (mask A) convolution on the current row, from the stepper's image cache.

    ``above`` (W, 2h, B) holds the bias and the taps on the rows above each pixel of the row,
    computed by ``begin_row(i)``; a pixel adds the taps of its own row, written straight into
    ``output_at[j]``, the first LSTM layer's input there.
    """

    def __init__(self, taps: tuple[ConvTaps, ConvTaps], inputs: FeatureMap, extra: Tensor | PositionBias | None):
        self.rows_above, self.own_row = BatchLastConv(taps[0], inputs), BatchLastConv(taps[1], inputs)
        self.bias, self.extra = taps[0].bias, extra                    # (2h,), the conditioning
        self.above = inputs.buf.new_zeros(inputs.width, taps[0].out_channels, inputs.buf.shape[0])
        self.above_at = self.above.unbind(0)
        self.windows: list[Tensor] = []
        self.output_at: list[Tensor] = []                              # set by the stepper

    def begin_row(self, i: int) -> None:
        """Row i's taps on the rows above it (zero padding above the image), and its windows."""
        self.rows_above.row(i, column_bias(self.bias, self.extra, i), out=self.above)
        self.windows = self.own_row.windows(i)                        # pixel j's: columns j - f .. j

    def step(self, j: int) -> Tensor:
        """(2h, B) output at pixel j, into ``output_at[j]``."""
        return self.own_row.at(self.windows[j], self.above_at[j], self.output_at[j])


class RowLSTMCache:
    """One Row LSTM layer's buffers for the current row, batch last, and its step at one pixel.

    * ``stream``: the layer's input, a one-row batch-last :class:`FeatureMap` with s zero columns
      on the left, so that the input-to-state window of pixel j (columns j - s .. j) is one
      ((s + 1) * 2h, B) block;
    * ``terms`` (W, 4n, B): the gates' bias plus the state-to-state term of the row above,
      computed once per row, so a step adds only the input-to-state product;
    * ``cells`` (2, W, n, B): the row above's and this row's, alternating by row parity;
    * ``states`` (W, n + 1, B): h, and a constant 1 that carries the output layer's bias, so
      that u + 1x1(h) is one product.
    """

    def __init__(self, layer: nn.Module, stepper: PixelRNNStepper, cond: Condition | None, gates: LSTMGates):
        n, hidden, s = layer.units, layer.output.weight.shape[0], layer.state_to_state.weight.shape[2] // 2
        width, batch, like = stepper.width, stepper.batch, stepper.like
        taps = ConvTaps.of(layer.input_to_state)
        stream = stepper.feature_map(hidden, [taps], (1, width))      # (1, s + W, 2h, B) in memory
        self.input_to_state = BatchLastConv(taps, stream)             # (4n, (s + 1) * 2h), over (col, in)
        self.s, self.gates = s, gates
        self.bias, self.extra = taps.bias, class_bias(layer.cond_bias, cond)
        self.w_state = layer.state_to_state.weight.flatten(1)          # (4n, n * k), over (unit, tap)
        self.w_out = torch.cat([layer.output_weight(), layer.output.bias[:, None]], 1)   # (2h, n + 1)
        self.terms = like.new_zeros(width, 4 * n, batch)
        self.cells = like.new_zeros(2, width, n, batch)
        self.states = like.new_zeros(width, n + 1, batch)
        self.states[:, n] = 1.0
        self.input_at = [stream.at(0, j).t() for j in range(width)]   # (2h, B) each
        self.windows = self.input_to_state.windows(0)                 # ((s + 1) * 2h, B) each
        self.terms_at = self.terms.unbind(0)
        self.cells_at = [self.cells[0].unbind(0), self.cells[1].unbind(0)]
        self.c_above_at = self.c_at = self.cells_at[0]
        self.states_at = self.states.unbind(0)                         # (n + 1, B)
        self.h_at = self.states[:, :n].unbind(0)                       # (n, B)
        self.output_at: list[Tensor] = []

    def begin_row(self, i: int) -> None:
        """Row i's terms: its bias plus the 1 x k state-to-state convolution of row i - 1's states."""
        self.c_above_at, self.c_at = self.cells_at[(i + 1) % 2], self.cells_at[i % 2]
        bias = column_bias(self.bias, self.extra, i)                   # (4n, 1), (4n, B) or (W, 4n, B)
        if i == 0:                                                     # zeros above the image
            self.cells[1].zero_()
            self.terms.copy_(bias.expand_as(self.terms))
            return
        s, (width, units, batch) = self.s, self.states.shape           # units: n + 1
        h = F.pad(self.states[:, : units - 1], (0, 0, 0, 0, s, s))     # (W + 2s, n, B), zeros off the row
        taps = h.unfold(0, 2 * s + 1, 1).transpose(2, 3).reshape(width, -1, batch)   # (W, n * k, B)
        torch.add(torch.matmul(self.w_state, taps), bias, out=self.terms)

    def step(self, u: Tensor, j: int) -> Tensor:
        """Pixel j from its input u (2h, B), ``input_at[j]``: gates = terms + input-to-state(window), the cell
        update from the pixel above, u + 1x1(h) into ``output_at[j]``, the next layer's input there."""
        gates = self.gates
        self.input_to_state.at(self.windows[j], self.terms_at[j], gates.value)
        gates.update(self.c_above_at[j], self.c_at[j], self.h_at[j])
        return torch.addmm(u, self.w_out, self.states_at[j], out=self.output_at[j])


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

    def __init__(self, layer: nn.Module, stepper: PixelRNNStepper, cond: Condition | None, gates: LSTMGates):
        n, hidden = layer.units, layer.output.weight.shape[0]
        width, batch, like = stepper.width, stepper.batch, stepper.like
        self.inputs, self.width, self.units, self.gates = stepper.inputs, width, n, gates
        self.bias, self.extra = layer.input_to_state.bias.detach(), class_bias(layer.cond_bias, cond)
        self.w_in, self.w_in_rl = layer.input_weights()                # (4n, 2h) each
        above, same = layer.state_to_state.tap_views()                 # (row above, same row), each (2, 4n, n)
        self.w_up, self.w_left = above[0], same[0].contiguous()        # (4n, n) each, per direction
        self.w_up_rl, self.w_right = above[1], same[1].contiguous()
        self.pixel_gates = None if layer.pixel_to_state is None else layer.pixel_gates
        self.w_out = layer.output_weight()                             # (2h, n)
        self.b_out = layer.output.bias[:, None]                        # (2h, 1)
        self.stream = like.new_zeros(width, hidden, batch)
        self.hs, self.cs, self.rs, self.rl_cells = (like.new_zeros(width + 1, n, batch) for _ in range(4))
        self.terms = like.new_zeros(width, 4 * n, batch)
        self.rl_out = like.new_zeros(width, hidden, batch)
        self.input_at, self.terms_at = self.stream.unbind(0), self.terms.unbind(0)
        self.rl_out_at = self.rl_out.unbind(0)
        self.h_at, self.c_at = self.hs.unbind(0), self.cs.unbind(0)   # pixel j at j + 1
        self.rs_at, self.rl_c_at = self.rs.unbind(0), self.rl_cells.unbind(0)   # pixel j at j
        self.output_at: list[Tensor] = []

    def row_bias(self, i: int) -> tuple[Tensor, Tensor]:
        """Row i's gate biases, (left to right, right to left), each (4n, 1), (4n, B) or (W, 4n, B)."""
        bias = column_bias(self.bias, self.extra, i)                   # (8n, ...) over both directions
        n = self.units
        return bias[..., : 4 * n, :], bias[..., 4 * n :, :]

    def begin_row(self, i: int) -> None:
        """Row i's terms from row i - 1: its left-to-right states, and its right-to-left pass."""
        bias = self.row_bias(i)[0]
        if i == 0:                                                     # zeros above the image
            self.rs.zero_()
            self.rl_out.copy_(self.b_out.expand_as(self.rl_out))
            self.terms.copy_(bias.expand_as(self.terms))
            return
        self.right_to_left(i - 1)
        torch.add(torch.matmul(self.w_out, self.rs[: self.width]), self.b_out, out=self.rl_out)
        torch.add(torch.matmul(self.w_up, self.hs[1:]), bias, out=self.terms)

    def right_to_left(self, i: int) -> None:
        """Row i's right-to-left states into ``rs``, from the row's inputs and row i - 1's states (in ``rs``)."""
        width = self.width
        pre = (torch.matmul(self.w_in_rl, self.stream) + self.row_bias(i)[1]
               + torch.matmul(self.w_up_rl, self.rs[:width]))          # (W, 4n, B)
        if self.pixel_gates is not None:
            pre += self.pixel_gates(self.inputs.row(i).permute(1, 2, 0))   # the whole pixels (W, C, B)
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


class PixelRNNStepper(CachedStepper):
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
    def __init__(self, model: nn.Module, x: Tensor, cond: Condition | None):
        taps = first_layer_taps(model.input)
        super().__init__(model, x, list(taps), batch_last=True)       # the image: (f + H, f + W + f, C, B)
        self.row = -1
        self.first = FirstLayerCache(taps, self.inputs, class_bias(model.input_bias, cond))
        self.caches = [layer.incremental(self, cond) for layer in model.layers]
        self.steps = [cache.step for cache in self.caches]               # stack's layers: step(u, j)
        self.head = PointwiseHead(model.head)
        top = self.like.new_zeros(model.config.hidden, self.batch)     # the last layer's output at the pixel
        outputs = [cache.input_at for cache in self.caches] + [[top] * self.width]
        self.first.output_at = outputs[0]                              # each layer's output is the next one's input
        for cache, out in zip(self.caches, outputs[1:]):
            cache.output_at = out

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
