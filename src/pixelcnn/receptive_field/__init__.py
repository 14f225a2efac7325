"""What each pixel depends on: the gradient of one sub-pixel's log-probability with respect to every input sub-pixel.

For sub-pixel (c, h, w), :func:`receptive_field` averages |d log p(x_chw | what the model conditions it on) / d x|
over a few random images: exactly zero at every sub-pixel the network cannot see. Compared with the causal past
(every sub-pixel before (c, h, w) in the model's order), it shows what a family reaches: a PixelCNN's blind spot
(past pixels up and to the right that no stack of masked convolutions reaches), a Gated PixelCNN's window
bounded by its depth, a PixelRNN's whole past. :func:`draw` makes the picture; ``pixelcnn receptive-field`` both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from pixelcnn.errors import ConfigError


@dataclass(frozen=True)
class ReceptiveField:
    """One sub-pixel's dependencies: ``grad`` (C, H, W) mean |gradient|, ``past`` (C, H, W) bool, the sub-pixels
    before it in the model's order; the pixel and channel."""

    grad: Tensor
    past: Tensor
    pixel: tuple[int, int]
    channel: int

    @property
    def seen(self) -> Tensor:
        """(C, H, W) bool: the sub-pixels its log-probability depends on."""
        return self.grad > 0

    @property
    def past_pixels(self) -> Tensor:
        """(H, W) bool: the pixels with a sub-pixel in the past."""
        return self.past.any(0)

    @property
    def seen_pixels(self) -> Tensor:
        """(H, W) bool: the pixels with a sub-pixel in the past that it depends on."""
        return (self.seen & self.past).any(0)

    def counts(self) -> dict[str, int]:
        """Past sub-pixels seen and unseen, past pixels none of whose sub-pixels is seen, and sub-pixels not in
        the past that are seen (0 for a causal model)."""
        seen, past = self.seen, self.past
        return {"past": int(past.sum()), "seen": int((seen & past).sum()), "unseen": int((~seen & past).sum()),
                "unseen_pixels": int((self.past_pixels & ~self.seen_pixels).sum()),
                "future_seen": int((seen & ~past).sum())}


def past_of(model, channel: int, pixel: tuple[int, int]) -> Tensor:
    """(C, H, W) bool: the sub-pixels before (channel, pixel) in the model's order (its default one)."""
    c_, h_, w_ = model.image_shape
    order = model.default_order()
    step = torch.arange(h_ * w_) if order is None else order.ranks()
    index = step.cpu().view(1, h_, w_) * c_ + torch.arange(c_).view(c_, 1, 1)       # (C, H, W): visiting step
    return index < index[channel, pixel[0], pixel[1]]


def check_target(model, channel: int, pixel: tuple[int, int]) -> None:
    c_, h_, w_ = model.image_shape
    if not (0 <= pixel[0] < h_ and 0 <= pixel[1] < w_):
        raise ConfigError(f"expected a pixel H,W inside the model's {h_}x{w_} images, got {pixel[0]},{pixel[1]}")
    if not 0 <= channel < c_:
        raise ConfigError(f"expected a channel in [0, {c_}) for this model's images, got {channel}")


def receptive_field(model, pixel: tuple[int, int], channel: int = 0, images: int = 4, seed: int = 0,
                    x: Tensor | None = None, labels: Tensor | None = None) -> ReceptiveField:
    """Mean |d log p(x[channel, pixel]) / d input| over ``images`` random images (and random labels and
    conditioning images where the model takes them), in the model's default order; or over the given
    integer images ``x`` (B, C, H, W) with their ``labels``."""
    check_target(model, channel, pixel)
    h, w = pixel
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    if x is None:
        x = torch.randint(0, model.levels, (images, *model.image_shape), generator=g)
        labels = None if cfg.num_classes is None else torch.randint(0, cfg.num_classes, (images,), generator=g)
    images = x.shape[0]
    cond_image = None if cfg.cond_shape is None else torch.randint(0, cfg.levels, (images, *cfg.cond_shape), generator=g)
    x, device = x.to(model.device), model.device
    with model.evaluating():
        cond = model.condition(None if labels is None else labels.to(device),
                               None if cond_image is None else cond_image.to(device), images)
        xf = model.preprocess(x).requires_grad_(True)
        params = model.params(xf, cond, model.default_order())
        picked = model.distribution.log_prob_per_channel(params, x)[:, channel, h, w].sum()
        grad, = torch.autograd.grad(picked, xf)
    return ReceptiveField(grad.abs().mean(0).detach().cpu(), past_of(model, channel, pixel), pixel, channel)


# The picture's colours: what the sub-pixel sees (dark to bright by gradient), the past it cannot see, the rest.
TARGET = (220, 40, 40)
UNSEEN_PAST = (255, 170, 40)
FUTURE = (24, 24, 30)
OUTLINE = (90, 200, 255)


def draw(field: ReceptiveField, scale: int = 12) -> Image.Image:
    """The field as a picture, a square of ``scale`` pixels per image pixel: seen pixels in gray levels by the
    square root of their gradient (summed over channels), past pixels it does not see in orange, later ones dark,
    the sub-pixel's own pixel red, and the border of the causal past outlined in blue."""
    grad = field.grad.sum(0)                                                  # (H, W)
    seen_any, past_any = field.seen_pixels, field.past_pixels
    level = (grad / grad.max().clamp_min(1e-30)).sqrt()
    height, width = grad.shape
    image = Image.new("RGB", (width * scale, height * scale), FUTURE)
    pen = ImageDraw.Draw(image)
    for i in range(height):
        for j in range(width):
            if (i, j) == field.pixel:
                colour = TARGET
            elif seen_any[i, j]:
                v = int(80 + 175 * float(level[i, j]))
                colour = (v, v, v)
            elif past_any[i, j]:
                colour = UNSEEN_PAST
            else:
                continue
            pen.rectangle([j * scale, i * scale, (j + 1) * scale - 1, (i + 1) * scale - 1], fill=colour)
    _outline(pen, past_any, scale)
    return image


def _outline(pen: ImageDraw.ImageDraw, inside: Tensor, scale: int) -> None:
    """A line along every edge between a pixel inside ``inside`` (H, W) and one outside it (or the image's edge)."""
    height, width = inside.shape
    at = lambda i, j: 0 <= i < height and 0 <= j < width and bool(inside[i, j])     # noqa: E731
    for i in range(height):
        for j in range(width):
            if not inside[i, j]:
                continue
            x0, y0, x1, y1 = j * scale, i * scale, (j + 1) * scale - 1, (i + 1) * scale - 1
            for di, dj, line in ((-1, 0, [x0, y0, x1, y0]), (1, 0, [x0, y1, x1, y1]),
                                 (0, -1, [x0, y0, x0, y1]), (0, 1, [x1, y0, x1, y1])):
                if not at(i + di, j + dj):
                    pen.line(line, fill=OUTLINE, width=max(1, scale // 6))
