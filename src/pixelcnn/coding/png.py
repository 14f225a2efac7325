"""PNG files <-> integer images without loss, for the ``compress`` and ``decompress`` commands.

A model with ``L`` levels reads 8-bit PNGs: grayscale (mode "L", or 1-bit "1" read as 0/255)
for a 1-channel model, RGB for a 3-channel one. Their values must be either

* raw levels, every value below L (for example 0/1 PNGs for a binary model), or
* levels stretched over 0..255 by the whole factor 255 / (L - 1): 0/255 for a binary model,
  0/85/170/255 for L = 4; for L = 256 the factor is 1 and both readings agree.

The factor (the *scale*, 1 for raw values) is chosen for the whole batch and stored in the
compressed file's metadata, so decompression writes back the very values it read: pixel for
pixel the same PNG content (written as 8-bit "L" or "RGB"; a 1-bit input comes back as an
8-bit grayscale file with the same 0/255 values). Values that fit neither reading would need a
lossy mapping and are refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pixelcnn.errors import InvalidImageError
from pixelcnn.images import open_image

MODES = {1: ("L", "1"), 3: ("RGB",)}


def stretch_factor(levels: int) -> int | None:
    """255 / (L - 1) when it is a whole number (levels spread evenly over 0..255), else None."""
    return 255 // (levels - 1) if 255 % (levels - 1) == 0 else None


def read_pixels(path: str | os.PathLike, image_shape: tuple[int, int, int]) -> np.ndarray:
    """One PNG -> (C, H, W) uint8 exactly as stored (no conversion beyond 1-bit -> 0/255)."""
    c, h, w = image_shape
    if c not in MODES:
        raise InvalidImageError(f"PNG files can be read for 1- or 3-channel models, got {c} channels")
    with open_image(path, image_shape) as img:            # size and bit depth checked from the header
        mode = img.mode
        if mode not in MODES[c]:
            raise InvalidImageError(f"{path}: expected an 8-bit {' or '.join(MODES[c])} PNG for a {c}-channel "
                                    f"model, got mode {mode}")
        arr = np.asarray(img.convert("L") if mode == "1" else img, dtype=np.uint8)
    return arr.reshape(h, w, c).transpose(2, 0, 1)


def choose_scale(pixels: np.ndarray, levels: int) -> int:
    """The scale that maps every value of ``pixels`` (N, C, H, W) uint8 onto a level, or an error."""
    if pixels.size == 0 or int(pixels.max()) < levels:
        return 1
    step = stretch_factor(levels)
    if step is not None and not np.any(pixels % step):
        return step
    stretched = f" or multiples of {step} (levels stretched over 0..255)" if step else ""
    raise InvalidImageError(f"PNG values must all be levels in [0, {levels}){stretched} for a model with {levels} "
                            f"levels, got values up to {int(pixels.max())}; they cannot be coded losslessly")


def read_pngs(paths: list[str | os.PathLike], image_shape: tuple[int, int, int], levels: int) -> tuple[Tensor, int]:
    """PNG files -> ((N, C, H, W) int64 levels, scale) for a model of ``image_shape`` and ``levels``."""
    pixels = np.stack([read_pixels(p, image_shape) for p in paths]) if paths else np.zeros((0, *image_shape), np.uint8)
    for p, one in zip(paths, pixels):
        try:
            choose_scale(one, levels)
        except InvalidImageError as e:
            raise InvalidImageError(f"{p}: {e}") from None
    scale = choose_scale(pixels, levels)
    return torch.from_numpy(pixels.astype(np.int64) // scale), scale


def png_names(count: int) -> list[str]:
    """File names that sort in image order: 00000.png, 00001.png, ..."""
    width = max(5, len(str(count - 1)))
    return [f"{i:0{width}d}.png" for i in range(count)]


def write_pngs(images: Tensor, folder: str | os.PathLike, scale: int) -> list[Path]:
    """Write (N, C, H, W) levels as 8-bit PNGs (value * scale) named in order; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = (images.detach().cpu().long() * scale).to(torch.uint8).permute(0, 2, 3, 1).numpy()   # (N, H, W, C)
    paths = []
    for name, arr in zip(png_names(len(pixels)), pixels):
        path = folder / name
        # uint8 (H, W) becomes an 8-bit "L" image, (H, W, 3) an "RGB" one.
        Image.fromarray(np.ascontiguousarray(arr[..., 0] if arr.shape[2] == 1 else arr)).save(path, format="PNG")
        paths.append(path)
    return paths


def metadata(scale: int) -> bytes:
    """What the CLI stores in a compressed file to write the PNGs back: the scale."""
    return json.dumps({"png_scale": scale}, separators=(",", ":")).encode()


def scale_from_metadata(data: bytes, levels: int) -> int:
    """The scale stored by :func:`metadata`; files made through the Python API get a viewable default."""
    try:
        scale = json.loads(data.decode())["png_scale"] if data else None
    except (ValueError, KeyError, TypeError, AttributeError):
        scale = None
    if isinstance(scale, int) and scale >= 1 and scale * (levels - 1) <= 255:
        return scale
    return stretch_factor(levels) or 1
