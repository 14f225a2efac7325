"""Locally masked convolutions: a convolution whose mask depends on the output position.

Jain, Abbeel & Pathak 2020, "Locally Masked Convolution for Autoregressive Models" (UAI),
section 3 and algorithm 1: unfold the input into patches (B, C k k, H W), multiply each
position's patch by that position's mask, and contract with the weight. For a generation order,
the mask of output position p keeps the kernel taps whose input pixel is visited before p
(and the centre tap, where the usual colour-group rule applies: mask A in the first layer, B after),
so every layer's output at p depends only on pixels visited before p and on the channels of p
the group rule allows. Padding is zero and taps outside the image are masked too.

The class holds both forms of the layer: ``forward`` over whole images (training, likelihoods,
naive sampling) and :class:`LocalCachedConv` one output position at a time over a cache, for
incremental sampling in any order. Both use ``weight * mask`` and the same tap masks.

``forward`` does not unfold the whole input (the unfold copy, its mask product and a batched
matrix product cost 2-3x a plain convolution): it splits the taps by their masks
(:func:`split_taps`). A tap kept at every position where it falls inside the image (in an S-curve
or raster order: the row above and the centre) goes into one ordinary convolution, its kernel
cropped to those taps; only the taps kept at some positions and not at others (an S-curve's left
and right neighbours) are unfolded, masked and contracted by a 1x1 convolution. This is the same
sum, term by term: a tap outside the image reads zero padding whatever its mask says.
``forward_reference`` keeps the paper's unfold form, which the tests compare against.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from pixelcnn.models.layers import centre_mask, channels_last, conv2d
from pixelcnn.models.replaceable import replaceable
from pixelcnn.models.incremental import ConvTaps, FeatureMap, Pad, PositionBias
from pixelcnn.models.lmconv.orders import ranks

# Tap splits a layer remembers, one per tap-masks tensor it was called with (the latest kept).
SPLIT_MEMO = 64
# Below this many input elements (B C H W) ``forward`` takes the unfold form: there its three operations cost less
# than the split form's dozen (equal at 1.2e4 to 1.6e4 elements on one core, float32 and float64, with or without
# gradients; at 6e3 the unfold form takes half the time, at 5e4 the split form 0.56-0.78 of it).
SMALL_INPUT = 2**13


def tap_sources(height: int, width: int, kernel: int, dilation: int,
                device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """(k k, H W) each: whether tap t of output position p reads a pixel inside the image, and
    which (its index h W + w, clamped into the image where it is outside). Taps in row-major order."""
    hs, ws = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    offsets = (torch.arange(kernel, device=device) - kernel // 2) * dilation              # (k,)
    nh = hs.flatten() + offsets[:, None].expand(kernel, kernel).reshape(-1, 1)           # (k k, H W): tap i k + j
    nw = ws.flatten() + offsets[None, :].expand(kernel, kernel).reshape(-1, 1)
    inside = (nh >= 0) & (nh < height) & (nw >= 0) & (nw < width)
    return inside, nh.clamp(0, height - 1) * width + nw.clamp(0, width - 1)


def tap_masks(order: Tensor, height: int, width: int, kernel: int, dilation: int) -> Tensor:
    """(k k, H W) 0/1: tap t of output position p reads a pixel inside the image visited before p.

    The centre tap is always 1 (its channels are masked by the colour-group rule instead). Taps
    are in the row-major order of the kernel, as ``F.unfold`` lays them out.
    """
    rank = ranks(order)                                                                   # (H W,)
    inside, source = tap_sources(height, width, kernel, dilation, order.device)
    masks = inside & (rank[source] < rank)
    masks[kernel * kernel // 2] = True                                                    # the centre tap
    return masks.float()


@dataclass(frozen=True)
class TapSplit:
    """The taps of one set of tap masks, split by how their masks vary with the output position.

    ``kept`` (k, k) 0/1: the taps kept wherever they read inside the image, one convolution's,
    spanning kernel rows top..bottom and columns left..right (``box``; None where there is none).
    ``varying`` the taps kept at some such positions and not at others (or with other mask values),
    in row-major order, and ``masks`` (V, 1, H, W) their masks. A tap in neither reads only zeros.
    """

    kept: Tensor
    box: tuple[int, int, int, int] | None
    varying: tuple[int, ...]
    masks: Tensor


def split_taps(masks: Tensor, height: int, width: int, kernel: int, dilation: int) -> TapSplit:
    """Split tap masks (k k, H W): a tap's mask where it reads the zero padding does not matter."""
    outside = ~tap_sources(height, width, kernel, dilation, masks.device)[0]
    never = ((masks == 0) | outside).all(1)                                               # (k k,)
    always = ((masks == 1) | outside).all(1) & ~never
    varying = (~always & ~never).nonzero().flatten()
    kept = always.view(kernel, kernel)
    rows, cols = kept.any(1).nonzero().flatten().tolist(), kept.any(0).nonzero().flatten().tolist()
    box = (rows[0], rows[-1], cols[0], cols[-1]) if rows else None
    return TapSplit(kept.to(masks.dtype), box, tuple(varying.tolist()), masks[varying].view(-1, 1, height, width))


class LocallyMaskedConv2d(nn.Module):
    """A k x k 'same' convolution, dilated, with one mask per output position (given on each call)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, in_groups: Tensor, out_groups: Tensor,
                 mask_type: str, dilation: int = 1):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"expected a positive odd kernel size, got {kernel}")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, dilation=dilation)   # holds weight and bias
        self.kernel, self.dilation = kernel, dilation
        mask = torch.ones(out_channels, in_channels, kernel, kernel)
        mask[:, :, kernel // 2, kernel // 2] = centre_mask(in_groups, out_groups, mask_type)
        self.register_buffer("mask", mask, persistent=False)                 # colour groups at the centre tap
        self._splits: dict[int, tuple[weakref.ref, TapSplit]] = {}           # id(masks) -> (masks, its split)

    @property
    def key(self) -> tuple[int, int]:
        """(kernel, dilation): the layers sharing it share their tap masks."""
        return self.kernel, self.dilation

    def forward(self, x: Tensor, masks: Tensor) -> Tensor:
        """(B, in, H, W) and tap masks (k k, H W) -> (B, out, H, W): the kept taps' convolution plus
        the varying taps' masked patches, contracted by a 1x1 convolution.

        It is :meth:`forward_reference` where :meth:`takes_split_form` says no, and for masks that keep no
        tap everywhere (tap masks keep the centre).
        """
        if not self.takes_split_form(x):
            return self.forward_reference(x, masks)
        split = self.split(masks, *x.shape[2:])
        if split.box is None:
            return self.forward_reference(x, masks)
        weight = self.conv.weight * self.mask                               # (out, in, k, k)
        out = self._kept(x, weight, split)                                  # (B, out, H, W)
        return out + self._varying(x, weight, split) if split.varying else out

    @replaceable
    def takes_split_form(self, x: Tensor) -> bool:
        """Whether ``forward`` splits the taps for ``x``: where it pays, on inputs of at least ``SMALL_INPUT`` elements.
        The compressor replaces it (``coding/arithmetic.py``): the files that earlier releases' whole-network
        stepper wrote were coded with the reference form's operations (in exact arithmetic each operand's
        rounding follows them), and must decode bit for bit."""
        return x.numel() >= SMALL_INPUT

    def forward_reference(self, x: Tensor, masks: Tensor) -> Tensor:
        """``forward`` as the paper computes it: unfold every tap, mask each position's patch, contract."""
        b, cin, h, w = x.shape
        kk = self.kernel * self.kernel
        pad = self.dilation * (self.kernel // 2)
        patches = F.unfold(x, self.kernel, dilation=self.dilation, padding=pad)   # (B, in k k, H W)
        patches = patches.view(b, cin, kk, h * w).mul_(masks).view(b, cin * kk, h * w)   # unfold keeps no copy: in place
        weight = (self.conv.weight * self.mask).flatten(1)                  # (out, in k k)
        out = torch.matmul(weight, patches) + self.conv.bias[:, None]       # (B, out, H W)
        return out.view(b, -1, h, w)

    def split(self, masks: Tensor, height: int, width: int) -> TapSplit:
        """:func:`split_taps` of ``masks``, remembered while that tensor lives (tap masks are not edited in place)."""
        hit = self._splits.get(id(masks))
        if hit is not None and hit[0]() is masks:
            return hit[1]
        split = split_taps(masks, height, width, self.kernel, self.dilation)
        live = [(key, entry) for key, entry in list(self._splits.items()) if entry[0]() is not None]
        self._splits = dict(live[-(SPLIT_MEMO - 1):] + [(id(masks), (weakref.ref(masks), split))])   # one assignment
        return split

    def _kept(self, x: Tensor, weight: Tensor, split: TapSplit) -> Tensor:
        """(B, out, H, W): the kept taps, a convolution with the kernel cropped to them (and the bias)."""
        top, bottom, left, right = split.box
        c, d = self.kernel // 2, self.dilation
        kernel = _oneDNN_layout((weight * split.kept)[:, :, top:bottom + 1, left:right + 1])
        pad = ((c - left) * d, (right - c) * d, (c - top) * d, (bottom - c) * d)        # F.pad's order; < 0 crops
        if pad[0] == pad[1] and pad[2] == pad[3]:
            return conv2d(x, kernel, self.conv.bias, padding=(pad[2], pad[0]), dilation=(d, d))
        return conv2d(F.pad(x, pad), kernel, self.conv.bias, dilation=(d, d))

    def _varying(self, x: Tensor, weight: Tensor, split: TapSplit) -> Tensor:
        """(B, out, H, W): the varying taps' masked windows (B, V in, H, W), contracted by a 1x1 convolution."""
        k, d, taps = self.kernel, self.dilation, list(split.varying)
        corners = tuple(((t // k) * d, (t % k) * d) for t in taps)           # each tap's window in the padded input
        patches = _MaskedWindows.apply(x, split.masks, corners, d * (k // 2))
        kernel = weight.flatten(2)[:, :, taps].transpose(1, 2).reshape(len(weight), len(taps) * x.shape[1], 1, 1)
        return conv2d(patches, _oneDNN_layout(kernel), None)

    def taps(self) -> ConvTaps:
        """The masked weight as the (K, out) matrix of a cached window, K in (row, column, channel) order."""
        pad = self.dilation * (self.kernel // 2)
        used = torch.ones(self.kernel, self.kernel, dtype=torch.bool, device=self.mask.device)
        weight = (self.conv.weight * self.mask).detach()
        return ConvTaps(weight, self.conv.bias.detach(), Pad(pad, pad, pad, pad), (self.dilation,) * 2, (1, 1), used)


def reference_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose locally masked convolutions compute :meth:`LocallyMaskedConv2d.forward_reference`
    (the paper's unfold form): the form the faster one is compared with, in the tests and the benchmarks."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, LocallyMaskedConv2d):
            module.forward = module.forward_reference
    return model


def _oneDNN_layout(kernel: Tensor) -> Tensor:
    """A kernel channels-last on the CPU, so oneDNN computes in NHWC (as :class:`pixelcnn.models.layers.MaskedConv2d` does)."""
    return channels_last(kernel) if kernel.device.type == "cpu" else kernel


class _MaskedWindows(torch.autograd.Function):
    """(B, C, H, W) -> (B, V C, H, W): window v of the zero-padded input, times mask v (V, 1, H, W).

    Autograd over slices of a padded copy costs 2-3x this (each slice's backward fills a padded
    map of zeros of its own); here the backward adds every window's gradient into one.
    """

    @staticmethod
    def forward(ctx, x: Tensor, masks: Tensor, corners: tuple[tuple[int, int], ...], pad: int) -> Tensor:
        b, c, h, w = x.shape
        padded = F.pad(x, (pad, pad, pad, pad))
        out = torch.empty((b, len(corners) * c, h, w), dtype=x.dtype, device=x.device, memory_format=_layout(x))
        for v, (top, left) in enumerate(corners):
            torch.mul(padded[:, :, top:top + h, left:left + w], masks[v], out=out[:, v * c:(v + 1) * c])
        ctx.save_for_backward(masks)
        ctx.geometry = corners, pad, x.shape, _layout(x)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        masks, = ctx.saved_tensors
        corners, pad, (b, c, h, w), layout = ctx.geometry
        padded = torch.empty((b, c, h + 2 * pad, w + 2 * pad), dtype=grad.dtype, device=grad.device,
                             memory_format=layout).zero_()
        for v, (top, left) in enumerate(corners):
            padded[:, :, top:top + h, left:left + w].addcmul_(grad[:, v * c:(v + 1) * c], masks[v])
        return padded[:, :, pad:pad + h, pad:pad + w], None, None, None


def _layout(x: Tensor) -> torch.memory_format:
    """The memory format of a map: the windows and their gradient keep the input's."""
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        else torch.contiguous_format


class LocalCachedConv:
    """A :class:`LocallyMaskedConv2d` at one output position of a cached (channels-last) input."""

    def __init__(self, taps: ConvTaps, source: FeatureMap, masks: Tensor, extra_bias: Tensor | PositionBias | None):
        k = taps.rows
        self.weight, self.batch, self.size = taps.weight, source.buf.shape[0], taps.size   # (K, out)
        self.views = taps.windows(source)                                   # (H, W, B, k, k, C)
        self.masks = masks.t().reshape(source.height, source.width, k, k, 1).to(taps.weight.dtype)
        self.position_bias = extra_bias if isinstance(extra_bias, PositionBias) else None
        self.bias = taps.bias if extra_bias is None or self.position_bias is not None else taps.bias + extra_bias

    def at(self, h: int, w: int) -> Tensor:
        """(B, out) output at (h, w), from the cached inputs its mask keeps."""
        window = (self.views[h, w] * self.masks[h, w]).reshape(self.batch, self.size)   # (B, K)
        bias = self.bias if self.position_bias is None else self.bias + self.position_bias.at(h, w)
        return torch.addmm(bias, window, self.weight)
