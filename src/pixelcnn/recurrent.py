"""PixelRNN's recurrent pieces (van den Oord, Kalchbrenner & Kavukcuoglu 2016, sections 3.1-3.2):
the skew that turns the Diagonal BiLSTM's diagonals into columns, and the LSTM update.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pixelcnn.layers import map_tanh


def skew(x: Tensor) -> Tensor:
    """Shift row i right by i: (B, C, H, W) -> (B, C, H, W + H - 1), zeros elsewhere.

    Column j of the result holds the pixels (i, j - i), the anti-diagonal i + col = j of the
    input, so a column-by-column recurrence visits the diagonals from the top-left corner on.
    The left and upper neighbours of a pixel both sit in the previous column (rows i and i - 1).
    """
    b, c, h, w = x.shape
    padded = F.pad(x, (0, h))                                   # (B, C, H, W + H)
    flat = padded.reshape(b, c, h * (w + h))[..., : h * (w + h - 1)]
    return flat.reshape(b, c, h, w + h - 1)                     # row i starts at column i


def unskew(x: Tensor, width: int) -> Tensor:
    """Inverse of :func:`skew`: (B, C, H, W + H - 1) -> (B, C, H, W)."""
    b, c, h, sw = x.shape
    flat = F.pad(x.reshape(b, c, h * sw), (0, h))               # (B, C, H * (sw + 1))
    return flat.reshape(b, c, h, sw + 1)[..., :width]


def lstm_cell(gates: Tensor, c_prev: Tensor, dim: int = 1) -> tuple[Tensor, Tensor]:
    """One LSTM update from pre-activations laid out [input, forget, output, candidate] along ``dim``.

    van den Oord et al. 2016, "Pixel Recurrent Neural Networks", equation (3):
    c = f * c_prev + i * g, h = o * tanh(c), with i, f, o sigmoids and g a tanh. ``gates`` has
    4n entries along ``dim`` and ``c_prev`` n; returns (h, c), each shaped like ``c_prev``. Zero
    gates and a zero ``c_prev`` give h = c = 0, so zero-padded positions stay zero.
    The scans over whole rows and diagonals use it; tanh through :func:`map_tanh`.
    """
    n = gates.shape[dim] // 4
    i, f, o = torch.sigmoid(gates.narrow(dim, 0, 3 * n)).chunk(3, dim)
    g = map_tanh(gates.narrow(dim, 3 * n, n))
    c = f * c_prev + i * g
    return o * map_tanh(c), c


class LSTMGates:
    """A batch-last (4n, B) buffer of gate pre-activations [i, f, o, g] and the LSTM update on it.

    Equation (3) as :func:`lstm_cell`, in place: one sigmoid over [i, f, o], one tanh over
    g, results written into the caller's (n, B) cell and state views. Every operand is a
    contiguous block (the gates are rows).
    """

    def __init__(self, like: Tensor, units: int, batch: int):
        n = units
        self.value = like.new_zeros(4 * n, batch)
        self.ifo, self.g = self.value[: 3 * n], self.value[3 * n :]
        self.i, self.f, self.o = self.ifo.split(n)

    def update(self, c_prev: Tensor, c_out: Tensor, h_out: Tensor) -> None:
        """c_out = f * c_prev + i * g and h_out = o * tanh(c_out), each (n, B); ``value`` is spent."""
        self.ifo.sigmoid_()
        self.g.tanh_()
        torch.mul(self.f, c_prev, out=c_out)
        c_out.addcmul_(self.i, self.g)
        torch.tanh(c_out, out=self.g)
        torch.mul(self.o, self.g, out=h_out)


def skew_columns(x: Tensor) -> Tensor:
    """:func:`skew` for batch-last layouts, one skewed column per leading index: (H, W, ...) -> (H + W - 1, H, ...).

    Entry (s, i) holds pixel (i, s - i), zero where s - i is off the image. Built by one strided
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
