"""The order in which a model visits the pixels of an image: :class:`Order`, the one form that networks,
steppers and the sampling loop take.

Inside a pixel the colour channels are always visited R, G, B; an order says which pixel comes when. A name
("hilbert:3", an any-order family's), a bare permutation tensor, "auto" (known pixels first, one order per
image) become Orders at the edges: ``model.visiting_order``, the command line, the web API.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from pixelcnn.errors import ConfigError


class InvalidOrderError(ConfigError):
    """An order that is not a known name, or not a permutation of the image's pixels."""


def check_permutation(order: object, n: int) -> Tensor:
    """``order`` as a long tensor, or InvalidOrderError unless it is a 1-D integer tensor holding each of 0..n-1 once."""
    expected = f"expected an order as a 1-D integer tensor permuting the {n} pixel indices (h * W + w)"
    if not isinstance(order, Tensor):
        raise InvalidOrderError(f"{expected}, got {type(order).__name__}")
    if order.dim() != 1 or order.numel() != n:
        raise InvalidOrderError(f"{expected}, got shape {tuple(order.shape)}")
    if order.dtype.is_floating_point or order.dtype.is_complex or order.dtype == torch.bool:
        raise InvalidOrderError(f"{expected}, got dtype {order.dtype}")
    order = order.long()
    counts = torch.bincount(order.clamp(0, n - 1).cpu(), minlength=n)
    if int(order.min()) < 0 or int(order.max()) >= n or bool((counts != 1).any()):
        missing = (counts == 0).nonzero().flatten()[:5].tolist()
        raise InvalidOrderError(f"{expected}, got values in [{int(order.min())}, {int(order.max())}] "
                                f"with {int((counts == 0).sum())} indices missing (e.g. {missing})")
    return order


def ranks(order: Tensor) -> Tensor:
    """(H*W,) step at which each pixel is visited: the inverse permutation of (H*W,) pixel indices."""
    out = torch.empty_like(order)
    out[order] = torch.arange(order.numel(), device=order.device)
    return out


class Order:
    """Every pixel of an H x W image once, in the order a model visits them.

    ``indices`` (H W,) long: the pixel visited k-th, as h W + w (checked: a permutation). An Order is also the
    sequence of those pixels as (h, w) pairs: ``for h, w in order``, ``order[k]``, ``len(order)``. Two Orders are
    equal, and hash alike, when they visit the same pixels of the same shape in the same order, wherever their
    indices live: memos and groups of images key on them.
    """

    __slots__ = ("indices", "height", "width", "_positions", "_key")

    def __init__(self, indices: Tensor, height: int, width: int):
        self.indices = check_permutation(indices, height * width)
        self.height, self.width = height, width
        self._positions: list[tuple[int, int]] | None = None
        self._key: tuple[int, ...] | None = None

    @classmethod
    def raster(cls, height: int, width: int, device: torch.device | str | None = None) -> "Order":
        """Row by row, left to right."""
        return cls(torch.arange(height * width, device=device), height, width)

    def positions(self) -> list[tuple[int, int]]:
        """The (h, w) of each pixel in visiting order."""
        if self._positions is None:
            self._positions = [divmod(p, self.width) for p in self.key[2:]]
        return self._positions

    @property
    def key(self) -> tuple[int, ...]:
        """(H, W, indices...): what equality and hashing compare."""
        if self._key is None:
            self._key = (self.height, self.width, *self.indices.tolist())
        return self._key

    def ranks(self) -> Tensor:
        """(H W,) step at which each pixel is visited."""
        return ranks(self.indices)

    def to(self, device: torch.device | str) -> "Order":
        """The same order with its indices on ``device``."""
        indices = self.indices.to(device)
        if indices is self.indices:
            return self
        moved = Order.__new__(Order)
        moved.indices, moved.height, moved.width = indices, self.height, self.width
        moved._positions, moved._key = self._positions, self._key
        return moved

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.positions())

    def __getitem__(self, k: int) -> tuple[int, int]:
        return self.positions()[k]

    def __len__(self) -> int:
        return self.height * self.width

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Order) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        shown = ", ".join(map(str, self.key[2:8])) + (", ..." if len(self) > 6 else "")
        return f"Order({self.height}x{self.width}: [{shown}])"
