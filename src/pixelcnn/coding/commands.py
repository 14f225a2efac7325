"""The ``compress`` and ``decompress`` commands.

    pixelcnn compress MODEL a.png b.png ... -o out.pxc [--nll]
    pixelcnn compress MODEL --from-dataset mnist --split test --limit 100 -o out.pxc
    pixelcnn decompress MODEL out.pxc -o DIR            # DIR/00000.png, 00001.png, ... in order

MODEL is anything :func:`pixelcnn.load` accepts. PNG values are read and written without loss
(see :mod:`pixelcnn.coding.png`); a class-conditional model needs ``--labels`` for PNG inputs
and writes ``labels.txt`` (one label per line, in image order) beside the decompressed PNGs.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from pixelcnn.coding import codec, png
from pixelcnn import validation
from pixelcnn.errors import CompressionError, ConfigError, InvalidImageError, InvalidLabelError
from pixelcnn.validation import COUNT, METHOD, MODEL_HELP, Integer, flag


def add_commands(sub) -> None:
    add_compress(sub)
    add_decompress(sub)


def _add_common(p) -> None:
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--nll", action="store_true", help="also print the model's NLL of the same images and the overhead")


def add_compress(sub) -> None:
    p = sub.add_parser("compress", help="losslessly compress images with a model",
                       description="Compress PNG images (or a dataset split) into one .pxc file whose size is "
                                   "about the model's -log2 p of the images.")
    _add_common(p)
    p.add_argument("inputs", nargs="*", metavar="PNG", help="images to compress, in this order")
    p.add_argument("-o", "--out", "--output", dest="out", required=True, type=flag(validation.output_file),
                   help="the .pxc file to write")
    p.add_argument("--from-dataset", metavar="NAME", help="compress a dataset split instead of PNG files (e.g. mnist)")
    p.add_argument("--split", default="test", help="dataset split for --from-dataset (default: test)")
    p.add_argument("--index", type=flag(validation.indices),
                   help="only these images of --from-dataset: 5, 0,3,9 or 0..99 (before --limit)")
    p.add_argument("--limit", type=flag(COUNT.parse), metavar="N", help="only the first N images")
    p.add_argument("--data-dir", help="dataset folder (default: $PIXELCNN_DATA or the package default)")
    p.add_argument("--labels", type=flag(validation.labels),
                   help="class labels of the PNG inputs for a conditional model: one for all, or a comma list")
    p.add_argument("--chunk-size", type=flag(Integer(1, codec.MAX_CHUNK_SIZE).parse), metavar="N",
                   help=f"images coded together (default: {codec.DEFAULT_CHUNK_SIZE}, at most {codec.MAX_CHUNK_SIZE})")
    p.add_argument("--method", type=flag(METHOD.parse), default="auto", metavar="{auto,naive,cached}",
                   help="stepper: the family's cached one (auto) or the naive reference")
    p.add_argument("--order", help="pixel order of an any-order model, NAME[:S] (stored in the file; "
                                   "default: the model's first training order)")
    p.set_defaults(run=run_compress)


def add_decompress(sub) -> None:
    p = sub.add_parser("decompress", help="decompress a .pxc file into PNG images",
                       description="Decompress a .pxc file with the model that compressed it; writes "
                                   "00000.png, 00001.png, ... into DIR, pixel for pixel the compressed images.")
    _add_common(p)
    p.add_argument("file", metavar="FILE", help="the .pxc file")
    p.add_argument("-o", "--out", "--output", dest="out", required=True, metavar="DIR",
                   type=flag(validation.output_folder), help="folder for the PNG files")
    p.set_defaults(run=run_decompress)


# ----- compress -------------------------------------------------------------------------------


def run_compress(args) -> int:
    import pixelcnn

    model = pixelcnn.load(args.model)
    images, labels, scale, source_bytes = _inputs(args, model)
    start = time.perf_counter()
    coded = codec.CodeLength()
    with _progress(images.shape[0], "compress") as update:
        data = codec.compress(model, images, labels, chunk_size=args.chunk_size, method=args.method,
                              metadata=png.metadata(scale), progress=update, order=args.order, length=coded)
    seconds = time.perf_counter() - start
    Path(args.out).write_bytes(data)
    dims = images[0].numel() * images.shape[0]
    print(f"compressed {images.shape[0]} images {_shape(model)} into {args.out}: {_size(len(data), dims)}")
    if source_bytes is not None:
        print(f"input PNG files: {_size(source_bytes, dims)}")
    _report_speed("encoded", images.shape[0], seconds)
    if args.nll:
        _report_nll(model, images, labels, len(data), dims, coded)
    return 0


def _inputs(args, model):
    """(images, labels, png scale, bytes of the input files or None) from PNG files or a dataset."""
    if args.from_dataset and args.inputs:
        raise InvalidImageError("give either PNG files or --from-dataset, not both")
    if args.index is not None and not args.from_dataset:
        raise ConfigError("expected --index with --from-dataset only, got --index with PNG files")
    if args.from_dataset and args.labels is not None:
        raise InvalidLabelError("expected --labels with PNG files only: --from-dataset takes the dataset's labels")
    if args.from_dataset:
        images, labels, scale = _dataset_images(args, model)
        return images, labels, scale, None
    if not args.inputs:
        raise InvalidImageError("no images to compress: give PNG files or --from-dataset NAME")
    paths = args.inputs[: args.limit] if args.limit is not None else args.inputs
    images, scale = png.read_pngs(paths, model.image_shape, model.levels)
    labels = _parse_labels(args.labels, len(paths), model)
    return images, labels, scale, sum(Path(p).stat().st_size for p in paths)


def _dataset_images(args, model):
    from pixelcnn.data import load_dataset

    ds = load_dataset(args.from_dataset, args.split, data_dir=args.data_dir)
    if ds.levels != model.levels:
        raise InvalidImageError(f"dataset {args.from_dataset!r} has {ds.levels} levels "
                                f"but the model has {model.levels}")
    pick = slice(None)
    if args.index is not None:
        validation.indices_fit(args.index, len(ds.images), f"{args.from_dataset} {args.split}")
        pick = torch.tensor(args.index)
    images = torch.as_tensor(ds.images)[pick][: args.limit].long()
    labels = None
    if model.config.num_classes is not None:
        if ds.labels is None:
            raise InvalidLabelError(f"the model is conditional but dataset {args.from_dataset!r} has no labels")
        labels = torch.as_tensor(ds.labels)[pick][: args.limit].long()
    return images, labels, png.stretch_factor(model.levels) or 1


def _parse_labels(values: list[int] | None, n: int, model) -> torch.Tensor | None:
    """--labels (parsed by validation.labels) for ``n`` PNG images: one for all, or one each."""
    validation.labels_fit(model, values)
    if model.config.num_classes is None:
        return None
    if values is None:
        raise InvalidLabelError(f"the model is conditional: give --labels (one, or {n} separated by commas)")
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        raise InvalidLabelError(f"expected --labels with one value or {n} (one per image), got {len(values)}")
    return torch.tensor(values, dtype=torch.long)


# ----- decompress -----------------------------------------------------------------------------


def run_decompress(args) -> int:
    import pixelcnn

    model = pixelcnn.load(args.model)
    try:
        data = Path(args.file).read_bytes()
    except OSError as e:
        raise CompressionError(f"cannot read compressed file {args.file}: {e.strerror or e}") from None
    header = codec.container.read_header(data)
    start = time.perf_counter()
    coded = codec.CodeLength()
    with _progress(header.count, "decompress") as update:
        out = codec.decode(model, data, progress=update, length=coded)
    seconds = time.perf_counter() - start
    scale = png.scale_from_metadata(out.metadata, model.levels)
    paths = png.write_pngs(out.images, args.out, scale)
    if out.labels is not None:
        (Path(args.out) / "labels.txt").write_text("".join(f"{int(v)}\n" for v in out.labels))
    print(f"decompressed {len(paths)} images {_shape(model)} from {args.file} ({_size(len(data), header.dims)}) "
          f"into {args.out}")
    _report_speed("decoded", len(paths), seconds)
    if args.nll:
        _report_nll(model, out.images, out.labels, len(data), header.dims, coded)
    return 0


# ----- printing -------------------------------------------------------------------------------


def _shape(model) -> str:
    c, h, w = model.image_shape
    return f"({c}x{h}x{w}, {model.levels} levels)"


def _size(nbytes: int, dims: int) -> str:
    bpd = 8 * nbytes / dims if dims else float("nan")
    return f"{nbytes:,} bytes, {bpd:.4f} bits/dim"


def _report_speed(verb: str, n: int, seconds: float) -> None:
    rate = n / seconds if seconds > 0 else math.inf
    print(f"{verb} in {seconds:.1f} s ({rate:.2f} images/s)")


def _report_nll(model, images, labels, nbytes: int, dims: int, coded: codec.CodeLength) -> None:
    """The float model's NLL, the coded (exact-arithmetic, integer) distributions' NLL of the same values, the file."""
    bits = codec.nll_bits(model, images, labels)
    if not dims:
        return
    overhead = 100 * (8 * nbytes - bits) / bits if bits > 0 else math.inf
    print(f"model NLL: {bits / dims:.4f} bits/dim ({bits / 8:,.0f} bytes); file overhead {overhead:+.2f}%")
    cost = 100 * (coded.bits - bits) / bits if bits > 0 else math.inf
    print(f"coded NLL (the model in the file format's exact arithmetic, labels excluded): {coded.bits / dims:.4f} "
          f"bits/dim ({cost:+.3f}% against the float model)")


class _progress:
    """A tqdm bar on stderr for long runs (hidden when stderr is not a terminal)."""

    def __init__(self, total: int, what: str):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="img", desc=what, disable=None, leave=False)

    def __enter__(self):
        return lambda done: self.bar.update(done - self.bar.n)

    def __exit__(self, *exc) -> None:
        self.bar.close()
