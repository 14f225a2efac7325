"""Block floating point: linear maps and sums whose float64 results are exact, so the same on every machine.

An operand is rounded to integers times a power of two per block (:func:`to_blocks`), with
``bits_a + bits_b + ceil(log2 K) <= 52`` for a reduction over K terms: every product and every
partial sum is then an integer below 2**53 times a common power of two, which float64 holds
exactly, so any order of summation, kernel, thread count or device gives the same bits. Part of
the codec's exact arithmetic (:mod:`pixelcnn.coding.exact`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

PRODUCT_BITS = 52          # |sum of K products of two rounded operands| <= 2**52 < 2**53: exact in float64
ROUNDER = 1.5 * 2.0**52         # x + ROUNDER - ROUNDER is x rounded to an integer, for |x| < 2**51


class UnsupportedOperation(RuntimeError):
    """A torch function that the codec's exact arithmetic cannot make exact was called."""


def pow2(e: Tensor) -> Tensor:
    """2.0 ** e for integer tensor ``e`` in [-1022, 1023], built from its bits (no pow, no rounding)."""
    return ((e.long() + 1023) << 52).view(torch.float64)


def to_blocks(t: Tensor, dims: tuple[int, ...], bits: int) -> tuple[Tensor, Tensor]:
    """``t`` as integers times a power of two per block: (T, scale), t ~= T * scale, |T| <= 2**bits.

    A block is everything along ``dims`` (the dimensions a linear map sums over) for one index of
    the others; ``scale`` (float64, ``t``'s dims with ``dims`` of size 1) is 2**(e - bits) where
    2**e exceeds the block's largest magnitude. Every step is exact: max, frexp, scaling by a
    power of two, rounding to an integer.
    """
    t = t.double()
    if t.numel() == 0:                                       # nothing to round; reductions give exact zeros
        return t, torch.ones([1 if d in dims else n for d, n in enumerate(t.shape)], dtype=t.dtype, device=t.device)
    peak = t.abs().amax(dim=dims, keepdim=True) if t.dim() else t.abs()
    _, e = torch.frexp(peak)                                 # peak < 2**e (peak = 0: e = 0)
    up = pow2(e.clamp(min=-900, max=900).neg_().add_(bits))  # 2**(bits - e)
    # |t up| < 2**bits <= 2**51: adding and taking away 1.5 * 2**52 rounds it to the nearest integer
    # (ties to even), two exact-by-definition IEEE additions, much faster than torch.round here.
    return (t * up).add_(ROUNDER).sub_(ROUNDER), up.reciprocal_()   # the reciprocal of a power of two is exact


class CachedBlocks:
    """:func:`to_blocks` that remembers the result for a tensor seen twice unchanged (a weight).

    A tensor is recognised by identity and its in-place version counter while the cache holds a
    reference to it (so its id cannot be reused); the result is a function of its values alone, so a
    hit returns what a miss would compute. Tensors seen once (fresh activations) are forgotten in bulk.
    """

    def __init__(self, seen_limit: int = 512):
        self.seen: dict[int, tuple[Tensor, int]] = {}
        self.cache: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}
        self.seen_limit = seen_limit

    def __call__(self, t: Tensor, dims: tuple[int, ...], bits: int) -> tuple[Tensor, Tensor]:
        key = (id(t), t._version, dims, bits)
        hit = self.cache.get(key)
        if hit is not None and hit[0] is t:
            return hit[1], hit[2]
        blocks, scale = to_blocks(t, dims, bits)
        before = self.seen.get(id(t))
        if before is not None and before[0] is t and before[1] == t._version:
            self.cache[key] = (t, blocks, scale)
        elif len(self.seen) >= self.seen_limit:
            self.seen.clear()
        self.seen[id(t)] = (t, t._version)
        return blocks, scale


def split_bits(k: int) -> int:
    """Bits of each operand of a reduction over ``k`` products."""
    return (PRODUCT_BITS - max(1, k - 1).bit_length()) // 2


def exact_sum(t: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """The sum of ``t`` over ``dim`` after rounding each block to 52 - ceil(log2 n) bits: exact."""
    t = t.double()
    dims = tuple(range(t.dim())) if dim is None else ((dim,) if isinstance(dim, int) else tuple(dim))
    dims = tuple(d % max(t.dim(), 1) for d in dims)
    n = math.prod(t.shape[d] for d in dims) if t.dim() else 1
    blocks, scale = to_blocks(t, dims, PRODUCT_BITS - max(1, n - 1).bit_length())
    out = blocks.sum(dim=dims, keepdim=True) * scale
    return out if keepdim or not t.dim() else out.squeeze(dims) if dims else out


# ----- linear maps ----------------------------------------------------------------------------


def conv2d(x: Tensor, w: Tensor, bias=None, stride=1, padding=0, dilation=1, groups=1, *, blocks=to_blocks) -> Tensor:
    """F.conv2d, exact: x per image, w per output channel in block floating point."""
    bits = split_bits(w[0].numel())
    xdims = tuple(range(1, x.dim())) if x.dim() == 4 else tuple(range(x.dim()))
    xq, xs = blocks(x, xdims, bits)
    wq, ws = blocks(w, (1, 2, 3), bits)
    out = F.conv2d(xq, wq, None, stride, padding, dilation, groups)
    out = out * xs * (ws.view(1, -1, 1, 1) if x.dim() == 4 else ws.view(-1, 1, 1))
    return out if bias is None else out + bias.double().view(-1, 1, 1)


def conv_transpose2d(x: Tensor, w: Tensor, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, blocks=to_blocks) -> Tensor:
    """F.conv_transpose2d, exact: x per image, w as one block (an output sums at most Cin k k terms)."""
    bits = split_bits(w.shape[0] // groups * w.shape[2] * w.shape[3])
    xq, xs = blocks(x, tuple(range(1, x.dim())), bits)
    wq, ws = blocks(w, tuple(range(w.dim())), bits)
    out = F.conv_transpose2d(xq, wq, None, stride, padding, output_padding, groups, dilation) * xs * ws
    return out if bias is None else out + bias.double().view(-1, 1, 1)


def matmul(a: Tensor, b: Tensor, *, blocks=to_blocks) -> Tensor:
    """torch.matmul, exact: the rows of ``a`` and the columns of ``b`` in block floating point."""
    bits = split_bits(a.shape[-1])
    aq, as_ = blocks(a, (a.dim() - 1,), bits)
    bq, bs = blocks(b, (max(b.dim() - 2, 0),), bits)
    out = torch.matmul(aq, bq)
    if b.dim() == 1:
        return out.mul_(as_.squeeze(-1)).mul_(bs)
    if a.dim() == 1:
        return out.mul_(as_).mul_(bs.squeeze(-2))
    return out.mul_(as_).mul_(bs)


def linear(x: Tensor, w: Tensor, bias=None, *, blocks=to_blocks) -> Tensor:
    out = matmul(x, w.t(), blocks=blocks)
    return out if bias is None else out + bias.double()


def addmm(c: Tensor, a: Tensor, b: Tensor, *, beta=1, alpha=1, blocks=to_blocks) -> Tensor:
    """beta c + alpha (a @ b), each product and sum a separate rounding."""
    prod = matmul(a, b, blocks=blocks)
    prod = prod if alpha == 1 else prod * alpha
    return prod if beta == 0 else (c.double() if beta == 1 else c.double() * beta) + prod


