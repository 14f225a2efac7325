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
the same, in another order, so the cached path agrees with the full network to float rounding
(about 1e-7 relative in float32, 1e-16 in float64).

Speed: caches are channels-last, (B, top + H + bottom, left + W + right, C), so that a window of
one row is one run of memory per image, and the windows of every output position are built once
as a strided view (:meth:`ConvTaps.windows`). A step of one layer is then an index, a copy of the
window and one matrix product; nothing is concatenated or allocated beyond the small outputs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from pixelcnn.layers import ClassBias, MaskedConv2d, gate


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
    """A zero-padded, channels-last cache of one activation: (B, top + H + bottom, left + W + right, C)."""

    def __init__(self, batch: int, height: int, width: int, channels: int, pad: Pad, like: Tensor):
        self.height, self.width, self.pad = height, width, pad
        self.buf = like.new_zeros(batch, pad.top + height + pad.bottom, pad.left + width + pad.right, channels)

    def at(self, h: int, w: int) -> Tensor:
        """(B, C) view of position (h, w)."""
        return self.buf[:, self.pad.top + h, self.pad.left + w]

    def row(self, h: int) -> Tensor:
        """(B, W, C) view of row h."""
        return self.buf[:, self.pad.top + h, self.pad.left : self.pad.left + self.width]

    def interior(self) -> Tensor:
        """(B, H, W, C) view of the unpadded map."""
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
    def of(cls, conv: nn.Conv2d) -> "ConvTaps":
        """The taps of a :class:`MaskedConv2d` (weight * mask) or a plain zero-padded ``nn.Conv2d``."""
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"expected a zero-padded, ungrouped convolution with explicit padding, got {conv}")
        weight = conv.weight.detach()
        bias = None if conv.bias is None else conv.bias.detach()
        if isinstance(conv, MaskedConv2d):
            left, right, top, bottom = conv.pad
            used = conv.mask.ne(0).any(0).any(0)                               # (kh, kw)
            return cls(weight * conv.mask, bias, Pad(top, bottom, left, right), conv.dilation, conv.stride, used)
        ph, pw = conv.padding
        used = torch.ones(weight.shape[-2:], dtype=torch.bool, device=weight.device)
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
        y0, x0 = source.pad.top + self.dy, source.pad.left + self.dx
        if y0 < 0 or x0 < 0:
            raise ValueError(f"feature map padding {source.pad} is too small for taps reaching {self.reach(source.height, source.width)}")
        size = (ho, wo, buf.shape[0], self.rows, self.cols, buf.shape[3])
        stride = (self.stride[0] * sy, self.stride[1] * sx, sb, self.dilation[0] * sy, self.dilation[1] * sx, sc)
        return buf.as_strided(size, stride, buf.storage_offset() + y0 * sy + x0 * sx)


class CachedConv:
    """A convolution evaluated at one output position, or one output row, of a cached input."""

    def __init__(self, taps: ConvTaps, source: FeatureMap, extra_bias: Tensor | None = None):
        if source.buf.shape[-1] != taps.in_channels:
            raise ValueError(f"expected a feature map of {taps.in_channels} channels, got {source.buf.shape[-1]}")
        self.taps = taps
        self.weight = taps.weight                                               # (K, out)
        self.bias = taps.bias if extra_bias is None else taps.bias + extra_bias  # (out,) or (B, out)
        self.batch, self.size = source.buf.shape[0], taps.size
        self.views = taps.windows(source)                                       # (Ho, Wo, B, rows, cols, C)

    def at(self, h: int, w: int, bias: Tensor | None = None) -> Tensor:
        """(B, out) output at (h, w); ``bias`` replaces the stored one, e.g. a per-row bias."""
        window = self.views[h, w].reshape(self.batch, self.size)                 # (B, K), copied if strided
        return torch.addmm(self.bias if bias is None else bias, window, self.weight)

    def row(self, h: int) -> Tensor:
        """(W_out, B, out) outputs of row h (position-major, so that ``[w]`` is contiguous)."""
        window = self.views[h]                                                  # (Wo, B, rows, cols, C)
        wo = window.shape[0]
        out = torch.mm(window.reshape(wo * self.batch, self.size), self.weight)  # (Wo * B, out)
        return out.view(wo, self.batch, -1) + self.bias


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


def class_bias(module: ClassBias, labels: Tensor | None) -> Tensor | None:
    """(B, n) bias of a :class:`ClassBias` for ``labels``, or None for an unconditional model."""
    value = module(labels)
    return value.detach().flatten(1) if isinstance(value, Tensor) else None


def gate_rows(x: Tensor) -> Tensor:
    """:func:`layers.gate` over the last dimension of (..., 2n) features: -> (..., n)."""
    return gate(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], -1)


class CachedStepper:
    """The sampling loop's Stepper for a network evaluated one pixel column at a time.

    A subclass builds its caches (``self.feature_map`` allocates one) and implements
    ``column(h, w) -> (B, P)``: the distribution parameters of pixel (h, w), computed from the
    caches and written into them. It may assume that the columns of every earlier pixel were
    computed with their final values, which this class guarantees by enforcing the raster order.
    """

    def __init__(self, model, x: Tensor, input_readers: list[ConvTaps]):
        self.model = model
        self.distribution = model.distribution
        self.x = x.clone()                                                       # (B, C, H, W) integers
        self.batch, self.channels, self.height, self.width = x.shape
        self.like = next(model.parameters()).detach()                            # dtype and device of activations
        self.inputs = self.feature_map(self.channels, input_readers)             # the image, in [-1, 1]
        self.inputs.interior().copy_(model.preprocess(x).permute(0, 2, 3, 1))
        levels = torch.arange(model.levels, device=self.like.device)
        self.preprocessed = model.preprocess(levels)                             # (L,): value -> network input
        self.pixel_level = model.pixel_level_network
        self.params: Tensor | None = None                                        # (B, P) of the current pixel
        self.position = 0                                                         # raster index being filled

    def feature_map(self, channels: int, readers: list[ConvTaps], size: tuple[int, int] | None = None) -> FeatureMap:
        """A zeroed cache of ``channels`` maps of ``size`` (the image's by default), padded for ``readers``."""
        height, width = size or (self.height, self.width)
        pad = Pad.union(taps.reach(height, width) for taps in readers)
        return FeatureMap(self.batch, height, width, channels, pad, self.like)

    def column(self, h: int, w: int) -> Tensor:
        raise NotImplementedError

    def log_probs(self, c: int, h: int, w: int) -> Tensor:
        """(B, L) log-probabilities of sub-pixel (c, h, w); the pixel's column is computed once per value set."""
        self._check_order(c, h, w)
        if self.params is None:
            self.params = self.column(h, w)
        return self.distribution.conditional(self.params, self.x[:, :, h, w], c)

    def set(self, c: int, h: int, w: int, values: Tensor) -> None:
        """Record the (B,) values of sub-pixel (c, h, w) in the image and in the input cache."""
        self._check_order(c, h, w)
        self.x[:, c, h, w] = values
        self.inputs.at(h, w)[:, c].copy_(self.preprocessed.index_select(0, values))
        if c == self.channels - 1:
            if self.params is None:
                self.column(h, w)            # later pixels read this pixel's activations: make them final
            self.position += 1
            self.params = None
        elif not self.pixel_level:
            self.params = None

    def _check_order(self, c: int, h: int, w: int) -> None:
        if h * self.width + w != self.position:
            h0, w0 = divmod(self.position, self.width)
            raise ValueError(f"a cached stepper visits pixels in raster order: expected pixel ({h0}, {w0}), "
                             f"got channel {c} of pixel ({h}, {w})")
