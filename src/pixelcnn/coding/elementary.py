"""exp, log, sigmoid, tanh and the functions built on them, the same bits on every machine.

Each is a formula in correctly rounded IEEE-754 operations (``+ - * /``, which every CPU kernel
and GPU computes alike) over tables that are part of the codec's format: exp and log at grid
points computed once with Python's ``decimal`` module, whose ``exp`` and ``ln`` are correctly
rounded on every platform, and a sigmoid table built from them by these formulas. Never libm or a
vectorised transcendental kernel, whose last bits differ between machines. Accuracy against
float64: exp within 7.5e-9 relative, sigmoid and tanh within 2e-8 and 4e-8 absolute, log within
1e-14 (tests/test_exact.py). NaN reads as 0 here (the codec refuses NaN log-probabilities where it
turns them into integers). Part of the codec's exact arithmetic (:mod:`pixelcnn.coding.exact`).
"""

from __future__ import annotations

import functools
import math
from decimal import Decimal, localcontext

import torch
from torch import Tensor

from pixelcnn.coding.blocks import UnsupportedOperation, exact_sum, matmul, to_blocks

EXP_MIN, EXP_MAX = -708, 709    # exp's domain kept away from float64 subnormals and overflow
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
    """A table as a float64 tensor on ``device``: those of :func:`_decimal_tables`, and ``sigmoid`` on
    its grid, computed from the exp tables by the formulas of this module (so the same everywhere)."""
    if name == "sigmoid":
        grid = torch.arange(-SIGMOID_RANGE * 2**SIGMOID_STEP, SIGMOID_RANGE * 2**SIGMOID_STEP + 1,
                            dtype=torch.float64, device=device) * 2.0**-SIGMOID_STEP
        e = exp(-grid.abs())
        return torch.where(grid >= 0, 1.0 / (e + 1.0), e / (e + 1.0))
    return torch.tensor(_decimal_tables()[name], dtype=torch.float64, device=device)


@functools.lru_cache(maxsize=None)
def _slopes(name: str, device: torch.device) -> Tensor:
    """Differences between neighbouring entries of table ``name`` (0 after the last)."""
    t = _table(name, device)
    return torch.cat([t[1:] - t[:-1], t.new_zeros(1)])


def _interpolate(name: str, u: Tensor) -> Tensor:
    """Table ``name`` read at ``u`` (in units of its step, within its range; overwritten): linear interpolation."""
    i = torch.floor(u)
    frac = u.sub_(i)
    i = i.to(torch.int32).reshape(-1)
    value = _table(name, u.device).index_select(0, i).view(u.shape)
    slope = _slopes(name, u.device).index_select(0, i).view(u.shape)
    return value.add_(slope.mul_(frac))


def exp(x: Tensor) -> Tensor:
    """e**x = e**n e**f, n = floor(x), f in [0, 1): a table of e**n and e**f interpolated on 2^-12 steps.

    Every step exact but the interpolation (within 2^-27 = 7.5e-9 relative) and the last product.
    Below e**-708: 0; above e**709.5: inf. NaN reads as 0: the functions of this module do not
    check for NaN in every call; the codec refuses NaN log-probabilities where it turns them into
    integers.
    """
    x = x.double()
    xc = torch.nan_to_num(x).clamp_(EXP_MIN, EXP_MAX + 0.5)
    n = torch.floor(xc)
    out = _interpolate("exp_frac", xc.sub_(n).mul_(2.0**EXP_STEP))
    out.mul_(_table("exp_int", x.device).index_select(0, n.sub_(EXP_MIN).to(torch.int32).reshape(-1)).view(x.shape))
    return out.masked_fill_(x < EXP_MIN, 0.0).masked_fill_(x > EXP_MAX + 0.5, math.inf)


_LOG_SERIES = (1.0, -1 / 2, 1 / 3, -1 / 4, 1 / 5, -1 / 6, 1 / 7)


def _log1p_series(u: Tensor) -> Tensor:
    """ln(1 + u) for |u| <= 2^-8 by its 7-term series in Horner form (exact to 2^-64)."""
    poly = torch.full_like(u, _LOG_SERIES[-1])
    for c in reversed(_LOG_SERIES[:-1]):
        poly = poly * u + c
    return poly * u


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
    out = (e - 1).double() * _table("ln2", dev)[0] + _table("log_recip", dev)[i] + _log1p_series(u)
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
    return torch.where(x.abs() < 1 / 256, _log1p_series(x.clamp(-1 / 256, 1 / 256)), log(x + 1.0))


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


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False, *, blocks=to_blocks) -> Tensor:
    """softmax(q k^T scale, masked) v, as ``F.scaled_dot_product_attention`` defines it: the two products exact
    (:func:`matmul`), the scale one rounding, the softmax this module's over the allowed keys only (a masked
    key's weight is exactly 0). A query with no allowed key, which the kernels turn into NaN, is refused."""
    if dropout_p or enable_gqa:
        raise UnsupportedOperation(f"exact attention takes no dropout or grouped-query heads, got dropout_p={dropout_p}, "
                                   f"enable_gqa={enable_gqa}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = matmul(q, k.transpose(-2, -1), blocks=blocks) * scale                 # (..., L, S)
    allowed = None
    if is_causal:
        allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
    if attn_mask is not None:
        if attn_mask.dtype != torch.bool:
            raise UnsupportedOperation("exact attention takes a boolean attn_mask (True: attend), got floats")
        allowed = attn_mask if allowed is None else allowed & attn_mask
    if allowed is not None:
        if not bool(allowed.any(-1).all()):
            raise UnsupportedOperation("exact attention: a query with no key to attend to has no softmax")
        scores = scores.masked_fill(~allowed, -math.inf)
    return matmul(softmax(scores, -1), v.double(), blocks=blocks)


def logsumexp(x: Tensor, dim, keepdim: bool = False) -> Tensor:
    d, top = _shifted(x, dim)
    out = log(exact_sum(exp(d), dim, keepdim=True)) + top
    return out if keepdim else out.squeeze(dim)


