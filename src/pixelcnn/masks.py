"""Which pixels of an image are known: named masks for completion, random ones for training.

A mask is a boolean tensor, True where a pixel is known, of shape (n, 1, H, W): it broadcasts
over the colour channels. A completion model (``inpainting=True``) is trained on
:func:`random_known`, a mixture of the kinds of mask users draw: holes of any size and place,
a known box, a known side cut anywhere, scattered pixels of any density, brush strokes, and
nothing known at all (which makes the model a plain density model too). The named masks are
those the completion benchmarks and the command line use.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pixelcnn.errors import ConfigError

DESCRIPTIONS = {
    "centre": "a centre hole of half the height and width unknown",
    "bottom-half": "the bottom half known", "top-half": "the top half known",
    "left-half": "the left half known", "right-half": "the right half known",
    "random-50": "each pixel known with probability 0.5", "random-20": "each pixel known with probability 0.2",
    "strokes": "three brush strokes unknown",
}
NAMED = tuple(DESCRIPTIONS)


def named(name: str, n: int, height: int, width: int, generator: torch.Generator | None = None) -> Tensor:
    """(n, 1, H, W) known masks of kind ``name`` (one of :data:`NAMED`); random kinds draw one per image."""
    if name not in NAMED:
        raise ConfigError(f"unknown mask {name!r}; expected one of {', '.join(NAMED)}")
    known = torch.ones(n, 1, height, width, dtype=torch.bool)
    h2, w2 = height // 2, width // 2
    if name == "centre":
        top, left = (height - h2) // 2, (width - w2) // 2
        known[..., top : top + h2, left : left + w2] = False
    elif name.endswith("-half"):
        side = {"bottom": (slice(None, h2), slice(None)), "top": (slice(h2, None), slice(None)),
                "left": (slice(None), slice(w2, None)), "right": (slice(None), slice(None, w2))}[name[:-5]]
        known[..., side[0], side[1]] = False
    elif name.startswith("random-"):
        known = torch.rand(n, 1, height, width, generator=generator) < int(name[7:]) / 100
    else:
        known = torch.stack([~_strokes(height, width, 3, generator) for _ in range(n)])[:, None]
    return known


def random_known(n: int, height: int, width: int, generator: torch.Generator | None = None) -> Tensor:
    """(n, 1, H, W) training masks, each of a kind drawn uniformly from :data:`KINDS`."""
    kinds = torch.randint(len(KINDS), (n,), generator=generator).tolist()
    return torch.stack([KINDS[k](height, width, generator) for k in kinds])[:, None]


def _uniform(low: int, high: int, generator: torch.Generator | None) -> int:
    """An integer in [low, high] inclusive."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _rectangle(height: int, width: int, generator: torch.Generator | None) -> Tensor:
    """(H, W) True inside a rectangle of random size and place."""
    h, w = _uniform(1, height, generator), _uniform(1, width, generator)
    top, left = _uniform(0, height - h, generator), _uniform(0, width - w, generator)
    inside = torch.zeros(height, width, dtype=torch.bool)
    inside[top : top + h, left : left + w] = True
    return inside


def _hole(height: int, width: int, generator: torch.Generator | None) -> Tensor:
    return ~_rectangle(height, width, generator)


def _side(height: int, width: int, generator: torch.Generator | None) -> Tensor:
    """One side known, cut anywhere: rows above (or below) a row, or columns left (or right) of a column."""
    vertical, before = _uniform(0, 1, generator), _uniform(0, 1, generator)
    size = height if vertical else width
    cut = _uniform(0, size, generator)
    line = torch.arange(size) < cut if before else torch.arange(size) >= cut
    return (line[:, None] if vertical else line[None, :]).expand(height, width).clone()


def _scattered(height: int, width: int, generator: torch.Generator | None) -> Tensor:
    density = float(torch.rand((), generator=generator))
    return torch.rand(height, width, generator=generator) < density


def _strokes(height: int, width: int, count: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """(H, W) True along ``count`` (default 1 to 4) straight brush strokes, 1 to 3 pixels wide."""
    count = count or _uniform(1, 4, generator)
    rows, cols = torch.arange(height)[:, None].float(), torch.arange(width)[None, :].float()
    out = torch.zeros(height, width, dtype=torch.bool)
    for _ in range(count):
        ends = torch.rand(4, generator=generator) * torch.tensor([height, width, height, width])
        radius = _uniform(1, 3, generator) / 2
        out |= _distance_to_segment(rows, cols, ends) <= radius
    return out


def _distance_to_segment(rows: Tensor, cols: Tensor, ends: Tensor) -> Tensor:
    """(H, W) distance from each pixel centre to the segment (r0, c0) -> (r1, c1)."""
    r0, c0, r1, c1 = ends.tolist()
    dr, dc = r1 - r0, c1 - c0
    t = (((rows + 0.5 - r0) * dr + (cols + 0.5 - c0) * dc) / max(dr * dr + dc * dc, 1e-9)).clamp(0, 1)
    return torch.hypot(rows + 0.5 - (r0 + t * dr), cols + 0.5 - (c0 + t * dc))


def _stroked(height: int, width: int, generator: torch.Generator | None) -> Tensor:
    return ~_strokes(height, width, None, generator)


def _nothing(height: int, width: int, generator: torch.Generator | None) -> Tensor:
    return torch.zeros(height, width, dtype=torch.bool)


KINDS = (_hole, _rectangle, _side, _side, _scattered, _stroked, _nothing)
