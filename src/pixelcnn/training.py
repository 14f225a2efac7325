"""Training: fit, checkpoint, resume. No model code lives here; evaluation is in evaluation.py.

A run folder holds everything about one training run::

    run.json                the resolved training and model configuration
    metrics.jsonl           one JSON object per log line (train steps, epochs)
    samples/epoch_0001.png  a grid of samples after every epoch
    checkpoints/last/       config.json, model.safetensors (EMA weights), training_state.pt
    checkpoints/best/       the checkpoint with the best validation bits/dim
    run.lock                held by the process that trains into the folder (see runlock.py)

Exact resume: the data order of epoch e is a permutation drawn from a generator seeded with
(seed, e), and every random draw of a step (dynamic binarization) comes from a generator
seeded with (seed, step). The training state stores the raw weights, the EMA weights, the
optimizer, the scheduler, the step, the epoch and the global RNG state (dropout), so a resumed
run continues the trajectory an uninterrupted one would have followed.

Distributed: under ``torchrun`` every process takes its slice of each *global* batch, and
DistributedDataParallel averages the gradients, so N processes compute what one process
computes with the same global batch. Rank 0 alone logs, evaluates, samples and checkpoints.

Every setting is checked, and the data, the model and the batch size are known to fit, before
the run folder is created; a refused start leaves nothing behind. One process at a time trains
into a run folder: a second one is refused while the first holds the folder's lock.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import pixelcnn
from pixelcnn import checkpoint, runlock
from pixelcnn.errors import ConfigError, PixelCNNError, TrainingError
from pixelcnn.evaluation import check_evaluation, evaluate
from pixelcnn.runtime import PRECISION_CHOICES, autocast, resolve_precision, setup_runtime
from pixelcnn.superres import cond_images, cond_shape_for
from pixelcnn.validation import COUNT, SEED, TEMPERATURE, Integer, OneOf, Real, check_fields
from pixelcnn.version import __version__

log = logging.getLogger(__name__)

TASKS = ("density", "superres", "inpainting")
RUN_FILE = "run.json"


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a training run except the model's own hyperparameters."""

    model: str = "gated_pixelcnn"
    dataset: str = "mnist"
    epochs: int = 10
    lr: float = 1e-3
    gamma: float = 0.99
    batch_size: int = 64
    seed: int = 0
    max_steps: int | None = None
    time_budget: float | None = None
    ema: float = 0.999
    grad_clip: float | None = None
    weight_decay: float = 0.0
    eval_batch_size: int = 256
    valid_limit: int | None = None
    samples: int = 64
    sample_temperature: float = 1.0
    conditional: bool = False
    task: str = "density"
    scale: int = 2
    checkpoint_every: int | None = None
    log_every: int = 50
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    checkpoint_activations: bool = False
    tensorboard: bool = False
    data_dir: str | None = None
    image_size: int | None = None
    init_from: str | None = None
    freeze_init: bool = False

    help = {
        "model": "model family (see `pixelcnn models`)",
        "dataset": "mnist, binarized_mnist, dynamic_binarized_mnist, fashion_mnist, cifar10, emoji or folder:PATH",
        "epochs": "passes over the training split",
        "lr": "Adam learning rate",
        "gamma": "ExponentialLR decay of the learning rate after every epoch",
        "batch_size": "global batch size (split across processes under torchrun)",
        "seed": "seed of initialisation, data order and sampling",
        "max_steps": "stop after this many optimizer steps in total",
        "time_budget": "stop after this many minutes of training (then evaluate and save)",
        "ema": "decay of the exponential moving average of the weights used for eval and samples (0: off)",
        "grad_clip": "clip the gradient norm to this value",
        "weight_decay": "Adam weight decay",
        "eval_batch_size": "batch size of evaluation",
        "valid_limit": "evaluate on the first N validation images only (faster epochs)",
        "samples": "images in the sample grid written after every epoch (0: none)",
        "sample_temperature": "temperature of the epoch sample grids",
        "conditional": "condition the model on the dataset's class labels",
        "task": "density (model p(x)), superres (model p(x | x downsampled by --scale)) or inpainting (model "
                "p(unknown pixels | known ones) over random masks; the loss is on the unknown sub-pixels only)",
        "scale": "downsampling factor of --task superres",
        "checkpoint_every": "also checkpoint every N steps inside an epoch",
        "log_every": "write a train line to metrics.jsonl every N steps",
        "device": "auto, cpu, cuda or cuda:N",
        "precision": "auto (bf16 where the CPU or GPU has native bf16, else fp32), fp32, bf16 or fp16 (autocast; fp16 "
                     "uses a gradient scaler); likelihoods are reported in fp32 whatever this is",
        "compile": "compile the network with torch.compile",
        "checkpoint_activations": "keep only the inputs of each residual block / layer for backward and recompute "
                                  "the rest there: less memory for about one more forward pass of time, the same "
                                  "losses and gradients",
        "tensorboard": "also write TensorBoard event files into the run folder",
        "data_dir": "folder with the datasets (default: $PIXELCNN_DATA, then the user cache)",
        "image_size": "size images of a folder dataset are resized and cropped to; emoji: 32 (default) or 64",
        "init_from": "warm start: copy the tensors of this checkpoint (a run, a folder or pretrained:NAME) whose names "
                     "match; a tensor of another shape is an error; conditioning biases the checkpoint lacks start at 0",
        "freeze_init": "with --init-from: keep the copied tensors fixed and train only those the checkpoint lacks "
                       "(e.g. the conditioning of a completion model on top of a density model)",
    }

    limits = {
        "epochs": COUNT, "lr": Real(0, open_min=True), "gamma": Real(0, 1, open_min=True), "batch_size": COUNT,
        "seed": SEED, "max_steps": COUNT, "time_budget": Real(0, open_min=True), "ema": Real(0, 1, open_max=True),
        "grad_clip": Real(0, open_min=True), "weight_decay": Real(0), "eval_batch_size": COUNT, "valid_limit": COUNT,
        "samples": Integer(0), "sample_temperature": TEMPERATURE, "task": OneOf(TASKS), "scale": Integer(2),
        "checkpoint_every": COUNT, "log_every": COUNT, "precision": OneOf(PRECISION_CHOICES), "image_size": COUNT,
    }

    def __post_init__(self) -> None:
        check_fields(self, self.limits)
        if self.freeze_init and not self.init_from:
            raise ConfigError("expected --freeze-init with --init-from CHECKPOINT, got no --init-from")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown training settings {sorted(unknown)}")
        return cls(**data)


# ----- EMA -------------------------------------------------------------------------------


class EMA:
    """Exponential moving average of the weights, with the usual warm-up of the decay.

    decay_t = min(decay, (1 + t) / (10 + t)): early averages are not dominated by the
    initial weights, and after a few thousand steps the decay is ``decay``.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        state = model.state_dict()
        floats = [k for k, v in state.items() if v.dtype.is_floating_point]
        torch._foreach_lerp_([self.shadow[k] for k in floats], [state[k].float() for k in floats], 1 - d)   # one fused pass
        for k in state.keys() - set(floats):
            self.shadow[k].copy_(state[k])

    def copy_to(self, model: nn.Module) -> None:
        target = model.state_dict()
        model.load_state_dict({k: v.to(target[k].dtype) for k, v in self.shadow.items()})

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}


# ----- warm start ------------------------------------------------------------------------


@torch.no_grad()
def warm_start(model: nn.Module, source: str | os.PathLike) -> None:
    """Copy into ``model`` every tensor of the checkpoint ``source`` that has the same name.

    A tensor of the same name but another shape is refused before anything is copied. Tensors
    the source lacks keep their initial values, except the terms that conditioning adds (the
    :class:`~pixelcnn.models.layers.ConditionBias` embeddings, a completion model's last
    :class:`~pixelcnn.models.layers.KnownPixelsNetwork` layer), which start at zero: a conditional or
    completion model warm-started from an unconditional one then starts as exactly that model.
    """
    from pixelcnn.models.layers import ConditionBias, KnownPixelsNetwork

    theirs = pixelcnn.load(source).state_dict()
    ours = model.state_dict()
    wrong = [f"{k}: expected {tuple(v.shape)}, got {tuple(theirs[k].shape)}"
             for k, v in ours.items() if k in theirs and theirs[k].shape != v.shape]
    if wrong:
        more = f"; and {len(wrong) - 3} more" if len(wrong) > 3 else ""
        raise ConfigError(f"--init-from {source}: expected tensors of this model's shapes, got {len(wrong)} of "
                          f"another shape ({'; '.join(wrong[:3])}{more})")
    shared = [k for k in ours if k in theirs]
    if not shared:
        raise ConfigError(f"--init-from {source}: expected tensors named like this model's, got none in common")
    for k in shared:
        ours[k].copy_(theirs[k])
    for name, module in model.named_modules():
        if isinstance(module, ConditionBias) and module.embedding is not None and f"{name}.embedding.weight" not in theirs:
            module.embedding.weight.zero_()
        if isinstance(module, KnownPixelsNetwork) and f"{name}.out.weight" not in theirs:
            module.out.weight.zero_()
            module.out.bias.zero_()
    log.info("warm start from %s: %d of %d tensors copied", source, len(shared), len(ours))


# ----- the training loop ----------------------------------------------------------------


def epoch_permutation(seed: int, epoch: int, n: int) -> Tensor:
    """The data order of one epoch, a function of (seed, epoch) alone."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def step_generator(seed: int, step: int) -> torch.Generator:
    """Randomness of one step's data (dynamic binarization), a function of (seed, step) alone."""
    return torch.Generator().manual_seed(seed * 7_919_993 + step + 1)


def step_known(seed: int, step: int, batch: int, shape: tuple[int, int, int]) -> Tensor:
    """The known masks (B, 1, H, W) of one global batch of an inpainting run, a function of (seed, step) alone."""
    from pixelcnn.masks import random_known

    gen = torch.Generator().manual_seed(seed * 6_700_417 + step + 1)
    return random_known(batch, *shape[1:], generator=gen)


class Trainer:
    """Fits one model to one dataset, writing the run folder described in the module docstring."""

    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike, model_args: dict[str, Any] | None = None,
                 model_config: dict[str, Any] | None = None):
        from pixelcnn.data import load_dataset

        self.cfg, self.out = cfg, Path(out_dir)
        self.rt = setup_runtime(cfg.device)
        torch.manual_seed(cfg.seed)
        self.train_set = load_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, image_size=cfg.image_size)
        self.valid_set = load_dataset(cfg.dataset, "valid", data_dir=cfg.data_dir, image_size=cfg.image_size)
        self.model = self._build_model(model_args or {}, model_config)
        if cfg.init_from and model_config is None:          # a resumed run has its own weights
            warm_start(self.model, cfg.init_from)
        if cfg.freeze_init:                                 # the same tensors on a resume
            frozen = set(pixelcnn.load(cfg.init_from).state_dict())
            for name, p in self.model.named_parameters():
                p.requires_grad_(name not in frozen)
        self.model = self.model.to(self.rt.device).checkpoint_activations(cfg.checkpoint_activations)
        self.eval_model = self._build_model({}, self.model.config.to_dict()).to(self.rt.device).eval()
        trained = [p for p in self.model.parameters() if p.requires_grad]
        if not trained:
            raise ConfigError(f"--freeze-init: every tensor of this model comes from {cfg.init_from}: nothing to train")
        self.optimizer = torch.optim.Adam(trained, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=cfg.gamma)
        self.precision = resolve_precision(cfg.precision, self.rt.device)
        log.info("precision %s (%s)", self.precision, cfg.precision)
        self.scaler = torch.amp.GradScaler(self.rt.device.type, enabled=self.precision == "fp16")
        self.ema = EMA(self.model, cfg.ema) if cfg.ema > 0 else None
        self.net = self._wrap(self.model)
        self._check_sizes()
        self.step = self.epoch = self.batch_in_epoch = 0
        self.best_bpd = math.inf
        self.writer = None

    # ----- construction

    def _build_model(self, model_args: dict[str, Any], model_config: dict[str, Any] | None):
        cfg = self.cfg
        if model_config is not None:
            cls = pixelcnn.models.get(cfg.model)
            return cls(cls.config_class.from_dict(model_config))
        return pixelcnn.create(cfg.model, **data_settings(cfg, self.train_set), **model_args)

    def _check_sizes(self) -> None:
        """Refuse, before anything is written, a batch larger than the data or a validation that cannot run."""
        cfg = self.cfg
        if len(self.train_set) < cfg.batch_size:
            raise ConfigError(f"expected a batch size of at most the {len(self.train_set)} training images of "
                              f"{cfg.dataset}, got {cfg.batch_size}")
        check_evaluation(self.eval_model, self.valid_set, cfg.eval_batch_size, cfg.valid_limit)

    def _wrap(self, model: nn.Module) -> nn.Module:
        net = model
        if self.rt.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.rt.device.index] if self.rt.device.type == "cuda" else None
            # Some parameters never reach the loss (the last gated layer's vertical-stack class biases,
            # whose output no layer reads): DDP must look for them, or it waits for their gradients.
            net = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
        if self.cfg.compile:
            net = torch.compile(net)
        return net

    # ----- state

    def training_state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None, "step": self.step, "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch, "best_bpd": self.best_bpd, "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best_bpd = state["best_bpd"]
        torch.set_rng_state(state["rng"].cpu())             # map_location may have moved it
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])

    def _sync_eval_model(self) -> pixelcnn.AutoregressiveModel:
        """The weights users get: the EMA average where there is one."""
        if self.ema:
            self.ema.copy_to(self.eval_model)
        else:
            self.eval_model.load_state_dict(self.model.state_dict())
        return self.eval_model

    def save(self, name: str, with_state: bool = True, metadata: dict[str, Any] | None = None) -> Path:
        """Write checkpoint ``name``; refuses weights that are not finite, so a saved checkpoint is a good one."""
        for model in (self.model, self.eval_model):
            if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                raise TrainingError(f"the weights became NaN or infinite by step {self.step}; training stopped "
                                    f"without saving them. {self.last_good()}; try a lower --lr or --grad-clip")
        extra = {checkpoint.TRAINING_STATE_FILE: self.training_state()} if with_state else None
        meta = {"dataset": self.cfg.dataset, "image_size": self.cfg.image_size, "conditional": self.cfg.conditional,
                "step": self.step, "epoch": self.epoch, **(metadata or {})}
        return self.eval_model.save_pretrained(self.out / "checkpoints" / name, extra_files=extra, metadata=meta)

    def last_good(self) -> str:
        """Where the last complete checkpoint is, in words."""
        folder = checkpoint.existing_folder(self.out / "checkpoints" / "last")
        try:
            step = checkpoint.read_config(folder).get("metadata", {}).get("step") if folder else None
        except PixelCNNError:
            folder = None
        if folder is None:
            return "No checkpoint was saved"
        return f"The last good checkpoint is {folder} (step {step})"

    # ----- the loop

    def fit(self) -> dict[str, Any]:
        """Train until the epochs, ``max_steps`` or ``time_budget`` run out; returns the final metrics.

        A file that cannot be written (a full disk) stops training with a TrainingError that names
        the last good checkpoint; checkpoints are written whole or not at all.
        """
        try:
            return self._fit()
        except OSError as e:
            raise TrainingError(f"cannot write {e.filename or self.out}: {e.strerror or e}; training stopped at step "
                                f"{self.step}. {self.last_good()}") from None

    def _fit(self) -> dict[str, Any]:
        self._start()
        steps_per_epoch = len(self.train_set) // self.cfg.batch_size
        result = None
        while self.epoch < self.cfg.epochs and not self._should_stop():
            finished = not self._run_epoch(steps_per_epoch)
            if finished:
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                self.scheduler.step()
            result = self._end_of_epoch(partial=not finished)
        if result is None:                  # nothing left to train (e.g. resuming a finished run)
            result = self._end_of_epoch(partial=True)
        return self._finish(result)

    def _start(self) -> None:
        self.t0 = time.monotonic()
        self.images_seen = 0
        if self.rt.is_main:
            (self.out / "samples").mkdir(parents=True, exist_ok=True)
            self._write_run_file()
            if self.cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out / "tensorboard"))
            if checkpoint.existing_folder(self.out / "checkpoints" / "last") is None:
                self._sync_eval_model()
                self.save("last")           # a loadable checkpoint exists from step 0 on

    def _run_epoch(self, steps_per_epoch: int) -> bool:
        """Steps through the rest of the current epoch; True when a stop condition fired."""
        from tqdm.auto import tqdm

        perm = epoch_permutation(self.cfg.seed, self.epoch, len(self.train_set))
        bar = tqdm(total=steps_per_epoch, initial=self.batch_in_epoch, desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}",
                   disable=not self.rt.is_main or None, leave=False, dynamic_ncols=True)
        try:
            for b in range(self.batch_in_epoch, steps_per_epoch):
                if self._should_stop():
                    return True
                bpd = self._train_step(perm[b * self.cfg.batch_size : (b + 1) * self.cfg.batch_size])
                self.batch_in_epoch = b + 1
                bar.update(1)
                bar.set_postfix(bpd=f"{bpd:.4f}")
                self._after_step(bpd)
        finally:
            bar.close()
        return False

    def _should_stop(self) -> bool:
        cfg = self.cfg
        stop = cfg.max_steps is not None and self.step >= cfg.max_steps
        stop = stop or (cfg.time_budget is not None and time.monotonic() - self.t0 >= cfg.time_budget * 60)
        if self.rt.world > 1:               # clocks differ between processes: rank 0 decides for all
            import torch.distributed as dist

            flag = torch.tensor([float(stop)], device=self.rt.device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        return stop

    def _train_step(self, indices: Tensor) -> float:
        """One optimizer step on a global batch; returns its loss in bits/dim."""
        rt, cfg = self.rt, self.cfg
        local = indices.tensor_split(rt.world)[rt.rank]
        x, y = self.train_set.batch(local, generator=step_generator(cfg.seed, self.step))
        x = x.to(rt.device)
        y = y.to(rt.device) if self.model.config.num_classes is not None else None
        known, inputs = None, self.model.step_inputs(cfg.seed, self.step)
        if self.model.config.inpainting:            # masks of the whole batch, then this process's share
            known = step_known(cfg.seed, self.step, len(indices), self.model.image_shape).tensor_split(rt.world)[rt.rank]
            known = inputs["known"] = known.to(rt.device)
        self.model.train()
        with autocast(rt, self.precision):
            params = self.net(x, y, cond_images(self.model, x), **inputs)
        dims = x[0].numel()                         # inpainting: unknown sub-pixels' nats over all dims
        loss = self.model.nll_from_params(params.float(), x, known).mean() / dims          # nats per dim
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the loss became {loss.item()} at step {self.step} (epoch {self.epoch + 1}); training stopped. "
                f"{self.last_good()}; try a lower --lr or --grad-clip"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema:
            self.ema.update(self.model)
        self.step += 1
        self.images_seen += len(indices)
        return loss.item() / math.log(2)

    def _after_step(self, bpd: float) -> None:
        cfg = self.cfg
        if self.rt.is_main and self.step % cfg.log_every == 0:
            elapsed = time.monotonic() - self.t0
            self._log({"event": "train", "step": self.step, "epoch": self.epoch + 1, "bits_per_dim": bpd,
                       "lr": self.optimizer.param_groups[0]["lr"], "images_per_s": self.images_seen / max(elapsed, 1e-9)})
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.rt.is_main:
            self._sync_eval_model()
            self.save("last")

    def _end_of_epoch(self, partial: bool) -> dict[str, Any]:
        """Validate the EMA weights, checkpoint last (and best), write a sample grid and a metrics line."""
        model = self._sync_eval_model()
        metrics = evaluate(model, self.valid_set, self.cfg.eval_batch_size, self.cfg.valid_limit, self.rt,
                           completion=model.config.inpainting)
        if not self.rt.is_main:
            return metrics
        is_best = metrics["bits_per_dim"] < self.best_bpd
        self.best_bpd = min(self.best_bpd, metrics["bits_per_dim"])
        scores = {"valid_bits_per_dim": metrics["bits_per_dim"], "valid_nll_nats": metrics["nll_nats"]}
        self.save("last", metadata=scores)
        if is_best:
            self.save("best", with_state=False, metadata=scores)
        grid = self._write_samples(partial)
        line = {"event": "epoch", "epoch": self.epoch, "step": self.step, "partial": partial,
                "valid_bits_per_dim": metrics["bits_per_dim"], "valid_nll_nats": metrics["nll_nats"],
                "best": is_best, "lr": self.optimizer.param_groups[0]["lr"], "minutes": (time.monotonic() - self.t0) / 60}
        self._log(line, grid)
        log.info("epoch %d, step %d: valid %.4f bits/dim, %.2f nats%s", self.epoch, self.step,
                 metrics["bits_per_dim"], metrics["nll_nats"], " (best)" if is_best else "")
        return metrics

    def _write_samples(self, partial: bool) -> Tensor | None:
        cfg, model = self.cfg, self.eval_model
        if cfg.samples <= 0:
            return None
        k = model.config.num_classes
        labels, nrow = None, None
        if k:
            per = max(1, cfg.samples // k)
            labels, nrow = torch.arange(k).repeat_interleave(per), per
        n = cfg.samples if labels is None else len(labels)
        cond = None
        if model.config.cond_shape is not None:             # upscale the first validation images
            n = min(n, len(self.valid_set))
            cond = cond_images(model, self.valid_set.batch(torch.arange(n))[0].to(self.rt.device))
        gen = torch.Generator(device=self.rt.device).manual_seed(cfg.seed)
        images = model.sample(n, labels=labels, temperature=cfg.sample_temperature, generator=gen, cond_image=cond)
        from pixelcnn.images import save_grid

        name = f"step_{self.step:07d}.png" if partial else f"epoch_{self.epoch:04d}.png"
        save_grid(images, model.levels, self.out / "samples" / name, nrow=nrow)
        return images

    def _finish(self, result: dict[str, Any]) -> dict[str, Any]:
        summary = {"event": "end", "step": self.step, "epoch": self.epoch, "best_valid_bits_per_dim": self.best_bpd,
                   "valid_bits_per_dim": result["bits_per_dim"], "valid_nll_nats": result["nll_nats"],
                   "minutes": (time.monotonic() - self.t0) / 60, "run": str(self.out)}
        if self.rt.is_main:
            self._log(summary)
            if self.writer:
                self.writer.close()
        return summary

    # ----- logs

    def _write_run_file(self) -> None:
        run = {"package_version": __version__, "train": self.cfg.to_dict(), "model": self.model.name,
               "model_config": self.model.config.to_dict(), "parameters": self.model.num_parameters()}
        tmp = self.out / (RUN_FILE + ".tmp")
        tmp.write_text(json.dumps(run, indent=2) + "\n")
        os.replace(tmp, self.out / RUN_FILE)

    def _log(self, line: dict[str, Any], images: Tensor | None = None) -> None:
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
        if self.writer is None:
            return
        for key in ("bits_per_dim", "valid_bits_per_dim", "lr", "images_per_s"):
            if key in line:
                self.writer.add_scalar(f"{line['event']}/{key}", line[key], self.step)
        if images is not None:
            from pixelcnn.images import make_grid
            import numpy as np

            grid = np.asarray(make_grid(images, self.eval_model.levels).convert("RGB"))
            self.writer.add_image("samples", grid, self.step, dataformats="HWC")
        self.writer.flush()


# ----- entry points -----------------------------------------------------------------------

RESUME_OVERRIDABLE = {"epochs", "max_steps", "time_budget", "device", "precision", "compile", "checkpoint_activations",
                      "tensorboard", "data_dir", "log_every", "checkpoint_every", "samples", "sample_temperature",
                      "valid_limit", "eval_batch_size"}


def data_settings(cfg: TrainConfig, data) -> dict[str, Any]:
    """What the model takes from the dataset ``data`` (an ImageDataset, or the DatasetInfo known before it loads)."""
    if cfg.conditional and data.num_classes is None:
        raise ConfigError(f"--conditional needs class labels, but dataset {cfg.dataset!r} has none")
    return {"image_shape": data.image_shape, "levels": data.levels,
            "num_classes": data.num_classes if cfg.conditional else None,
            "cond_shape": cond_shape_for(data.image_shape, cfg.scale) if cfg.task == "superres" else None,
            "inpainting": cfg.task == "inpainting"}


def check_model_config(cfg: TrainConfig, model_args: dict[str, Any]) -> None:
    """The model's configuration for ``cfg``'s dataset, checked from the dataset's shape alone, before any data loads."""
    from pixelcnn.data import dataset_info

    cls = pixelcnn.models.get(cfg.model).config_class
    cls.from_dict({**data_settings(cfg, dataset_info(cfg.dataset, cfg.image_size)), **model_args})


def train(cfg: TrainConfig, out_dir: str | os.PathLike, **model_args: Any) -> dict[str, Any]:
    """Start a new run in ``out_dir`` (which must not hold one already).

    Everything is checked before the folder is created, the model's hyperparameters before any
    data loads; a start that fails before the run's first file is written removes the folder it created.
    """
    out = Path(out_dir)
    check_model_config(cfg, model_args)
    if not _is_main_process():
        return Trainer(cfg, out, model_args=model_args).fit()
    _check_new_run(out)
    trainer = Trainer(cfg, out, model_args=model_args)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainingError(f"cannot create run folder {out}: {e.strerror or e}") from None
    with runlock.hold(out):
        try:
            _check_new_run(out, held=True)
            return trainer.fit()
        except BaseException:
            if created and not (out / RUN_FILE).exists():
                shutil.rmtree(out, ignore_errors=True)
            raise


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _check_new_run(out: Path, held: bool = False) -> None:
    if out.exists() and not out.is_dir():
        raise TrainingError(f"expected --out to be a folder for the run, got the existing file {out}")
    if not held:
        runlock.check_free(out)
    if (out / RUN_FILE).exists():
        raise TrainingError(f"{out} already holds a training run: resume it with --resume {out}, or pick another --out")


def resume(run_dir: str | os.PathLike, **overrides: Any) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its last checkpoint, exactly where it stopped."""
    run_dir = Path(run_dir)
    if not _is_main_process():
        return resume_trainer(run_dir, **overrides).fit()
    runlock.check_free(run_dir)
    resume_config(run_dir, overrides)                   # refuse bad settings before taking the folder
    with runlock.hold(run_dir):
        return resume_trainer(run_dir, **overrides).fit()


def read_run_file(run_dir: Path) -> dict[str, Any]:
    """The run's ``run.json``, checked."""
    run_file = run_dir / RUN_FILE
    if not run_file.is_file():
        raise TrainingError(f"cannot resume {run_dir}: expected a run folder with {RUN_FILE}")
    try:
        meta = json.loads(run_file.read_text())
    except (ValueError, OSError) as e:
        raise TrainingError(f"cannot resume {run_dir}: expected {RUN_FILE} in JSON, got an unreadable file ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("train"), dict) or not isinstance(meta.get("model_config"), dict):
        raise TrainingError(f"cannot resume {run_dir}: expected {RUN_FILE} with 'train' and 'model_config' settings")
    return meta


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """The resumed run's settings: the recorded ones with the allowed ``overrides``; and run.json."""
    meta = read_run_file(run_dir)
    fixed = {k: v for k, v in overrides.items() if k not in RESUME_OVERRIDABLE and v != meta["train"].get(k)}
    if fixed:
        raise ConfigError(f"cannot change {sorted(fixed)} when resuming; only {sorted(RESUME_OVERRIDABLE)} may change")
    return TrainConfig.from_dict({**meta["train"], **overrides}), meta


def resume_trainer(run_dir: str | os.PathLike, **overrides: Any) -> Trainer:
    run_dir = Path(run_dir)
    cfg, meta = resume_config(run_dir, overrides)
    trainer = Trainer(cfg, run_dir, model_config=meta["model_config"])
    folder = checkpoint.existing_folder(run_dir / "checkpoints" / "last")
    state_file = folder / checkpoint.TRAINING_STATE_FILE if folder else None
    if state_file is None or not state_file.is_file():
        raise TrainingError(f"cannot resume {run_dir}: no checkpoints/last/{checkpoint.TRAINING_STATE_FILE}")
    try:
        state = torch.load(state_file, map_location=trainer.rt.device, weights_only=True)
    except Exception as e:          # torch raises several kinds for a damaged file
        raise TrainingError(f"cannot resume {run_dir}: {state_file} is corrupted ({type(e).__name__})") from None
    trainer.load_training_state(state)
    return trainer
