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
  ``bmm``, and attention's two products: ``scaled_dot_product_attention`` around an exact softmax)
  and **sums** (:mod:`pixelcnn.coding.blocks`): each operand is rounded to block floating point,
  integers times a power of two per row (per image for a convolution's input, per output channel for its weight),
  with ``bits_a + bits_b + ceil(log2 K) <= 52`` for a reduction over K terms. Every product and
  every partial sum is then an integer below 2**53 times a common power of two: float64 holds it
  exactly, so every order of summation, every kernel and every device gives the same result.
  That rounding is the model's quantisation (about 20 significant bits per operand; the cost in
  file size is measured in benchmarks/RESULTS.md). Weights seen again unchanged are rounded once.
* **Transcendental functions** (``exp``, ``log``, ``sigmoid``, ``tanh``, ``elu``, softmax...)
  (:mod:`pixelcnn.coding.elementary`) are formulas in IEEE-754 ``+ - * /`` over tables that are
  part of the format: exp and log of grid points computed once with Python's ``decimal`` module, whose ``exp`` and
  ``ln`` are correctly rounded and so the same on every platform. IEEE-754 requires the basic
  operations to be correctly rounded, so each such step gives the same bits in a scalar loop,
  an AVX-512 kernel or on a GPU.
* **Fused forms** (``addcmul``, ``add`` with ``alpha``, division by a number) are split into
  single operations, so no kernel may fuse a multiply and an add into one rounding.
* Everything else must be exact by nature (views, copies, indexing, comparisons, max/min,
  clamping, ``relu``) or a single correctly rounded operation on two tensors. Any other torch
  function raises :class:`UnsupportedOperation`: a family that starts calling something new
  fails its tests instead of silently writing files that decode only where they were written.

The rules run compiled where the package's C extension is built (:mod:`pixelcnn.coding.fused`: the same
operations in the same order, tested bit for bit against the rules of this module and of blocks.py and
elementary.py, which stay the reference).

Assumptions: IEEE-754 float64 without flush-to-zero of subnormals (PyTorch's default; see
``torch.set_flush_denormal``), which every CPU and CUDA device PyTorch runs on provides.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from pixelcnn.coding import fused
from pixelcnn.coding.blocks import (CachedBlocks, UnsupportedOperation, addmm, conv2d, conv_transpose2d, exact_sum,
                                    linear, matmul, to_blocks)
from pixelcnn.coding.elementary import (elu, exp, expm1, glu, log, log1p, log_softmax, logsigmoid, logsumexp,
                                        scaled_dot_product_attention, sigmoid, softmax, softplus, tanh)

__all__ = ["ExactArithmetic", "UnsupportedOperation", "to_blocks", "exact_sum", "conv2d", "conv_transpose2d",
           "matmul", "linear", "addmm", "exp", "log", "expm1", "log1p", "sigmoid", "tanh", "softplus",
           "logsigmoid", "elu", "glu", "log_softmax", "softmax", "logsumexp", "scaled_dot_product_attention"]


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
    "scaled_dot_product_attention": scaled_dot_product_attention,
    "div": _divide, "true_divide": _divide, "__truediv__": _divide, "__itruediv__": _divide,
    "add": _add, "sub": _sub, "addcmul": _addcmul,
}
LINEAR = frozenset(["conv2d", "conv_transpose2d", "linear", "mm", "matmul", "__matmul__", "bmm", "addmm",
                    "scaled_dot_product_attention"])
# Exact by nature (views, copies, indexing, comparisons, max/min, clamping, creation, conversion),
# or one correctly rounded IEEE operation (+, -, * and a number divided by a tensor).
EXACT = frozenset("""
    __get__ __getitem__ __setitem__ __bool__ __int__ __float__ __index__ __len__ __format__ __repr__ equal
    __eq__ __ne__ __lt__ __le__ __gt__ __ge__ __and__ __or__ __xor__ __invert__ __neg__ __abs__
    __add__ __radd__ __iadd__ __sub__ __rsub__ __isub__ __mul__ __rmul__ __imul__ __rtruediv__
    __iand__ __ior__ __lshift__ __rshift__
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
    broadcast_to select diagonal tril triu frexp embedding bincount
""".split())


class ExactArithmetic(TorchFunctionMode):
    """Every torch function inside runs exactly or correctly rounded (see the module docstring).

        with torch.no_grad(), ExactArithmetic():
            log_probs = model.log_prob(x)          # the same bits on every machine

    Floating tensors come out as float64. A torch function with no rule raises
    :class:`UnsupportedOperation` naming it.
    """

    def __init__(self, compiled: bool | None = None):
        """``compiled``: take the compiled forms of the rules (:mod:`pixelcnn.coding.fused`), the same bits;
        by default where they are available."""
        super().__init__()
        if compiled and fused._kernels is None:
            raise ValueError("ExactArithmetic(compiled=True): pixelcnn.coding._kernels is not built (no C compiler "
                             "when the package was installed); use compiled=None or False")
        blocks = CachedBlocks()
        rules = dict(REWRITTEN)
        if fused.available() if compiled is None else compiled:
            fused.hand_over_tables()
            rules.update(fused.RULES)
        self.rules = {name: functools.partial(rule, blocks=blocks) if name in LINEAR else rule
                      for name, rule in rules.items()}

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
