"""Generation orders of the pixels of an image: which pixel an any-order model visits when.

Jain, Abbeel & Pathak 2020, "Locally Masked Convolution for Autoregressive Models" (UAI),
section 4: a model trained on several orders of the H x W pixels. An order is a 1-D permutation
of the H*W pixel indices (index h * W + w), in visiting order; inside a pixel the colour channels
are always visited R, G, B. Orders are named ``NAME`` or ``NAME:S``:

* ``raster``: row by row, left to right;
* ``s_curve``: row by row, alternating left-to-right and right-to-left (a boustrophedon), so that
  consecutive pixels are always neighbours;
* ``hilbert``: the generalised Hilbert curve of any rectangle ("gilbert", after J. Červený's
  construction): a space-filling curve whose consecutive pixels are neighbours (one diagonal step
  at most, where both sides cannot be split evenly);

and ``S`` in 0..7 is one of the 8 symmetries of the rectangle: bit 0 flips left-right, bit 1
flips top-bottom, bit 2 transposes (the curve is drawn on the W x H rectangle and its (row,
column) read as (column, row)). ``S`` defaults to 0. The generalised Hilbert curve of a non-square
rectangle runs along its longer side whichever way it is drawn, so there its transposes repeat its
flips: 4 different orders, not 8.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from pixelcnn.models import order as order_lib
from pixelcnn.models.order import InvalidOrderError, ranks

NAMES = ("raster", "s_curve", "hilbert")
SYMMETRIES = 8


def parse_name(spec: str) -> tuple[str, int]:
    """'hilbert:3' -> ('hilbert', 3); 's_curve' -> ('s_curve', 0)."""
    expected = f"expected an order NAME or NAME:S with NAME in {NAMES} and S in 0..{SYMMETRIES - 1}"
    name, _, sym = str(spec).partition(":")
    if name not in NAMES or (sym and not (sym.isdigit() and int(sym) < SYMMETRIES)):
        raise InvalidOrderError(f"{expected}, got {spec!r}")
    return name, int(sym or 0)


def named(name: str, height: int, width: int, symmetry: int = 0) -> Tensor:
    """(H*W,) long: pixel indices h * W + w of order ``name`` with ``symmetry`` applied."""
    if name not in NAMES or not 0 <= symmetry < SYMMETRIES:
        raise InvalidOrderError(f"expected an order in {NAMES} and a symmetry in 0..{SYMMETRIES - 1}, "
                                f"got {name!r} with symmetry {symmetry!r}")
    transpose = bool(symmetry & 4)
    rows, cols = (width, height) if transpose else (height, width)
    r, c = _CURVES[name](rows, cols)                                        # (H*W,) each, on the rows x cols grid
    h, w = (c, r) if transpose else (r, c)
    if symmetry & 1:
        w = width - 1 - w
    if symmetry & 2:
        h = height - 1 - h
    return h * width + w


def resolve(order: str | Tensor, height: int, width: int) -> Tensor:
    """An order given by name (``NAME[:S]``) or as a permutation tensor -> a checked (H*W,) long tensor."""
    if isinstance(order, str):
        name, symmetry = parse_name(order)
        return named(name, height, width, symmetry)
    return check_permutation(order, height * width)


def check_permutation(order: object, n: int) -> Tensor:
    """:func:`pixelcnn.models.order.check_permutation`, whose error for what is not a tensor names the names too."""
    if not isinstance(order, Tensor):
        raise InvalidOrderError(f"expected an order as a 1-D integer tensor permuting the {n} pixel indices (h * W + w) "
                                f"or a name NAME[:S] with NAME in {NAMES}, got {type(order).__name__}")
    return order_lib.check_permutation(order, n)


def known_first(known: Tensor, candidates: Tensor) -> Tensor:
    """The order that visits every known pixel first, then the unknown ones, both as a training order does.

    ``known`` (H, W) bool: pixels all of whose channels are known; ``candidates`` (K, H W) the
    model's training orders. Of these, the one that needs the fewest swaps to put the known pixels
    first (fewest pairs of an unknown pixel visited before a known one) is split, stably, into its
    known and its unknown pixels. Both parts keep that order's local paths, the contexts the model
    was trained on; where one training order already visits the known pixels first (the bottom
    half known, and an S-curve that starts at the bottom) it is used as it is.
    """
    flat = known.flatten().to(candidates.device)
    seen = flat[candidates]                                                 # (K, H W): known, in visiting order
    known_after = seen.sum(1, keepdim=True) - seen.long().cumsum(1)         # known pixels still to come
    inversions = (known_after * ~seen).sum(1)                               # (K,)
    base = candidates[int(inversions.argmin())]
    return torch.cat([base[flat[base]], base[~flat[base]]])


def onion(known: Tensor, candidates: Tensor) -> Tensor:
    """Known pixels first, from the farthest from any unknown pixel to the nearest; then the unknown ones from the border in.

    ``known`` (H, W) bool; ``candidates`` (K, H W) the training orders, of which the one
    :func:`known_first` splits orders the pixels at the same distance. Distances are Chebyshev
    (rings of the 8 neighbours). A hidden feature of a locally masked network at a pixel depends
    only on pixels visited before it, so visiting the known pixels that border the unknown ones
    last gives those border features the whole known image within their reach, and each unknown
    pixel, visited from the border of its hole inwards, reads them and the ring before it.
    """
    height, width = known.shape
    rank = ranks(known_first(known, candidates)).view(height, width)
    depth = torch.where(known, rings(known), -rings(~known))                 # > 0 known, < 0 unknown
    key = (-depth.long()) * (height * width) + rank                           # deepest known first, deepest unknown last
    return key.flatten().argsort()


def rings(inside: Tensor) -> Tensor:
    """(H, W) long: for each pixel of ``inside``, its Chebyshev distance to the nearest pixel outside; 0 outside.

    A neighbour of an outside pixel (diagonals included) gets 1; where nothing is outside, every pixel gets 1.
    """
    reached = (~inside).float()[None, None]                                  # (1, 1, H, W): ring 0
    if not bool(reached.any()):
        return inside.long()
    out = torch.zeros(inside.shape, dtype=torch.long, device=inside.device)
    ring = 0
    while not bool(reached.all()):
        ring += 1
        grown = F.max_pool2d(reached, 3, stride=1, padding=1)
        out[(grown > reached)[0, 0]] = ring
        reached = grown
    return out


# The shapes of what is known in a completion: everything but a rectangular hole, one side of the
# image, or a random subset of the pixels.
MASK_FAMILIES = ("hole", "side", "pixels")


def random_known(height: int, width: int, generator: torch.Generator) -> Tensor:
    """(H, W) bool: a random mask of known pixels, of one of the :data:`MASK_FAMILIES` drawn uniformly.

    ``hole``: unknown is a rectangle of random size (1..H by 1..W) and position; ``side``: known is
    the top, bottom, left or right part of the image, cut between two random rows or columns; ``pixels``:
    each pixel is known with a probability drawn uniformly from [0, 1). Every draw comes from
    ``generator``, so a seeded generator gives the same mask.
    """
    family = MASK_FAMILIES[_draw(len(MASK_FAMILIES), generator)]
    if family == "pixels":
        density = torch.rand((), generator=generator)
        return torch.rand(height, width, generator=generator) < density
    hs, ws = torch.arange(height)[:, None], torch.arange(width)[None, :]    # (H, 1), (1, W)
    if family == "hole":
        hh, hw = 1 + _draw(height, generator), 1 + _draw(width, generator)
        top, left = _draw(height - hh + 1, generator), _draw(width - hw + 1, generator)
        inside = (hs >= top) & (hs < top + hh) & (ws >= left) & (ws < left + hw)
        return ~inside
    side = _draw(4, generator)                                              # 0 top, 1 bottom, 2 left, 3 right
    coord, n = (hs, height) if side < 2 else (ws, width)
    cut = 1 + _draw(max(n - 1, 1), generator)                               # 1..n-1 rows or columns known
    kept = coord < cut if side % 2 == 0 else coord >= n - cut
    return kept.expand(height, width).clone()


def _draw(n: int, generator: torch.Generator) -> int:
    """A uniform integer in 0..n-1."""
    return int(torch.randint(n, (1,), generator=generator))


# ----- the curves: (rows, cols) -> (row index, column index) of each step ---------------------------


def _raster(rows: int, cols: int) -> tuple[Tensor, Tensor]:
    i = torch.arange(rows * cols)
    return i // cols, i % cols


def _s_curve(rows: int, cols: int) -> tuple[Tensor, Tensor]:
    r, c = _raster(rows, cols)
    return r, torch.where(r % 2 == 1, cols - 1 - c, c)


def _hilbert(rows: int, cols: int) -> tuple[Tensor, Tensor]:
    # gilbert works in (x, y) = (column, row) with the major axis along the longer side.
    if cols >= rows:
        steps = list(_gilbert(0, 0, cols, 0, 0, rows))
    else:
        steps = list(_gilbert(0, 0, 0, rows, cols, 0))
    xy = torch.tensor(steps, dtype=torch.long).view(-1, 2)
    return xy[:, 1], xy[:, 0]


def _sign(v: int) -> int:
    return (v > 0) - (v < 0)


def _gilbert(x: int, y: int, ax: int, ay: int, bx: int, by: int) -> Iterator[tuple[int, int]]:
    """The generalised Hilbert curve of the rectangle spanned from (x, y) by the major axis (ax, ay)
    and the minor axis (bx, by): split it in two along a long side, or in three (up, along, down),
    halving with a preference for even halves so that the pieces join without diagonal steps."""
    w, h = abs(ax + ay), abs(bx + by)
    dax, day, dbx, dby = _sign(ax), _sign(ay), _sign(bx), _sign(by)
    if h == 1 or w == 1:                                                    # a single row or column
        dx, dy, n = (dax, day, w) if h == 1 else (dbx, dby, h)
        for i in range(n):
            yield x + i * dx, y + i * dy
        return
    ax2, ay2, bx2, by2 = int(ax / 2), int(ay / 2), int(bx / 2), int(by / 2)
    w2, h2 = abs(ax2 + ay2), abs(bx2 + by2)
    if 2 * w > 3 * h:                                                       # long: two halves along the major axis
        if w2 % 2 and w > 2:
            ax2, ay2 = ax2 + dax, ay2 + day
        yield from _gilbert(x, y, ax2, ay2, bx, by)
        yield from _gilbert(x + ax2, y + ay2, ax - ax2, ay - ay2, bx, by)
        return
    if h2 % 2 and h > 2:
        bx2, by2 = bx2 + dbx, by2 + dby
    yield from _gilbert(x, y, bx2, by2, ax2, ay2)
    yield from _gilbert(x + bx2, y + by2, ax, ay, bx - bx2, by - by2)
    yield from _gilbert(x + (ax - dax) + (bx2 - dbx), y + (ay - day) + (by2 - dby), -bx2, -by2, -(ax - ax2), -(ay - ay2))


_CURVES = {"raster": _raster, "s_curve": _s_curve, "hilbert": _hilbert}
