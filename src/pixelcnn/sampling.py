"""The autoregressive loop, written once for sampling, completion and entropy coding.

The loop visits sub-pixels in the stepper's order (raster order of pixels unless the stepper
carries another permutation of them in ``order``; colour channels R, G, B inside each pixel)
and at each one asks a *stepper* for the conditional log-probabilities (B, L) of that
sub-pixel given everything set so far, then sets its value. What decides the value differs:
sampling draws it, completion copies known values, the compressor's encoder reads it from
the image and its decoder from the bit stream. The stepper is the model-specific part:

* :class:`NaiveStepper` runs the whole network on the current partial image (the reference);
* a family may offer a cached stepper (``model.cached_stepper``) that computes only what the
  newly set value changes; it must produce the same probabilities.

Both derive from :class:`pixelcnn.models.stepper.Stepper`, the one contract the loops and the codec use.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from pixelcnn.distributions import sample_inverse_cdf
from pixelcnn.errors import ConfigError
from pixelcnn.models.order import Order
from pixelcnn.models.stepper import Stepper
from pixelcnn.validation import METHOD, TEMPERATURE


class NaiveStepper(Stepper):
    """Re-runs the whole network whenever a value it depends on has changed (any order of queries)."""

    def __init__(self, model, x: Tensor, cond, order: Order | None = None):
        super().__init__(x, Order.raster(*x.shape[2:]) if order is None else order)
        self.model, self.cond, self.pixel_order = model, cond, order         # None: the family's default
        self.params: Tensor | None = None

    def log_probs(self, c: int, h: int, w: int) -> Tensor:
        if self.params is None:
            self.params = self.model.params(self.model.preprocess(self.x), self.cond, self.pixel_order)
        return self.model.distribution.conditional(self.params[:, :, h, w], self.x[:, :, h, w], c)

    def set(self, c: int, h: int, w: int, values: Tensor) -> None:
        self.x[:, c, h, w] = values
        # A pixel-level network (PixelCNN++) does not see the current pixel's channels, so its
        # parameters stay valid until the pixel is complete.
        if not self.model.pixel_level_network or c == self.x.shape[1] - 1:
            self.params = None


def make_stepper(model, x: Tensor, cond, method: str, order: Order | None = None) -> Stepper:
    """The stepper for ``method`` over images x (B, C, H, W); ``cond`` from ``model.condition`` (or None).

    ``order``: None for the model's default order, or an Order (from ``model.visiting_order``) for a family
    that generates in any order.
    """
    METHOD(method, "method")
    if order is None:
        order = model.default_order()
    if method == "naive":
        return NaiveStepper(model, x, cond, order)
    if not model.cached:
        if method == "cached":
            raise ConfigError(f"model {model.name!r} has no cached sampling path; use method='naive' or 'auto'")
        return NaiveStepper(model, x, cond, order)
    stepper = model.cached_stepper(x, cond, order)
    if cond is not None and cond.output is not None:
        stepper.add_output(cond.output)
    return stepper


def run(stepper: Stepper, shape: tuple[int, int, int], choose: Callable[[int, int, int, Tensor], Tensor],
        on_pixel: Callable[[int, int], None] | None = None) -> None:
    """Visit every sub-pixel in the stepper's order; ``choose(c, h, w, log_probs)`` returns its (B,) values.

    ``on_pixel(h, w)``, if given, is called once every channel of pixel (h, w) is set: a place to
    report progress or to stop early by raising.
    """
    channels = shape[0]
    for h, w in stepper.order:
        for c in range(channels):
            stepper.set(c, h, w, choose(c, h, w, stepper.log_probs(c, h, w)))
        if on_pixel is not None:
            on_pixel(h, w)


def draw_uniforms(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """All the randomness a sampling call uses, drawn up front from ``generator``."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device, dtype=torch.float64).to(device)


def complete(model, x: Tensor, known: Tensor, cond=None, temperature: float = 1.0,
             generator: torch.Generator | None = None, method: str = "auto",
             order: Order | Sequence[Order] | None = None,
             on_pixel: Callable[[int, int, Tensor], None] | None = None) -> Tensor:
    """Fill the unknown sub-pixels of x (B, C, H, W) in order; known ones are kept bit for bit.

    ``cond`` is the batch's conditioning as prepared by ``model.condition`` (None if unconditional).
    ``order``: None (the model's default order), one Order for the batch, or a sequence of B, one per image:
    images that share an order are generated together. Every uniform is drawn up front,
    so an image gets the same ones whichever images share its order.
    ``on_pixel(h, w, values)`` is called as each pixel is finished, with its (B, C) values: a way
    to stream an image while it is drawn, or to stop (by raising) between pixels.
    """
    TEMPERATURE(temperature, "temperature")
    x = x.to(model.device).long()
    known = known.to(model.device)
    u = draw_uniforms(tuple(x.shape), generator, model.device)
    groups = {} if order is None or isinstance(order, Order) else images_by_order(order, len(x))
    if len(groups) == 1:
        order = next(iter(groups))                                            # one order after all
    if order is None or isinstance(order, Order):
        return _complete(model, x, known, cond, u, temperature, method, order, on_pixel)
    if on_pixel is not None:
        raise ConfigError("expected one visiting order for the whole batch when streaming pixels (on_pixel), "
                          f"got {len(groups)} orders for the images")
    out = torch.empty_like(x)
    for row, images in groups.items():
        idx = torch.tensor(images, device=x.device)
        sub = None if cond is None else cond.select(idx)
        out[idx] = _complete(model, x[idx], known[idx], sub, u[idx], temperature, method, row)
    return out


def images_by_order(orders: Sequence[Order], batch: int) -> dict[Order, list[int]]:
    """The images of each distinct order of ``orders``, one per image (in the order each first appears)."""
    if len(orders) != batch or not all(isinstance(o, Order) for o in orders):
        raise ConfigError(f"expected one Order for the batch or one per image ({batch}), got "
                          f"{len(orders)} {sorted({type(o).__name__ for o in orders})}")
    groups: dict[Order, list[int]] = {}
    for i, o in enumerate(orders):
        groups.setdefault(o, []).append(i)
    return groups


def _complete(model, x: Tensor, known: Tensor, cond, u: Tensor, temperature: float, method: str,
              order: Order | None, on_pixel: Callable[[int, int, Tensor], None] | None = None) -> Tensor:
    """:func:`complete` for one visiting order, with its uniforms ``u`` (B, C, H, W) drawn."""
    stepper = make_stepper(model, torch.where(known, x, torch.zeros_like(x)), cond, method, order)
    channels, height, width = model.image_shape
    # (H W C, B) copies indexed (h W + w) C + c: one index per sub-pixel instead of four.
    u_steps, known_steps, x_steps = (in_visiting_order(t) for t in (u, known, x))
    out_steps = torch.empty_like(x_steps)                                     # every sub-pixel is visited
    partial = bool(known.any())

    def choose(c: int, h: int, w: int, log_probs: Tensor) -> Tensor:
        i = (h * width + w) * channels + c
        values = sample_inverse_cdf(log_probs, u_steps[i], temperature)
        if partial:
            values = torch.where(known_steps[i], x_steps[i], values)
        out_steps[i] = values
        return values

    def finished(h: int, w: int) -> None:
        i = (h * width + w) * channels
        on_pixel(h, w, out_steps[i : i + channels].T)                         # (B, C)

    def choose_group(c: int, pixels: Tensor, log_probs: Tensor) -> Tensor:
        i = pixels * channels + c                                             # (n,) sub-pixel indices
        n, b = log_probs.shape[:2]
        values = sample_inverse_cdf(log_probs.reshape(n * b, -1), u_steps[i].reshape(-1), temperature).view(n, b)
        if partial:
            values = torch.where(known_steps[i], x_steps[i], values)
        out_steps[i] = values
        return values

    with model.evaluating():
        if stepper.groups is not None and on_pixel is None:
            run_groups(stepper, channels, width, choose_group)
        else:
            run(stepper, model.image_shape, choose, None if on_pixel is None else finished)
    return out_steps.view(height, width, channels, -1).permute(3, 2, 0, 1).contiguous()


def run_groups(stepper: Stepper, channels: int, width: int, choose: Callable[[int, Tensor, Tensor], Tensor]) -> None:
    """:func:`run` a group at a time: ``choose(c, pixels, log_probs)`` gets the (n,) pixel indices h W + w of
    a group and their (n, B, L) log-probabilities of channel c, and returns their (n, B) values. Each
    sub-pixel gets the value the one-at-a-time loop would give it: its conditional is the same."""
    for group in stepper.groups:
        pixels = torch.tensor([h * width + w for h, w in group], device=stepper.x.device)
        for c in range(channels):
            stepper.set_group(c, group, choose(c, pixels, stepper.group_log_probs(c, group)))


def in_visiting_order(t: Tensor) -> Tensor:
    """(B, C, H, W) -> (H W C, B), contiguous: row (h W + w) C + c is sub-pixel (c, h, w) of every image."""
    return t.permute(2, 3, 1, 0).reshape(-1, t.shape[0])
