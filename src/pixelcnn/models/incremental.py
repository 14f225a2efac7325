"""Cached incremental evaluation of convolutional autoregressive networks, for fast sampling.

Ramachandran, Paine, Khorrami, Babaeizadeh, Chang, Zhang, Hasegawa-Johnson, Campbell & Huang
2017, "Fast Generation for Convolutional Autoregressive Models" (arXiv:1704.06001): keep every
layer's activations in a cache and, when a new value is set, compute only the outputs whose
receptive field it enters.

Here the caches fill lazily, in the sampling order. When the loop asks for the distribution of
a sub-pixel of pixel (h, w), the stepper computes the *column* of activations at (h, w), layer
after layer: each output comes from a window of the layer's cached input (:class:`CachedConv`)
and is written into the cache that the next layer reads. A causal layer reads its input at
(h, w) and before it in raster order only, so everything it reads is already final. A layer
whose outputs may see a whole row (the Gated PixelCNN's vertical stack) is computed one row at
a time once that row is complete (:meth:`CachedConv.row`). A new colour channel changes only
later colour groups of the same pixel, so a masked family recomputes that pixel's column at
each channel; a pixel-level network (PixelCNN++) computes it once per pixel.

Exactness: each output is computed with the same masked weights as the full network, restricted
to the rectangle of kernel taps the mask can keep, and reads the same zero padding. The sums are
the same, in another order, so the cached path agrees with the full network to float rounding,
amplified by no more than the network amplifies its own rounding (``pixelcnn_pp/cached.py``).

Speed: caches are channels-last, (B, top + H + bottom, left + W + right, C), so that a window of
one row is one run of memory per image, and the windows of every output position are built once
as a strided view (:meth:`ConvTaps.windows`). A step of one layer is then an index, a copy of the
window and one matrix product; nothing is concatenated or allocated beyond the small outputs.
A stepper whose buffers are batch last (PixelRNN's, whose steps are many small products) stores its
caches batch last behind the same view (``FeatureMap(batch_last=True)``) and evaluates them with
:class:`BatchLastConv`, whose windows are then (K, B) blocks read in place.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import torch
from torch import Tensor, nn

from pixelcnn.models.layers import Condition, ConditionBias, CroppedConvTranspose2d, MaskedConv2d, PrePaddedConv2d
from pixelcnn.models.order import Order
from pixelcnn.models.stepper import OrderedStepper


class Pad(NamedTuple):
    """Zero padding of a feature map on each side, in pixels."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    @staticmethod
    def union(pads) -> "Pad":
        """The smallest padding that contains every one of ``pads``."""
        pads = list(pads)
        return Pad(*(max((p[i] for p in pads), default=0) for i in range(4)))


class FeatureMap:
    """A zero-padded, channels-last cache of one activation: (B, top + H + bottom, left + W + right, C).

    ``batch_last`` stores it as (top + H + bottom, left + W + right, C, B) behind the same (B, ...) view,
    for a stepper whose products are batch last (:class:`BatchLastConv`).

    ``rows`` keeps only the last ``rows`` rows, as a ring: (B, rows, left + W + right, C), the current
    row in the last slot, the one before it in the slot before, zeros above row 0. The first access to
    row h + 1 (:meth:`at`, :meth:`row`, :meth:`write_row`) moves every row up one slot and drops the
    oldest; the new row's slot holds the old values until they are written. A reader's window then sits
    at the same slots for every output row (:meth:`ConvTaps.windows`), which holds when it reads the
    rows up to the current one: the schedule of a stepper that writes a row, or every position of it in
    raster order, before its readers need it, and needs no row more than ``rows - 1`` above it.
    """

    def __init__(self, batch: int, height: int, width: int, channels: int, pad: Pad, like: Tensor,
                 batch_last: bool = False, rows: int | None = None):
        if rows is not None:
            if rows < 1 or pad.bottom:
                raise ValueError(f"a ring of rows keeps at least one row and has no padding below, got {rows} rows "
                                 f"and {pad}")
            pad = Pad(rows - 1, 0, pad.left, pad.right)
        self.height, self.width, self.pad, self.ring = height, width, pad, rows
        self.current = -1                                                     # a ring's newest row
        size = (pad.top + height + pad.bottom if rows is None else rows, pad.left + width + pad.right, channels)
        self.buf = like.new_zeros(*size, batch).permute(3, 0, 1, 2) if batch_last else like.new_zeros(batch, *size)

    def slot(self, h: int) -> int:
        """The buffer row of image row h; a ring moves on to h if h is the row after its newest."""
        if self.ring is None:
            return self.pad.top + h
        if h == self.current + 1:
            for k in range(self.ring - 1):
                self.buf[:, k].copy_(self.buf[:, k + 1])
            self.current = h
        slot = self.ring - 1 - (self.current - h)
        if not 0 <= slot < self.ring or h >= self.height:
            raise ValueError(f"row {h} is not kept: the ring holds rows {self.current - self.ring + 1}..{self.current}")
        return slot

    def at(self, h: int, w: int) -> Tensor:
        """(B, C) view of position (h, w)."""
        row = self.pad.top + h if self.ring is None else self.slot(h)      # the steppers' hot path: no call
        return self.buf[:, row, self.pad.left + w]

    def row(self, h: int) -> Tensor:
        """(B, W, C) view of row h."""
        return self.buf[:, self.slot(h), self.pad.left : self.pad.left + self.width]

    def interior(self) -> Tensor:
        """(B, H, W, C) view of the unpadded map (not of a ring, which holds some rows only)."""
        if self.ring is not None:
            raise ValueError("a ring of rows has no whole interior")
        top, left = self.pad.top, self.pad.left
        return self.buf[:, top : top + self.height, left : left + self.width]

    def write_row(self, h: int, values: Tensor) -> None:
        """Store row h from (W, B, C) values (the layout :meth:`CachedConv.row` returns)."""
        self.row(h).copy_(values.transpose(0, 1))


class ConvTaps:
    """The kernel taps of a 2-D convolution that its mask can keep, as one (K, out) matrix.

    Output (h, w) reads the input at rows ``h * stride + dy + i * dilation`` (i < rows) and
    columns ``w * stride + dx + j * dilation`` (j < cols), channels last: the window flattens
    in (row, column, channel) order, matching ``weight``'s K = rows * cols * in rows.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, padding: Pad, dilation: tuple[int, int],
                 stride: tuple[int, int], used: Tensor):
        out_ch, in_ch, kh, kw = weight.shape
        rows = used.any(1).nonzero().flatten().tolist() or [0]
        cols = used.any(0).nonzero().flatten().tolist() or [0]
        empty = not bool(used.any())
        r0, c0 = rows[0], cols[0]
        self.rows, self.cols = (0, 0) if empty else (rows[-1] - r0 + 1, cols[-1] - c0 + 1)
        kept = weight[:, :, r0 : r0 + self.rows, c0 : c0 + self.cols]            # (out, in, rows, cols)
        self.weight = kept.permute(2, 3, 1, 0).reshape(-1, out_ch).contiguous()   # (K, out)
        self.bias = bias if bias is not None else weight.new_zeros(out_ch)
        self.in_channels, self.out_channels = in_ch, out_ch
        self.size = self.rows * self.cols * in_ch                                 # K
        self.kernel, self.padding, self.dilation, self.stride = (kh, kw), padding, dilation, stride
        self.dy = r0 * dilation[0] - padding.top
        self.dx = c0 * dilation[1] - padding.left

    @classmethod
    def of(cls, conv: nn.Conv2d, used: Tensor | None = None) -> "ConvTaps":
        """The taps of a :class:`MaskedConv2d` (weight * mask), a plain zero-padded ``nn.Conv2d``, or a
        PixelCNN++ shifted convolution (which zero-pads its input by ``pad`` before an unpadded convolution).
        ``used`` (kh, kw) bool keeps only those kernel taps (one part of a layer computed in parts);
        by default, every tap the mask keeps."""
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"expected a zero-padded, ungrouped convolution with explicit padding, got {conv}")
        weight = conv.weight.detach()
        bias = None if conv.bias is None else conv.bias.detach()
        if isinstance(conv, MaskedConv2d):
            left, right, top, bottom = conv.pad
            used = conv.mask.ne(0).any(0).any(0) if used is None else used      # (kh, kw)
            return cls(conv.masked_weight().detach(), bias, Pad(top, bottom, left, right), conv.dilation, conv.stride, used)
        ph, pw = conv.padding
        used = torch.ones(weight.shape[-2:], dtype=torch.bool, device=weight.device) if used is None else used
        if isinstance(conv, PrePaddedConv2d):
            left, right, top, bottom = conv.pad
            pad = Pad(top + ph, bottom + ph, left + pw, right + pw)
            return cls(weight, bias, pad, conv.dilation, conv.stride, used)
        return cls(weight, bias, Pad(ph, ph, pw, pw), conv.dilation, conv.stride, used)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Output (H, W) for an input of (height, width), as ``F.conv2d`` computes it."""
        p, (kh, kw), (dh, dw), (sh, sw) = self.padding, self.kernel, self.dilation, self.stride
        return ((height + p.top + p.bottom - dh * (kh - 1) - 1) // sh + 1,
                (width + p.left + p.right - dw * (kw - 1) - 1) // sw + 1)

    def reach(self, height: int, width: int) -> Pad:
        """The zero padding an input map of (height, width) needs for every window to fit."""
        ho, wo = self.output_size(height, width)
        last_row = (ho - 1) * self.stride[0] + self.dy + max(self.rows - 1, 0) * self.dilation[0]
        last_col = (wo - 1) * self.stride[1] + self.dx + max(self.cols - 1, 0) * self.dilation[1]
        return Pad(max(0, -self.dy), max(0, last_row - (height - 1)), max(0, -self.dx), max(0, last_col - (width - 1)))

    def windows(self, source: FeatureMap) -> Tensor:
        """(H_out, W_out, B, rows, cols, C) strided view: element [h, w] is output (h, w)'s window."""
        buf = source.buf
        sb, sy, sx, sc = buf.stride()
        ho, wo = self.output_size(source.height, source.width)
        y0, x0, row_step = source.pad.top + self.dy, source.pad.left + self.dx, self.stride[0] * sy
        if source.ring is not None:                             # every row's window ends on the ring's newest row
            y0, row_step = source.ring - (max(self.rows, 1) - 1) * self.dilation[0] - 1, 0
        if y0 < 0 or x0 < 0:
            raise ValueError(f"feature map padding {source.pad} is too small for taps reaching {self.reach(source.height, source.width)}")
        size = (ho, wo, buf.shape[0], self.rows, self.cols, buf.shape[3])
        stride = (row_step, self.stride[1] * sx, sb, self.dilation[0] * sy, self.dilation[1] * sx, sc)
        return buf.as_strided(size, stride, buf.storage_offset() + y0 * sy + x0 * sx)


class CachedConv:
    """A convolution evaluated at one output position, or one output row, of a cached input."""

    SOURCE_SHARE = 1
    """The taps' input channels per channel of the source (a subclass may widen what it reads)."""

    def __init__(self, taps: ConvTaps, source: FeatureMap, extra_bias: Tensor | PositionBias | None = None):
        if source.buf.shape[-1] * self.SOURCE_SHARE != taps.in_channels:
            raise ValueError(f"expected a feature map of {taps.in_channels // self.SOURCE_SHARE} channels, "
                             f"got {source.buf.shape[-1]}")
        self.taps = taps
        self.weight = taps.weight                                               # (K, out)
        self.position_bias = extra_bias if isinstance(extra_bias, PositionBias) else None
        constant = None if self.position_bias is not None else extra_bias
        self.bias = taps.bias if constant is None else taps.bias + constant    # (out,) or (B, out)
        self.batch, self.size = source.buf.shape[0], taps.size
        self.views = taps.windows(source)                                       # (Ho, Wo, B, rows, cols, C)

    def read(self, windows: Tensor) -> Tensor:
        """(..., K) inputs of the taps from (..., rows, cols, C) windows of the source, copied if strided."""
        return windows.reshape(*windows.shape[:-3], self.size)

    def at(self, h: int, w: int, bias: Tensor | None = None) -> Tensor:
        """(B, out) output at (h, w); ``bias`` replaces the stored one, e.g. a per-row bias."""
        window = self.read(self.views[h, w])                                    # (B, K)
        bias = self.bias if bias is None else bias
        if self.position_bias is not None:
            bias = bias + self.position_bias.at(h, w)
        return torch.addmm(bias, window, self.weight)

    def row(self, h: int) -> Tensor:
        """(W_out, B, out) outputs of row h (position-major, so that ``[w]`` is contiguous)."""
        window = self.read(self.views[h])                                       # (Wo, B, K)
        wo = window.shape[0]
        out = torch.mm(window.reshape(wo * self.batch, self.size), self.weight)  # (Wo * B, out)
        out = out.view(wo, self.batch, -1) + self.bias
        return out if self.position_bias is None else out + self.position_bias.row(h)


class PositionConv:
    """A convolution at one position over a cache of its own input, which it allocates: called with the input at
    (h, w), it writes it there and returns the window's product, (B, in) -> (B, out), ``extra_bias`` included
    (a layer whose input no other layer reads: PixelCNN's residual blocks, PixelSNAIL's gated layers)."""

    def __init__(self, conv: nn.Conv2d, stepper: "CachedStepper", extra_bias: Tensor | PositionBias | None = None):
        taps = ConvTaps.of(conv)
        self.source = stepper.feature_map(taps.in_channels, [taps])
        self.conv = CachedConv(taps, self.source, extra_bias)

    def __call__(self, x: Tensor, h: int, w: int) -> Tensor:
        self.source.at(h, w).copy_(x)
        return self.conv.at(h, w)


class BatchLastConv:
    """A convolution evaluated batch last: the taps and windows of :class:`CachedConv`, the product transposed.

    Outputs are (out, B) columns, from (out, K) @ (K, B). Over a batch-last :class:`FeatureMap` the
    window of one row of taps is one contiguous (K, B) block, read in place; a window of several rows
    is gathered. The caller passes the bias: the layer's plus its conditioning (:func:`column_bias`).
    """

    def __init__(self, taps: ConvTaps, source: FeatureMap):
        self.weight = taps.weight.t().contiguous()                              # (out, K)
        self.size, self.batch = taps.size, source.buf.shape[0]
        self.views = taps.windows(source).permute(0, 1, 3, 4, 5, 2)            # (Ho, Wo, rows, cols, C, B)

    def windows(self, h: int) -> list[Tensor]:
        """Row h's windows, one (K, B) matrix per output position."""
        return list(self.row_windows(h).unbind(0))

    def row_windows(self, h: int) -> Tensor:
        """(W_out, K, B): row h's windows, a view where each is contiguous, else a copy."""
        return self.views[h].reshape(self.views.shape[1], self.size, self.batch)

    def row(self, h: int, bias: Tensor, out: Tensor) -> Tensor:
        """Row h's outputs plus ``bias`` into ``out`` (W_out, out, B)."""
        return torch.add(torch.matmul(self.weight, self.row_windows(h)), bias, out=out)

    def at(self, window: Tensor, bias: Tensor, out: Tensor) -> Tensor:
        """The (out, B) output of one ``window`` (:meth:`windows`) plus ``bias`` (out, B), into ``out``."""
        return torch.addmm(bias, self.weight, window, out=out)


class TransposedTaps:
    """A transposed convolution, cropped, as one ordinary convolution per output phase: a gather, not a scatter.

    Output (r, c) of a stride-(sh, sw) transposed convolution cropped from (top, left) sums, over the
    kernel taps (ki, kj) with R - ki and C - kj multiples of the stride (R, C = r + top, c + left),
    ``weight[:, :, ki, kj]`` applied to input ((R - ki) / sh, (C - kj) / sw). For a given phase
    (R mod sh, C mod sw) those taps form a stride-1 convolution of the input, evaluated at
    (R // sh, C // sw) (the "sub-pixel" form of Shi et al. 2016), so one output reads one window of
    the cached coarse input: it can be computed as soon as that window is final.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, stride: tuple[int, int], in_size: tuple[int, int],
                 out_size: tuple[int, int], crop: tuple[int, int] = (0, 0)):
        in_ch, out_ch = weight.shape[:2]
        self.stride, self.crop, self.out_size = stride, crop, out_size
        self.in_channels, self.out_channels = in_ch, out_ch
        self.bias = bias if bias is not None else weight.new_zeros(out_ch)
        # Zero rows (columns) below (right of) the input for the last outputs' windows.
        extra = tuple(max(0, (crop[i] + out_size[i] - 1) // stride[i] + 1 - in_size[i]) for i in range(2))
        self.phases = [[self._phase(weight, (pr, pc), extra) for pc in range(stride[1])] for pr in range(stride[0])]

    def _phase(self, weight: Tensor, phase: tuple[int, int], extra: tuple[int, int]) -> ConvTaps:
        """The stride-1 convolution of outputs with (R mod sh, C mod sw) = ``phase``."""
        taps = [list(range(phase[i], weight.shape[2 + i], self.stride[i]))[::-1] for i in range(2)]   # largest first
        if not taps[0] or not taps[1]:                                          # no tap: the output is the bias
            empty = weight.new_zeros(self.out_channels, self.in_channels, 1, 1)
            unused = torch.zeros((1, 1), dtype=torch.bool, device=weight.device)
            return ConvTaps(empty, self.bias, Pad(0, extra[0], 0, extra[1]), (1, 1), (1, 1), unused)
        sub = weight[:, :, taps[0]][:, :, :, taps[1]].transpose(0, 1)           # (out, in, rows, cols)
        used = torch.ones(sub.shape[-2:], dtype=torch.bool, device=weight.device)
        pad = Pad(len(taps[0]) - 1, extra[0], len(taps[1]) - 1, extra[1])
        return ConvTaps(sub, self.bias, pad, (1, 1), (1, 1), used)

    @classmethod
    def of(cls, conv: nn.ConvTranspose2d, in_size: tuple[int, int],
           out_size: tuple[int, int] | None = None) -> "TransposedTaps":
        """The taps of an ``nn.ConvTranspose2d`` (its padding cropped) or of a PixelCNN++ upsampling layer,
        which crops its output to ``out_size`` (required for those) from (0, ``left``)."""
        if conv.groups != 1 or tuple(conv.dilation) != (1, 1) or conv.padding_mode != "zeros":
            raise ValueError(f"expected an ungrouped, undilated transposed convolution, got {conv}")
        kh, kw = conv.kernel_size
        (sh, sw), (ph, pw), (oh, ow) = conv.stride, conv.padding, conv.output_padding
        if out_size is None:
            out_size = ((in_size[0] - 1) * sh - 2 * ph + kh + oh, (in_size[1] - 1) * sw - 2 * pw + kw + ow)
        crop = (ph, pw + (conv.left if isinstance(conv, CroppedConvTranspose2d) else 0))
        bias = None if conv.bias is None else conv.bias.detach()
        return cls(conv.weight.detach(), bias, (sh, sw), in_size, out_size, crop)

    def reach(self, height: int, width: int) -> Pad:
        """The zero padding an input map of (height, width) needs for every phase's windows to fit."""
        return Pad.union(taps.reach(height, width) for row in self.phases for taps in row)


class CachedConvTranspose:
    """A transposed convolution evaluated at one output position, or one output row, of a cached input."""

    def __init__(self, taps: TransposedTaps, source: FeatureMap):
        self.taps = taps
        self.phases = [[CachedConv(phase, source) for phase in row] for row in taps.phases]
        self.batch = source.buf.shape[0]

    def at(self, h: int, w: int) -> Tensor:
        """(B, out) output at (h, w)."""
        (sh, sw), (top, left) = self.taps.stride, self.taps.crop
        r, c = h + top, w + left
        return self.phases[r % sh][c % sw].at(r // sh, c // sw)

    def row(self, h: int) -> Tensor:
        """(W_out, B, out) outputs of row h: each column phase's row, interleaved."""
        (sh, sw), (top, left), width = self.taps.stride, self.taps.crop, self.taps.out_size[1]
        r = h + top
        out = self.taps.bias.new_empty(width, self.batch, self.taps.out_channels)
        for pc, conv in enumerate(self.phases[r % sh]):
            first = (pc - left) % sw                                            # first output column of phase pc
            if first < width:
                count = len(range(first, width, sw))
                start = (first + left) // sw                                   # its input column
                out[first::sw] = conv.row(r // sh)[start : start + count]
        return out


class Pointwise:
    """A 1x1 convolution (masked or plain) applied to feature vectors: (N, in) -> (N, out)."""

    def __init__(self, conv: nn.Conv2d):
        taps = ConvTaps.of(conv)
        if taps.kernel != (1, 1) or taps.stride != (1, 1) or any(taps.padding):
            raise ValueError(f"expected an unpadded 1x1 convolution with stride 1, got {conv}")
        self.weight, self.bias = taps.weight, taps.bias                          # (in, out), (out,)

    def __call__(self, x: Tensor) -> Tensor:
        return torch.addmm(self.bias, x, self.weight)

    def rows(self, x: Tensor) -> Tensor:
        """(W, B, in) -> (W, B, out)."""
        return self(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], -1)


class PointwiseHead:
    """The masked families' OutputHead at one position: ReLU, [1x1, ReLU,] 1x1 -> (B, P)."""

    def __init__(self, head: nn.Module):
        self.hidden = None if head.hidden is None else Pointwise(head.hidden)
        self.out = Pointwise(head.out)

    def __call__(self, x: Tensor) -> Tensor:
        x = torch.relu(x)
        if self.hidden is not None:
            x = self.hidden(x).relu_()
        return self.out(x)


class PositionBias:
    """A per-position conditioning bias (B, n, H, W), read one position or one row at a time."""

    def __init__(self, value: Tensor):
        self.rows = value.detach().permute(2, 3, 0, 1).contiguous()             # (H, W, B, n)

    def at(self, h: int, w: int) -> Tensor:
        return self.rows[h, w]                                                  # (B, n)

    def row(self, h: int) -> Tensor:
        return self.rows[h]                                                     # (W, B, n)


def class_bias(module: ConditionBias, cond: Condition | None,
               size: tuple[int, int] | None = None) -> Tensor | PositionBias | None:
    """A :class:`ConditionBias` for one batch: None (unconditional), (B, n) for labels alone,
    or a :class:`PositionBias` when a conditioning image makes it depend on the position.
    ``size`` (h, w) is that of the layer's feature map where it is not the image's (PixelCNN++'s coarser stages)."""
    value = module(cond) if size is None else module(cond, size)
    if not isinstance(value, Tensor):
        return None
    return value.detach().flatten(1) if value.shape[-2:] == (1, 1) else PositionBias(value)


def bias_row(bias: Tensor | PositionBias, h: int) -> Tensor:
    """A conditioning bias broadcastable against row h's (W, B, n) features."""
    return bias.row(h) if isinstance(bias, PositionBias) else bias


def column_bias(bias: Tensor, extra: Tensor | PositionBias | None, h: int) -> Tensor:
    """A layer's bias (n,) plus its conditioning (:func:`class_bias`) at row h, batch last:
    (n, 1), (n, B) or (W, n, B), broadcastable against row h's (W, n, B) features."""
    if extra is None:
        return bias[:, None]
    return bias[:, None] + bias_row(extra, h).transpose(-1, -2)


class PixelStepper(OrderedStepper):
    """The cached steppers of the pixel-by-pixel families: the parameters of position p given the values written so far.

    Pixels are visited in a fixed order, ``order`` (raster by default; a family with another order,
    e.g. one per position, passes its own), and inside a pixel its colour channels in turn. A query
    ``log_probs(c, h, w)`` or a value ``set(c, h, w, v)`` for any pixel but the current one is refused
    with an error naming the pixel expected; a value may be set without asking its probabilities
    first (a coder copying known values). A subclass implements ``column(h, w) -> (B, P)``, the
    distribution parameters of pixel (h, w), computed from its caches and written into them, and
    ``write(c, h, w, values)``, which records a value in its caches. It may assume that every earlier
    pixel's column was computed with its final values: this class computes the column of a pixel
    whose values were set without asking before it moves on.
    """

    def __init__(self, model, x: Tensor, order: Order | None = None):
        super().__init__(x, order if order is not None else Order.raster(*x.shape[2:]))
        self.model = model
        self.distribution = model.distribution
        self.pixel_level = model.pixel_level_network
        self.params: Tensor | None = None                                        # (B, P) of the current pixel
        self.output: PositionBias | None = None

    def add_output(self, output: Tensor) -> None:
        """Add (B, P, H, W) to the parameters of every pixel: a completion model's term (``Condition.output``)."""
        self.output = PositionBias(output)

    @abc.abstractmethod
    def column(self, h: int, w: int) -> Tensor:
        """(B, P) distribution parameters of pixel (h, w) from the caches, its activations written into them."""

    @abc.abstractmethod
    def write(self, c: int, h: int, w: int, values: Tensor) -> None:
        """Record a value in the caches."""

    def log_probs(self, c: int, h: int, w: int) -> Tensor:
        """(B, L) log-probabilities of sub-pixel (c, h, w); the pixel's column is computed once per value set."""
        self.check_order(c, h, w)
        if self.params is None:
            self.params = self.pixel_params(h, w)
        return self.distribution.conditional(self.params, self.x[:, :, h, w], c)

    def pixel_params(self, h: int, w: int) -> Tensor:
        """(B, P): the column of pixel (h, w), plus the completion term where there is one."""
        column = self.column(h, w)
        return column if self.output is None else column + self.output.at(h, w)

    def set(self, c: int, h: int, w: int, values: Tensor) -> None:
        """Record the (B,) values of sub-pixel (c, h, w)."""
        self.check_order(c, h, w)
        self.x[:, c, h, w] = values
        self.write(c, h, w, values)
        if c == self.channels - 1:
            if self.params is None:
                self.column(h, w)            # later pixels read this pixel's activations: make them final
            self.position += 1
            self.params = None
        elif not self.pixel_level:
            self.params = None


class CachedStepper(PixelStepper):
    """A :class:`PixelStepper` over channels-last caches of every layer's input (``feature_map`` allocates one)."""

    def __init__(self, model, x: Tensor, input_readers: list[ConvTaps], ones_channel: bool = False,
                 batch_last: bool = False, order: Order | None = None):
        """``order``: as :class:`PixelStepper`'s (raster by default).
        ``ones_channel``: the network's input has one more channel after the image's, all ones inside
        the image and zero in the padding (PixelCNN++'s way to tell the border from black pixels).
        ``batch_last``: the caches are stored batch last (``FeatureMap``), for :class:`BatchLastConv`."""
        super().__init__(model, x, order)
        self.batch_last = batch_last
        self.like = next(model.parameters()).detach()                            # dtype and device of activations
        self.inputs = self.feature_map(self.channels + ones_channel, input_readers)   # the image, in [-1, 1]
        self.inputs.interior()[..., : self.channels].copy_(model.preprocess(x).permute(0, 2, 3, 1))
        if ones_channel:
            self.inputs.interior()[..., self.channels].fill_(1.0)
        levels = torch.arange(model.levels, device=self.like.device)
        self.preprocessed = model.preprocess(levels)                             # (L,): value -> network input

    def feature_map(self, channels: int, readers: list[ConvTaps], size: tuple[int, int] | None = None,
                    rows: int | None = None) -> FeatureMap:
        """A zeroed cache of ``channels`` maps of ``size`` (the image's by default), padded for ``readers``;
        ``rows``: a ring of that many rows (:class:`FeatureMap`)."""
        height, width = size or (self.height, self.width)
        pad = Pad.union(taps.reach(height, width) for taps in readers)
        return FeatureMap(self.batch, height, width, channels, pad, self.like, self.batch_last, rows)

    def write(self, c: int, h: int, w: int, values: Tensor) -> None:
        """The value into the input cache, as the network's preprocessing maps it."""
        self.inputs.at(h, w)[:, c].copy_(self.preprocessed.index_select(0, values))
