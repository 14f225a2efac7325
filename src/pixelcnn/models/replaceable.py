"""Functions of the layers that a caller may replace for a scope (this thread or task).

A layer that has a faster form of its computation (the same function to float rounding) decides by a
``@replaceable`` predicate whether to take it (``layers.tanh_takes_sigmoid_form``,
``LocalConv.takes_split_form``). The layers do not know who replaces what: a caller that must repeat an earlier
computation bit for bit replaces those predicates inside :func:`replaced` (the codec: its table of the forms
the releases that wrote its files computed, ``coding/arithmetic.py``).

    with replaced({tanh_takes_sigmoid_form: never}):
        model.log_prob(x)                      # every whole map takes torch.tanh
"""

from __future__ import annotations

import contextlib
import functools
from contextvars import ContextVar
from typing import Callable, Iterator, Mapping

_REPLACED: ContextVar[Mapping[Callable, Callable]] = ContextVar("replaced", default={})


def replaceable(func: Callable) -> Callable:
    """``func``, or its replacement inside :func:`replaced` (a method: the replacement takes ``self`` too)."""

    @functools.wraps(func)
    def call(*args, **kwargs):
        return _REPLACED.get().get(call, func)(*args, **kwargs)

    return call


@contextlib.contextmanager
def replaced(replacements: Mapping[Callable, Callable]) -> Iterator[None]:
    """Inside, each ``@replaceable`` function of ``replacements`` calls its replacement instead."""
    others = [f for f in replacements if not hasattr(f, "__wrapped__")]
    if others:
        raise TypeError(f"expected @replaceable functions, got {others}")
    token = _REPLACED.set({**_REPLACED.get(), **replacements})
    try:
        yield
    finally:
        _REPLACED.reset(token)


def never(*args, **kwargs) -> bool:
    """A predicate's replacement that always says no (a faster form never taken)."""
    return False
