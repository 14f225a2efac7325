"""LMConv: a PixelCNN with locally masked convolutions, one network for many generation orders.

Jain, Abbeel & Pathak 2020, "Locally Masked Convolution for Autoregressive Models" (UAI). Each
convolution's mask depends on the output position and on a generation order (see
``local_conv.py`` and ``pixelcnn.models.lmconv.orders``), so one set of weights defines an autoregressive
model p_k(x) for every order k. Training draws one of the configured orders per batch (section 4);
the model's own distribution is their uniform mixture, p(x) = mean_k p_k(x) (section 5.1's
"order ensemble"), which ``log_prob`` computes exactly. Completion picks an order that visits the
known pixels first, so the missing ones are drawn from the exact p_k(hole | everything known).

Network (full resolution: dilation instead of the paper's down- and up-sampling): a k x k locally
masked mask-A convolution of the image and a channel of ones (which tells padding from black),
then residual blocks x + 1x1(gate(locally masked 3x3, dilated)), then the masked families'
output head. Colour channels are grouped as in every masked family: inside a pixel R, then G given
R, then B given R and G.

Cached sampling: with per-position masks, a layer's output at a pixel depends only on pixels
visited before it (and the pixel's own earlier channels), so at each step only the visited
pixel's column of outputs is computed, from caches of the layers below, as in raster order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from pixelcnn.models.lmconv import orders as orders_lib
from pixelcnn.errors import ConfigError
from pixelcnn.models.layers import Condition, ConditionBias, channel_groups, gate
from pixelcnn.models.base import AutoregressiveModel, full_precision
from pixelcnn.models.order import Order
from pixelcnn.models.common import (MaskedModelConfig, OutputHead, dilations_help, gate_groups, masked_1x1, shared_help,
                                    shared_limits, stack)
from pixelcnn.models.lmconv.cached import CachedLMConv
from pixelcnn.models.lmconv.local_conv import LocallyMaskedConv2d, tap_masks
from pixelcnn.models.lmconv.orders import InvalidOrderError
from pixelcnn.validation import Integer, OneOf, Real


# How "auto" puts the known pixels first: orders.known_first or orders.onion.
AUTO_ORDERS = ("split", "onion")

# Tap-mask sets memoised per model: the training orders (at most 8 per curve name) and the latest others.
MEMO_SIZE = 64


@dataclass(frozen=True)
class LMConvConfig(MaskedModelConfig):
    hidden: int = 64
    layers: int = 6
    first_kernel: int = 5
    kernel_size: int = 3
    dilations: tuple[int, ...] = (1, 2, 4)
    orders: tuple[str, ...] = ("s_curve",)
    order_symmetries: int = 8
    completion_orders: float = 0.0
    auto_order: str = "split"

    help: ClassVar[dict[str, str]] = {
        **MaskedModelConfig.help,
        **shared_help("first_kernel", "kernel_size"),
        "layers": "number of residual blocks after the first convolution",
        "dilations": dilations_help("block"),
        "orders": "generation orders trained on: raster, s_curve, hilbert (NAME:S for one symmetry S in 0..7)",
        "order_symmetries": "each order NAME is trained in its first N of the 8 flips/transposes (1..8)",
        "completion_orders": "probability per training step of training instead on the known-first order of a random "
                             "completion mask (hole, one side, random pixels), in [0, 1]",
        "auto_order": "the known-first order of completion ('auto') and of --completion-orders: 'split' (a training "
                      "order, its known pixels moved first) or 'onion' (known pixels from the farthest from the "
                      "unknown ones to the nearest, then the unknown ones from their border inwards)",
    }
    limits: ClassVar[dict] = {**MaskedModelConfig.limits, **shared_limits("first_kernel", "kernel_size", "dilations"),
                              "order_symmetries": Integer(1, orders_lib.SYMMETRIES),
                              "completion_orders": Real(0, 1), "auto_order": OneOf(AUTO_ORDERS)}

    def __post_init__(self) -> None:
        super().__post_init__()
        names = (self.orders,) if isinstance(self.orders, str) else tuple(self.orders)
        if not names:
            raise ConfigError("orders must name at least one generation order, got none")
        for spec in names:
            orders_lib.parse_name(spec)
        object.__setattr__(self, "orders", names)

    def order_specs(self) -> list[str]:
        """The training orders as NAME:S, without repeats: each NAME in its first order_symmetries symmetries."""
        specs: list[str] = []
        for spec in self.orders:
            name, sym = orders_lib.parse_name(spec)
            chosen = [sym] if ":" in spec else range(self.order_symmetries)
            specs += [f"{name}:{s}" for s in chosen if f"{name}:{s}" not in specs]
        return specs


class LMConvBlock(nn.Module):
    """x + 1x1(gate(locally masked k x k(x) + condition bias)), at full resolution."""

    def __init__(self, hidden: int, kernel: int, dilation: int, colours: int, config: LMConvConfig):
        super().__init__()
        groups = channel_groups(hidden, colours)
        self.conv = LocallyMaskedConv2d(hidden, 2 * hidden, kernel, groups, gate_groups(hidden, colours), "B", dilation)
        self.out = masked_1x1(groups, groups, colours)
        self.cond_bias = ConditionBias(config, 2 * hidden)

    def forward(self, x: Tensor, masks: dict, cond: Condition | None) -> Tensor:
        return self.combine(x, self.conv(x, masks[self.conv.key]) + self.cond_bias(cond), self.out)

    @staticmethod
    def combine(x: Tensor, pre: Tensor, out) -> Tensor:
        """The block's output from its input and its convolution's fresh pre-activation (B, 2n, ...): both paths use it."""
        return x + out(gate(pre, overwrite=True))


class LMConv(AutoregressiveModel):
    name = "lmconv"
    config_class = LMConvConfig
    generation_order = "any"

    def __init__(self, config: LMConvConfig):
        super().__init__(config)
        c, n = config.channels, config.hidden
        in_groups = torch.cat([torch.arange(c), torch.tensor([-1])])          # the ones channel: visible to all
        self.input = LocallyMaskedConv2d(c + 1, n, config.first_kernel, in_groups, channel_groups(n, c), "A")
        self.input_bias = ConditionBias(config, n)
        self.blocks = nn.ModuleList(
            LMConvBlock(n, config.kernel_size, config.dilations[i % len(config.dilations)], c, config)
            for i in range(config.layers))
        self.head = OutputHead(n, config.output_hidden, self.distribution, c)
        _, height, width = config.image_shape
        specs = config.order_specs()
        table = torch.stack([orders_lib.resolve(spec, height, width) for spec in specs])
        kept = _first_occurrences(table)                                     # symmetries may coincide on small images
        self.order_names = [specs[i] for i in kept.tolist()]
        self.register_buffer("orders", table[kept], persistent=False)        # (K, H W) training orders
        self._masks: dict = {}                                               # memo of tap_masks, oldest first
        self._training_orders: list[Order] = []                              # self.orders as Orders, per device
        self._training_set = {o.key for o in self.training_orders()}         # the memo keeps their masks

    # ----- orders

    def resolve_order(self, order: object) -> Order:
        """An Order, a name NAME[:S] or a permutation tensor -> an Order of this model's images on its device."""
        _, height, width = self.image_shape
        if isinstance(order, Order):
            if (order.height, order.width) != (height, width):
                raise InvalidOrderError(f"expected an order of {height}x{width} pixels, got one of "
                                        f"{order.height}x{order.width}")
            return order.to(self.orders.device)
        if isinstance(order, Tensor):
            order = order.to(self.orders.device)
        return self.as_order(orders_lib.resolve(order, height, width).to(self.orders.device))

    def as_order(self, indices: Tensor) -> Order:
        """(H W,) pixel indices of this model's images as an Order."""
        _, height, width = self.image_shape
        return Order(indices, height, width)

    def training_orders(self) -> list[Order]:
        """The training orders as Orders on the model's device, built once (every training step and forward without
        an order reads one: no permutation check, no copy there)."""
        if not self._training_orders or self._training_orders[0].indices.device != self.orders.device:
            self._training_orders = [self.as_order(row) for row in self.orders]
        return self._training_orders

    def default_order(self) -> Order:
        return self.training_orders()[0]

    def tap_masks(self, order: Order) -> dict[tuple[int, int], Tensor]:
        """(kernel, dilation) -> (k k, H W) tap masks of ``order``, memoised per order.

        The training orders' masks stay; of other orders (completion, random permutations: a new
        one per training step with ``completion_orders``) only the latest few are kept, so that a
        stream of one-off orders neither grows the memo nor evicts the training orders.
        """
        like = self.input.conv.weight
        key = (order.key, like.device, like.dtype)
        if key not in self._masks:
            if len(self._masks) >= MEMO_SIZE:
                self._forget_one()
            _, height, width = self.image_shape
            convs = [self.input] + [block.conv for block in self.blocks]
            indices = order.indices.to(like.device)
            self._masks[key] = {conv.key: tap_masks(indices, height, width, *conv.key).to(like.dtype) for conv in convs}
        return self._masks[key]

    def _forget_one(self) -> None:
        """Drop the oldest memoised order that is not a training order (all of them if there is none)."""
        oldest = next((key for key in self._masks if key[0] not in self._training_set), None)
        if oldest is None:
            self._masks.clear()
        else:
            del self._masks[oldest]

    def step_inputs(self, seed: int, step: int) -> dict[str, object]:
        """Training step ``step`` uses one order, a function of (seed, step) alone (exact resume)."""
        return {"order": self.step_order(seed, step)[0]}

    def step_order(self, seed: int, step: int) -> tuple[Order, Tensor | None]:
        """Training step ``step``'s order, and the (H, W) known mask it was made for (None if none).

        One training order; or, with probability ``completion_orders``, the order that completion
        ("auto") uses for a random mask of known pixels (:func:`orders.random_known`), so that the
        model also learns the contexts it meets when it completes images.
        """
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        order = self.training_orders()[int(torch.randint(len(self.orders), (1,), generator=g))]
        rate = self.config.completion_orders
        if not rate or float(torch.rand((), generator=g)) >= rate:
            return order, None
        _, height, width = self.image_shape
        known = orders_lib.random_known(height, width, g)
        return self.as_order(self.known_first(known)), known

    def visiting_order(self, order: object, known: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Order | list[Order]:
        """The order(s) for sampling or completion: an Order for a named or given order, one per image for "auto".

        "auto" (also None): per image, known pixels first (:meth:`known_first`); an image
        with nothing known draws one of the training orders uniformly, which samples the ensemble.
        """
        if order is not None and not (isinstance(order, str) and order == "auto"):
            return self.resolve_order(order)
        if known is None:
            raise ValueError("order 'auto' needs the mask of known sub-pixels")
        table = self.known_first_orders(known)
        none_known = ~known.flatten(1).any(1)
        if bool(none_known.any()):
            device = generator.device if generator is not None else self.orders.device
            pick = torch.randint(len(self.orders), (known.shape[0],), generator=generator, device=device)
            drawn = self.orders[pick.to(self.orders.device)]
            table = torch.where(none_known.to(table.device)[:, None], drawn, table)
        rows, inverse = torch.unique(table, dim=0, return_inverse=True)      # an Order per distinct row, shared
        distinct = [self.as_order(row) for row in rows]
        return [distinct[i] for i in inverse.tolist()]

    def known_first_orders(self, known: Tensor) -> Tensor:
        """(B, H W): for each image the order that visits pixels with every channel known first
        (:meth:`known_first`; with nothing known, the first training order)."""
        pixels = known.all(1)                                                # (B, H, W)
        unique, inverse = torch.unique(pixels.flatten(1), dim=0, return_inverse=True)
        rows = [self.known_first(u.view(pixels.shape[1:])) for u in unique]
        return torch.stack(rows).to(self.orders.device)[inverse.to(self.orders.device)]

    def known_first(self, known: Tensor) -> Tensor:
        """(H W,) the order that visits the pixels of ``known`` (H, W) first, as the config's ``auto_order`` builds it."""
        build = orders_lib.onion if self.config.auto_order == "onion" else orders_lib.known_first
        return build(known, self.orders)

    # ----- the network and its likelihoods

    def network(self, x: Tensor, cond: Condition | None, order: Order | None = None) -> Tensor:
        """(B, C, H, W) floats in [-1, 1] -> (B, P, H, W) parameters of order ``order`` (default: the first)."""
        masks = self.tap_masks(self.default_order() if order is None else self.resolve_order(order))
        ones = torch.ones_like(x[:, :1])                                     # 1 inside the image, 0 in the padding
        return stack(lambda: self.input(torch.cat([x, ones], 1), masks[self.input.key]) + self.input_bias(cond),
                     self.blocks, self.head, masks, cond)

    def forward(self, x: Tensor, labels: Tensor | None = None, cond_image: Tensor | None = None,
                order: object = None, known: Tensor | None = None) -> Tensor:
        """Parameters (B, P, H, W) in order ``order`` (a name, a permutation, or None for the first
        training order); ``known`` as in the base class (completion models only)."""
        self.check_images(x)
        order = None if order is None else self.resolve_order(order)
        cond = self.condition(labels, cond_image, x.shape[0], *self.known_input(x, known))
        return self.params(self.preprocess(x), cond, *(() if order is None else (order,)))

    @full_precision
    def log_prob(self, x: Tensor, labels: Tensor | None = None, cond_image: Tensor | None = None,
                 order: object = None) -> Tensor:
        """(B,) exact log p(x) in nats: in ``order``, or with None of the mixture over the training orders."""
        if order is not None:
            params = self(x, labels, cond_image, order=order)
            return self.distribution.log_prob(params, x.to(params.device))
        per_order = self.log_prob_per_order(x, labels, cond_image)          # (K, B)
        return torch.logsumexp(per_order, 0) - math.log(per_order.shape[0])

    @full_precision
    def log_prob_per_order(self, x: Tensor, labels: Tensor | None = None, cond_image: Tensor | None = None) -> Tensor:
        """(K, B) log p_k(x) for each training order k (named in ``order_names``)."""
        self.check_images(x)
        xf, cond = self.preprocess(x), self.condition(labels, cond_image, x.shape[0])
        x = x.to(xf.device)
        return torch.stack([self.distribution.log_prob(self.params(xf, cond, o), x) for o in self.training_orders()])

    def nll(self, x: Tensor, labels: Tensor | None = None, cond_image: Tensor | None = None,
            order: object = None) -> Tensor:
        return -self.log_prob(x, labels, cond_image, order)

    @full_precision
    def conditional_log_prob(self, x: Tensor, known: Tensor, labels: Tensor | None = None,
                             cond_image: Tensor | None = None, order: object = "auto") -> Tensor:
        """(B,) sum of the log-conditionals of the unknown sub-pixels of x in ``order``, in nats.

        With "auto" (known pixels first) this is exactly log p_k(x_unknown | x_known) of that order
        k, = log p_k(x) - log p_k(x_known). An explicit order that visits some unknown sub-pixel
        before a known one gives the conditionals of the unknown ones given what precedes them.
        Pixels with only some channels known come after the fully known ones in "auto"; their
        unknown channels condition on their known channels only where those come first (R, G, B).
        """
        self.check_images(x)
        known = self.check_known(x, known).to(self.device)
        table = self.known_first_orders(known) if isinstance(order, str) and order == "auto" else \
            self.resolve_order(order).indices.expand(x.shape[0], -1)
        xf, x = self.preprocess(x), x.to(self.device)
        cond = self.condition(labels, cond_image, x.shape[0], x, known)
        out = xf.new_zeros(x.shape[0])
        rows, group = torch.unique(table, dim=0, return_inverse=True)
        for k, row in enumerate(rows):
            idx = (group == k).nonzero().flatten()
            sub = None if cond is None else cond.select(idx)
            params = self.params(xf[idx], sub, self.as_order(row))
            logp = -self.distribution.nll_per_subpixel(params, x[idx])                         # (b, C, H, W)
            out[idx] = (logp * ~known[idx]).flatten(1).sum(1)
        return out

    def cached_stepper(self, x: Tensor, cond: Condition | None, order: Order | None = None) -> "CachedLMConv":
        return CachedLMConv(self, x, cond, self.default_order() if order is None else self.resolve_order(order))


def _first_occurrences(rows: Tensor) -> Tensor:
    """Indices of the rows of (K, N) that equal no earlier row, in order."""
    _, inverse = torch.unique(rows, dim=0, return_inverse=True)
    return torch.tensor([i for i in range(len(rows)) if int(inverse[i]) not in inverse[:i].tolist()], dtype=torch.long)
