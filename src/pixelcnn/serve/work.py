"""What the page asks of a model, as plain library calls on one image (no HTTP here).

Images travel as (C, H, W) int64 tensors of levels; ``known`` masks are (H, W) booleans (a pixel
is known or erased as a whole). Every function here blocks: the app runs them in worker threads.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor

import pixelcnn
from pixelcnn import sampling
from pixelcnn.coding import nll_bits
from pixelcnn.errors import InvalidImageError
from pixelcnn.images import to_uint8
from pixelcnn.levels import from_bytes

# What a completion is conditioned on, in each generation order (models.base.ORDER_WORDS names them).
COMPLETION_NOTES = {
    "raster": "This model draws in raster order (rows top to bottom, left to right in a row), so each erased "
              "pixel is filled from the known pixels before it only: those above it and to its left in its row. "
              "Known pixels below or to the right of a hole do not influence it.",
    "any": "This model can visit pixels in any order: it fills the erased pixels after every known one, "
           "so each completion is conditioned on everything you kept.",
    "coarse_to_fine": "This model draws coarse to fine: a grid of every few rows and columns first, then finer "
                      "grids in between, so each erased pixel is filled from the known pixels of coarser grids and "
                      "of the groups drawn before it, wherever they are, but not from known pixels of later groups.",
}
INPAINTING_NOTE = ("This completion model sees every pixel you kept, those below and to the right of a hole "
                   "included: a network over the known pixels conditions each erased pixel, which is drawn in "
                   "raster order given them and the erased pixels filled before it.")
MAX_UPLOAD_PIXELS = 50_000_000          # refuse decompression bombs before decoding them


class Stopped(Exception):
    """Raised inside a sampling loop to end it early (the client went away)."""


@dataclass(frozen=True)
class Job:
    """One request's settings, already checked: a class label (or None), temperature and seed."""

    label: int | None = None
    temperature: float = 1.0
    seed: int = 0

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def labels(self, batch: int) -> Tensor | None:
        return None if self.label is None else torch.full((batch,), self.label, dtype=torch.long)


def describe(name: str, model) -> dict:
    """What the page needs to know about a model."""
    c, h, w = model.image_shape
    return {"name": name, "family": model.name, "channels": c, "height": h, "width": w, "levels": model.levels,
            "num_classes": model.config.num_classes, "any_order": model.any_order,
            "inpainting": model.config.inpainting, "completion_note": completion_note(model),
            "parameters": sum(p.numel() for p in model.parameters())}


def completion_note(model) -> str:
    if model.config.inpainting:
        return INPAINTING_NOTE
    return COMPLETION_NOTES[model.generation_order]


def complete(model, image: Tensor, known: Tensor, n: int, job: Job) -> Tensor:
    """(n, C, H, W) completions of the pixels of ``image`` where ``known`` (H, W) is False."""
    mask = known.view(1, 1, *known.shape)                              # broadcasts over channels
    out = model.complete(image.unsqueeze(0), mask, n=n, labels=job.labels(1), temperature=job.temperature,
                         generator=job.generator())                    # any-order: known pixels first
    return out[0].cpu()


@torch.no_grad()
def likelihood(model, image: Tensor, job: Job) -> dict:
    """Bits/dim of the image (``model.log_prob``, as ``pixelcnn eval`` reports it) and the (H, W)
    map of each pixel's -log2 p given the pixels before it. For an any-order model the total is the
    mixture's over its training orders and the map is in its first training order, whose sum is
    ``map_bits``."""
    x, labels = image.unsqueeze(0), job.labels(1)
    logp = model.log_prob_per_pixel(x, labels)[0].double().cpu()                          # (H, W) nats
    bits = -logp / math.log(2.0)
    # a raster model's log_prob is the map's sum; an any-order model's mixture needs its own passes
    nll = -float(model.log_prob(x, labels)[0]) if model.any_order else -float(logp.sum())
    return {"bits_per_dim": nll / math.log(2.0) / image.numel(), "nll_nats": nll,
            "bits": bits.flatten().tolist(), "map_bits": float(bits.sum())}


def depends_on(model, image: Tensor, pixel: tuple[int, int], channel: int, job: Job) -> dict:
    """What channel ``channel`` of ``pixel`` depends on in this image (``pixelcnn receptive-field``'s gradients):
    each pixel's |gradient| summed over its channels, whether it is in the causal past, and the counts."""
    from pixelcnn.receptive_field import receptive_field

    field = receptive_field(model, pixel, channel, x=image.unsqueeze(0), labels=job.labels(1))
    return {"grad": field.grad.sum(0).flatten().tolist(), "past": field.past_pixels.flatten().int().tolist(),
            "seen": field.seen_pixels.flatten().int().tolist(), "counts": field.counts(),
            "pixel": list(pixel), "channel": channel}


def png_bytes(image: Tensor, levels: int) -> bytes:
    """The image as an 8-bit PNG (levels stretched over 0..255, as ``pixelcnn sample`` writes them)."""
    arr = to_uint8(image.unsqueeze(0), levels)[0]                    # (H, W, C)
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def compressed_size(model, image: Tensor, job: Job) -> dict:
    """Bytes this model's codec writes for the image (a whole ``.pxc`` file, header included) beside
    the model's ideal -log2 p / 8 and PNG's bytes."""
    labels = job.labels(1)
    data = pixelcnn.compress(model, image.unsqueeze(0), labels)
    return {"model_bytes": len(data), "ideal_bytes": nll_bits(model, image.unsqueeze(0), labels) / 8,
            "png_bytes": len(png_bytes(image, model.levels)),
            "raw_bytes": math.ceil(image.numel() * math.log2(model.levels) / 8)}


def sample_stream(model, job: Job, emit: Callable[[int, int, list[int]], None], stop: Callable[[], bool]) -> Tensor:
    """Draw one image as ``model.sample`` does, in the model's order, calling ``emit(h, w, values)``
    as each pixel is set; raises Stopped when ``stop()`` turns true (checked once per image width of
    pixels). Returns the (C, H, W) image."""
    width = model.image_shape[2]
    x = torch.zeros((1, *model.image_shape), dtype=torch.long, device=model.device)
    cond = model.condition(job.labels(1), None, 1)
    done = 0

    def on_pixel(h: int, w: int, values: Tensor) -> None:
        nonlocal done
        emit(h, w, values[0].tolist())
        done += 1
        if done % width == 0 and stop():
            raise Stopped(f"stopped after {done} pixels")

    known, generator = torch.zeros_like(x, dtype=torch.bool), job.generator()
    order = model.visiting_order(None, known, generator)        # as model.sample: an any-order model draws one
    with torch.no_grad():
        out = sampling.complete(model, x, known, cond, temperature=job.temperature, generator=generator,
                                order=order, on_pixel=on_pixel)
    return out[0].cpu()


def convert_upload(data: bytes, image_shape: tuple[int, int, int], levels: int) -> tuple[Tensor, str]:
    """Any image file -> ((C, H, W) levels for the model, a note saying what was changed)."""
    c, h, w = image_shape
    mode = {1: "L", 3: "RGB"}.get(c)
    if mode is None:
        raise InvalidImageError(f"uploads work for 1- or 3-channel models, this one has {c} channels")
    img = _open_image(data)
    changes = []
    if img.mode != mode:
        changes.append(f"converted from {img.mode} to {'grayscale' if c == 1 else 'RGB'}")
        img = img.convert(mode)
    if img.size != (w, h):
        changes.append(f"resized from {img.size[0]}x{img.size[1]} to {w}x{h}")
        img = img.resize((w, h), Image.Resampling.LANCZOS)
    arr = torch.from_numpy(np.asarray(img, dtype=np.int64).reshape(h, w, c)).permute(2, 0, 1)
    if levels != 256:
        changes.append(f"quantised to {levels} levels")
        arr = from_bytes(arr, levels)
    return arr.contiguous(), "; ".join(changes) or "used as it is"


def _open_image(data: bytes) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:          # Pillow's own limit, far above ours
        raise InvalidImageError(f"expected an image of at most {MAX_UPLOAD_PIXELS:,} pixels: {e}") from None
    except (OSError, ValueError) as e:
        raise InvalidImageError(f"expected an image file (PNG, JPEG, GIF, BMP, WebP), could not read it: {e}") from None
    if img.size[0] * img.size[1] > MAX_UPLOAD_PIXELS:
        raise InvalidImageError(f"expected an image of at most {MAX_UPLOAD_PIXELS:,} pixels, "
                                f"got {img.size[0]}x{img.size[1]}")
    try:
        img.load()
    except (OSError, ValueError) as e:
        raise InvalidImageError(f"expected a whole image file, could not decode it: {e}") from None
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))        # transparent parts become black
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img
