"""PixelCNN++ sampled one pixel at a time: the caches of Ramachandran et al. 2017 on a U-Net.

Salimans et al. 2017's network (``network.py``) evaluated incrementally with the machinery of
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
so a pixel's work, :meth:`CachedPixelCNNPP.column`, is :meth:`PixelCNNPP.network`'s passes over the
stages with a position there (a prefix: 2^s divides h and w), in the network's order::

    first layer            u row h where the pixel starts a row (w == 0), else None; ul at (h, w)
    up pass, s = 0, 1, ..  s > 0: the stride-2 convolutions of stage s - 1's kept outputs;
                           stage s's blocks; every value onto u_list / ul_list; keep the last
    down pass, .., 1, 0    the coarsest stage: the up pass's last output; another: the transposed
                           convolutions of stage s + 1's kept outputs (this pixel's or an earlier
                           one's); stage s's blocks, each popping a pair into its shortcut; keep the last
    output                 out(elu(ul))

A block (:class:`CachedStreamBlock`) computes its u row where one starts (the u stream has no value
elsewhere: None), then its ul position. The u stream enters a ul block through a 1x1 shortcut (nin)
of the same position, computed for the whole row at once and added to the block's first convolution
as a per-position bias (as the Gated PixelCNN's vertical-to-horizontal link); the up pass's ul
outputs reach the down pass at the same position in the same step. A block's composition is the
module's own :meth:`GatedResnet.combine` over this file's incremental forms of its convolutions.

Three things are this path's own, by necessity: the first layer's incremental form (its shifts
become reading row h - 1 and column w - 1, zero above and left of the image, bias included), the
shortcut's 1x1 convolution split into one matrix per stream (the full path concatenates the
streams first; here they arrive at different times, u a row at a time, the up pass's ul a position
at a time, and the sum is the same), and concat_elu of a value computed once per pixel for all its
readers (:class:`Activation`), where the full path computes it at each reader.

Each gated ResNet block caches concat_elu of its input and of its inner activation, the inputs
of its two convolutions, each the last two rows of its stage (``RING``: the schedule reads no older
row), as do the caches the resampling layers read; so a stage holds four rows' worth of every block
whatever the image's height. Dropout is off (sampling runs in eval mode). The sums are those of the
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

from pixelcnn.distributions.logistic_mixture import PixelMixture
from pixelcnn.models.layers import Condition, concat_elu, concat_elu_into, signed_identity
from pixelcnn.models.incremental import (CachedConv, CachedConvTranspose, CachedStepper, ConvTaps, FeatureMap,
                                         Pointwise, TransposedTaps, class_bias)


RING = 2
"""Rows each stage cache keeps (:class:`FeatureMap`): every reader's window ends on the row being computed
and reaches one row above it (the blocks' (2, 3) and (2, 2) kernels, the stride-2 ones over fine rows
2I - 1 and 2I), or reads that row alone (the transposed ones: fine row r from coarse row r // 2)."""


class Activation:
    """A value of the current pixel's pass, a u row (W, B, F) or a position (B, F), with its concat_elu
    computed once for all its readers: its block, the ul block's shortcut from a new u, a down-pass
    block's shortcut."""

    __slots__ = ("value", "_elu")

    def __init__(self, value: Tensor):
        self.value, self._elu = value, None

    def elu(self) -> Tensor:
        """concat_elu of the value along its last dimension, computed at the first call."""
        if self._elu is None:
            self._elu = concat_elu(self.value, dim=-1)
        return self._elu

    def elu_into(self, out: Tensor, signs: Tensor) -> Tensor:
        """concat_elu of a position's (B, F) value written into ``out``, a (B, 2F) view of a block's input
        cache (:func:`concat_elu_into`), and kept for the later readers."""
        self._elu = concat_elu_into(self.value, out, signs)
        return self._elu


def shortcut_weights(nin: nn.Conv2d, streams: int) -> list[Tensor]:
    """A 1x1 convolution of concat_elu(cat(s_0, ..., s_{n-1})) as one (2F, F) matrix per stream s_k,
    applied to concat_elu(s_k): the input channels are [elu(s_0), ..., elu(s_{n-1}), elu(-s_0), ...]."""
    weight = Pointwise(nin).weight                                              # (2 n F, F)
    f = weight.shape[0] // (2 * streams)
    return [torch.cat([weight[k * f : (k + 1) * f], weight[(streams + k) * f : (streams + k + 1) * f]])
            for k in range(streams)]


def row_product(bias: Tensor, rows: Tensor, weight: Tensor) -> Tensor:
    """(W, B, out) bias + rows @ weight for the (W, B, in) rows of a u-stream value."""
    return torch.addmm(bias, rows.reshape(-1, rows.shape[-1]), weight).view(*rows.shape[:-1], -1)


class CachedGatedResnet:
    """A GatedResnet over one row (u stream) or at one position (ul stream) of its stage, through the
    module's own ``combine``.

    Caches concat_elu of its input (``x_elu``) and of its inner activation (``h_elu``). The
    shortcut, nin(concat_elu(aux)), is a sum over the aux streams: the first stream (u) is taken a
    row at a time, the second (the up pass's ul, down pass only) a position at a time. It holds no reference
    to its stepper (which holds it): the stage position comes with each call, so no cycle keeps either alive.
    """

    def __init__(self, block: nn.Module, stepper: "CachedPixelCNNPP", size: tuple[int, int], cond: Condition | None):
        taps_in, taps_out = ConvTaps.of(block.conv_in), ConvTaps.of(block.conv_out)
        self.combine = block.combine
        self.x_elu = stepper.feature_map(taps_in.in_channels, [taps_in], size, rows=RING)
        self.h_elu = stepper.feature_map(taps_out.in_channels, [taps_out], size, rows=RING)
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

    def row(self, x: Activation | None, i: int, skip: Activation | None = None) -> Activation | None:
        """The (W, B, F) output row i from the input row x and the shortcut's (W, B, F); None where no row starts."""
        if x is None:
            return None
        shortcut = None if skip is None else row_product(self.nin_bias, skip.elu(), self.shortcuts[0])

        def conv_in(v: Tensor) -> Tensor:
            self.x_elu.write_row(i, v)
            return self.conv_in.row(i)                                          # (W, B, F), conv_in's bias

        def conv_out(v: Tensor) -> Tensor:
            self.h_elu.write_row(i, v)
            return self.conv_out.row(i)

        return Activation(self.combine(x.value, x.elu(), conv_in, conv_out, shortcut, dim=-1))   # (W, B, F)

    def prepare_row(self, u_elu: Tensor, i: int) -> None:
        """Ul row i: the first convolution's bias at each position (its and nin's biases plus nin of the
        u row's concat_elu ``u_elu`` (W, B, 2F)), and the row's views of the caches this block writes."""
        self.row_bias = row_product(self.in_bias, u_elu, self.shortcuts[0])
        self.x_elu_row, self.h_elu_row = self.x_elu.row(i), self.h_elu.row(i)   # (B, W, 2F) each
        self.in_windows, self.out_windows = self.conv_in.views[i], self.conv_out.views[i]

    def at(self, x: Activation, u: Activation | None, i: int, j: int, skip: Activation | None = None) -> Activation:
        """The (B, F) output at the stage's position (i, j) from the input x (B, F), the u row (W, B, F) where one
        starts (it prepares the ul row) and the up pass's ul there (down pass)."""
        if u is not None:
            self.prepare_row(u.elu(), i)
        bias = self.row_bias[j]
        if skip is not None:
            bias = torch.addmm(bias, skip.elu(), self.shortcuts[1])
        x_elu = x.elu_into(self.x_elu_row[:, j], self.signs)

        # The convolutions read their windows of the caches, where x_elu and ``elu`` write their inputs.
        def conv_in(v: Tensor) -> Tensor:
            return window_product(self.conv_in, self.in_windows, i, j, bias)

        def conv_out(v: Tensor) -> Tensor:
            return window_product(self.conv_out, self.out_windows, i, j)

        def elu(h: Tensor, dim: int) -> Tensor:
            return concat_elu_into(h, self.h_elu_row[:, j], self.signs)

        return Activation(self.combine(x.value, x_elu, conv_in, conv_out, dim=-1, elu=elu))   # (B, F)


class CachedStreamBlock:
    """A StreamBlock at one pixel: the u row where one starts, then the ul position."""

    def __init__(self, block: nn.Module, stepper: "CachedPixelCNNPP", size: tuple[int, int], cond: Condition | None):
        self.u = CachedGatedResnet(block.u, stepper, size, cond)
        self.ul = CachedGatedResnet(block.ul, stepper, size, cond)

    def __call__(self, u: Activation | None, ul: Activation, position: tuple[int, int], u_skip: Activation | None = None,
                 ul_skip: Activation | None = None) -> tuple[Activation | None, Activation]:
        """As StreamBlock's forward at the stage's ``position``: u from itself and u_skip, then ul from itself,
        the new u and ul_skip."""
        i, j = position
        u = self.u.row(u, i, u_skip)
        return u, self.ul.at(ul, u, i, j, ul_skip)


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


def check_geometry(model: nn.Module) -> None:
    """The schedule relies on the shapes of the resampling layers: refuse others rather than be wrong."""
    for layers, kernel in ((model.down_u, (2, 3)), (model.up_u, (2, 3)), (model.down_ul, (2, 2)), (model.up_ul, (2, 2))):
        for layer in layers:
            if tuple(layer.kernel_size) != kernel or tuple(layer.stride) != (2, 2):
                raise ValueError(f"the cached PixelCNN++ path expects {kernel} resampling kernels with stride 2, "
                                 f"got {layer}")


def stage_sizes(model: nn.Module, height: int, width: int) -> list[tuple[int, int]]:
    """Each stage's (h, w): ceil(H / 2^s) x ceil(W / 2^s), as the stride-2 convolutions give."""
    sizes = [(height, width)]
    for conv in model.down_u:
        sizes.append(ConvTaps.of(conv).output_size(*sizes[-1]))
    return sizes


class CachedPixelCNNPP(CachedStepper):
    """PixelCNN++ one pixel at a time: :meth:`column` runs the network's passes (see the module).

    Its caches, by stage s: ``up[s]`` and ``down[s]``, the blocks of stage s in the up and the down
    pass (each with its input caches); ``up_tops[s]`` and ``down_tops[s]``, the last u and ul of
    stage s in each pass, which ``downsample_layers[s + 1]`` and ``upsample_layers[s - 1]`` read.
    """

    def __init__(self, model: nn.Module, x: Tensor, cond: Condition | None):
        check_geometry(model)
        first = [ConvTaps.of(m) for m in (model.u_in, model.ul_in_above, model.ul_in_left)]
        super().__init__(model, x, first, ones_channel=True)
        self.input_layer = CachedInputLayer(first, self.inputs)
        sizes = stage_sizes(model, self.height, self.width)
        self.coarsest = len(sizes) - 1
        self.up = [[CachedStreamBlock(b, self, size, cond) for b in model.up_pass[s]]
                   for s, size in enumerate(sizes)]
        self.down = [[CachedStreamBlock(b, self, size, cond) for b in model.down_pass[self.coarsest - s]]
                     for s, size in enumerate(sizes)]                          # model.down_pass: coarsest first
        self.up_tops, self.down_tops = [None] * len(sizes), [None] * len(sizes)
        self.downsample_layers, self.upsample_layers = [None] * len(sizes), [None] * len(sizes)
        for s in range(1, len(sizes)):
            self.add_resampling(model, s, sizes)
        self.out = Pointwise(model.out)
        self.pixel = (0, 0)                                                    # the pixel being computed
        self.positions: list[tuple[int, int]] = []                             # each stage's position under it
        self.mixture: PixelMixture | None = None                               # the current pixel's, at its next channel

    def add_resampling(self, model: nn.Module, s: int, sizes: list[tuple[int, int]]) -> None:
        """The layers between stages s - 1 and s and the caches they read: stage s - 1's last up-pass
        outputs (the stride-2 convolutions into s), stage s's last down-pass ones (the transposed ones out)."""
        f = model.config.filters
        convs = (ConvTaps.of(model.down_u[s - 1]), ConvTaps.of(model.down_ul[s - 1]))
        self.up_tops[s - 1] = [self.feature_map(f, [taps], sizes[s - 1], rows=RING) for taps in convs]
        self.downsample_layers[s] = [CachedConv(taps, top) for taps, top in zip(convs, self.up_tops[s - 1])]
        layer = self.coarsest - s                                              # model.up_u runs coarsest first
        readers = [TransposedTaps.of(m[layer], sizes[s], sizes[s - 1]) for m in (model.up_u, model.up_ul)]
        self.down_tops[s] = [self.feature_map(f, [taps], sizes[s], rows=RING) for taps in readers]
        self.upsample_layers[s - 1] = [CachedConvTranspose(r, top) for r, top in zip(readers, self.down_tops[s])]

    def log_probs(self, c: int, h: int, w: int) -> Tensor:
        """(B, L) as CachedStepper's, from the pixel's :class:`PixelMixture`, which :meth:`set` moves along."""
        self.check_order(c, h, w)
        if self.params is None:                                                # a new pixel (``set`` resets it)
            self.params, self.mixture = self.pixel_params(h, w), None
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

    def stages_at(self, h: int, w: int) -> range:
        """The stages with a position over image pixel (h, w): those whose 2^s divides h and w."""
        stages = 1
        while stages <= self.coarsest and (h | w) % (1 << stages) == 0:
            stages += 1
        return range(stages)

    def stage_position(self, s: int) -> tuple[int, int]:
        """Stage s's position under the current pixel."""
        return self.positions[s]

    # ----- the schedule: PixelCNNPP.network's passes at one pixel ---------------------------------

    def column(self, h: int, w: int) -> Tensor:
        """(B, P) parameters of pixel (h, w), and every activation it makes final into the caches."""
        stages = self.stages_at(h, w)
        self.pixel, self.positions = (h, w), [(h >> s, w >> s) for s in stages]   # raster: w == 0 starts a row
        u, ul = self.first()
        u_list, ul_list = [u], [ul]
        for s in stages:                                                       # the up pass
            u, ul = self.up_stage(s, u, ul, u_list, ul_list)
        for s in reversed(stages):                                             # the down pass
            if s == self.coarsest:
                u, ul = u_list.pop(), ul_list.pop()
            else:                                                              # the coarser stage's, from the cache
                u, ul = self.upsample(s)
            for block in self.down[s]:
                u, ul = block(u, ul, self.stage_position(s), u_list.pop(), ul_list.pop())
            self.keep(s, u, ul, down=True)
        return self.out(F.elu(ul.value))                                       # (B, P)

    def up_stage(self, s: int, u: Activation | None, ul: Activation, u_list: list, ul_list: list) -> tuple:
        """Stage s of the up pass from the finer stage's last (u, ul); every value onto the lists."""
        if s > 0:
            u, ul = self.downsample(s)
            u_list.append(u)
            ul_list.append(ul)
        for block in self.up[s]:
            u, ul = block(u, ul, self.stage_position(s))
            u_list.append(u)
            ul_list.append(ul)
        self.keep(s, u, ul)
        return u, ul

    def first(self) -> tuple[Activation | None, Activation]:
        """The first layer: u's row where the pixel starts one, ul at the pixel."""
        h, w = self.pixel
        u = Activation(self.input_layer.start_row(h)) if w == 0 else None
        return u, Activation(self.input_layer.at(h, w))

    def downsample(self, s: int) -> tuple[Activation | None, Activation]:
        """Stage s's input: the stride-2 convolutions of stage s - 1's kept outputs (this pixel's among them)."""
        (i, j), (down_u, down_ul) = self.stage_position(s), self.downsample_layers[s]
        u = Activation(down_u.row(i)) if self.pixel[1] == 0 else None
        return u, Activation(down_ul.at(i, j))

    def upsample(self, s: int) -> tuple[Activation | None, Activation]:
        """Stage s's down-pass input: the transposed convolutions of stage s + 1's kept down-pass outputs,
        computed at this pixel or an earlier one."""
        (i, j), (up_u, up_ul) = self.stage_position(s), self.upsample_layers[s]
        u = Activation(up_u.row(i)) if self.pixel[1] == 0 else None
        return u, Activation(up_ul.at(i, j))

    def keep(self, s: int, u: Activation | None, ul: Activation, down: bool = False) -> None:
        """Stage s's last outputs of a pass into the caches that the other stage's resampling layers read."""
        tops = self.down_tops[s] if down else self.up_tops[s]
        if tops is not None:
            i, j = self.stage_position(s)
            if u is not None:
                tops[0].write_row(i, u.value)
            tops[1].at(i, j).copy_(ul.value)
