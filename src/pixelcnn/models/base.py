"""The interface every model family shares: a model is a distribution over images.

A family subclasses :class:`AutoregressiveModel`, sets ``name`` and ``config_class``, builds its
layers in ``__init__`` and implements ``network``: float images scaled to [-1, 1] (and optional
labels) in, distribution parameters out. Everything else (checking inputs, log-likelihoods,
sampling, completion, saving) is written once here and in ``sampling.py``.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import ClassVar, Iterator

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from pixelcnn import allocator, checkpoint
from pixelcnn.config import ModelConfig
from pixelcnn.distributions import OutputDistribution, bits_per_dim, make_distribution
from pixelcnn.errors import CheckpointError, ConfigError, InvalidImageError, InvalidLabelError
from pixelcnn.levels import to_unit
from pixelcnn.validation import COUNT
from pixelcnn.models.layers import Condition, ConditionNetwork, KnownPixelsNetwork
from pixelcnn.models.order import Order
from pixelcnn.models import activation_checkpointing as checkpointing

INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def full_precision(method):
    """A likelihood method runs with autocast off on the model's device: a reported log-probability is
    never computed in bf16 or fp16, even inside a caller's ``torch.autocast`` (training's, say)."""
    @functools.wraps(method)
    def exact(self, *args, **kwargs):
        with torch.autocast(self.device.type, enabled=False):
            return method(self, *args, **kwargs)
    return exact


# Each generation order (``AutoregressiveModel.generation_order``) in words, for what the command line and the
# web app say of a model.
ORDER_WORDS = {"raster": "raster order", "any": "any order", "coarse_to_fine": "coarse-to-fine order"}


class AutoregressiveModel(nn.Module):
    """An exact-likelihood model of integer images (B, C, H, W) with values in [0, levels)."""

    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]]
    # What the family can do, declared here and read by every caller (sampling, the codec, evaluation,
    # the web app); tests/test_models.py holds each registered family to its declaration.
    # True when the parameters of a pixel depend on none of its own channels (PixelCNN++): the
    # channel coupling then lives in the distribution and one network pass serves a whole pixel.
    pixel_level_network: ClassVar[bool] = False
    # True when the family has an incremental stepper (the fast path of sampling and coding): it
    # overrides ``cached_stepper``; set for each family class as it is defined.
    cached: ClassVar[bool] = False
    # The order pixels are generated in: "raster"; "any" (an order given at call time: ``visiting_order``
    # takes named orders and "auto", known pixels first; the family has ``order_names`` and
    # ``log_prob_per_order``); or "coarse_to_fine" (a multiscale model's :meth:`default_order`).
    generation_order: ClassVar[str] = "raster"
    # True when the cached stepper offers whole groups of pixels (``Stepper.groups``), whose channels the
    # sampling loop draws and the codec codes a group at a time; a family whose configuration decides it
    # (multiscale's ``within_group``) makes it a property.
    draws_groups: bool = False
    # Submodules that activation checkpointing runs whole, instead of the elements of the
    # ModuleLists inside them (see models/activation_checkpointing.py and :meth:`checkpoint_units`).
    checkpoint_whole: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.cached = cls.cached_stepper is not AutoregressiveModel.cached_stepper

    def __init__(self, config: ModelConfig):
        super().__init__()
        allocator.default()                     # freed feature maps stay in the process for reuse (allocator.py)
        self.config = config
        self.distribution: OutputDistribution = self.make_distribution()
        self.cond_net = (ConditionNetwork(config.cond_shape, config.image_shape[1:], config.cond_features)
                         if config.cond_shape else None)
        self.known_net = (KnownPixelsNetwork(config.channels, config.image_shape[1:], config.cond_features,
                                             self.distribution.num_params) if config.inpainting else None)

    # ----- what a family implements ---------------------------------------------------------

    def make_distribution(self) -> OutputDistribution:
        """The output distribution; by default the masked families' (``MaskedModelConfig.output_kind``: a softmax
        over the levels, or Bernoulli), one per colour channel."""
        return make_distribution(self.config.output_kind, self.config.channels, self.config.levels)

    # An order, wherever a network or a stepper takes one, is None (the family's default order) or an
    # :class:`~pixelcnn.models.order.Order`; names ("hilbert:3", "auto"), permutation tensors and per-image orders
    # become Orders at the edges (:meth:`visiting_order`, the command line, the web API).

    def network(self, x: Tensor, cond: Condition | None, order: Order | None = None) -> Tensor:
        """(B, C, H, W) floats in [-1, 1] -> (B, P, H, W) distribution parameters of the pixels visited in ``order``."""
        raise NotImplementedError

    def cached_stepper(self, x: Tensor, cond: Condition | None, order: Order | None = None):
        """A faster incremental stepper for the sampling loop, visiting ``order``; a family that overrides this
        has ``cached`` True."""
        raise NotImplementedError(f"model {self.name!r} has no cached stepper")

    def own_order_only(self, order: Order | None) -> None:
        """Refuse an order other than the family's own (None, or :meth:`default_order`: raster where that is None),
        for a family that generates in one order: its network and stepper take the argument and cannot honour another."""
        if order is None:                       # every training step: nothing to compare, nothing to compute
            return
        _, height, width = self.image_shape
        if order != (self.default_order() or Order.raster(height, width)):
            raise ConfigError(f"model {self.name!r} generates in {ORDER_WORDS[self.generation_order]} only: expected "
                              f"no order or its own, got another permutation of the pixels")

    def visiting_order(self, order: object, known: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Order | list[Order] | None:
        """The pixel order of sampling (``known`` None) or completion: None for the family's default order, else an
        Order, or one per image (an any-order family's "auto")."""
        if order is None or (isinstance(order, str) and order in ("raster", "raster:0")):
            return None
        raise ConfigError(f"model {self.name!r} generates in raster order only: expected order None or 'raster', "
                          f"got {order if isinstance(order, str) else type(order).__name__!r}")

    def default_order(self) -> Order | None:
        """The pixel order of a stepper given none: None for raster order, else an Order (an any-order family's
        first training order; a multiscale model's coarse-to-fine order)."""
        return None

    def step_inputs(self, seed: int, step: int) -> dict[str, object]:
        """Extra keyword arguments of ``forward`` for training step ``step`` (e.g. an any-order model's order)."""
        return {}

    # ----- the shared interface -------------------------------------------------------------

    @property
    def any_order(self) -> bool:
        return self.generation_order == "any"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.config.image_shape

    @property
    def levels(self) -> int:
        return self.config.levels

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode (dropout off) for the block; the caller's mode comes back after, also on an error."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    def preprocess(self, x: Tensor) -> Tensor:
        """Integer values [0, L) -> floats in [-1, 1], in the model's dtype."""
        dtype = next(self.parameters()).dtype
        return to_unit(x, self.levels, dtype)

    def condition(self, labels: Tensor | int | None, cond_image: Tensor | None, batch: int,
                  x: Tensor | None = None, known: Tensor | None = None) -> Condition | None:
        """Check labels, conditioning image and known pixels for a batch and prepare them for the network.

        ``x`` and ``known`` (a boolean mask that broadcasts to x) are read by a completion model
        (``inpainting=True``) only, which sees the values of x where ``known`` is True; with
        ``known`` None nothing is known, and the model is a density model of whole images.
        """
        labels = self.check_labels(_as_labels(labels, batch, self.device), batch)
        output = self.known_output(x, known, batch) if self.known_net is not None else None
        if self.cond_net is None:
            if cond_image is not None:
                raise InvalidImageError("this model has no conditioning image (cond_shape=None) but cond_image was given")
            return None if labels is None and output is None else Condition(labels=labels, output=output)
        if cond_image is None:
            raise InvalidImageError(f"this model is conditioned on an image: expected cond_image of shape "
                                    f"({batch}, {', '.join(map(str, self.config.cond_shape))}), got None")
        if cond_image.dim() == 3:
            cond_image = cond_image.expand(batch, *cond_image.shape)
        self.check_images(cond_image, self.config.cond_shape, "cond_image")
        if cond_image.shape[0] != batch:
            raise InvalidImageError(f"expected {batch} conditioning images, got {cond_image.shape[0]}")
        return Condition(labels=labels, features=self.cond_net(self.preprocess(cond_image.to(self.device))))

    def known_output(self, x: Tensor | None, known: Tensor | None, batch: int) -> Tensor:
        """A completion model's term (B, P, H, W) from the values of x where ``known`` (nothing if None)."""
        if known is None:
            zeros = torch.zeros((batch, *self.image_shape), device=self.device)
            return self.known_net(zeros.to(next(self.parameters()).dtype), zeros.bool())
        known = self.check_known(x, known).to(self.device)
        if x.shape[0] != batch:
            raise InvalidImageError(f"expected {batch} images with known pixels, got {x.shape[0]}")
        return self.known_net(self.preprocess(x.to(self.device)), known)

    def forward(self, x: Tensor, labels: Tensor | None = None, cond_image: Tensor | None = None,
                known: Tensor | None = None) -> Tensor:
        """Distribution parameters (B, P, H, W) for integer images x (B, C, H, W).

        A completion model reads ``known`` (see :meth:`condition`); other models refuse it.
        """
        self.check_images(x)
        cond = self.condition(labels, cond_image, x.shape[0], *self.known_input(x, known))
        return self.params(self.preprocess(x), cond)

    def params(self, x: Tensor, cond: Condition | None, order: Order | None = None) -> Tensor:
        """(B, P, H, W) distribution parameters from preprocessed images: the family's ``network`` (in ``order``),
        plus a completion model's term from its known pixels."""
        out = self.network(x, cond, order)
        return out if cond is None or cond.output is None else out + cond.output

    def known_input(self, x: Tensor, known: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        """The (x, known) a completion model conditions on; refuses ``known`` for a model that takes none."""
        if known is not None and not self.config.inpainting:
            raise InvalidImageError("this model does not condition on known pixels (inpainting=False) but known was "
                                    "given: use conditional_log_prob or complete")
        return (x, known) if known is not None else (None, None)

    @full_precision
    def log_prob(self, x: Tensor, labels: Tensor | None = None, cond_image: Tensor | None = None) -> Tensor:
        """(B,) exact natural-log probability of each whole image (given its labels / conditioning image)."""
        params = self(x, labels, cond_image)
        return self.distribution.log_prob(params, x.to(params.device))

    @full_precision
    def log_prob_per_pixel(self, x: Tensor, labels: Tensor | None = None, cond_image: Tensor | None = None) -> Tensor:
        """(B, H, W) natural-log probability of each pixel (all its channels) given those before it.

        Summed over the pixels it is ``log_prob``: -log2 of it shows where the model is surprised.
        """
        params = self(x, labels, cond_image)
        return self.distribution.log_prob_per_pixel(params, x.to(params.device).long())

    def nll(self, x: Tensor, labels: Tensor | None = None, cond_image: Tensor | None = None) -> Tensor:
        """(B,) negative log-likelihood of each image in nats: training's loss."""
        return self.nll_from_params(self(x, labels, cond_image), x)

    def nll_from_params(self, params: Tensor, x: Tensor, known: Tensor | None = None) -> Tensor:
        """(B,) negative log-likelihood from parameters already computed (e.g. by a DDP wrapper);
        of the unknown sub-pixels only where ``known`` (a mask that broadcasts to x) is given."""
        dist, x = self.distribution, x.to(params.device)
        if known is not None:
            return -(dist.log_prob_per_channel(params, x) * ~known.to(params.device)).flatten(1).sum(1)
        return dist.nll(params, x)

    @full_precision
    def conditional_log_prob(self, x: Tensor, known: Tensor, labels: Tensor | None = None,
                             cond_image: Tensor | None = None) -> Tensor:
        """(B,) exact log-probability in nats of the unknown sub-pixels of x (``known`` False) given
        what this model conditions on, summed over them in raster then R, G, B order.

        A completion model (``inpainting=True``) conditions every unknown sub-pixel on all the known
        ones and on the unknown ones before it: this is exactly log p(x_unknown | x_known). Any other
        raster model sees only the sub-pixels before each unknown one (known or not), so this is
        the sum of log p(x_i | x_<i) over the unknown i: what its completion samples from, not the
        posterior given the known pixels that come later.
        """
        self.check_images(x)
        known = self.check_known(x, known).to(self.device)
        params = self(x, labels, cond_image, known if self.config.inpainting else None)
        return -self.nll_from_params(params, x, known)

    @full_precision
    def bits_per_dim(self, x: Tensor, labels: Tensor | None = None, cond_image: Tensor | None = None) -> Tensor:
        """(B,) negative log-likelihood of each image in bits per sub-pixel."""
        return bits_per_dim(-self.log_prob(x, labels, cond_image), x[0].numel())

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | int | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None, method: str = "auto",
               cond_image: Tensor | None = None, order: object = None) -> Tensor:
        """Draw ``n`` images (n, C, H, W), int64, in raster then R, G, B order.

        ``temperature`` divides every conditional log-probability before renormalising (1 is
        exact). ``method`` is "naive" (one network pass per sub-pixel, the reference), "cached"
        (the family's incremental path) or "auto" (cached where there is one). The same
        ``generator`` state gives the same images on either path. ``labels`` (n,) or an int, and
        ``cond_image`` (n, *cond_shape) or one image for all, for conditional models. ``order``:
        see :meth:`visiting_order` (an any-order family visits pixels in that order instead).
        """
        from pixelcnn.sampling import complete

        COUNT(n, "n")
        x = torch.zeros((n, *self.image_shape), dtype=torch.long, device=self.device)
        known = torch.zeros_like(x, dtype=torch.bool)
        cond = self.condition(labels, cond_image, n)
        order = self.visiting_order(order, known, generator)
        return complete(self, x, known, cond, temperature=temperature, generator=generator, method=method, order=order)

    @torch.no_grad()
    def complete(self, x: Tensor, known: Tensor, n: int = 1, labels: Tensor | int | None = None,
                 temperature: float = 1.0, generator: torch.Generator | None = None,
                 method: str = "auto", cond_image: Tensor | None = None, order: object = None) -> Tensor:
        """Fill in the pixels where ``known`` is False; returns (B, n, C, H, W).

        Sub-pixels are visited in the model's order (raster, then R, G, B). An unknown one is
        sampled from p(x_i | x_<i), where x_<i holds the known and already sampled values
        before it. Known values are copied unchanged. Known values that come *after* an unknown
        one in this order do not influence it: the sampler conditions on the past only, so for
        a mask with known pixels below or to the right of a hole the result is a sample of the
        hole given what lies before it, not of the exact posterior given every known pixel.
        A completion model (``inpainting=True``) also conditions every unknown sub-pixel on all the
        known ones, and an any-order family takes ``order`` (see :meth:`visiting_order`) and can
        visit the known pixels first: either way completions are samples of the model's exact
        posterior given every known pixel (see :meth:`conditional_log_prob`). A mask with no
        unknown sub-pixel is refused.
        """
        from pixelcnn.sampling import complete

        self.check_images(x)
        known = self.check_known(x, known)
        COUNT(n, "n")
        if bool(known.all()):
            raise InvalidImageError("expected at least one unknown sub-pixel (known False) to complete, got a mask "
                                    "that keeps every one")
        b = x.shape[0]
        cond = self.condition(labels, cond_image, b, x, known)
        xs = x.to(self.device).repeat_interleave(n, dim=0)
        ks = known.to(self.device).repeat_interleave(n, dim=0)
        cs = None if cond is None else cond.repeat_interleave(n)
        order = self.visiting_order(order, ks, generator)
        out = complete(self, xs, ks, cs, temperature=temperature, generator=generator, method=method, order=order)
        return out.view(b, n, *self.image_shape)

    # ----- checks -------------------------------------------------------------------------

    def check_images(self, x: Tensor, shape: tuple[int, int, int] | None = None, what: str = "images") -> None:
        """Raise InvalidImageError unless x is integer (B, *shape) with values in [0, levels)."""
        shape = shape or self.image_shape
        expected = f"integer {what} of shape (B, {', '.join(map(str, shape))}) with values in [0, {self.levels})"
        if not isinstance(x, Tensor):
            raise InvalidImageError(f"expected {expected} as a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or tuple(x.shape[1:]) != shape:
            raise InvalidImageError(f"expected {expected}, got shape {tuple(x.shape)}")
        if x.dtype not in INTEGER_DTYPES:
            raise InvalidImageError(f"expected {expected}, got dtype {x.dtype}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.levels):
            raise InvalidImageError(f"expected {expected}, got values in [{int(x.min())}, {int(x.max())}]")

    def check_known(self, x: Tensor, known: Tensor) -> Tensor:
        """``known`` as a boolean mask broadcast to x's shape, or InvalidImageError."""
        expected = f"expected a boolean mask `known` of shape {tuple(x.shape)} (or one that broadcasts to it)"
        if not isinstance(known, Tensor) or known.dtype != torch.bool:
            got = known.dtype if isinstance(known, Tensor) else type(known).__name__
            raise InvalidImageError(f"{expected}, got {got}")
        try:
            return known.expand_as(x)
        except RuntimeError:
            raise InvalidImageError(f"{expected}, got shape {tuple(known.shape)}") from None

    def check_labels(self, labels: Tensor | None, batch: int) -> Tensor | None:
        """Validate labels against ``num_classes``; returns them as a long tensor on the model's device."""
        k = self.config.num_classes
        if k is None:
            if labels is not None:
                raise InvalidLabelError("this model is unconditional (num_classes=None) but labels were given")
            return None
        if labels is None:
            raise InvalidLabelError(f"this model is conditional: expected labels of shape ({batch},) in [0, {k}), got None")
        if not isinstance(labels, Tensor) or labels.shape != (batch,) or labels.dtype not in INTEGER_DTYPES:
            got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
            raise InvalidLabelError(f"expected integer labels of shape ({batch},) in [0, {k}), got {got}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise InvalidLabelError(f"expected labels in [0, {k}), got values in [{int(labels.min())}, {int(labels.max())}]")
        return labels.long().to(self.device)

    # ----- saving -------------------------------------------------------------------------

    def save_pretrained(self, path: str | os.PathLike, extra_files: dict[str, object] | None = None,
                        metadata: dict[str, object] | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into folder ``path`` (atomically).

        ``extra_files`` maps file names to objects saved with ``torch.save`` beside them (used
        by training for ``training_state.pt``); ``metadata`` (JSON) goes into config.json.
        """
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}

        def fill(folder: Path) -> None:
            checkpoint.write_config(folder, self.name, self.config.to_dict(), metadata)
            save_file(state, str(folder / checkpoint.WEIGHTS_FILE))
            for name, obj in (extra_files or {}).items():
                torch.save(obj, folder / name)

        return checkpoint.write_folder_atomically(path, fill)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location: str | None = "cpu") -> "AutoregressiveModel":
        """The model of this family saved at ``path`` (a checkpoint folder, a run folder or
        "pretrained:NAME"), as ``pixelcnn.load`` rebuilds it; a checkpoint of another family is refused.
        ``pixelcnn.load`` takes a checkpoint of any family."""
        if cls is AutoregressiveModel:
            raise ConfigError("expected from_pretrained on a family's class, e.g. pixelcnn.models.get('gated_pixelcnn'), "
                              "got it on AutoregressiveModel: pixelcnn.load takes a checkpoint of any family")
        folder = checkpoint.resolve(path)
        meta = checkpoint.read_config(folder)
        if meta.get("model") != cls.name:
            raise CheckpointError(f"expected a {cls.name} checkpoint at {path}, got a {meta.get('model')} one")
        return checkpoint.build_model(cls, folder, meta, map_location)

    # ----- memory ---------------------------------------------------------------------------

    def checkpoint_units(self) -> list[nn.Module]:
        """The modules that activation checkpointing runs one by one: the ``checkpoint_whole``
        submodules, then the elements of the outermost ModuleLists (see models/activation_checkpointing.py)."""
        return checkpointing.units(self, self.checkpoint_whole)

    def checkpoint_activations(self, enabled: bool = True) -> "AutoregressiveModel":
        """Keep only each unit's inputs for backward and recompute the rest there (``enabled``), or not.

        It acts while the model trains with grad enabled: less memory for about one more forward
        pass of time, the same loss and gradients. Evaluation, sampling and coding are unaffected.
        """
        checkpointing.set_checkpointing(self.checkpoint_units(), enabled)
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"config={self.config}"


def _as_labels(labels: Tensor | int | None, batch: int, device: torch.device) -> Tensor | None:
    """An int label means the same class for the whole batch."""
    if isinstance(labels, int) and not isinstance(labels, bool):
        return torch.full((batch,), labels, dtype=torch.long, device=device)
    return labels
