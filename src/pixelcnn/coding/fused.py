"""The codec's exact arithmetic compiled: the rules of ExactArithmetic in C, and a fused Gated PixelCNN column.

Under :class:`~pixelcnn.coding.exact.ExactArithmetic` every torch function a stepper calls passes
through Python: a Gated PixelCNN step of one 28x28 digit is about 220 such calls, each a handful of
small tensor operations (block rounding, table lookups, a product), so coding paid for dispatch,
not arithmetic. The extension ``pixelcnn.coding._kernels`` (``_kernels.c``, compiled when the
package is installed) computes what a sequence of those rules computes: the block rounding, the
exact product and the table functions with the same IEEE-754 operations in the same order, so its
results are the reference's bit for bit (tests/test_fused.py compares them over generated operands
and every branch of the configs it serves; the codec files written before the kernels existed decode
with them and are written again to the same bytes). Two layers:

* :data:`RULES`, the mode's rules for linear maps, the table functions and softmax, compiled where the
  operands are CPU float64 of the shapes the kernels read (every family gains);
* :func:`accelerate`, which gives a stepper its family's fused column (:data:`FUSED`): the Gated
  PixelCNN's whole step in one kernel call below ``Affine.BLAS_ROWS`` images or where torch has more
  than one thread (the batch's images split over them), else a call per layer operation (the products
  by the BLAS). The stepper computes the rest (the distribution) as before, inside the mode.

Without the extension (no C compiler at install), with ``PIXELCNN_EXACT_KERNELS=0`` in the environment,
or inside :func:`reference_only`, everything runs the reference rules.
"""

from __future__ import annotations

import contextlib
import os
from contextvars import ContextVar
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from pixelcnn.coding import blocks as reference, elementary, quantize
from pixelcnn.coding.blocks import split_bits, to_blocks
from pixelcnn.coding.elementary import _slopes, _table
from pixelcnn.coding.quantize import TOTAL
from pixelcnn.errors import ConfigError
from pixelcnn.models.gated_pixelcnn import CachedGatedPixelCNN
from pixelcnn.models.incremental import bias_row

try:
    from pixelcnn.coding import _kernels
except ImportError:                                                          # built without a C compiler
    _kernels = None
KERNELS_VERSION = 4                     # _kernels.c's KERNELS_VERSION: a stale build is not used
if _kernels is not None and getattr(_kernels, "VERSION", None) != KERNELS_VERSION:
    _kernels = None

ENV_VAR = "PIXELCNN_EXACT_KERNELS"
RELU_IN, RELU_OUT = 1, 2
_REFERENCE_ONLY: ContextVar[bool] = ContextVar("reference_only", default=False)


SWITCH = {"": True, "1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
          "off": False}


def available() -> bool:
    """Whether steppers get compiled kernels: the extension is built, and neither ``PIXELCNN_EXACT_KERNELS=0``
    nor :func:`reference_only` turned them off."""
    value = os.environ.get(ENV_VAR, "")
    if value.strip().lower() not in SWITCH:
        raise ConfigError(f"expected {ENV_VAR} to be 1 (the compiled kernels, the default) or 0 (the reference "
                          f"rules), got {value!r}")
    on = _kernels is not None and SWITCH[value.strip().lower()] and not _REFERENCE_ONLY.get()
    if on:
        hand_over_tables()
    return on


@contextlib.contextmanager
def reference_only() -> Iterator[None]:
    """Inside, every stepper the codec builds runs the reference rules of :mod:`pixelcnn.coding.exact`."""
    token = _REFERENCE_ONLY.set(True)
    try:
        yield
    finally:
        _REFERENCE_ONLY.reset(token)


def accelerate(stepper) -> None:
    """Give ``stepper`` its family's fused column (:data:`FUSED`) where there is one and :func:`available`;
    called by the codec on a stepper it built inside ``ExactArithmetic``."""
    fused = FUSED.get(type(stepper))
    if fused is not None and available() and fused.serves(stepper):
        with torch._C.DisableTorchFunction():
            stepper.kernel = fused(stepper)


def _ptr(t: Tensor) -> int:
    return t.data_ptr()


# gated_column splits a step's images over torch's threads (images are independent: the same bits however split),
# each thread given at least this many. The one-row kernels of the row starts (round_rows, finish_rows, gate) stay
# on one thread: split the same way they were slower (2-core Xeon: right after the BLAS, whose threads still spin).
SPLIT_IMAGES = 4


def _threads(images: int) -> int:
    """Threads for a gated_column call over ``images`` images: torch's count at most, SPLIT_IMAGES each at least."""
    return max(1, min(torch.get_num_threads(), images // SPLIT_IMAGES))


_TABLES = ("sigmoid", "exp_frac", "exp_int", "recip", "log_recip", "ln2")
_kept: list[Tensor] = []                                                     # the tables the kernels read


def hand_over_tables() -> None:
    """Give the extension elementary.py's tables, on first use (once; they stay alive in ``_kept``): the kernels
    read them from then on. :func:`available` does it; a caller that takes the kernels without asking calls it."""
    if _kernels is None or _kept:
        return
    cpu = torch.device("cpu")
    with torch._C.DisableTorchFunction():
        tables = [_table("sigmoid", cpu), _slopes("sigmoid", cpu), _table("exp_frac", cpu), _slopes("exp_frac", cpu),
                  *(_table(name, cpu) for name in _TABLES[2:])]
    _kept.extend(t.contiguous() for t in tables)
    _kernels.set_tables(*(_ptr(t) for t in _kept))


# ----- the rules of ExactArithmetic, compiled where the operands allow -----------------------------------------


def _cpu64(*tensors) -> bool:
    return all(isinstance(t, Tensor) and t.dtype == torch.float64 and t.device.type == "cpu" for t in tensors)


def _rows_times(a: Tensor, b: Tensor, bias: Tensor | None, blocks) -> Tensor | None:
    """blocks.matmul(a, b) (+ bias, as addmm adds it) for 2-D ``a`` (B, K) and ``b`` (K, n) by :class:`Affine`;
    None where the kernels decline (a value that is not finite, a bias they cannot read as rows)."""
    (rows, k), n = a.shape, b.shape[1]
    affine = Affine.rounded(*blocks(b, (0,), split_bits(k)))
    a = a if a.stride(-1) == 1 or k <= 1 else a.contiguous()
    bias_ptr, bias_sb = None, 0
    if bias is not None:
        if bias.dim() == 1 and bias.shape[0] == n and (bias.stride(0) == 1 or n == 1):
            bias_ptr = _ptr(bias)
        elif bias.dim() == 2 and bias.shape[-1] == n and bias.shape[0] in (1, rows) and (bias.stride(1) == 1 or n == 1):
            bias_ptr, bias_sb = _ptr(bias), (bias.stride(0) if bias.shape[0] == rows else 0)
        else:
            return None
    out = torch.empty(rows, n, dtype=torch.float64)
    status = affine.rows(_ptr(out), n, _ptr(a), rows, a.stride(0), bias_ptr, bias_sb)
    return None if status else out


_integers_of: dict[int, tuple[Tensor, int, Tensor]] = {}
MEMO_ELEMENTS = 1 << 22                 # weights remembered by _integers (activations are seen once: forgotten in bulk)


def _integers(q: Tensor) -> Tensor:
    """A rounded weight's integers as a contiguous int32 tensor (|q| <= 2**25), the kernels' form; remembered for a
    tensor seen again unchanged (CachedBlocks returns the same rounded weight each time)."""
    hit = _integers_of.get(id(q))
    if hit is not None and hit[0] is q and hit[1] == q._version:
        return hit[2]
    out = q.to(torch.int32).contiguous()
    if out.numel() <= MEMO_ELEMENTS:
        if len(_integers_of) >= 512:
            _integers_of.clear()
        _integers_of[id(q)] = (q, q._version, out)
    return out


def addmm(c, a, b, *, beta=1, alpha=1, blocks=to_blocks) -> Tensor:
    if beta == 1 and alpha == 1 and _cpu64(a, b, c) and a.dim() == 2 and b.dim() == 2 and c.dim() in (1, 2):
        out = _rows_times(a, b, c, blocks)
        if out is not None:
            return out
    return reference.addmm(c, a, b, beta=beta, alpha=alpha, blocks=blocks)


def matmul(a, b, *, blocks=to_blocks) -> Tensor:
    if _cpu64(a, b) and a.dim() == 2 and b.dim() == 2:
        out = _rows_times(a, b, None, blocks)
        if out is not None:
            return out
    return reference.matmul(a, b, blocks=blocks)


def linear(x, w, bias=None, *, blocks=to_blocks) -> Tensor:
    if _cpu64(x, w) and x.dim() >= 2 and w.dim() == 2:
        out = _rows_times(x.reshape(-1, x.shape[-1]), w.t(), None, blocks)
        if out is not None:
            out = out.view(*x.shape[:-1], w.shape[0])
            return out if bias is None else out + bias.double()
    return reference.linear(x, w, bias, blocks=blocks)


SIGMOID, TANH, EXP, EXPM1, ELU = range(5)


def _elementwise(which: int, x: Tensor) -> Tensor:
    x = x.contiguous()
    out = torch.empty_like(x)
    _kernels.elementwise(_ptr(out), _ptr(x), x.numel(), which)
    return out


def _unary(which: int, reference_rule):
    def rule(x, *args, **kwargs):
        if _cpu64(x) and not args and not kwargs:
            return _elementwise(which, x)
        return reference_rule(x, *args, **kwargs)
    rule.__name__ = reference_rule.__name__
    return rule


def elu(x, alpha=1.0, inplace=False) -> Tensor:
    if _cpu64(x) and alpha == 1.0:
        return _elementwise(ELU, x)
    return elementary.elu(x, alpha, inplace)


def glu(x, dim=-1) -> Tensor:
    if _cpu64(x):
        a, b = x.chunk(2, dim)
        return a * _elementwise(SIGMOID, b)
    return elementary.glu(x, dim)


SOFTMAX, LOG_SOFTMAX, QUANTIZE = range(3)                 # rows_softmax's modes


def _softmax_rows(x, dim, mode: int, reference_rule) -> Tensor:
    if _cpu64(x) and x.dim() >= 1 and dim is not None and dim % x.dim() == x.dim() - 1 and x.numel():
        rows = x.contiguous()
        out = torch.empty_like(rows)
        if _kernels.rows_softmax(_ptr(out), _ptr(rows), rows.numel() // rows.shape[-1], rows.shape[-1], mode, 0.0) == 0:
            return out
    return reference_rule(x, dim)


def log_softmax(x, dim=None, _stacklevel=3, dtype=None) -> Tensor:
    return _softmax_rows(x, dim, LOG_SOFTMAX, elementary.log_softmax)


def softmax(x, dim=None, _stacklevel=3, dtype=None) -> Tensor:
    return _softmax_rows(x, dim, SOFTMAX, elementary.softmax)


# ExactArithmetic's rules that have compiled forms (each falls back to its reference where the operands are
# not CPU float64 or not of the shapes the kernels read).
RULES = {
    "addmm": addmm, "mm": matmul, "matmul": matmul, "__matmul__": matmul, "bmm": matmul, "linear": linear,
    "sigmoid": _unary(SIGMOID, elementary.sigmoid), "tanh": _unary(TANH, elementary.tanh),
    "exp": _unary(EXP, elementary.exp), "expm1": _unary(EXPM1, elementary.expm1), "elu": elu, "glu": glu,
    "log_softmax": log_softmax, "softmax": softmax,
}


# ----- fused steppers ----------------------------------------------------------------------------------------


class Affine:
    """A (K, n) weight rounded per column (blocks.to_blocks) and an (n,) bias, applied to rows or windows as
    blocks.addmm applies them. Up to ``BLAS_ROWS`` rows, one ``affine`` call (its own product over the weight's
    integers as int32); from there, ``round_rows``, the product of the rounded integers by the BLAS (torch.mm, every
    thread torch has: integer products and sums below 2**53 are exact, so any kernel gives the same bits) and
    ``finish_rows``."""

    BLAS_ROWS = 8

    def __init__(self, weight: Tensor, bias: Tensor | None):
        k = weight.shape[0]
        self._set(*to_blocks(weight.double(), (0,), split_bits(k)), bias)

    @classmethod
    def rounded(cls, wq: Tensor, ws: Tensor, bias: Tensor | None = None) -> "Affine":
        """From a weight rounded already (blocks.to_blocks over its rows)."""
        affine = cls.__new__(cls)
        affine._set(wq, ws, bias)
        return affine

    def _set(self, wq: Tensor, ws: Tensor, bias: Tensor | None) -> None:
        self.k, self.n = wq.shape
        self.bits = split_bits(self.k)
        self.wq, self.ws = wq, ws.reshape(-1).contiguous()
        self.bias = None if bias is None else bias.double().contiguous()
        self._integers: Tensor | None = None

    def integers(self) -> Tensor:
        if self._integers is None:
            self._integers = _integers(self.wq)
        return self._integers

    def rows(self, out: int, out_sb: int, x: int, batch: int, x_sb: int, bias: int | None, bias_sb: int,
             residual: int | None = None, res_sb: int = 0, flags: int = 0) -> int:
        """Rows of K contiguous values at ``x`` (row stride ``x_sb``) -> ``out``; see ``affine`` in _kernels.c."""
        return self.window(out, out_sb, x, batch, 1, 1, self.k, x_sb, 0, 0, bias, bias_sb, residual, res_sb, flags)

    def window(self, out: int, out_sb: int, x: int, batch: int, rows: int, cols: int, channels: int, x_sb: int,
               x_sr: int, x_sc: int, bias: int | None, bias_sb: int, residual: int | None, res_sb: int,
               flags: int, outer: int = 1, x_sw: int = 0) -> int:
        """The windows at ``x + w x_sw + b x_sb`` (w < ``outer``, b < ``batch``; rows (w, b) of ``out``, w-major)
        -> ``out``; 0, or -1 where a window held inf or NaN (nothing trusted)."""
        count = outer * batch
        if count < self.BLAS_ROWS:
            if outer != 1:
                raise ValueError("an affine call over several window rows takes the BLAS path")
            return _kernels.affine(out, out_sb, x, batch, rows, cols, channels, x_sb, x_sr, x_sc,
                                   _ptr(self.integers()), _ptr(self.ws), self.n, bias, bias_sb, residual, res_sb,
                                   flags, self.bits)
        xq = torch.empty(count, self.k, dtype=torch.float64)
        xs = torch.empty(count, dtype=torch.float64)
        if _kernels.round_rows(_ptr(xq), _ptr(xs), x, outer, batch, rows, cols, channels, x_sw, x_sb, x_sr, x_sc,
                               flags, self.bits):
            return -1
        acc = torch.mm(xq, self.wq)
        _kernels.finish_rows(out, out_sb, _ptr(acc), count, self.n, _ptr(xs), _ptr(self.ws), bias, bias_sb,
                             residual, res_sb, flags)
        return 0

    def checked(self, status: int) -> None:
        if status:
            raise FloatingPointError("a window held inf or NaN: the network's activations overflowed")


# The fields of a layer's row and of the head in the plan of _kernels.gated_column (its enums, in their order).
LAYER_FIELDS = ("conv_wq", "conv_ws", "conv_n", "conv_bits", "win", "win_h", "win_w", "win_b", "win_r", "win_c",
                "rows", "cols", "channels", "row_bias", "row_bias_w", "row_bias_b", "pre", "gated", "out_wq", "out_ws",
                "out_n", "out_bits", "out_bias", "next", "next_b", "next_h", "next_w", "next_top", "next_left", "last",
                "first")
HEAD_FIELDS = ("hid_wq", "hid_ws", "hid_n", "hid_bits", "hid_bias", "hid_rows", "p_wq", "p_ws", "p_n", "p_bits",
               "p_bias")


class GatedColumn:
    """A Gated PixelCNN's column at one position: its layers' row starts once per row, then their horizontal stacks
    and the output head.

    Computes what ``CachedGatedPixelCNN.column`` computes, from and into the same caches: each layer's row start
    (``CachedGatedLayer.start_row``: the vertical stack's row above, written into the next layer's cache, and the
    row's bias for the horizontal stack) and step (``CachedGatedLayer.step``), then ``PointwiseHead``; returns the
    head's (B, P) parameters. Below ``Affine.BLAS_ROWS`` images, and wherever torch's threads can take
    ``SPLIT_IMAGES`` images each, a step is one kernel call (``gated_column``, over a plan of every layer's pointers
    and strides, the images split over the threads); otherwise a call per layer operation, the products by the BLAS.
    The row starts (the vertical stacks over a whole row) take the BLAS either way.
    """

    @staticmethod
    def serves(stepper) -> bool:
        maps = [m for layer in stepper.layers for m in (layer.h_next, layer.v_next) if m is not None]
        return (stepper.like.device.type == "cpu" and stepper.like.dtype == torch.float64
                and all(m.ring is None for m in maps))

    def __init__(self, stepper):
        self.batch = stepper.batch
        self.layers = [_GatedLayer(layer) for layer in stepper.layers]
        head = stepper.head
        self.hidden = None if head.hidden is None else Affine(head.hidden.weight, head.hidden.bias)
        self.out = Affine(head.out.weight, head.out.bias)
        self.hidden_rows = None if self.hidden is None else torch.empty(self.batch, self.hidden.n, dtype=torch.float64)
        self.last = torch.empty(self.batch, self.layers[-1].n, dtype=torch.float64)     # the last layer's output
        self.row = -1
        self.plan = torch.tensor([layer.plan(self.last) for layer in self.layers], dtype=torch.int64)
        self.head = torch.tensor(self._head_plan(), dtype=torch.int64)
        for i, layer in enumerate(self.layers):
            layer.plan_row = self.plan[i]
        # One kernel call per step below BLAS_ROWS images, and wherever the images can be split over threads: then
        # each thread's share of the step is one call, which beats a call per layer operation and a BLAS product.
        self.fused = self.batch < Affine.BLAS_ROWS or _threads(self.batch) > 1

    def _head_plan(self) -> list[int]:
        hidden, out = self.hidden, self.out
        fields = dict.fromkeys(HEAD_FIELDS, 0)
        if hidden is not None:
            fields.update(hid_wq=_ptr(hidden.integers()), hid_ws=_ptr(hidden.ws), hid_n=hidden.n, hid_bits=hidden.bits,
                          hid_bias=_ptr(hidden.bias), hid_rows=_ptr(self.hidden_rows))
        fields.update(p_wq=_ptr(out.integers()), p_ws=_ptr(out.ws), p_n=out.n, p_bits=out.bits, p_bias=_ptr(out.bias))
        return [fields[name] for name in HEAD_FIELDS]

    def __call__(self, h: int, w: int) -> Tensor:
        with torch._C.DisableTorchFunction():
            if h != self.row:                                              # raster order: row h - 1 is complete
                for layer in self.layers:
                    layer.start_row(h)
                self.row = h
            b, out = self.batch, self.out
            params = torch.empty(b, out.n, dtype=torch.float64)
            if self.fused:
                status = _kernels.gated_column(_ptr(self.plan), len(self.layers), _ptr(self.head), b, h, w, _ptr(params),
                                               _threads(b))
                out.checked(status)
                return params
            residual, res_sb = None, 0
            for layer in self.layers:
                residual, res_sb = layer.step(h, w, residual, res_sb, self.last)
            x, x_sb, flags = residual, res_sb, RELU_IN
            if self.hidden is not None:
                self.hidden.checked(self.hidden.rows(_ptr(self.hidden_rows), self.hidden.n, x, b, x_sb,
                                                     _ptr(self.hidden.bias), 0, flags=RELU_IN | RELU_OUT))
                x, x_sb, flags = _ptr(self.hidden_rows), self.hidden.n, 0
            out.checked(out.rows(_ptr(params), out.n, x, b, x_sb, _ptr(out.bias), 0, flags=flags))
            return params


def _gate_rows(x: Tensor) -> Tensor:
    """layers.gate over the last dimension of (..., 2n) ``x``: tanh(a) sigmoid(b) -> (..., n)."""
    x = x.contiguous()
    n = x.shape[-1] // 2
    out = x.new_empty(*x.shape[:-1], n)
    _kernels.gate(_ptr(out), n, _ptr(x), 2 * n, x.numel() // (2 * n), n)
    return out


class _GatedLayer:
    """One CachedGatedLayer as kernel calls. A row start: the vertical stack's row above
    (its windows' affine map), gated into the next layer's cache, and the row's bias (the 1x1 link from the vertical
    stack plus the horizontal bias and the conditioning). A step: the horizontal window's affine map plus the row's
    bias, the gate, the 1x1 output map plus the residual, written into the next layer's cache."""

    def __init__(self, layer):
        self.layer, self.batch = layer, layer.batch
        conv = layer.horizontal
        views = conv.views                                                       # (Ho, Wo, B, rows, cols, C)
        if views.stride(-1) != 1:
            raise ValueError("expected channels-last caches")
        self.vs, self.shape = views.stride(), views.shape
        self.base = _ptr(views)
        self.conv = Affine(conv.weight, None)
        self.vertical = Affine(layer.vertical.weight, layer.vertical.bias)
        self.v_to_h = Affine(layer.v_to_h.weight, layer.v_to_h.bias)
        self.h_out = Affine(layer.h_out.weight, layer.h_out.bias)
        self.n = self.h_out.n
        self.pre = torch.empty(self.batch, self.conv.n, dtype=torch.float64)
        self.gated = torch.empty(self.batch, self.n, dtype=torch.float64)
        self.next = layer.h_next
        if self.next is not None:
            buf = self.next.buf
            self.next_s = buf.stride()
            self.next_base = _ptr(buf)
        self.row_bias: Tensor | None = None                                     # (W, B, 2n)
        self.row_bias_ptr, self.bias_s = 0, (0, 0)
        self.plan_row: Tensor | None = None                                     # this layer's row of the plan

    def plan(self, last: Tensor) -> list[int]:
        """This layer's row of the plan of ``_kernels.gated_column`` (the row's bias is set by :meth:`start_row`)."""
        vs, shape = self.vs, self.shape
        fields = dict(conv_wq=_ptr(self.conv.integers()), conv_ws=_ptr(self.conv.ws), conv_n=self.conv.n,
                      conv_bits=self.conv.bits, win=self.base, win_h=vs[0], win_w=vs[1], win_b=vs[2], win_r=vs[3],
                      win_c=vs[4], rows=shape[3], cols=shape[4], channels=shape[5], row_bias=0, row_bias_w=0,
                      row_bias_b=0, pre=_ptr(self.pre), gated=_ptr(self.gated), out_wq=_ptr(self.h_out.integers()),
                      out_ws=_ptr(self.h_out.ws), out_n=self.n, out_bits=self.h_out.bits,
                      out_bias=_ptr(self.h_out.bias), next=0, next_b=0, next_h=0, next_w=0, next_top=0, next_left=0,
                      last=_ptr(last), first=int(self.layer.first))
        if self.next is not None:
            s = self.next_s
            fields.update(next=self.next_base, next_b=s[0], next_h=s[1], next_w=s[2], next_top=self.next.pad.top,
                          next_left=self.next.pad.left)
        return [fields[name] for name in LAYER_FIELDS]

    @staticmethod
    def _rows(affine: Affine, x: Tensor) -> Tensor:
        """``affine`` of (N, K) rows plus its bias: (N, n)."""
        x = x.contiguous()
        out = x.new_empty(x.shape[0], affine.n)
        affine.checked(affine.rows(_ptr(out), affine.n, _ptr(x), x.shape[0], affine.k, _ptr(affine.bias), 0))
        return out

    def _vertical_row(self, h: int) -> Tensor:
        """``CachedConv.row`` of the vertical stack: (W, B, 2n), its windows read in place."""
        windows = self.layer.vertical.views[h]                                   # (Wo, B, rows, cols, C)
        wo, b, rows, cols, channels = windows.shape
        st = windows.stride()
        if st[-1] != 1 or wo * b < Affine.BLAS_ROWS:
            return self._rows(self.vertical, windows.reshape(wo * b, -1)).view(wo, b, -1)
        out = windows.new_empty(wo, b, self.vertical.n)
        self.vertical.checked(self.vertical.window(_ptr(out), self.vertical.n, _ptr(windows), b, rows, cols, channels,
                                                   st[1], st[2], st[3], _ptr(self.vertical.bias), 0, None, 0, 0,
                                                   outer=wo, x_sw=st[0]))
        return out

    def start_row(self, h: int) -> None:
        """``CachedGatedLayer.start_row``: the vertical stack's row h - 1 and row h's bias."""
        layer = self.layer
        if h == 0:                                                         # shift_down fills row 0 with zeros
            v_to_h = layer.v_to_h.bias.expand(layer.width, self.batch, -1)
        else:
            v_pre = self._vertical_row(h - 1)
            if layer.vertical.position_bias is not None:
                v_pre = v_pre + layer.vertical.position_bias.row(h - 1)
            if layer.v_next is not None:
                v_gated = v_pre if layer.v_bias is None else v_pre + bias_row(layer.v_bias, h - 1)
                layer.v_next.write_row(h - 1, _gate_rows(v_gated))
            v_to_h = self._rows(self.v_to_h, v_pre.reshape(-1, v_pre.shape[-1])).view(layer.width, self.batch, -1)
        bias = v_to_h + layer.horizontal.bias
        bias = (bias if layer.h_bias is None else bias + bias_row(layer.h_bias, h)).contiguous()
        self.row_bias, self.row_bias_ptr, self.bias_s = bias, _ptr(bias), bias.stride()
        if self.plan_row is not None:
            at = LAYER_FIELDS.index("row_bias")
            self.plan_row[at : at + 3] = torch.tensor([self.row_bias_ptr, *self.bias_s[:2]], dtype=torch.int64)

    def step(self, h: int, w: int, residual: int | None, res_sb: int, last: Tensor) -> tuple[int, int]:
        """``CachedGatedLayer.step``: the layer's output at (h, w); returns where it is (pointer, batch stride)."""
        vs, shape, b = self.vs, self.shape, self.batch
        window = self.base + 8 * (h * vs[0] + w * vs[1])
        pre, gated = _ptr(self.pre), _ptr(self.gated)
        self.conv.checked(self.conv.window(pre, self.conv.n, window, b, shape[3], shape[4], shape[5], vs[2], vs[3],
                                           vs[4], self.row_bias_ptr + 8 * w * self.bias_s[0], self.bias_s[1], None, 0,
                                           0))
        _kernels.gate(gated, self.n, pre, self.conv.n, b, self.n)
        if self.next is None:
            out, out_sb = _ptr(last), self.n
        else:
            nxt, s = self.next, self.next_s
            out, out_sb = self.next_base + 8 * ((nxt.pad.top + h) * s[1] + (nxt.pad.left + w) * s[2]), s[0]
        self.h_out.checked(self.h_out.rows(out, out_sb, gated, b, self.n, _ptr(self.h_out.bias), 0, residual, res_sb))
        return out, out_sb


def quantized_weights(log_probs: Tensor) -> np.ndarray:
    """quantize.quantized_weights with elementary.py's softmax (formats 3 and 4), compiled where :func:`available`."""
    lp = log_probs.detach().to(device="cpu", dtype=torch.float64).contiguous()
    if available() and lp.dim() == 2 and lp.numel():
        out = np.empty(tuple(lp.shape))
        if _kernels.rows_softmax(out.ctypes.data, _ptr(lp), lp.shape[0], lp.shape[1], QUANTIZE,
                                 float(TOTAL - lp.shape[1])) == 0:
            return out
    return quantize.quantized_weights(log_probs, elementary.softmax)


FUSED = {CachedGatedPixelCNN: GatedColumn}                   # stepper class -> its fused column


if _kernels is not None and (len(LAYER_FIELDS), len(HEAD_FIELDS)) != (_kernels.LAYER_FIELDS, _kernels.HEAD_FIELDS):
    raise ImportError("pixelcnn.coding._kernels lays out gated_column's plan otherwise than fused.py: rebuild it")
