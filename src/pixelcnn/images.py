"""Reading and writing images: PNG grids of samples, PNG files as integer tensors."""

from __future__ import annotations

import contextlib
import math
import os
import warnings

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pixelcnn.errors import InvalidImageError
from pixelcnn.levels import from_bytes, to_bytes


def to_uint8(images: Tensor, levels: int) -> np.ndarray:
    """Integer images in [0, levels) -> uint8 (N, H, W, C) scaled to [0, 255]."""
    x = to_bytes(images.detach().cpu(), levels)
    return x.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def make_grid(images: Tensor, levels: int, nrow: int | None = None, padding: int = 2) -> Image.Image:
    """Tile (N, C, H, W) integer images into one Pillow image, ``nrow`` images per row."""
    arr = to_uint8(images, levels)                                  # (N, H, W, C)
    n, h, w, c = arr.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = arr[i]
    return Image.fromarray(grid[..., 0] if c == 1 else grid, "L" if c == 1 else "RGB")


def save_grid(images: Tensor, levels: int, path: str | os.PathLike, nrow: int | None = None) -> None:
    """Write a PNG grid of integer images (atomically: a reader never sees half a file)."""
    tmp = f"{path}.tmp"
    try:
        make_grid(images, levels, nrow).save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def open_image(path: str | os.PathLike, shape: tuple[int, int, int], what: str = "image") -> Image.Image:
    """Open an 8-bit image file of ``shape`` (C, H, W), checking its header before decoding the pixels.

    The size and bit depth are read from the header, so a huge file is refused without being
    decoded, and 16-bit or floating-point images are refused instead of being clipped.
    """
    _, h, w = shape
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # the size is checked below
            img = Image.open(path)
    except Image.DecompressionBombError:
        raise InvalidImageError(f"{path}: expected a {w}x{h} {what}, got a far larger one") from None
    except (OSError, ValueError) as e:
        raise InvalidImageError(f"cannot read {what} {path}: {e}") from None
    if img.size != (w, h):
        img.close()
        raise InvalidImageError(f"{path}: expected a {w}x{h} {what}, got {img.size[0]}x{img.size[1]}")
    if img.mode.startswith(("I", "F")):
        img.close()
        raise InvalidImageError(f"{path}: expected an 8-bit {what}, got mode {img.mode} (16-bit or floating point)")
    try:
        img.load()
    except (OSError, ValueError) as e:
        raise InvalidImageError(f"cannot read {what} {path}: {e}") from None
    return img


def read_png(path: str | os.PathLike, shape: tuple[int, int, int], levels: int, what: str = "image") -> Tensor:
    """An 8-bit image file of ``shape`` (C, H, W) -> int64 (C, H, W) in [0, levels); values are mapped down
    for levels < 256 unless they are already raw levels."""
    channels = shape[0]
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise InvalidImageError(f"expected a model with 1 or 3 channels to read {path}, got {channels}")
    with open_image(path, shape, what) as img:
        arr = np.asarray(img.convert(mode), dtype=np.int64)
    x = torch.from_numpy(arr.reshape(arr.shape[0], arr.shape[1], channels)).permute(2, 0, 1)
    if x.max() < levels:            # already stored as raw levels (e.g. 0/1 PNGs)
        return x.contiguous()
    return from_bytes(x, levels).contiguous()
