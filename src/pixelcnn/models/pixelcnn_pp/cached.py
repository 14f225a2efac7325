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
at a time, and the sum is the same), and concat_elu of a position's value computed once per pixel for all
its readers (:class:`Activation`), where the full path computes it at each reader.

Each gated ResNet block caches its input and its inner activation, whose concat_elu its two convolutions
read (:class:`ConcatEluConv` applies it to each window as it reads it: half the memory of caching
concat_elu), each the last two rows of its stage (``RING``: the schedule reads no older row), as do the
caches the resampling layers read; so a stage holds four rows of F channels for every block whatever the
image's height. Dropout is off (sampling runs in eval mode). The sums are those of the
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

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelcnn.distributions.logistic_mixture import PixelMixture
from pixelcnn.models.layers import Condition, concat_elu, signed_identity
from pixelcnn.models.incremental import (CachedConv, CachedConvTranspose, CachedStepper, ConvTaps, FeatureMap,
                                         Pointwise, TransposedTaps, class_bias)


RING = 2
"""Rows each stage cache keeps (:class:`FeatureMap`): every reader's window ends on the row being computed
and reaches one row above it (the blocks' (2, 3) and (2, 2) kernels, the stride-2 ones over fine rows
2I - 1 and 2I), or reads that row alone (the transposed ones: fine row r from coarse row r // 2)."""


class Activation:
    """A value of the current pixel's pass at a position (B, F), with its concat_elu computed once for the
    readers of the whole value: a down-pass block's shortcut (and the block that wrote it into its cache)."""

    __slots__ = ("value", "_elu")

    def __init__(self, value: Tensor):
        self.value, self._elu = value, None

    def elu(self) -> Tensor:
        """concat_elu of the value along its last dimension, computed at the first call."""
        if self._elu is None:
            self._elu = concat_elu(self.value, dim=-1)
        return self._elu

    def signed_into(self, out: Tensor, signs: Tensor) -> Tensor:
        """A position's (B, F) value into ``out``, a (B, F) view of a block's input cache, as the first half of
        [x, -x] = x @ ``signs`` (:func:`signed_into`); concat_elu of that product kept for the later readers."""
        self._elu = F.elu(signed_into(self.value, out, signs))
        return self._elu


class Row(Activation):
    """A u row (W, B, F), its concat_elu computed for each of its readers (the ul block's shortcut, a down-pass
    block's shortcut), not kept: every row of the up pass waits on the list for the down pass, and its concat_elu
    would double what the list holds."""

    __slots__ = ()

    def elu(self) -> Tensor:
        """concat_elu of the row along its last dimension."""
        return concat_elu(self.value, dim=-1)


def signed_into(x: Tensor, out: Tensor, signs: Tensor) -> Tensor:
    """(B, 2F) [x, -x] of a position's (B, F) value, one product with ``signs`` (:func:`signed_identity`), its
    first half written into ``out``, a (B, F) view of a cache.

    The caches read by a block's convolutions hold these values, not their concat_elu (half the memory):
    :class:`ConcatEluConv` applies concat_elu to each window as it reads it. A product, not ``x`` itself,
    because the codec's arithmetic rounds the operands of a product (:mod:`pixelcnn.coding.exact`): the
    cache keeps the value the product gave, as it kept concat_elu of it before."""
    signed = torch.mm(x, signs)                                                 # (B, 2F)
    out.copy_(signed[:, : out.shape[-1]])
    return signed


class Scratch:
    """One buffer for the windows that every :class:`ConcatEluConv` of a stepper forms and its product reads at
    once, grown to the largest: the same memory for every block, not a new allocation each time."""

    def __init__(self):
        self.buf: Tensor | None = None

    def get(self, like: Tensor, channels: int) -> Tensor:
        """An uninitialised (*like.shape[:-1], channels) contiguous tensor of ``like``'s dtype."""
        shape = (*like.shape[:-1], channels)
        n = math.prod(shape)
        if self.buf is None or self.buf.numel() < n:
            self.buf = like.new_empty(n)
        return self.buf[:n].view(shape)


class ConcatEluConv(CachedConv):
    """A block's convolution of concat_elu(v) over a cache of v: each (rows, cols, F) window becomes the
    (rows, cols, 2F) input the taps read as it is read (the full network's order of channels), so a block's
    caches hold F channels, not 2F. The window's concat_elu is the one the whole value would have had:
    an elementwise function of the same values."""

    SOURCE_SHARE = 2

    def __init__(self, taps: ConvTaps, source: FeatureMap, scratch: "Scratch", extra_bias: Tensor | None = None):
        super().__init__(taps, source, extra_bias)
        self.scratch = scratch

    def read(self, windows: Tensor) -> Tensor:
        """(..., K) concat_elu of (..., rows, cols, F) windows, formed in one buffer: elu of [v, -v]."""
        f = windows.shape[-1]
        out = self.scratch.get(windows, 2 * f)                                   # (..., rows, cols, 2F)
        out[..., :f] = windows
        torch.neg(windows, out=out[..., f:])
        return F.elu_(out).view(*windows.shape[:-3], self.size)


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

    Caches its input (``x``) and its inner activation (``h``), which its convolutions read through
    concat_elu (:class:`ConcatEluConv`). The shortcut, nin(concat_elu(aux)), is a sum over the aux streams:
    the first stream (u) is taken a row at a time, the second (the up pass's ul, down pass only) a position at
    a time. It holds no reference to its stepper (which holds it): the stage position comes with each call, so
    no cycle keeps either alive.
    """

    def __init__(self, block: nn.Module, stepper: "CachedPixelCNNPP", size: tuple[int, int], cond: Condition | None):
        taps_in, taps_out = ConvTaps.of(block.conv_in), ConvTaps.of(block.conv_out)
        self.combine = block.combine
        self.x = stepper.feature_map(taps_in.in_channels // 2, [taps_in], size, rows=RING)
        self.h = stepper.feature_map(taps_out.in_channels // 2, [taps_out], size, rows=RING)
        self.conv_in = ConcatEluConv(taps_in, self.x, stepper.scratch)
        self.conv_out = ConcatEluConv(taps_out, self.h, stepper.scratch, class_bias(block.cond_bias, cond, size))
        streams = 0 if block.aux is None else block.aux.in_channels // taps_in.in_channels
        self.shortcuts = shortcut_weights(block.aux, streams) if streams else []
        self.nin_bias = block.aux.bias.detach() if streams else None            # (F,)
        self.in_bias = taps_in.bias if not streams else taps_in.bias + self.nin_bias   # conv_in's and nin's
        self.row_bias: Tensor | None = None                                    # (W, B, F), ul stream
        self.x_row: Tensor | None = None                                       # (B, W, F) views, ul stream
        self.h_row: Tensor | None = None
        self.in_windows: Tensor | None = None                                  # (W, B, rows, cols, 2F) views
        self.out_windows: Tensor | None = None
        self.signs = stepper.signs                                              # (F, 2F), one for every block

    def row(self, x: Row | None, i: int, skip: Row | None = None) -> Row | None:
        """The (W, B, F) output row i from the input row x and the shortcut's (W, B, F); None where no row starts."""
        if x is None:
            return None
        shortcut = None if skip is None else row_product(self.nin_bias, skip.elu(), self.shortcuts[0])

        # The caches take the values themselves; the convolutions apply concat_elu as they read them.
        def conv_in(v: Tensor) -> Tensor:
            self.x.write_row(i, v)
            return self.conv_in.row(i)                                          # (W, B, F), conv_in's bias

        def conv_out(v: Tensor) -> Tensor:
            self.h.write_row(i, v)
            return self.conv_out.row(i)

        return Row(self.combine(x.value, x.value, conv_in, conv_out, shortcut, dim=-1, elu=read_later))

    def prepare_row(self, u_elu: Tensor, i: int) -> None:
        """Ul row i: the first convolution's bias at each position (its and nin's biases plus nin of the
        u row's concat_elu ``u_elu`` (W, B, 2F)), and the row's views of the caches this block writes."""
        self.row_bias = row_product(self.in_bias, u_elu, self.shortcuts[0])
        self.x_row, self.h_row = self.x.row(i), self.h.row(i)                 # (B, W, F) each
        self.in_windows, self.out_windows = self.conv_in.views[i], self.conv_out.views[i]

    def at(self, x: Activation, u: Row | None, i: int, j: int, skip: Activation | None = None) -> Activation:
        """The (B, F) output at the stage's position (i, j) from the input x (B, F), the u row (W, B, F) where one
        starts (it prepares the ul row) and the up pass's ul there (down pass)."""
        if u is not None:
            self.prepare_row(u.elu(), i)
        bias = self.row_bias[j]
        if skip is not None:
            bias = torch.addmm(bias, skip.elu(), self.shortcuts[1])
        x_elu = x.signed_into(self.x_row[:, j], self.signs)

        # The convolutions read their windows of the caches, where signed_into writes their inputs.
        def conv_in(v: Tensor) -> Tensor:
            return window_product(self.conv_in, self.in_windows, i, j, bias)

        def conv_out(v: Tensor) -> Tensor:
            return window_product(self.conv_out, self.out_windows, i, j)

        def elu(h: Tensor, dim: int) -> Tensor:
            return signed_into(h, self.h_row[:, j], self.signs)

        return Activation(self.combine(x.value, x_elu, conv_in, conv_out, dim=-1, elu=elu))   # (B, F)


class CachedStreamBlock:
    """A StreamBlock at one pixel: the u row where one starts, then the ul position."""

    def __init__(self, block: nn.Module, stepper: "CachedPixelCNNPP", size: tuple[int, int], cond: Condition | None):
        self.u = CachedGatedResnet(block.u, stepper, size, cond)
        self.ul = CachedGatedResnet(block.ul, stepper, size, cond)

    def __call__(self, u: Row | None, ul: Activation, position: tuple[int, int], u_skip: Row | None = None,
                 ul_skip: Activation | None = None) -> tuple[Row | None, Activation]:
        """As StreamBlock's forward at the stage's ``position``: u from itself and u_skip, then ul from itself,
        the new u and ul_skip."""
        i, j = position
        u = self.u.row(u, i, u_skip)
        return u, self.ul.at(ul, u, i, j, ul_skip)


def read_later(h: Tensor, dim: int) -> Tensor:
    """The ``elu`` of a block's row: none yet, the convolution reading the cache applies it (:class:`ConcatEluConv`)."""
    return h


def window_product(conv: CachedConv, windows: Tensor, i: int, j: int, bias: Tensor | None = None) -> Tensor:
    """``conv.at(i, j, bias)``, (B, out), from row i's windows ``conv.views[i]`` picked out once per row."""
    bias = conv.bias if bias is None else bias
    if conv.position_bias is not None:
        bias = bias + conv.position_bias.at(i, j)
    return torch.addmm(bias, conv.read(windows[j]), conv.weight)


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
        self.signs = signed_identity(model.config.filters, self.like)           # (F, 2F): x @ it is [x, -x]
        self.scratch = Scratch()
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

    def up_stage(self, s: int, u: Row | None, ul: Activation, u_list: list, ul_list: list) -> tuple:
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

    def first(self) -> tuple[Row | None, Activation]:
        """The first layer: u's row where the pixel starts one, ul at the pixel."""
        h, w = self.pixel
        u = Row(self.input_layer.start_row(h)) if w == 0 else None
        return u, Activation(self.input_layer.at(h, w))

    def downsample(self, s: int) -> tuple[Row | None, Activation]:
        """Stage s's input: the stride-2 convolutions of stage s - 1's kept outputs (this pixel's among them)."""
        (i, j), (down_u, down_ul) = self.stage_position(s), self.downsample_layers[s]
        u = Row(down_u.row(i)) if self.pixel[1] == 0 else None
        return u, Activation(down_ul.at(i, j))

    def upsample(self, s: int) -> tuple[Row | None, Activation]:
        """Stage s's down-pass input: the transposed convolutions of stage s + 1's kept down-pass outputs,
        computed at this pixel or an earlier one."""
        (i, j), (up_u, up_ul) = self.stage_position(s), self.upsample_layers[s]
        u = Row(up_u.row(i)) if self.pixel[1] == 0 else None
        return u, Activation(up_ul.at(i, j))

    def keep(self, s: int, u: Row | None, ul: Activation, down: bool = False) -> None:
        """Stage s's last outputs of a pass into the caches that the other stage's resampling layers read."""
        tops = self.down_tops[s] if down else self.up_tops[s]
        if tops is not None:
            i, j = self.stage_position(s)
            if u is not None:
                tops[0].write_row(i, u.value)
            tops[1].at(i, j).copy_(ul.value)
