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
  PixelCNN's whole step in one kernel call, and each layer's row start in another. The stepper computes
  the rest (the distribution) as before, inside the mode.

The products are the extension's own (integer sums below 2**53: exact in any order, so a register tile per
CPU, :func:`isas`), not the BLAS's, and a call's rows split over a pool of threads of its own where torch has
more than one: no OpenMP team is left spinning on the other core while the coder runs.

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
from pixelcnn.models.incremental import PositionBias, bias_row

try:
    from pixelcnn.coding import _kernels
except ImportError:                                                          # built without a C compiler
    _kernels = None
KERNELS_VERSION = 7                     # _kernels.c's KERNELS_VERSION: a stale build is not used
if _kernels is not None and getattr(_kernels, "VERSION", None) != KERNELS_VERSION:
    _kernels = None

ENV_VAR = "PIXELCNN_EXACT_KERNELS"
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


def isas() -> list[str]:
    """The variants of the kernels' exact product this CPU runs ("avx512", "avx2", "sse2" on x86-64; "baseline"
    elsewhere), the one used by default first; [] without the extension. Each gives the same bits (exact integer
    sums)."""
    return [] if _kernels is None else _kernels.isas()


@contextlib.contextmanager
def product_isa(name: str) -> Iterator[None]:
    """Inside, the kernels multiply with variant ``name`` of :func:`isas` (for tests and benchmarks; process-wide)."""
    if name not in isas():
        raise ConfigError(f"expected one of the product variants this CPU runs {isas()}, got {name!r}")
    before = _kernels.isa()
    _kernels.set_isa(name)
    try:
        yield
    finally:
        _kernels.set_isa(before)


def accelerate(stepper) -> None:
    """Give ``stepper`` its family's fused column (:data:`FUSED`) where there is one and :func:`available`;
    called by the codec on a stepper it built inside ``ExactArithmetic``."""
    fused = FUSED.get(type(stepper))
    if fused is not None and available() and fused.serves(stepper):
        with torch._C.DisableTorchFunction():
            stepper.kernel = fused(stepper)


def _ptr(t: Tensor) -> int:
    return t.data_ptr()


# The kernels split a call's rows over torch's threads (rows are independent: the same bits however split) where each
# thread gets work enough to pay for waking it: gated_column at least SPLIT_IMAGES images (a Gated PixelCNN step),
# affine and gated_row at least SPLIT_WORK multiply-adds. The threads are the extension's own pool, not torch's
# OpenMP team: a coder that calls no BLAS leaves no OpenMP threads spinning beside it.
SPLIT_IMAGES = 4
SPLIT_WORK = 1 << 16
EXP_WORK = 16                           # a table exp counted as this many multiply-adds


def _threads(images: int) -> int:
    """Threads for a gated_column call over ``images`` images: torch's count at most, SPLIT_IMAGES each at least."""
    return max(1, min(torch.get_num_threads(), images // SPLIT_IMAGES))


def _split(rows: int, work: int) -> int:
    """Threads for ``rows`` rows of ``work`` multiply-adds each: torch's count at most, SPLIT_WORK each at least."""
    return max(1, min(torch.get_num_threads(), rows, rows * work // SPLIT_WORK))


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
        count, n = rows.numel() // rows.shape[-1], rows.shape[-1]
        if _kernels.rows_softmax(_ptr(out), _ptr(rows), count, n, mode, 0.0, _split(count, EXP_WORK * n)) == 0:
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
    blocks.addmm applies them, by ``affine`` in _kernels.c (its own exact product over the weight's integers as
    int32), the rows split over torch's threads where there is work enough (:func:`_split`)."""

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
        self._panels: Tensor | None = None

    def integers(self) -> Tensor:
        if self._integers is None:
            self._integers = _integers(self.wq)
        return self._integers

    def panels(self) -> Tensor:
        """The weight's columns as the kernels' product reads them (``pack`` in _kernels.c), made once: for an
        Affine applied again and again (the fused steppers'); a call without them makes its own."""
        if self._panels is None:
            self._panels = torch.empty((self.n - self.n % _kernels.PANEL) * self.k, dtype=torch.float64)
            _kernels.pack(_ptr(self._panels), _ptr(self.integers()), self.k, self.n)
        return self._panels

    def rows(self, out: int, out_sb: int, x: int, batch: int, x_sb: int, bias: int | None, bias_sb: int) -> int:
        """``batch`` rows of K contiguous values at ``x`` (row stride ``x_sb``) -> ``out`` (row stride ``out_sb``),
        plus the bias rows at ``bias`` (stride ``bias_sb``, 0 for one row; None for none): ``affine`` in _kernels.c.
        0, or -1 where a row held inf or NaN (nothing trusted)."""
        return _kernels.affine(out, out_sb, x, 1, batch, 0, x_sb, 1, 1, self.k, 0, 0, _ptr(self.integers()), None,
                               _ptr(self.ws), self.n, bias, bias_sb, None, 0, 0, self.bits,
                               _split(batch, self.k * self.n))

    def checked(self, status: int) -> None:
        if status:
            raise FloatingPointError("a window held inf or NaN: the network's activations overflowed")


# The fields of a layer's row and of the head in the plan of _kernels.gated_column, and of a layer's row start in
# that of _kernels.gated_row (their enums, in their order).
LAYER_FIELDS = ("conv_wq", "conv_panels", "conv_ws", "conv_n", "conv_bits", "win", "win_h", "win_w", "win_b", "win_r",
                "win_c", "rows", "cols", "channels", "row_bias", "row_bias_w", "row_bias_b", "pre", "gated", "out_wq",
                "out_panels", "out_ws", "out_n", "out_bits", "out_bias", "next", "next_b", "next_h", "next_w",
                "next_top", "next_left", "last", "first")
HEAD_FIELDS = ("hid_wq", "hid_panels", "hid_ws", "hid_n", "hid_bits", "hid_bias", "hid_rows", "p_wq", "p_panels",
               "p_ws", "p_n", "p_bits", "p_bias")
ROW_FIELDS = ("v_win", "v_win_h", "v_win_w", "v_win_b", "v_win_r", "v_win_c", "v_rows", "v_cols", "v_channels", "v_wq",
              "v_panels", "v_ws", "v_bias", "v_bits", "v_n", "v_extra", "v_extra_h", "v_extra_w", "v_extra_b", "v_next",
              "v_next_h", "v_next_w", "v_next_b", "t_wq", "t_panels", "t_ws", "t_bias", "t_bits", "h_bias", "h_extra",
              "h_extra_h", "h_extra_w", "h_extra_b", "row_out", "width", "batch")


class GatedColumn:
    """A Gated PixelCNN's column at one position: its layers' row starts once per row, then their horizontal stacks
    and the output head, each a kernel call.

    Computes what ``CachedGatedPixelCNN.column`` computes, from and into the same caches: at a new row, each layer's
    row start (``CachedGatedLayer.start_row``: the vertical stack's row above, written into the next layer's cache,
    and the row's bias for the horizontal stack; ``gated_row``), then the step at the position, every layer
    (``CachedGatedLayer.step``) and ``PointwiseHead`` in one ``gated_column`` call over a plan of every layer's
    pointers and strides; returns the head's (B, P) parameters. Both split the batch's rows over torch's threads.
    """

    @staticmethod
    def serves(stepper) -> bool:
        maps = [m for layer in stepper.layers for m in (layer.h_next, layer.v_next) if m is not None]
        return (stepper.like.device.type == "cpu" and stepper.like.dtype == torch.float64
                and all(m.ring is None for m in maps)
                and all(layer.vertical.position_bias is None for layer in stepper.layers))

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

    def _head_plan(self) -> list[int]:
        hidden, out = self.hidden, self.out
        fields = dict.fromkeys(HEAD_FIELDS, 0)
        if hidden is not None:
            fields.update(hid_wq=_ptr(hidden.integers()), hid_panels=_ptr(hidden.panels()), hid_ws=_ptr(hidden.ws),
                          hid_n=hidden.n, hid_bits=hidden.bits, hid_bias=_ptr(hidden.bias),
                          hid_rows=_ptr(self.hidden_rows))
        fields.update(p_wq=_ptr(out.integers()), p_panels=_ptr(out.panels()), p_ws=_ptr(out.ws), p_n=out.n,
                      p_bits=out.bits, p_bias=_ptr(out.bias))
        return [fields[name] for name in HEAD_FIELDS]

    def __call__(self, h: int, w: int) -> Tensor:
        with torch._C.DisableTorchFunction():
            if h != self.row:                                              # raster order: row h - 1 is complete
                for layer in self.layers:
                    layer.start_row(h)
                self.row = h
            b, out = self.batch, self.out
            params = torch.empty(b, out.n, dtype=torch.float64)
            status = _kernels.gated_column(_ptr(self.plan), len(self.layers), _ptr(self.head), b, h, w, _ptr(params),
                                           _threads(b))
            out.checked(status)
            return params


def _conditioning(bias) -> tuple[Tensor | None, tuple[int, int, int]]:
    """A layer's conditioning bias (None, (B, 2n) or a PositionBias) as a tensor and its (h, w, b) strides for
    gated_row (0 where it is the same along that axis)."""
    if bias is None:
        return None, (0, 0, 0)
    if isinstance(bias, PositionBias):
        rows = bias.rows.contiguous()                                         # (H, W, B, 2n)
        return rows, tuple(rows.stride()[:3])
    bias = bias.double().contiguous()                                         # (B, 2n)
    return bias, (0, 0, bias.stride(0))


class _GatedLayer:
    """One CachedGatedLayer as kernel calls: its row start (``gated_row``) and its row of the step's plan."""

    def __init__(self, layer):
        self.layer, self.batch = layer, layer.batch
        conv = layer.horizontal
        views = conv.views                                                       # (Ho, Wo, B, rows, cols, C)
        if views.stride(-1) != 1 or layer.vertical.views.stride(-1) != 1:
            raise ValueError("expected channels-last caches")
        self.vs, self.shape = views.stride(), views.shape
        self.base = _ptr(views)
        self.conv = Affine(conv.weight, None)
        self.vertical = Affine(layer.vertical.weight, layer.vertical.bias)
        self.v_to_h = Affine(layer.v_to_h.weight, layer.v_to_h.bias)
        self.h_out = Affine(layer.h_out.weight, layer.h_out.bias)
        self.h_bias = layer.horizontal.bias.double().contiguous()
        self.n = self.h_out.n
        self.pre = torch.empty(self.batch, self.conv.n, dtype=torch.float64)
        self.gated = torch.empty(self.batch, self.n, dtype=torch.float64)
        self.next = layer.h_next
        self.row_bias = torch.empty(layer.width, self.batch, self.conv.n, dtype=torch.float64)    # (W, B, 2n)
        self.v_extra, v_extra_s = _conditioning(layer.v_bias)
        self.h_extra, h_extra_s = _conditioning(layer.h_bias)
        self.row_plan = torch.tensor(self._row_plan(v_extra_s, h_extra_s), dtype=torch.int64)

    def _row_plan(self, v_extra_s: tuple[int, int, int], h_extra_s: tuple[int, int, int]) -> list[int]:
        """This layer's plan of ``_kernels.gated_row``."""
        layer, vertical, v_to_h = self.layer, self.vertical, self.v_to_h
        views = layer.vertical.views                                             # (Ho, Wo, B, rows, cols, C)
        vs, shape = views.stride(), views.shape
        if shape[1] != layer.width:
            raise ValueError(f"expected the vertical stack's rows to be {layer.width} wide, got {shape[1]}")
        fields = dict(v_win=_ptr(views), v_win_h=vs[0], v_win_w=vs[1], v_win_b=vs[2], v_win_r=vs[3], v_win_c=vs[4],
                      v_rows=shape[3], v_cols=shape[4], v_channels=shape[5], v_wq=_ptr(vertical.integers()),
                      v_panels=_ptr(vertical.panels()), v_ws=_ptr(vertical.ws), v_bias=_ptr(vertical.bias),
                      v_bits=vertical.bits, v_n=vertical.n, v_extra=0 if self.v_extra is None else _ptr(self.v_extra),
                      v_extra_h=v_extra_s[0], v_extra_w=v_extra_s[1], v_extra_b=v_extra_s[2], v_next=0, v_next_h=0,
                      v_next_w=0, v_next_b=0, t_wq=_ptr(v_to_h.integers()), t_panels=_ptr(v_to_h.panels()),
                      t_ws=_ptr(v_to_h.ws), t_bias=_ptr(v_to_h.bias), t_bits=v_to_h.bits, h_bias=_ptr(self.h_bias),
                      h_extra=0 if self.h_extra is None else _ptr(self.h_extra), h_extra_h=h_extra_s[0],
                      h_extra_w=h_extra_s[1], h_extra_b=h_extra_s[2], row_out=_ptr(self.row_bias), width=layer.width,
                      batch=self.batch)
        if layer.v_next is not None:
            buf, pad = layer.v_next.buf, layer.v_next.pad                         # (B, H + pads, W + pads, n)
            sb, sy, sx, sc = buf.stride()
            if sc != 1:
                raise ValueError("expected channels-last caches")
            fields.update(v_next=_ptr(buf) + 8 * (pad.top * sy + pad.left * sx), v_next_h=sy, v_next_w=sx, v_next_b=sb)
        return [fields[name] for name in ROW_FIELDS]

    def plan(self, last: Tensor) -> list[int]:
        """This layer's row of the plan of ``_kernels.gated_column``."""
        vs, shape = self.vs, self.shape
        bias_s, conv, h_out = self.row_bias.stride(), self.conv, self.h_out
        fields = dict(conv_wq=_ptr(conv.integers()), conv_panels=_ptr(conv.panels()), conv_ws=_ptr(conv.ws),
                      conv_n=conv.n, conv_bits=conv.bits, win=self.base, win_h=vs[0], win_w=vs[1], win_b=vs[2],
                      win_r=vs[3], win_c=vs[4], rows=shape[3], cols=shape[4], channels=shape[5],
                      row_bias=_ptr(self.row_bias), row_bias_w=bias_s[0], row_bias_b=bias_s[1], pre=_ptr(self.pre),
                      gated=_ptr(self.gated), out_wq=_ptr(h_out.integers()), out_panels=_ptr(h_out.panels()),
                      out_ws=_ptr(h_out.ws), out_n=self.n, out_bits=h_out.bits, out_bias=_ptr(h_out.bias), next=0,
                      next_b=0, next_h=0, next_w=0, next_top=0, next_left=0, last=_ptr(last),
                      first=int(self.layer.first))
        if self.next is not None:
            s = self.next.buf.stride()
            fields.update(next=_ptr(self.next.buf), next_b=s[0], next_h=s[1], next_w=s[2], next_top=self.next.pad.top,
                          next_left=self.next.pad.left)
        return [fields[name] for name in LAYER_FIELDS]

    def start_row(self, h: int) -> None:
        """``CachedGatedLayer.start_row``: the vertical stack's row h - 1 and row h's bias."""
        if h:
            threads = _split(self.layer.width * self.batch, self.vertical.k * self.vertical.n)
            self.vertical.checked(_kernels.gated_row(_ptr(self.row_plan), h, threads))
            return
        layer = self.layer                                                       # shift_down fills row 0 with zeros
        torch.add(layer.v_to_h.bias.expand(layer.width, self.batch, -1), self.h_bias, out=self.row_bias)
        if layer.h_bias is not None:
            self.row_bias.add_(bias_row(layer.h_bias, 0))


def quantized_weights(log_probs: Tensor) -> np.ndarray:
    """quantize.quantized_weights with elementary.py's softmax (formats 3 and 4), compiled where :func:`available`."""
    lp = log_probs.detach().to(device="cpu", dtype=torch.float64).contiguous()
    if available() and lp.dim() == 2 and lp.numel():
        out = np.empty(tuple(lp.shape))
        if _kernels.rows_softmax(out.ctypes.data, _ptr(lp), lp.shape[0], lp.shape[1], QUANTIZE,
                                 float(TOTAL - lp.shape[1]), _split(lp.shape[0], EXP_WORK * lp.shape[1])) == 0:
            return out
    return quantize.quantized_weights(log_probs, elementary.softmax)


FUSED = {CachedGatedPixelCNN: GatedColumn}                   # stepper class -> its fused column


if _kernels is not None and (len(LAYER_FIELDS), len(HEAD_FIELDS), len(ROW_FIELDS)) != (
        _kernels.LAYER_FIELDS, _kernels.HEAD_FIELDS, _kernels.ROW_FIELDS):
    raise ImportError("pixelcnn.coding._kernels lays out the gated plans otherwise than fused.py: rebuild it")
