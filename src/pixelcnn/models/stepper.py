"""The one contract between a model and the loops that visit its sub-pixels: a stepper.

The sampling loop (:func:`pixelcnn.sampling.run`), its group form (:func:`pixelcnn.sampling.run_groups`) and
the codec ask a stepper for the conditional log-probabilities of a sub-pixel given every value set before it,
then set its value. Every stepper derives from :class:`Stepper`: the whole-network reference
(:class:`pixelcnn.sampling.NaiveStepper`), the cached steppers of the families
(:class:`pixelcnn.models.incremental.PixelStepper` and its subclasses) and the coarse-to-fine one
(:class:`pixelcnn.models.multiscale.MultiscaleStepper`).

A stepper is plain data that its loop holds: it keeps no reference to itself through its parts (a part
that needs the stepper's state gets it as an argument), so its tensors go back when the loop returns
instead of when Python's cyclic collector happens to run.
"""

from __future__ import annotations

import abc

from torch import Tensor

from pixelcnn.models.order import Order


class Stepper(abc.ABC):
    """Conditional log-probabilities of one sub-pixel at a time, given the values set so far.

    ``x`` (B, C, H, W) holds the values set so far (zeros elsewhere); ``order`` (an :class:`Order`, a sequence of
    (h, w)) the pixels in the order the stepper visits them, colour channels R, G, B inside each pixel. ``groups``
    declares whether the stepper also offers whole groups of pixels: None (one pixel at a time), or ``order`` cut into
    groups whose sub-pixels of one channel are conditionally independent given every earlier group and the
    group's earlier channels. A loop then asks :meth:`group_log_probs` and answers :meth:`set_group`, and
    each row of the former has the bits :meth:`log_probs` would give its sub-pixel.
    """

    groups: list[list[tuple[int, int]]] | None = None

    def __init__(self, x: Tensor, order: Order):
        self.x = x.clone()                                                       # (B, C, H, W) integers
        self.batch, self.channels, self.height, self.width = x.shape
        self.order = order

    @abc.abstractmethod
    def log_probs(self, c: int, h: int, w: int) -> Tensor:
        """(B, L) log-probabilities of sub-pixel (c, h, w) given every value set before it."""

    @abc.abstractmethod
    def set(self, c: int, h: int, w: int, values: Tensor) -> None:
        """Record the (B,) values of sub-pixel (c, h, w)."""

    def add_output(self, output: Tensor) -> None:
        """Add (B, P, H, W) to every pixel's parameters: a completion model's term (``Condition.output``), which
        the sampling loop hands to a cached stepper; the whole-network stepper reads it from the condition."""
        raise NotImplementedError(f"{type(self).__name__} takes no completion term")

    def group_log_probs(self, c: int, group: list[tuple[int, int]]) -> Tensor:
        """(n, B, L) log-probabilities of channel c of the n pixels of ``group`` (one of ``groups``)."""
        raise NotImplementedError(f"{type(self).__name__} offers no groups of pixels (its groups is None)")

    def set_group(self, c: int, group: list[tuple[int, int]], values: Tensor) -> None:
        """Record the (n, B) values of channel c of the pixels of ``group``."""
        raise NotImplementedError(f"{type(self).__name__} offers no groups of pixels (its groups is None)")


class OrderedStepper(Stepper):
    """A stepper that visits its pixels strictly in ``order``, each once: a query or a value for any pixel but
    the current one is refused with an error naming the pixel expected."""

    def __init__(self, x: Tensor, order: Order):
        super().__init__(x, order)
        self.position = 0                                                        # index in ``order`` being filled

    def check_order(self, c: int, h: int, w: int) -> None:
        if self.position >= len(self.order) or self.order[self.position] != (h, w):
            expected = "no more pixels" if self.position >= len(self.order) else f"pixel {self.order[self.position]}"
            raise ValueError(f"a cached stepper visits the pixels in its order, each once: expected {expected}, "
                             f"got channel {c} of pixel ({h}, {w})")
