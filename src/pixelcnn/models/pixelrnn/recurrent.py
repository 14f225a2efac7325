"""PixelRNN's recurrent pieces (van den Oord, Kalchbrenner & Kavukcuoglu 2016, sections 3.1-3.2):
the skew that turns the Diagonal BiLSTM's diagonals into columns, and the LSTM update.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from pixelcnn.models.layers import map_tanh


class LSTMGates:
    """Gate pre-activations [i, f, o, g] along ``dim`` of ``value``, and the LSTM update on them.

    Equation (3) of the paper, c = f * c_prev + i * g and h = o * tanh(c), with i, f, o sigmoids
    and g a tanh, for both paths: a layer wraps each step's fresh pre-activations (tanh by
    :func:`map_tanh`, new c and h), a cache one batch-last (4n, B) buffer (:meth:`buffer`) that its
    steps refill and update into views of its own c and h. Zero gates and a zero ``c_prev`` give
    h = c = 0, so zero-padded positions stay zero.
    """

    def __init__(self, value: Tensor, dim: int = 0, tanh: Callable[[Tensor], Tensor] = map_tanh):
        n = value.shape[dim] // 4
        self.value, self.tanh = value, tanh
        self.ifo, self.g = value.narrow(dim, 0, 3 * n), value.narrow(dim, 3 * n, n)
        self.i, self.f, self.o = (value.narrow(dim, k * n, n) for k in range(3))

    @classmethod
    def buffer(cls, like: Tensor, units: int, batch: int) -> "LSTMGates":
        """A (4n, B) buffer for a cache's steps: tanh in place, into its g rows (which c no longer needs)."""
        gates = cls(like.new_zeros(4 * units, batch))
        gates.tanh = partial(torch.tanh, out=gates.g)
        return gates

    def update(self, c_prev: Tensor, c_out: Tensor | None = None,
               h_out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(h, c) from the pre-activations in ``value``, which it spends (sigmoids in place); written into
        ``c_out`` and ``h_out`` where given (a cache's step), each shaped like ``c_prev``.

        f * c_prev + i * g is rounded two ways: in place, one fused multiply-add (no temporary); into new
        tensors, two products and a sum, the bits of the whole-map form that earlier releases coded
        files with (the codec's released forms, ``coding/arithmetic.py``). Exact arithmetic (the codec) gives
        both the same value.
        """
        self.ifo.sigmoid_()
        g = self.tanh(self.g)
        if c_out is None:
            c = self.f * c_prev + self.i * g
        else:
            c = torch.mul(self.f, c_prev, out=c_out).addcmul_(self.i, g)
        return torch.mul(self.o, self.tanh(c), out=h_out), c


def skew_columns(x: Tensor) -> Tensor:
    """The skew of the Diagonal BiLSTM, batch last: row i shifted right by i, so that column s holds the
    anti-diagonal i + j = s; one skewed column per leading index: (H, W, ...) -> (H + W - 1, H, ...).

    Entry (s, i) holds pixel (i, s - i), zero where s - i is off the image: a column-by-column recurrence
    visits the diagonals from the top-left corner on, and a pixel's left and upper neighbours both sit in
    the previous column (entries i and i - 1). Built by one strided
    view of the input padded by H - 1 columns on each side (flat index i * (W + 2H - 3) + s),
    copied once, so a column-by-column recurrence reads contiguous blocks.
    """
    h, w = x.shape[:2]
    r = x[0, 0].numel()
    padded = F.pad(x.reshape(h, w, r), (0, 0, h - 1, h - 1))            # (H, W + 2H - 2, R)
    stride = (w + 2 * h - 3) * r
    columns = padded.as_strided((h + w - 1, h, r), (r, stride, 1), (h - 1) * r)
    return columns.reshape(h + w - 1, h, *x.shape[2:])                  # (H + W - 1, H, ...)


def unskew_columns(x: Tensor, width: int) -> Tensor:
    """Inverse of :func:`skew_columns`: (H + W - 1, H, ...) -> (H, W, ...), pixel (i, j) from entry (i + j, i)."""
    h = x.shape[1]
    x = x.contiguous()
    r = x[0, 0].numel()
    return x.as_strided((h, width, *x.shape[2:]), ((h + 1) * r, h * r, *x.stride()[2:]))
