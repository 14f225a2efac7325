"""PixelCNN++ sampled one pixel at a time: the caches of Ramachandran et al. 2017 on a U-Net.

Salimans et al. 2017's network (``pixelcnn_pp.py``) evaluated incrementally with the machinery of
``incremental.py``. It is a pixel-level network: one column of activations per pixel serves all
its colour channels, which the discretized logistic mixture couples (``CachedStepper.pixel_level``).
It reads the modules of a ``PixelCNNPP`` without importing the model's file: the model builds its
stepper, so the import points one way, from the network to its incremental evaluator.

When an activation is final. Stage s of the U-Net has maps of ceil(H / 2^s) x ceil(W / 2^s)
positions, and its position (I, J) sits over image pixel (2^s I, 2^s J).

* The u stream (down-shifted convolutions) at row I of stage s depends on image rows < 2^s I
  only: the first layer is shifted down a row, a (2, 3) convolution reads rows I - 1 and I, the
  stride-2 one fine rows 2I - 1 and 2I, and the transposed (2, 3) one gives fine row r from
  coarse row r // 2. So the whole row is computed at once, one matrix product per layer, when
  image row 2^s I begins.
* The ul stream (down-right-shifted convolutions) at (I, J) of stage s depends on the image
  pixels before (2^s I, 2^s J) in raster order, so it is computed when the loop reaches that
  pixel: a coarse map updates at the coarser rate, at one pixel in 2^s x 2^s, once the last fine
  position its window reads, (2I, 2J), is final. The transposed (2, 2) convolution gives fine
  (r, c) from coarse (r // 2, c // 2), computed at an earlier pixel or the same one.

Every activation is computed no earlier than what it reads and no later than its first reader,
so a pixel's work is: if it starts an image row, the u rows of every stage with a row there, in
the network's order (up pass, then down pass); then the ul positions of every stage with a
position there, in the same order; then the output head. The u stream enters a ul block through
a 1x1 shortcut (nin) of the same position, computed for the whole row at once and added to the
block's first convolution as a per-position bias (as the Gated PixelCNN's vertical-to-horizontal
link); the up pass's ul outputs reach the down pass at the same position in the same step.

Each gated ResNet block caches concat_elu of its input and of its inner activation, the inputs
of its two convolutions; dropout is off (sampling runs in eval mode). The sums are those of the
full network in another order, so the two paths differ by float rounding only, and by no more than
the full network differs from itself evaluated in higher precision.

How much rounding moves the probabilities is the network's own conditioning, not the path's. The
residual streams have no normalisation: with weights far from their initial values each block can
multiply its input's scale, and a default-size network (160 filters, 5 blocks, 3 stages: about 35
blocks in a row) turns a relative rounding of 1e-7 in its first layer into ~1e-5..1e-3 relative in
its parameters. The mixture then multiplies an error in a mean by 1/s, up to e^7 at the floor on
log-scales. In float32 such a network's probabilities are uncertain in the second or third decimal
on either path (the naive float32 path is as far from the float64 network as the cached one is);
in float64 the paths agree to ~1e-12, default size included (tests/test_generated.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelcnn.dlm import PixelMixture
from pixelcnn.layers import Condition, concat_elu, concat_elu_into, gated_residual, signed_identity
from pixelcnn.models.incremental import (CachedConv, CachedConvTranspose, CachedStepper, ConvTaps, FeatureMap,
                                         Pointwise, TransposedTaps, class_bias)


def shortcut_weights(nin: nn.Conv2d, streams: int) -> list[Tensor]:
    """A 1x1 convolution of concat_elu(cat(s_0, ..., s_{n-1})) as one (2F, F) matrix per stream s_k,
    applied to concat_elu(s_k): the input channels are [elu(s_0), ..., elu(s_{n-1}), elu(-s_0), ...]."""
    weight = Pointwise(nin).weight                                              # (2 n F, F)
    f = weight.shape[0] // (2 * streams)
    return [torch.cat([weight[k * f : (k + 1) * f], weight[(streams + k) * f : (streams + k + 1) * f]])
            for k in range(streams)]


class CachedGatedResnet:
    """A GatedResnet over one row (u stream) or at one position (ul stream) of its stage.

    Caches concat_elu of its input (``x_elu``) and of its inner activation (``h_elu``). The
    shortcut, nin(concat_elu(aux)), is a sum over the aux streams: the first stream (u) is taken a
    row at a time, the second (the up pass's ul, down pass only) a position at a time.
    """

    def __init__(self, block: nn.Module, stepper: CachedStepper, size: tuple[int, int], cond: Condition | None):
        taps_in, taps_out = ConvTaps.of(block.conv_in), ConvTaps.of(block.conv_out)
        self.x_elu = stepper.feature_map(taps_in.in_channels, [taps_in], size)
        self.h_elu = stepper.feature_map(taps_out.in_channels, [taps_out], size)
        self.conv_in = CachedConv(taps_in, self.x_elu)
        self.conv_out = CachedConv(taps_out, self.h_elu, class_bias(block.cond_bias, cond, size))
        streams = 0 if block.aux is None else block.aux.in_channels // taps_in.in_channels
        self.shortcuts = shortcut_weights(block.aux, streams) if streams else []
        self.nin_bias = block.aux.bias.detach() if streams else None            # (F,)
        self.in_bias = taps_in.bias if not streams else taps_in.bias + self.nin_bias   # conv_in's and nin's
        self.row_bias: Tensor | None = None                                    # (W, B, F), ul stream
        self.x_elu_row: Tensor | None = None                                   # (B, W, 2F) views, ul stream
        self.h_elu_row: Tensor | None = None
        self.in_windows: Tensor | None = None                                  # (W, B, rows, cols, 2F) views
        self.out_windows: Tensor | None = None
        self.signs = signed_identity(taps_in.in_channels // 2, taps_in.weight)  # (F, 2F)

    def row(self, x: Tensor, x_elu: Tensor, i: int, skip_elu: Tensor | None = None) -> Tensor:
        """(W, B, F) output row i from the input row x, its concat_elu x_elu (W, B, 2F) and the shortcut's."""
        self.x_elu.write_row(i, x_elu)
        h = self.conv_in.row(i)                                                 # (W, B, F), conv_in's bias
        if skip_elu is not None:
            flat = skip_elu.reshape(-1, skip_elu.shape[-1])
            h = h + torch.addmm(self.nin_bias, flat, self.shortcuts[0]).view_as(h)
        self.h_elu.write_row(i, concat_elu(h, dim=-1))
        return gated_residual(x, self.conv_out.row(i), dim=-1)                # (W, B, F)

    def prepare_row(self, u_elu: Tensor, i: int) -> None:
        """Ul row i: the first convolution's bias at each position (its and nin's biases plus nin of the
        u row's concat_elu ``u_elu`` (W, B, 2F)), and the row's views of the caches this block writes."""
        flat = u_elu.reshape(-1, u_elu.shape[-1])
        self.row_bias = torch.addmm(self.in_bias, flat, self.shortcuts[0]).view(*u_elu.shape[:-1], -1)
        self.x_elu_row, self.h_elu_row = self.x_elu.row(i), self.h_elu.row(i)   # (B, W, 2F) each
        self.in_windows, self.out_windows = self.conv_in.views[i], self.conv_out.views[i]

    def at(self, x: Tensor, i: int, j: int, skip_elu: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, F) output at (i, j) from the input x (B, F) and the concat_elu of the up pass's ul there (down
        pass); and the concat_elu of x (B, 2F), a view of the cache (the down pass's shortcut, up pass)."""
        bias = self.row_bias[j]
        if skip_elu is not None:
            bias = torch.addmm(bias, skip_elu, self.shortcuts[1])
        x_elu = concat_elu_into(x, self.x_elu_row[:, j], self.signs)
        h = window_product(self.conv_in, self.in_windows, i, j, bias)           # (B, F)
        concat_elu_into(h, self.h_elu_row[:, j], self.signs)
        return gated_residual(x, window_product(self.conv_out, self.out_windows, i, j), dim=-1), x_elu


def window_product(conv: CachedConv, windows: Tensor, i: int, j: int, bias: Tensor | None = None) -> Tensor:
    """``conv.at(i, j, bias)``, (B, out), from row i's windows ``conv.views[i]`` picked out once per row."""
    bias = conv.bias if bias is None else bias
    if conv.position_bias is not None:
        bias = bias + conv.position_bias.at(i, j)
    return torch.addmm(bias, windows[j].reshape(conv.batch, conv.size), conv.weight)


class CachedInputLayer:
    """u = shift_down(u_in(x)) and ul = shift_down(above(x)) + shift_right(left(x)) on the input cache (ones included).

    The shifts fill row 0 (column 0) with zeros, bias included, so those outputs are not convolutions of padding.
    """

    def __init__(self, taps: list[ConvTaps], inputs: FeatureMap):
        self.u_in, self.above, self.left = (CachedConv(t, inputs) for t in taps)
        self.width, self.batch = inputs.width, inputs.buf.shape[0]
        self.above_row: Tensor | None = None                                   # (W, B, F)
        self.row_bias: Tensor | None = None                                    # (W, B, F)

    def start_row(self, h: int) -> Tensor:
        """(W, B, F) u row h (image rows < h); prepares the ul row."""
        if h == 0:
            zeros = self.left.bias.new_zeros(self.width, self.batch, self.left.bias.shape[0])
            u, self.above_row = zeros, zeros
        else:
            u, self.above_row = self.u_in.row(h - 1), self.above.row(h - 1)
        self.row_bias = self.above_row + self.left.bias
        return u

    def at(self, h: int, w: int) -> Tensor:
        """(B, F) ul at (h, w): row h - 1 around column w, and rows h - 1, h at column w - 1."""
        if w == 0:
            return self.above_row[0]
        return self.left.at(h, w - 1, bias=self.row_bias[w])


class UpStage:
    """Stage s of the up pass, entered (s > 0) through the stride-2 convolutions of the stage below.

    ``u_top`` / ``ul_top`` cache its last outputs for the next stage's stride-2 convolutions (None at the last stage).
    """

    def __init__(self, model: nn.Module, s: int, size: tuple[int, int], below: "UpStage | None",
                 stepper: CachedStepper, cond: Condition | None):
        blocks = model.up_pass[s]
        self.u = [CachedGatedResnet(b.u, stepper, size, cond) for b in blocks]
        self.ul = [CachedGatedResnet(b.ul, stepper, size, cond) for b in blocks]
        self.down_u = None if below is None else CachedConv(ConvTaps.of(model.down_u[s - 1]), below.u_top)
        self.down_ul = None if below is None else CachedConv(ConvTaps.of(model.down_ul[s - 1]), below.ul_top)
        last = s == len(model.up_pass) - 1
        f = model.config.filters
        self.u_top = None if last else stepper.feature_map(f, [ConvTaps.of(model.down_u[s])], size)
        self.ul_top = None if last else stepper.feature_map(f, [ConvTaps.of(model.down_ul[s])], size)
        self.signs = signed_identity(f, stepper.like)                          # (F, 2F)

    def rows(self, u: Tensor, i: int) -> tuple[Tensor, list[Tensor]]:
        """Row i from the input row u (W, B, F) -> (its last u row, the concat_elu of the down pass's u shortcuts)."""
        if self.down_u is not None:
            u = self.down_u.row(i)
        u_elu, skips = concat_elu(u, dim=-1), []
        for u_block, ul_block in zip(self.u, self.ul):
            skips.append(u_elu)
            u = u_block.row(u, u_elu, i)
            u_elu = concat_elu(u, dim=-1)
            ul_block.prepare_row(u_elu, i)                                        # the ul block's shortcut is this u
        if self.u_top is not None:                                             # else u starts the down pass
            self.u_top.write_row(i, u)
            skips.append(u_elu)
        return u, skips

    def at(self, ul: Tensor, i: int, j: int) -> tuple[Tensor, list[Tensor]]:
        """Position (i, j) from the input ul (B, F) -> (its last ul, the concat_elu of the down pass's ul shortcuts)."""
        if self.down_ul is not None:
            ul = self.down_ul.at(i, j)
        skips = []
        for block in self.ul:
            ul, ul_elu = block.at(ul, i, j)
            skips.append(ul_elu)                                               # concat_elu of the block's input
        if self.ul_top is not None:
            self.ul_top.at(i, j).copy_(ul)
            skips.append(F.elu_(ul @ self.signs))
        return ul, skips


class DownStage:
    """Stage s of the down pass, entered (below the last stage) through the transposed convolutions.

    ``u_top`` / ``ul_top`` cache its last outputs for the finer stage's transposed convolutions (None at stage 0).
    """

    def __init__(self, model: nn.Module, s: int, sizes: list[tuple[int, int]], above: "DownStage | None",
                 stepper: CachedStepper, cond: Condition | None):
        stages = len(sizes)
        d = stages - 1 - s                                                     # index in model.down_pass
        blocks = model.down_pass[d]
        self.u = [CachedGatedResnet(b.u, stepper, sizes[s], cond) for b in blocks]
        self.ul = [CachedGatedResnet(b.ul, stepper, sizes[s], cond) for b in blocks]
        self.up_u = self.up_ul = None
        if above is not None:
            self.up_u = CachedConvTranspose(above.u_readers, above.u_top)
            self.up_ul = CachedConvTranspose(above.ul_readers, above.ul_top)
        self.u_top = self.ul_top = None
        if s > 0:
            f = model.config.filters
            self.u_readers = TransposedTaps.of(model.up_u[d], sizes[s], sizes[s - 1])
            self.ul_readers = TransposedTaps.of(model.up_ul[d], sizes[s], sizes[s - 1])
            self.u_top = stepper.feature_map(f, [self.u_readers], sizes[s])
            self.ul_top = stepper.feature_map(f, [self.ul_readers], sizes[s])

    def rows(self, u: Tensor, i: int, skips: list[Tensor]) -> None:
        """Row i, from the up pass's last u row (last stage) or the coarser stage; consumes ``skips`` from the end."""
        if self.up_u is not None:
            u = self.up_u.row(i)
        u_elu = concat_elu(u, dim=-1)
        for u_block, ul_block in zip(self.u, self.ul):
            u = u_block.row(u, u_elu, i, skips.pop())
            u_elu = concat_elu(u, dim=-1)
            ul_block.prepare_row(u_elu, i)
        if self.u_top is not None:
            self.u_top.write_row(i, u)

    def at(self, ul: Tensor, i: int, j: int, skips: list[Tensor]) -> Tensor:
        """(B, F) position (i, j), from the up pass's last ul (last stage) or the coarser stage."""
        if self.up_ul is not None:
            ul = self.up_ul.at(i, j)
        for block in self.ul:
            ul, _ = block.at(ul, i, j, skips.pop())
        if self.ul_top is not None:
            self.ul_top.at(i, j).copy_(ul)
        return ul


def check_geometry(model: nn.Module) -> None:
    """The schedule relies on the shapes of the resampling layers: refuse others rather than be wrong."""
    for layers, kernel in ((model.down_u, (2, 3)), (model.up_u, (2, 3)), (model.down_ul, (2, 2)), (model.up_ul, (2, 2))):
        for layer in layers:
            if tuple(layer.kernel_size) != kernel or tuple(layer.stride) != (2, 2):
                raise ValueError(f"the cached PixelCNN++ path expects {kernel} resampling kernels with stride 2, "
                                 f"got {layer}")


class CachedPixelCNNPP(CachedStepper):
    """PixelCNN++ one pixel at a time: u rows when an image row starts, ul positions at their pixel (see the module)."""

    def __init__(self, model: nn.Module, x: Tensor, cond: Condition | None):
        check_geometry(model)
        first = [ConvTaps.of(m) for m in (model.u_in, model.ul_in_above, model.ul_in_left)]
        super().__init__(model, x, first, ones_channel=True)
        self.input_layer = CachedInputLayer(first, self.inputs)
        sizes = [(self.height, self.width)]
        for conv in model.down_u:                                              # ceil(H / 2^s), as F.conv2d gives
            sizes.append(ConvTaps.of(conv).output_size(*sizes[-1]))
        self.up: list[UpStage] = []
        for s, size in enumerate(sizes):
            self.up.append(UpStage(model, s, size, self.up[-1] if s else None, self, cond))
        down: list[DownStage] = []
        for s in reversed(range(len(sizes))):                                 # coarsest first
            down.append(DownStage(model, s, sizes, down[-1] if down else None, self, cond))
        self.down = down[::-1]                                                 # indexed by stage
        self.out = Pointwise(model.out)
        self.row = -1                                                          # the image row whose u rows are done
        self.mixture: PixelMixture | None = None                               # the current pixel's, at its next channel

    def log_probs(self, c: int, h: int, w: int) -> Tensor:
        """(B, L) as CachedStepper's, from the pixel's :class:`PixelMixture`, which :meth:`set` moves along."""
        self.check_order(c, h, w)
        if self.params is None:                                                # a new pixel (``set`` resets it)
            self.params, self.mixture = self.column(h, w), None
        if self.mixture is None or self.mixture.channel != c:
            # A new pixel, or values set other than in the loop's ask-then-set order: start from channel 0.
            self.mixture = self.distribution.pixel(self.params)
            for j in range(c):
                self.mixture.observe(self.x[:, j, h, w])
        return self.mixture.levels()

    def set(self, c: int, h: int, w: int, values: Tensor) -> None:
        """As CachedStepper's; the pixel's mixture observes the values (for its next channel, if any)."""
        super().set(c, h, w, values)
        if self.mixture is not None and self.mixture.channel == c and c < self.channels - 1:
            self.mixture.observe(values)
        else:
            self.mixture = None

    def stages_at(self, h: int, w: int = 0) -> list[int]:
        """The stages with a position over image pixel (h, w): those whose 2^s divides h and w."""
        return [s for s in range(len(self.up)) if h % (1 << s) == 0 and w % (1 << s) == 0]

    def start_row(self, h: int) -> None:
        """The u stream's rows that image row h makes final, at every stage that has a row there."""
        stages = self.stages_at(h)
        u, skips = self.input_layer.start_row(h), []
        for s in stages:
            u, stage_skips = self.up[s].rows(u, h >> s)
            skips.append(stage_skips)
        for s in reversed(stages):
            self.down[s].rows(u, h >> s, skips[s])

    def column(self, h: int, w: int) -> Tensor:
        if h != self.row:                                                      # raster order: a new image row
            self.start_row(h)
            self.row = h
        stages = self.stages_at(h, w)
        ul, skips = self.input_layer.at(h, w), []
        for s in stages:
            ul, stage_skips = self.up[s].at(ul, h >> s, w >> s)
            skips.append(stage_skips)
        for s in reversed(stages):
            ul = self.down[s].at(ul, h >> s, w >> s, skips[s])
        return self.out(F.elu(ul))                                             # (B, P)
