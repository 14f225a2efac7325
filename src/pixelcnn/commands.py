"""The core commands: ``train``, ``eval``, ``sample`` and ``models``.

Model hyperparameter flags are generated from the fields of every family's config dataclass,
so flags and configs never drift apart. Flags accept both spellings (``--batch-size`` and
``--batch_size``), and the names users of the small PixelCNN repositories type
(``--inner_dim`` for ``--hidden``, ``--in_channels``) are accepted as aliases.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import torch

import pixelcnn
from pixelcnn.errors import ConfigError, InvalidLabelError

ALIASES = {"hidden": ["--inner-dim", "--inner_dim"], "batch_size": ["-b"], "epochs": ["-e"]}


def flag_names(field: str) -> list[str]:
    dashed = "--" + field.replace("_", "-")
    names = [dashed] + (["--" + field] if "_" in field else [])
    return names + ALIASES.get(field, [])


def _parser_for(hint: Any):
    """An argparse ``type`` for a dataclass field annotation."""
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
        return _parser_for(args[0])
    if origin is tuple:
        inner = args[0]
        return lambda text: tuple(inner(v) for v in text.replace(" ", "").split(",") if v)
    return hint


def add_dataclass_flags(parser, hints: dict[str, Any], fields, help_texts: dict[str, str], show_defaults: bool) -> None:
    """One flag per dataclass field, typed from its annotation (``hints``: field name -> type).

    Every flag defaults to None, so that the caller sees which ones the user gave; the
    dataclass fills in the rest.
    """
    for f in fields:
        kind = hints[f.name]
        shown = f" (default: {f.default})" if show_defaults and f.default is not None else ""
        help_text = help_texts.get(f.name, "") + shown
        if kind is bool:
            parser.add_argument(*flag_names(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(*flag_names(f.name), dest=f.name, type=_parser_for(kind), default=None,
                                help=help_text, metavar=f.name.upper())


def model_hyperparameter_fields() -> dict[str, tuple[type, dataclasses.Field]]:
    """Union of every family's hyperparameter fields: name -> (config class, field)."""
    out: dict[str, tuple[type, dataclasses.Field]] = {}
    for name in pixelcnn.available_models():
        cls = pixelcnn.models.get(name).config_class
        for f in cls.hyperparameters():
            out.setdefault(f.name, (cls, f))
    return out


def add_model_flags(parser) -> None:
    fields = model_hyperparameter_fields()
    hints = {n: typing.get_type_hints(cls)[n] for n, (cls, _) in fields.items()}
    helps = {n: cls.help.get(n, "") for n, (cls, _) in fields.items()}
    add_dataclass_flags(parser, hints, [f for _, f in fields.values()], helps, show_defaults=False)


def add_commands(sub) -> None:
    add_train(sub)
    add_eval(sub)
    add_sample(sub)
    p = sub.add_parser("models", help="list the model families and their hyperparameters")
    p.set_defaults(run=run_models)


# ----- train ------------------------------------------------------------------------------


def add_train(sub) -> None:
    from pixelcnn.training import TrainConfig

    p = sub.add_parser("train", help="train a model on a dataset",
                       description="Train a model; writes a run folder with checkpoints, sample grids and metrics.jsonl. "
                                   "Under torchrun (torchrun --nproc_per_node=N -m pixelcnn train ...) it trains with DDP.")
    p.add_argument("--out", "-o", help="run folder (default: runs/MODEL-DATASET)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder from its last checkpoint")
    p.add_argument("--in-channels", "--in_channels", type=int, dest="in_channels",
                   help="image channels; checked against the dataset's")
    g = p.add_argument_group("training (defaults: pixelcnn.training.TrainConfig)")
    add_dataclass_flags(g, typing.get_type_hints(TrainConfig), dataclasses.fields(TrainConfig), TrainConfig.help, show_defaults=True)
    add_model_flags(p.add_argument_group("model hyperparameters (each applies to the families that have it)"))
    p.set_defaults(run=run_train)


def run_train(args) -> int:
    from pixelcnn import training
    from pixelcnn.training import TrainConfig

    train_names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in train_names and v is not None}
    model_args = {k: getattr(args, k) for k in model_hyperparameter_fields() if getattr(args, k, None) is not None}
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
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--dataset", help="dataset (default: the one the model was trained on)")
    p.add_argument("--split", default="test", help="train, valid, test or trainval (default: test)")
    p.add_argument("--batch-size", "--batch_size", type=int, default=256, dest="batch_size")
    p.add_argument("--limit", type=int, help="evaluate the first N images only")
    p.add_argument("--data-dir", "--data_dir", dest="data_dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    p.set_defaults(run=run_eval)


def checkpoint_metadata(path) -> dict[str, Any]:
    from pixelcnn import checkpoint

    return checkpoint.read_config(checkpoint.resolve(path)).get("metadata", {})


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for, but torch sees no CUDA device")
    return torch.device(name)


def run_eval(args) -> int:
    from pixelcnn.data import load_dataset
    from pixelcnn.training import evaluate

    model = pixelcnn.load(args.checkpoint).to(device_of(args.device))
    dataset = args.dataset or checkpoint_metadata(args.checkpoint).get("dataset")
    if dataset is None:
        raise ConfigError("this checkpoint does not record its dataset: pass --dataset")
    data = load_dataset(dataset, args.split, data_dir=args.data_dir)
    result = evaluate(model, data, args.batch_size, args.limit)
    result.update({"dataset": dataset, "split": args.split, "conditional": model.config.num_classes is not None,
                   "checkpoint": str(args.checkpoint)})
    kind = "conditional " if result["conditional"] else ""
    print(f"{dataset} {args.split} ({result['images']} images): {kind}NLL {result['nll_nats']:.4f} nats/image, "
          f"{result['bits_per_dim']:.4f} bits/dim")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


# ----- sample -----------------------------------------------------------------------------


def add_sample(sub) -> None:
    p = sub.add_parser("sample", help="draw images from a model into a PNG grid")
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--n", "-n", type=int, help="images (per class with --labels; default 64, or 8 per class)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0, help="1 samples exactly; lower values sharpen")
    p.add_argument("--label", type=int, help="class of every image (conditional models)")
    p.add_argument("--labels", help="comma-separated classes, one grid row each (default: every class)")
    p.add_argument("--method", default="auto", choices=["auto", "naive", "cached"])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", "-o", default="samples.png", help="PNG grid to write")
    p.add_argument("--npy", help="also save the raw integer images (n, C, H, W) as .npy")
    p.set_defaults(run=run_sample)


def sample_labels(model, args) -> tuple[torch.Tensor | None, int, int | None]:
    """(labels, n, images per grid row) from --n / --label / --labels."""
    k = model.config.num_classes
    if k is None:
        if args.label is not None or args.labels is not None:
            raise InvalidLabelError("--label/--labels given, but this model is unconditional")
        return None, args.n or 64, None
    if args.label is not None:
        n = args.n or 64
        return torch.full((n,), args.label, dtype=torch.long), n, None
    classes = list(range(k)) if args.labels is None else [int(v) for v in args.labels.split(",") if v.strip()]
    per = args.n or 8
    labels = torch.tensor(classes, dtype=torch.long).repeat_interleave(per)
    return labels, len(labels), per


def run_sample(args) -> int:
    import numpy as np

    from pixelcnn.images import save_grid

    model = pixelcnn.load(args.checkpoint).to(device_of(args.device))
    labels, n, nrow = sample_labels(model, args)
    gen = torch.Generator(device=model.device).manual_seed(args.seed)
    images = model.sample(n, labels=labels, temperature=args.temperature, generator=gen, method=args.method)
    save_grid(images, model.levels, args.out, nrow=nrow)
    if args.npy:
        np.save(args.npy, images.cpu().numpy())
    print(f"wrote {n} samples to {args.out}" + (f" and {args.npy}" if args.npy else ""))
    return 0


def run_models(args) -> int:
    for name in pixelcnn.available_models():
        cls = pixelcnn.models.get(name).config_class
        hp = ", ".join(f"{f.name}={f.default}" for f in cls.hyperparameters())
        print(f"{name}: {hp}")
    return 0
