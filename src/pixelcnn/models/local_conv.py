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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelcnn.layers import centre_mask
from pixelcnn.models.incremental import ConvTaps, FeatureMap, Pad, PositionBias
from pixelcnn.orders import ranks


def tap_masks(order: Tensor, height: int, width: int, kernel: int, dilation: int) -> Tensor:
    """(k k, H W) 0/1: tap t of output position p reads a pixel inside the image visited before p.

    The centre tap is always 1 (its channels are masked by the colour-group rule instead). Taps
    are in the row-major order of the kernel, as ``F.unfold`` lays them out.
    """
    rank = ranks(order).view(height, width)
    hs, ws = torch.meshgrid(torch.arange(height, device=order.device), torch.arange(width, device=order.device),
                            indexing="ij")
    c = kernel // 2
    masks = []
    for i in range(kernel):
        for j in range(kernel):
            nh, nw = hs + (i - c) * dilation, ws + (j - c) * dilation
            inside = (nh >= 0) & (nh < height) & (nw >= 0) & (nw < width)
            earlier = rank[nh.clamp(0, height - 1), nw.clamp(0, width - 1)] < rank
            masks.append(torch.ones_like(inside) if i == c and j == c else inside & earlier)
    return torch.stack(masks).flatten(1).float()                            # (k k, H W)


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

    @property
    def key(self) -> tuple[int, int]:
        """(kernel, dilation): the layers sharing it share their tap masks."""
        return self.kernel, self.dilation

    def forward(self, x: Tensor, masks: Tensor) -> Tensor:
        """(B, in, H, W) and tap masks (k k, H W) -> (B, out, H, W)."""
        b, cin, h, w = x.shape
        kk = self.kernel * self.kernel
        pad = self.dilation * (self.kernel // 2)
        patches = F.unfold(x, self.kernel, dilation=self.dilation, padding=pad)   # (B, in k k, H W)
        patches = patches.view(b, cin, kk, h * w).mul_(masks).view(b, cin * kk, h * w)   # unfold keeps no copy: in place
        weight = (self.conv.weight * self.mask).flatten(1)                  # (out, in k k)
        out = torch.matmul(weight, patches) + self.conv.bias[:, None]       # (B, out, H W)
        return out.view(b, -1, h, w)

    def taps(self) -> ConvTaps:
        """The masked weight as the (K, out) matrix of a cached window, K in (row, column, channel) order."""
        pad = self.dilation * (self.kernel // 2)
        used = torch.ones(self.kernel, self.kernel, dtype=torch.bool, device=self.mask.device)
        weight = (self.conv.weight * self.mask).detach()
        return ConvTaps(weight, self.conv.bias.detach(), Pad(pad, pad, pad, pad), (self.dilation,) * 2, (1, 1), used)


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
