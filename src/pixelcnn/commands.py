"""The core commands: ``train``, ``eval``, ``sample``, ``complete``, ``upscale``, ``models``, ``pretrained``.

Training and model hyperparameter flags are generated from the config dataclasses (see
:mod:`pixelcnn.flags`); every other value is checked by :mod:`pixelcnn.validation` while the
arguments are parsed, so bad input is refused before a model is loaded or a file written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

import pixelcnn
from pixelcnn import masks, validation
from pixelcnn.errors import ConfigError, InvalidLabelError
from pixelcnn.levels import to_bytes
from pixelcnn.models.base import ORDER_WORDS
from pixelcnn.flags import add_dataclass_flags, add_model_flags, flag_names, given_model_hyperparameters
from pixelcnn.runtime import leave_process_group, resolve_device
from pixelcnn.validation import COUNT, METHOD, MODEL_HELP, SEED, TEMPERATURE, Integer, flag

LABEL = Integer(0)


def add_commands(sub) -> None:
    add_train(sub)
    add_eval(sub)
    add_sample(sub)
    add_complete(sub)
    add_upscale(sub)
    p = sub.add_parser("models", help="list the model families and their hyperparameters")
    p.set_defaults(run=run_models)
    add_pretrained(sub)


# ----- train ------------------------------------------------------------------------------


def add_train(sub) -> None:
    from pixelcnn.training import TrainConfig

    p = sub.add_parser("train", help="train a model on a dataset",
                       description="Train a model; writes a run folder with checkpoints, sample grids and metrics.jsonl. "
                                   "Under torchrun (torchrun --nproc_per_node=N -m pixelcnn train ...) it trains with DDP.")
    p.add_argument("--out", "-o", help="run folder (default: runs/MODEL-DATASET)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder from its last checkpoint")
    p.add_argument("--in-channels", "--in_channels", type=flag(COUNT.parse), dest="in_channels",
                   help="image channels; checked against the dataset's")
    add_dataclass_flags(p.add_argument_group("training (defaults: pixelcnn.training.TrainConfig)"), TrainConfig)
    add_model_flags(p.add_argument_group("model hyperparameters (each applies to the families that have it)"))
    p.set_defaults(run=run_train)


def run_train(args) -> int:
    from pixelcnn import training
    from pixelcnn.training import TrainConfig

    train_names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in train_names and v is not None}
    model_args = given_model_hyperparameters(args)
    if args.resume:
        if model_args:
            raise ConfigError(f"model hyperparameters cannot change when resuming, got {sorted(model_args)}")
        summary = training.resume(args.resume, **given)
    else:
        cfg = TrainConfig(**given)
        _check_model_args(cfg.model, model_args)
        _check_in_channels(cfg, args.in_channels)
        out = args.out or f"runs/{cfg.model}-{cfg.dataset.replace(':', '_').replace('/', '_')}"
        summary = training.train(cfg, out, **model_args)
    leave_process_group()                   # after a run that finished: every process got this far
    print(f"step {summary['step']}, epoch {summary['epoch']}: valid {summary['valid_bits_per_dim']:.4f} bits/dim "
          f"({summary['valid_nll_nats']:.2f} nats/image), best {summary['best_valid_bits_per_dim']:.4f}; run: {summary['run']}")
    return 0


def _check_model_args(model: str, model_args: dict[str, Any]) -> None:
    cls = pixelcnn.models.get(model).config_class
    own = {f.name for f in cls.hyperparameters()}
    foreign = sorted(set(model_args) - own)
    if foreign:
        flags = ", ".join(flag_names(f)[0] for f in foreign)
        raise ConfigError(f"{flags} do(es) not apply to model {model!r}; its hyperparameters are {sorted(own)}")


def _check_in_channels(cfg, in_channels: int | None) -> None:
    if in_channels is None:
        return
    from pixelcnn.data import dataset_info

    channels = dataset_info(cfg.dataset, cfg.image_size).image_shape[0]
    if channels != in_channels:
        raise ConfigError(f"--in-channels {in_channels} does not match dataset {cfg.dataset!r}, which has {channels} channel(s)")


# ----- eval -------------------------------------------------------------------------------


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="exact negative log-likelihood of a dataset split")
    p.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--dataset", help="dataset (default: the one the model was trained on)")
    p.add_argument("--split", default="test", help="train, valid, test or trainval (default: test)")
    p.add_argument("--batch-size", "--batch_size", type=flag(COUNT.parse), default=256, dest="batch_size")
    p.add_argument("--limit", type=flag(COUNT.parse), help="evaluate the first N images only")
    p.add_argument("--data-dir", "--data_dir", dest="data_dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", metavar="FILE", type=flag(validation.output_file), help="also write the result as JSON")
    p.add_argument("--baseline", metavar="MODEL",
                   help="also evaluate this model on the same images (e.g. the unconditional model beside a "
                        "conditional or super-resolution one)")
    p.add_argument("--completion", action="store_true",
                   help="score completion instead: the NLL of the unknown pixels of a random mask per image (the "
                        "same masks for every model) given what each model conditions on; bits per unknown sub-pixel")
    p.set_defaults(run=run_eval)


def checkpoint_metadata(path) -> dict[str, Any]:
    from pixelcnn import checkpoint

    return checkpoint.read_config(checkpoint.resolve(path)).get("metadata", {})


def _describe(model, completion: bool = False) -> str:
    cfg = model.config
    if completion:
        return "completion of random masks, unknown pixels' "
    if cfg.inpainting:
        return "completion model with nothing known: "
    if cfg.cond_shape is not None:
        return f"super-resolution (given {cfg.cond_shape[1]}x{cfg.cond_shape[2]}) "
    return "class-conditional " if cfg.num_classes is not None else ""


def run_eval(args) -> int:
    from pixelcnn.data import load_dataset
    from pixelcnn.evaluation import evaluate

    model = pixelcnn.load(args.checkpoint).to(resolve_device(args.device))
    base = pixelcnn.load(args.baseline).to(model.device) if args.baseline else None
    meta = checkpoint_metadata(args.checkpoint)
    dataset = args.dataset or meta.get("dataset")
    if dataset is None:
        raise ConfigError("this checkpoint does not record its dataset: pass --dataset")
    size = meta.get("image_size") if dataset == meta.get("dataset") else None      # the size it was trained at
    data = load_dataset(dataset, args.split, data_dir=args.data_dir, image_size=size)
    result = evaluate(model, data, args.batch_size, args.limit, completion=args.completion)
    result.update({"dataset": dataset, "split": args.split, "checkpoint": str(args.checkpoint),
                   "conditional": model.config.num_classes is not None or model.config.cond_shape is not None})
    for name, r in result.get("orders", {}).items():
        print(f"  order {name}: NLL {r['nll_nats']:.4f} nats/image, {r['bits_per_dim']:.4f} bits/dim")
    ensemble = f"ensemble of {len(result['orders'])} orders: " if "orders" in result else ""
    what = _describe(model, args.completion)
    print(f"{dataset} {args.split} ({result['images']} images): {what}{ensemble}NLL {result['nll_nats']:.4f} "
          f"nats/image, {result['bits_per_dim']:.4f} bits/dim")
    if base is not None:
        result["baseline"] = {**evaluate(base, data, args.batch_size, args.limit, completion=args.completion),
                              "checkpoint": str(args.baseline)}
        b = result["baseline"]
        print(f"baseline {args.baseline}: {_describe(base, args.completion)}NLL {b['nll_nats']:.4f} nats/image, "
              f"{b['bits_per_dim']:.4f} bits/dim")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


# ----- sample -----------------------------------------------------------------------------


def add_sample(sub) -> None:
    p = sub.add_parser("sample", help="draw images from a model into a PNG grid")
    p.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--n", "-n", type=flag(COUNT.parse),
                   help="images (per class with --labels; default 64, or 8 per class)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--label", type=flag(LABEL.parse), help="class of every image (conditional models)")
    which.add_argument("--labels", type=flag(validation.labels),
                       help="comma-separated classes, one grid row each (default: every class)")
    add_sampling_options(p, "samples.png", "also save the raw integer images (n, C, H, W) as .npy")
    add_order_option(p, "pixel order (any-order models): NAME or NAME:S, e.g. hilbert:3 (default: the mixture "
                        "of the model's training orders)")
    p.set_defaults(run=run_sample)


def add_sampling_options(p, out: str, npy_help: str) -> None:
    p.add_argument("--seed", type=flag(SEED.parse), default=0)
    p.add_argument("--temperature", type=flag(TEMPERATURE.parse), default=1.0,
                   help="1 samples exactly; lower values sharpen")
    p.add_argument("--method", default="auto", type=flag(METHOD.parse), metavar="{auto,naive,cached}")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", "-o", default=out, type=flag(validation.PNG_FILE), help="PNG grid to write")
    p.add_argument("--npy", type=flag(validation.NPY_FILE), help=npy_help)


def sample_labels(model, args) -> tuple[torch.Tensor | None, int, int | None]:
    """(labels, n, images per grid row) from --n / --label / --labels."""
    k = model.config.num_classes
    validation.labels_fit(model, None if args.label is None else [args.label], "--label")
    validation.labels_fit(model, args.labels, "--labels")
    if k is None:
        return None, 64 if args.n is None else args.n, None
    if args.label is not None:
        n = 64 if args.n is None else args.n
        return torch.full((n,), args.label, dtype=torch.long), n, None
    classes = list(range(k)) if args.labels is None else args.labels
    per = 8 if args.n is None else args.n
    labels = torch.tensor(classes, dtype=torch.long).repeat_interleave(per)
    return labels, len(labels), per


def run_sample(args) -> int:
    import numpy as np

    from pixelcnn.images import save_grid

    model = load_unconditioned(args)
    labels, n, nrow = sample_labels(model, args)
    gen = torch.Generator(device=model.device).manual_seed(args.seed)
    images = model.sample(n, labels=labels, temperature=args.temperature, generator=gen, method=args.method,
                          order=args.order)
    save_grid(images, model.levels, args.out, nrow=nrow)
    if args.npy:
        np.save(args.npy, images.cpu().numpy())
    print(f"wrote {n} samples to {args.out}" + (f" and {args.npy}" if args.npy else ""))
    return 0


def load_unconditioned(args):
    """The model of ``sample`` and ``complete``: any but a super-resolution one (that is ``upscale``'s)."""
    model = pixelcnn.load(args.checkpoint).to(resolve_device(args.device))
    if model.config.cond_shape is not None:
        raise ConfigError(f"expected a model that needs no conditioning image, got a super-resolution model "
                          f"(given {model.config.cond_shape[1]}x{model.config.cond_shape[2]}): use pixelcnn upscale")
    return model


def run_models(args) -> int:
    for name in pixelcnn.available_models():
        cls = pixelcnn.models.get(name).config_class
        hp = ", ".join(f"{f.name}={f.default}" for f in cls.hyperparameters())
        print(f"{name}: {hp}")
    return 0


# ----- complete ---------------------------------------------------------------------------


def add_complete(sub) -> None:
    p = sub.add_parser("complete", help="fill in the unknown part of images (inpainting)",
                       description="Keep part of each image and sample the rest. The grid shows, per image, the "
                                   "original, the masked input (unknown pixels grey) and --n completions.")
    add_image_source(p, "image file(s) of the model's size", "take images from a dataset split")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--keep-rows", "--keep_rows", dest="keep_rows", type=flag(Integer(0).parse),
                      help="keep the top N rows (default: half)")
    what.add_argument("--mask", help="PNG of the image's size, white (>= 128) where pixels are known; or a named mask: "
                                     + ", ".join(masks.NAMED))
    p.add_argument("--label", type=flag(LABEL.parse), help="class label (conditional models; default: the dataset's)")
    add_generation_options(p, 8, "completions.png")
    p.set_defaults(run=run_complete)


def add_image_source(p, image_help: str, dataset_help: str) -> None:
    """The model argument and where the input images come from: files, or a dataset split."""
    p.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", nargs="+", help=image_help)
    src.add_argument("--from-dataset", "--from_dataset", dest="from_dataset", metavar="DATASET",
                     help=dataset_help + " (see --split, --index)")
    p.add_argument("--split", default="test")
    p.add_argument("--index", type=flag(validation.indices),
                   help="dataset indices: 5, 0,3,9 or 0..7 (inclusive; default: 0..7)")
    p.add_argument("--data-dir", "--data_dir", dest="data_dir")


def add_order_option(p, help_text: str) -> None:
    p.add_argument("--order", help=help_text + "; raster-order families take only raster")


def add_generation_options(p, n: int, out: str) -> None:
    p.add_argument("--n", "-n", type=flag(COUNT.parse), default=n, help="samples per input image")
    add_sampling_options(p, out, "also save the samples (B, n, C, H, W) as .npy")
    add_order_option(p, "pixel order (any-order models): auto (known pixels first, then the unknown ones, "
                        "along a training order; the default) or NAME[:S]")


def dataset_examples(args) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (B, C, H, W) and labels of --from-dataset at --split and --index."""
    from pixelcnn.data import load_dataset

    data = load_dataset(args.from_dataset, args.split, data_dir=args.data_dir)
    idx = validation.indices("0..7") if args.index is None else args.index
    validation.indices_fit(idx, len(data), f"{args.from_dataset} {args.split}")
    return data.batch(torch.tensor(idx))


def check_no_index(args) -> None:
    if args.index is not None:
        raise ConfigError("expected --index with --from-dataset only, got --index with --image files")


def completion_inputs(model, args) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (B, C, H, W) and labels to complete, from files or a dataset."""
    from pixelcnn.images import read_png

    if args.image:
        check_no_index(args)
        return torch.stack([read_png(f, model.image_shape, model.levels) for f in args.image]), None
    return dataset_examples(args)


def known_mask(model, args, batch: int) -> torch.Tensor:
    from pixelcnn.images import read_png

    c, h, w = model.image_shape
    if args.mask in masks.NAMED:
        known = masks.named(args.mask, batch, h, w, torch.Generator().manual_seed(args.seed))
        return known.expand(batch, c, h, w).clone()
    if args.mask:
        if not Path(args.mask).is_file():
            raise ConfigError(f"expected --mask to be a PNG file or one of {', '.join(masks.NAMED)}, got {args.mask!r}")
        m = read_png(args.mask, (1, h, w), 256, what="mask")[0] >= 128
    else:
        rows = h // 2 if args.keep_rows is None else args.keep_rows
        if not 0 <= rows <= h:
            raise ConfigError(f"expected --keep-rows in [0, {h}], got {rows}")
        m = torch.zeros(h, w, dtype=torch.bool)
        m[:rows] = True
    return m.expand(batch, c, h, w).clone()


def completion_grid(x: torch.Tensor, known: torch.Tensor, out: torch.Tensor, levels: int) -> torch.Tensor:
    """Rows of [original, masked input, completions...] in 0..255 (unknown pixels shown grey)."""
    original = to_bytes(x, levels)
    masked = torch.where(known, original, torch.full_like(x, 128))
    panels = torch.cat([original[:, None], masked[:, None], to_bytes(out, levels)], dim=1)   # (B, n + 2, C, H, W)
    return panels.flatten(0, 1)


@torch.no_grad()
def completion_nll(model, x: torch.Tensor, known: torch.Tensor, labels, order: str | None) -> tuple[float, str]:
    """The mean exact NLL (nats) of the unknown sub-pixels of x, and what the model conditions them on, in words."""
    if model.any_order:                                         # in the completion's order
        order = order or "auto"
        given = "the known pixels first" if order == "auto" else f"the pixels before each in order {order}"
        return float(-model.conditional_log_prob(x, known, labels, order=order).mean()), given
    given = "every known pixel" if model.config.inpainting else f"the pixels before each in {ORDER_WORDS[model.generation_order]}"
    return float(-model.conditional_log_prob(x, known, labels).mean()), given


def run_complete(args) -> int:
    import numpy as np

    from pixelcnn.images import save_grid

    model = load_unconditioned(args)
    x, data_labels = completion_inputs(model, args)
    known = known_mask(model, args, x.shape[0])
    labels = None
    validation.labels_fit(model, None if args.label is None else [args.label], "--label")
    if model.config.num_classes is not None:
        labels = args.label if args.label is not None else data_labels
        if labels is None:
            raise InvalidLabelError("this model is conditional: pass --label (or use --from-dataset with labels)")
    gen = torch.Generator(device=model.device).manual_seed(args.seed)
    out = model.complete(x, known, n=args.n, labels=labels, temperature=args.temperature, generator=gen,
                         method=args.method, order=args.order).cpu()
    save_grid(completion_grid(x, known, out, model.levels), 256, args.out, nrow=args.n + 2)
    if args.npy:
        np.save(args.npy, out.numpy())
    nll, given = completion_nll(model, x, known, labels, args.order)
    print(f"wrote {x.shape[0]} x {args.n} completions ({int(known[0].sum())} of {known[0].numel()} sub-pixels known) "
          f"to {args.out}\nexact NLL of the originals' unknown pixels given {given}: {nll:.2f} nats per image")
    return 0


# ----- upscale ----------------------------------------------------------------------------


def add_upscale(sub) -> None:
    p = sub.add_parser("upscale", help="sample high-resolution versions of low-resolution images",
                       description="For a model trained with --task superres. The grid shows, per image, the input "
                                   "(enlarged), --n samples and, with --from-dataset, the original.")
    add_image_source(p, "low-resolution image file(s) of the model's conditioning size",
                     "downsample dataset images and upscale them again")
    add_generation_options(p, 4, "upscaled.png")
    p.set_defaults(run=run_upscale)


def upscale_inputs(model, args) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Low-resolution images (B, C, h, w) and, from a dataset, the originals."""
    from pixelcnn.images import read_png
    from pixelcnn.superres import downsample

    shape = model.config.cond_shape
    if shape is None:
        raise ConfigError("this model is not a super-resolution model: train one with --task superres")
    if args.image:
        check_no_index(args)
        return torch.stack([read_png(f, shape, model.levels, what="low-resolution image") for f in args.image]), None
    x = dataset_examples(args)[0]
    return downsample(x, shape), x


def run_upscale(args) -> int:
    import numpy as np

    from pixelcnn.images import save_grid
    from pixelcnn.superres import nearest_upsample

    model = pixelcnn.load(args.checkpoint).to(resolve_device(args.device))
    y, originals = upscale_inputs(model, args)
    b, n = y.shape[0], args.n
    gen = torch.Generator(device=model.device).manual_seed(args.seed)
    out = model.sample(b * n, cond_image=y.repeat_interleave(n, dim=0), temperature=args.temperature,
                       generator=gen, method=args.method, order=args.order).cpu().view(b, n, *model.image_shape)
    panels = [nearest_upsample(y, model.image_shape[1:])[:, None], out]
    if originals is not None:
        panels.append(originals[:, None])
    grid = torch.cat(panels, dim=1)                                      # (B, 1 + n [+ 1], C, H, W)
    save_grid(grid.flatten(0, 1), model.levels, args.out, nrow=grid.shape[1])
    if args.npy:
        np.save(args.npy, out.numpy())
    print(f"wrote {b} x {n} upscaled samples to {args.out}")
    return 0


# ----- pretrained ---------------------------------------------------------------------------


def add_pretrained(sub) -> None:
    p = sub.add_parser("pretrained", help="list the shipped checkpoints (load them as pretrained:NAME)")
    p.add_argument("--reproduce", action="store_true", help="re-evaluate them on their test split and print the table")
    p.add_argument("--subset", type=flag(COUNT.parse), help="with --reproduce: a random (seeded) subset of N test images")
    p.add_argument("--limit", type=flag(COUNT.parse), help=argparse.SUPPRESS)       # refused with a pointer to --subset
    p.add_argument("--data-dir", "--data_dir", dest="data_dir")
    p.set_defaults(run=run_pretrained)


def run_pretrained(args) -> int:
    from pixelcnn import pretrained
    from pixelcnn.evaluation import reproduce

    info = pretrained.manifest()
    if args.limit is not None:
        raise ConfigError(f"expected --subset N with --reproduce (a random seeded subset of the test images; --limit "
                          f"means the first N images in eval), got --limit {args.limit}")
    if args.subset is not None and not args.reproduce:
        raise ConfigError(f"expected --subset with --reproduce only, got --subset {args.subset} alone")
    if not args.reproduce:
        for name, d in info.items():
            print(f"pretrained:{name}\n  {d['model']} on {d['dataset']}, {d['parameters']:,} parameters, "
                  f"{d['size_mb']:.1f} MB\n  test: {d['test_nll_nats']:.2f} nats/image, {d['test_bits_per_dim']:.4f} "
                  f"bits/dim{' (' + d['test_task'] + ')' if 'test_task' in d else ''}\n  trained {d['training']}\n"
                  f"  command: {d['command']}")
        return 0
    print(f"{'checkpoint':<28}{'images':>8}{'nats/image':>12}{'bits/dim':>10}{'recorded':>10}{'diff / stderr':>15}")
    for r in reproduce(subset=args.subset, data_dir=args.data_dir):
        diff = r["nll_nats"] - r["recorded_nll_nats"]
        ratio = f"{diff / r['stderr_nats']:+.2f}" if r["stderr_nats"] > 0 else f"{diff:+.4f} nats"
        print(f"pretrained:{r['name']:<17}{r['images']:>8}{r['nll_nats']:>12.3f}{r['bits_per_dim']:>10.4f}"
              f"{r['recorded_bits_per_dim']:>10.4f}{ratio:>15}")
    return 0
