"""A plain Gated PixelCNN, written from the paper in the style of the common tutorials: the speed reference.

van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders", figure 2 and
equation (2). One file, no tricks: full 3x3 and 1x3 kernels multiplied by their masks in
``forward``, a vertical and a horizontal stack, tanh * sigmoid gates, a 1x1 head to 256 logits
and ``F.cross_entropy``. The vertical stack of the first layer leaves out the centre row, so the
vertical features at row h only ever see rows < h and join the horizontal stack unshifted (the
layout of the widely used UvA deep-learning tutorial on autoregressive image models).

Configuration of issue 15: 64 channels, a mask-A input layer and 7 gated layers with dilations
1, 2, 1, 4, 1, 2, 1, and a 1x1 head; 1x28x28 images with 256 levels. Used only by benchmarks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskedConv(nn.Conv2d):
    """A convolution whose full kernel is multiplied by a fixed mask on every call."""

    def __init__(self, c_in, c_out, kernel, mask, dilation=1):
        kh, kw = kernel
        super().__init__(c_in, c_out, kernel, padding=(dilation * (kh // 2), dilation * (kw // 2)), dilation=dilation)
        self.register_buffer("mask", mask[None, None].expand_as(self.weight).clone())

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding, dilation=self.dilation)


def vertical(c_in, c_out, centre_row: bool, dilation=1):
    """3x3 kernel seeing the rows above (and the centre row when ``centre_row``)."""
    mask = torch.ones(3, 3)
    mask[2 if centre_row else 1 :] = 0
    return MaskedConv(c_in, c_out, (3, 3), mask, dilation)


def horizontal(c_in, c_out, centre: bool, dilation=1):
    """1x3 kernel seeing the pixels to the left (and the centre pixel when ``centre``)."""
    mask = torch.tensor([[1.0, float(centre), 0.0]])
    return MaskedConv(c_in, c_out, (1, 3), mask, dilation)


class GatedLayer(nn.Module):
    def __init__(self, c_in, c, first=False, dilation=1):
        super().__init__()
        self.first = first
        self.v = vertical(c_in, 2 * c, centre_row=not first, dilation=dilation)
        self.h = horizontal(c_in, 2 * c, centre=not first, dilation=dilation)
        self.v_to_h = nn.Conv2d(2 * c, 2 * c, 1)
        self.h_out = nn.Conv2d(c, c, 1)

    def forward(self, v, h):
        v_feat = self.v(v)
        a, b = v_feat.chunk(2, dim=1)
        v_out = torch.tanh(a) * torch.sigmoid(b)
        h_feat = self.h(h) + self.v_to_h(v_feat)
        a, b = h_feat.chunk(2, dim=1)
        h_out = self.h_out(torch.tanh(a) * torch.sigmoid(b))
        return v_out, h_out if self.first else h + h_out


class PlainGatedPixelCNN(nn.Module):
    def __init__(self, channels=1, hidden=64, dilations=(1, 2, 1, 4, 1, 2, 1), levels=256):
        super().__init__()
        self.channels, self.levels = channels, levels
        self.layers = nn.ModuleList([GatedLayer(channels, hidden, first=True)]
                                    + [GatedLayer(hidden, hidden, dilation=d) for d in dilations])
        self.out = nn.Conv2d(hidden, channels * levels, 1)

    def forward(self, x):
        """Integer images (B, C, H, W) -> logits (B, levels, C, H, W)."""
        v = h = x.float() / (self.levels - 1) * 2 - 1
        for layer in self.layers:
            v, h = layer(v, h)
        out = self.out(F.elu(h))
        b, _, hh, ww = out.shape
        return out.view(b, self.channels, self.levels, hh, ww).transpose(1, 2)

    def nll(self, x):
        """(B,) negative log-likelihood of each image in nats."""
        return F.cross_entropy(self(x), x.long(), reduction="none").flatten(1).sum(1)

    def log_prob(self, x):
        return -self.nll(x)

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())

    def effective_parameters(self):
        """Weights not zeroed by a mask (a masked weight never changes the function)."""
        n = 0
        for m in self.modules():
            if isinstance(m, MaskedConv):
                n += int(m.mask.sum()) + m.bias.numel()
            elif isinstance(m, nn.Conv2d):
                n += sum(p.numel() for p in m.parameters())
        return n
