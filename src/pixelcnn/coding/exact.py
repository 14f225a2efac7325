"""Arithmetic that gives the same bits on every machine: how the codec evaluates a network.

An entropy decoder must see exactly the probabilities its encoder used. Floating-point results
differ between machines in three ways: sums are taken in different orders (kernels, vector
widths, thread counts, cuBLAS), transcendental functions come from different approximations
(glibc, SLEEF, CUDA), and fused multiply-adds round once where separate operations round twice.
Integer networks (Ballé, Johnston & Minnen, "Integer Networks for Data Compression with
Latent-Variable Models", ICLR 2019) remove the first two by accumulating in exact arithmetic and
taking nonlinearities from fixed tables. :class:`ExactArithmetic` applies that idea to any
network of this package without a second copy of it: a ``TorchFunctionMode`` under which the
model's own ``forward`` and cached steppers run in float64 with every operation made exact or
correctly rounded:

* **Linear maps** (``conv2d``, ``conv_transpose2d``, ``linear``, ``mm``, ``addmm``, ``matmul``,
  ``bmm``) and **sums**: each operand is rounded to block floating point, integers times a
  power of two per row (per image for a convolution's input, per output channel for its weight),
  with ``bits_a + bits_b + ceil(log2 K) <= 52`` for a reduction over K terms. Every product and
  every partial sum is then an integer below 2**53 times a common power of two: float64 holds it
  exactly, so every order of summation, every kernel and every device gives the same result.
  That rounding is the model's quantisation (about 20 significant bits per operand; the cost in
  file size is measured in benchmarks/RESULTS.md).
* **Transcendental functions** (``exp``, ``log``, ``sigmoid``, ``tanh``, ``elu``, softmax...)
  are formulas in IEEE-754 ``+ - * /`` over tables that are part of the format (:data:`TABLES`):
  exp and log of grid points computed once with Python's ``decimal`` module, whose ``exp`` and
  ``ln`` are correctly rounded and so the same on every platform. IEEE-754 requires the basic
  operations to be correctly rounded, so each such step gives the same bits in a scalar loop,
  an AVX-512 kernel or on a GPU.
* **Fused forms** (``addcmul``, ``add`` with ``alpha``, division by a number) are split into
  single operations, so no kernel may fuse a multiply and an add into one rounding.
* Everything else must be exact by nature (views, copies, indexing, comparisons, max/min,
  clamping, ``relu``) or a single correctly rounded operation on two tensors. Any other torch
  function raises :class:`UnsupportedOperation`: a family that starts calling something new
  fails its tests instead of silently writing files that decode only where they were written.

Assumptions: IEEE-754 float64 without flush-to-zero of subnormals (PyTorch's default; see
``torch.set_flush_denormal``), which every CPU and CUDA device PyTorch runs on provides.
"""

from __future__ import annotations

import functools
import math
from decimal import Decimal, localcontext
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

PRODUCT_BITS = 52          # |sum of K products of two rounded operands| <= 2**52 < 2**53: exact in float64
EXP_MIN, EXP_MAX = -708, 709    # exp's domain kept away from float64 subnormals and overflow
ROUNDER = 1.5 * 2.0**52         # x + ROUNDER - ROUNDER is x rounded to an integer, for |x| < 2**51


class UnsupportedOperation(RuntimeError):
    """A torch function that :class:`ExactArithmetic` cannot make exact was called."""


# ----- tables: part of the format ------------------------------------------------------------


EXP_STEP = 12             # exp on [0, 1) tabulated every 2^-12: linear interpolation within 2^-27 relative
SIGMOID_STEP, SIGMOID_RANGE = 10, 32     # sigmoid on [-32, 32] every 2^-10: within 2^-26 absolute


@functools.lru_cache(maxsize=None)
def _decimal_tables() -> dict[str, tuple[float, ...]]:
    """Correctly rounded float64 values of exp and log at grid points (Python's ``decimal``).

    ``exp_int[k - EXP_MIN]`` = e**k; ``exp_frac[j]`` = e**(j / 2**EXP_STEP), j = 0 .. 2**EXP_STEP;
    ``recip[i]`` = float64(1 / (1 + i / 256)) and ``log_recip[i]`` = -ln of that float exactly
    (so the pair is consistent); ``ln2``.
    """
    with localcontext() as ctx:
        ctx.prec = 40
        exp_ = lambda d: float(d.exp())                                     # noqa: E731
        recip = [1.0 / (1.0 + i / 256) for i in range(256)]                # each a correctly rounded IEEE division
        return {
            "exp_int": tuple(exp_(Decimal(k)) for k in range(EXP_MIN, EXP_MAX + 1)),
            "exp_frac": tuple(exp_(Decimal(j) / 2**EXP_STEP) for j in range(2**EXP_STEP + 1)),
            "recip": tuple(recip),
            "log_recip": tuple(float(-Decimal(r).ln()) for r in recip),
            "ln2": (float(Decimal(2).ln()),),
        }


@functools.lru_cache(maxsize=None)
def _table(name: str, device: torch.device) -> Tensor:
    """A table as a float64 tensor on ``device``: those of :func:`_decimal_tables`, the slopes
    ``exp_slope`` between neighbouring ``exp_frac`` entries, and ``sigmoid`` (with ``sigmoid_slope``)
    on its grid, computed from the exp tables by the formulas of this module (so the same everywhere)."""
    if name in ("exp_slope", "sigmoid_slope"):
        t = _table(name.replace("_slope", "_frac" if name.startswith("exp") else ""), device)
        return torch.cat([t[1:] - t[:-1], t.new_zeros(1)])
    if name == "sigmoid":
        grid = torch.arange(-SIGMOID_RANGE * 2**SIGMOID_STEP, SIGMOID_RANGE * 2**SIGMOID_STEP + 1,
                            dtype=torch.float64, device=device) * 2.0**-SIGMOID_STEP
        e = exp(-grid.abs())
        return torch.where(grid >= 0, 1.0 / (e + 1.0), e / (e + 1.0))
    return torch.tensor(_decimal_tables()[name], dtype=torch.float64, device=device)


def _interpolate(name: str, u: Tensor) -> Tensor:
    """Table ``name`` read at ``u`` (in units of its step, within its range; overwritten): linear interpolation."""
    i = torch.floor(u)
    frac = u.sub_(i)
    i = i.to(torch.int32).reshape(-1)
    value = _table(name, u.device).index_select(0, i).view(u.shape)
    slope = _table(name.replace("_frac", "") + "_slope", u.device).index_select(0, i).view(u.shape)
    return value.add_(slope.mul_(frac))


# ----- block floating point -------------------------------------------------------------------


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


def _split_bits(k: int) -> int:
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
    bits = _split_bits(w[0].numel())
    xdims = tuple(range(1, x.dim())) if x.dim() == 4 else tuple(range(x.dim()))
    xq, xs = blocks(x, xdims, bits)
    wq, ws = blocks(w, (1, 2, 3), bits)
    out = F.conv2d(xq, wq, None, stride, padding, dilation, groups)
    out = out * xs * (ws.view(1, -1, 1, 1) if x.dim() == 4 else ws.view(-1, 1, 1))
    return out if bias is None else out + bias.double().view(-1, 1, 1)


def conv_transpose2d(x: Tensor, w: Tensor, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, blocks=to_blocks) -> Tensor:
    """F.conv_transpose2d, exact: x per image, w as one block (an output sums at most Cin k k terms)."""
    bits = _split_bits(w.shape[0] // groups * w.shape[2] * w.shape[3])
    xq, xs = blocks(x, tuple(range(1, x.dim())), bits)
    wq, ws = blocks(w, tuple(range(w.dim())), bits)
    out = F.conv_transpose2d(xq, wq, None, stride, padding, output_padding, groups, dilation) * xs * ws
    return out if bias is None else out + bias.double().view(-1, 1, 1)


def matmul(a: Tensor, b: Tensor, *, blocks=to_blocks) -> Tensor:
    """torch.matmul, exact: the rows of ``a`` and the columns of ``b`` in block floating point."""
    bits = _split_bits(a.shape[-1])
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


# ----- transcendental functions ---------------------------------------------------------------


def exp(x: Tensor) -> Tensor:
    """e**x = e**n e**f, n = floor(x), f in [0, 1): a table of e**n and e**f interpolated on 2^-12 steps.

    Every step exact but the interpolation (within 2^-27 = 7.5e-9 relative) and the last product. Below e**-708: 0; above e**709.5: inf. NaN reads as 0: the functions of this
    module do not check for NaN in every call; the codec refuses NaN log-probabilities where it
    turns them into integers.
    """
    x = x.double()
    xc = torch.nan_to_num(x).clamp_(EXP_MIN, EXP_MAX + 0.5)
    n = torch.floor(xc)
    out = _interpolate("exp_frac", xc.sub_(n).mul_(2.0**EXP_STEP))
    out.mul_(_table("exp_int", x.device).index_select(0, n.sub_(EXP_MIN).to(torch.int32).reshape(-1)).view(x.shape))
    return out.masked_fill_(x < EXP_MIN, 0.0).masked_fill_(x > EXP_MAX + 0.5, math.inf)


_LOG_SERIES = (1.0, -1 / 2, 1 / 3, -1 / 4, 1 / 5, -1 / 6, 1 / 7)


def log(x: Tensor) -> Tensor:
    """ln x = e ln 2 - ln(r_i) + ln(m r_i), x = m 2^e, m in [1, 2), r_i ~ 1 / m from a 256-entry table.

    m r_i lies within 2^-8 of 1, where a 7-term series of ln(1 + u) is exact to 2^-64.
    """
    x = x.double()
    dev = x.device
    mant, e = torch.frexp(x)                                 # x = mant 2^e, mant in [0.5, 1)
    m = mant * 2.0
    i = torch.floor((m - 1.0) * 256.0).clamp(0, 255).long()
    u = m * _table("recip", dev)[i] - 1.0
    poly = torch.full_like(u, _LOG_SERIES[-1])
    for c in reversed(_LOG_SERIES[:-1]):
        poly = poly * u + c
    out = (e - 1).double() * _table("ln2", dev)[0] + _table("log_recip", dev)[i] + poly * u
    out = torch.where(x == 0, torch.full_like(out, -math.inf), out)
    out = torch.where(x == math.inf, x, out)
    return torch.where((x < 0) | torch.isnan(x), torch.full_like(out, math.nan), out)


def expm1(x: Tensor) -> Tensor:
    """e**x - 1: its Taylor series to degree 17 where |x| < 1 (relative precision near 0), else exp(x) - 1.
    Within 1.5e-8 relative."""
    x = x.double()
    small = x.clamp(-1.0, 1.0)
    poly = torch.full_like(small, 1 / math.factorial(17))
    for k in range(16, 0, -1):
        poly = poly.mul_(small).add_(1 / math.factorial(k))
    return torch.where(x.abs() < 1.0, poly.mul_(small), exp(x) - 1.0)


def log1p(x: Tensor) -> Tensor:
    """ln(1 + x): the series of :func:`log` where |x| < 2^-8 (relative precision near 0), else ln(1 + x)."""
    x = x.double()
    small = x.clamp(-1 / 256, 1 / 256)
    poly = torch.full_like(small, _LOG_SERIES[-1])
    for c in reversed(_LOG_SERIES[:-1]):
        poly = poly * small + c
    return torch.where(x.abs() < 1 / 256, poly * small, log(x + 1.0))


def sigmoid(x: Tensor) -> Tensor:
    """1 / (1 + e**-x) from a table on [-32, 32] every 2^-10, interpolated (within 2^-26); 0 or 1 past it.
    NaN reads as 0 (as in :func:`exp`)."""
    x = x.double()
    u = torch.nan_to_num(x).clamp_(-SIGMOID_RANGE, SIGMOID_RANGE).add_(SIGMOID_RANGE).mul_(2.0**SIGMOID_STEP)
    return _interpolate("sigmoid", u)


def tanh(x: Tensor) -> Tensor:
    """2 sigmoid(2x) - 1."""
    return sigmoid(x.double() * 2.0) * 2.0 - 1.0


def softplus(x: Tensor, beta=1, threshold=20) -> Tensor:
    if beta != 1:
        raise UnsupportedOperation(f"exact softplus takes beta=1, got {beta}")
    x = x.double()
    return torch.where(x > threshold, x, log1p(exp(x.clamp(max=threshold))))


def logsigmoid(x: Tensor) -> Tensor:
    """min(x, 0) - ln(1 + e**-|x|)."""
    x = x.double()
    return x.clamp(max=0.0) - log1p(exp(-x.abs()))


def elu(x: Tensor, alpha=1.0, inplace=False) -> Tensor:
    x = x.double()
    neg = expm1(x.clamp(max=0.0))
    return torch.where(x > 0, x, neg if alpha == 1.0 else neg * alpha)


def glu(x: Tensor, dim=-1) -> Tensor:
    a, b = x.chunk(2, dim)
    return a.double() * sigmoid(b)


def _shifted(x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """(x - max, max) along ``dim``, the max taken as 0 in rows without a finite value."""
    x = x.double()
    top = x.amax(dim=dim, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return x - top, top


def log_softmax(x: Tensor, dim=None, _stacklevel=3, dtype=None) -> Tensor:
    d, _ = _shifted(x, dim)
    return d - log(exact_sum(exp(d), dim, keepdim=True))


def softmax(x: Tensor, dim=None, _stacklevel=3, dtype=None) -> Tensor:
    d, _ = _shifted(x, dim)
    e = exp(d)
    return e / exact_sum(e, dim, keepdim=True)


def logsumexp(x: Tensor, dim, keepdim: bool = False) -> Tensor:
    d, top = _shifted(x, dim)
    out = log(exact_sum(exp(d), dim, keepdim=True)) + top
    return out if keepdim else out.squeeze(dim)


# ----- the mode -------------------------------------------------------------------------------


def _sum(t: Tensor, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    return exact_sum(t, dim, keepdim)


def _divide(a, b, *, rounding_mode=None):
    """a / b: by a number, a product with its correctly rounded reciprocal (a kernel may do either);
    by a tensor, IEEE division."""
    if rounding_mode is not None:
        raise UnsupportedOperation(f"exact division of floats takes no rounding_mode, got {rounding_mode!r}")
    return a * (1.0 / b) if isinstance(b, (int, float)) else torch.div(a, b)


def _add(a, b, *, alpha=1):
    return torch.add(a, b if alpha == 1 else b * alpha)


def _sub(a, b, *, alpha=1):
    return torch.sub(a, b if alpha == 1 else b * alpha)


def _addcmul(t, a, b, *, value=1):
    prod = a * b
    return t + (prod if value == 1 else prod * value)


# Rewritten functions, by name (torch.X, Tensor.X and F.X share it); an in-place X_ computes X and copies.
REWRITTEN: dict[str, Callable] = {
    "conv2d": conv2d, "conv_transpose2d": conv_transpose2d, "linear": linear, "mm": matmul,
    "matmul": matmul, "__matmul__": matmul, "bmm": matmul, "addmm": addmm,
    "sum": _sum, "exp": exp, "expm1": expm1, "log": log, "log1p": log1p, "sigmoid": sigmoid,
    "tanh": tanh, "softplus": softplus, "log_sigmoid": logsigmoid, "elu": elu, "glu": glu,
    "log_softmax": log_softmax, "softmax": softmax, "logsumexp": logsumexp,
    "div": _divide, "true_divide": _divide, "__truediv__": _divide, "__itruediv__": _divide,
    "add": _add, "sub": _sub, "addcmul": _addcmul,
}
LINEAR = frozenset(["conv2d", "conv_transpose2d", "linear", "mm", "matmul", "__matmul__", "bmm", "addmm"])
# Exact by nature (views, copies, indexing, comparisons, max/min, clamping, creation, conversion),
# or one correctly rounded IEEE operation (+, -, * and a number divided by a tensor).
EXACT = frozenset("""
    __get__ __getitem__ __setitem__ __bool__ __int__ __float__ __index__ __len__ __format__ __repr__
    __eq__ __ne__ __lt__ __le__ __gt__ __ge__ __and__ __or__ __xor__ __invert__ __neg__ __abs__
    __add__ __radd__ __iadd__ __sub__ __rsub__ __isub__ __mul__ __rmul__ __imul__ __rtruediv__
    __iand__ __ior__ __lshift__ __rshift__ __floordiv__ __mod__
    abs abs_ neg neg_ mul mul_ minimum maximum clamp clamp_ clamp_min clamp_max relu relu_ floor ceil
    round trunc sign where eq ne lt le gt ge logical_and logical_or logical_not isfinite isnan isinf
    all any nonzero argmax argmin max min amax amin gather take index_select masked_fill masked_fill_
    scatter scatter_ index_put_ index_copy_ cat concat stack split chunk unbind narrow flatten
    unflatten view view_as reshape reshape_as permute transpose t unsqueeze squeeze expand expand_as
    flip roll unfold as_strided contiguous clone copy_ zero_ fill_ detach to cpu cuda float double
    long int bool type_as new_zeros new_ones new_empty new_full new_tensor zeros ones zeros_like
    ones_like empty empty_like full full_like arange eye tensor tril_indices triu_indices meshgrid
    numpy tolist item dim size numel stride storage_offset is_contiguous is_floating_point pad
    dropout repeat tile _set_grad_enabled requires_grad_ data_ptr element_size movedim
    broadcast_to select diagonal tril triu frexp embedding
""".split())


class ExactArithmetic(TorchFunctionMode):
    """Every torch function inside runs exactly or correctly rounded (see the module docstring).

        with torch.no_grad(), ExactArithmetic():
            log_probs = model.log_prob(x)          # the same bits on every machine

    Floating tensors come out as float64. A torch function with no rule raises
    :class:`UnsupportedOperation` naming it.
    """

    def __init__(self):
        super().__init__()
        blocks = CachedBlocks()
        self.rules = {name: functools.partial(rule, blocks=blocks) if name in LINEAR else rule
                      for name, rule in REWRITTEN.items()}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        rule = self.rules.get(name)
        if rule is None and name.endswith("_") and not name.endswith("__") and name[:-1] in self.rules:
            return args[0].copy_(self._apply(func, self.rules[name[:-1]], args, kwargs))
        if rule is not None:
            out = kwargs.pop("out", None)
            if kwargs.pop("inplace", False):
                out = args[0]
            result = self._apply(func, rule, args, kwargs)
            return result if out is None else out.copy_(result)
        if name in EXACT:
            return func(*args, **kwargs)
        raise UnsupportedOperation(f"exact arithmetic has no rule for torch function {name or func!r}; "
                                   f"add one to pixelcnn.coding.exact before a network may use it")

    @staticmethod
    def _apply(func, rule, args, kwargs):
        """The rule, where the first argument is a floating tensor; the original function otherwise
        (integer sums and products are exact already)."""
        first = args[0] if args else next(iter(kwargs.values()), None)
        if isinstance(first, Tensor) and not first.is_floating_point() and func.__name__ not in ("__truediv__", "div"):
            return func(*args, **kwargs)
        return rule(*args, **kwargs)
