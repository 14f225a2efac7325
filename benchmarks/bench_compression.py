"""Lossless compression of a test set with a trained model, beside classical codecs (issue 7).

    python benchmarks/bench_compression.py MODEL [--dataset mnist] [--split test] [--limit N]
        [--chunk-size 64] [--method auto] [--skip-decode] [--float-reference] [--json results.json]

MODEL is anything ``pixelcnn.load`` accepts. On the same images, in the same run, it reports:

* the ``.pxc`` file's bits/dim beside the model's NLL in bits/dim (the overhead in %) and the
  coded distributions' NLL (the model in the format's exact arithmetic), with encode and decode
  images/s at the threads torch is given; the decoded images are checked bit for bit;
* with ``--float-reference``, the same images coded in the same run by format 2's float32
  arithmetic (pixelcnn 0.1.0: one CPU thread, files readable only on the same kind of CPU): its
  size and images/s, the reference the exact format is measured against;
* PNG (Pillow, optimize=True; 1-bit PNG for binary images), WebP lossless (Pillow, method 6),
  JPEG XL lossless (effort 9) and JPEG 2000 lossless (reversible 5/3 wavelet, raw J2K codestream)
  where ``imagecodecs`` is installed: one file per image, as in the published MNIST tables;
* gzip -9, bz2 -9 and lzma (preset 9 extreme) of all the raw bytes together (one byte per
  sub-pixel; packed 8 pixels a byte for binary images).

Every classical codec is checked to decode to the same pixels. Smoke test (an untrained tiny
model; the figures mean nothing):

    python -c "import pixelcnn; pixelcnn.create('gated_pixelcnn', hidden=16, layers=2).save_pretrained('/tmp/tiny')"
    python benchmarks/bench_compression.py /tmp/tiny --limit 100
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import json
import lzma
import platform
import time
from typing import Callable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import pixelcnn
from pixelcnn.coding import codec
from pixelcnn.data import load_dataset

try:
    import imagecodecs
except ImportError:                      # optional: pip install imagecodecs
    imagecodecs = None


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="checkpoint folder, run folder or pretrained:NAME")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, help="only the first N images (default: all)")
    p.add_argument("--data-dir")
    p.add_argument("--chunk-size", type=int, default=codec.DEFAULT_CHUNK_SIZE)
    p.add_argument("--method", default="auto", choices=("auto", "naive", "cached"))
    p.add_argument("--skip-decode", action="store_true", help="time encoding only (no decode speed, no check)")
    p.add_argument("--float-reference", action="store_true",
                   help="also code the images with format 2's float32 arithmetic, for size and speed")
    p.add_argument("--float-chunk-size", type=int, default=64, help="format 2's chunk (its default was 64)")
    p.add_argument("--json", help="also write the results to this file")
    return p.parse_args()


# ----- the model ------------------------------------------------------------------------------


def progress_bar(total: int, what: str):
    """A progress callback for compress / decode (a bar on stderr when it is a terminal)."""
    bar = tqdm(total=total, unit="img", desc=what, disable=None, leave=False)
    return lambda done: bar.update(done - bar.n)


def bench_model(model, x: torch.Tensor, labels, args) -> dict:
    start = time.perf_counter()
    coded = codec.CodeLength()
    data = pixelcnn.compress(model, x, labels, chunk_size=args.chunk_size, method=args.method,
                             progress=progress_bar(len(x), "encode"), length=coded)
    encode_s = time.perf_counter() - start
    out = {"bytes": len(data), "encode_s": encode_s, "nll_bits": codec.nll_bits(model, x, labels),
           "coded_bits": coded.bits, "method": codec.container.read_header(data).method,
           "threads": torch.get_num_threads()}
    if not args.skip_decode:
        start = time.perf_counter()
        decoded = codec.decode(model, data, progress=progress_bar(len(x), "decode"))
        out["decode_s"] = time.perf_counter() - start
        if not torch.equal(decoded.images, x.long()):
            raise SystemExit("decoded images differ from the originals")
    return out


def bench_float_format(model, x: torch.Tensor, labels, args) -> dict:
    """Format 2: the float32 model on one CPU thread, coded chunk by chunk by the codec's own loops."""
    float_model, chunk = codec.FLOAT.model(model), args.float_chunk_size
    x = x.long()
    method = codec.resolve_method(float_model, args.method)
    times = {}
    with codec.FLOAT.scope(float_model):
        start = time.perf_counter()
        streams = list(codec._encode_all(float_model, x, labels, chunk, method, None, "", codec.FLOAT, None, 2))
        times["encode_s"] = time.perf_counter() - start
        if not args.skip_decode:
            header = codec.Header(method, model.levels, model.image_shape, len(x), chunk, b"", b"", version=2)
            start = time.perf_counter()
            parts = list(codec._decode_all(float_model, header, streams, None, codec.FLOAT, None))
            times["decode_s"] = time.perf_counter() - start
            if not torch.equal(torch.cat([images for images, _ in parts]), x):
                raise SystemExit("format 2 decoded images differ from the originals")
    return {"payload_bytes": 4 * sum(len(w) for w in streams), **times}


# ----- classical codecs -----------------------------------------------------------------------


def to_pil(img: np.ndarray, levels: int) -> Image.Image:
    """(C, H, W) levels -> a Pillow image: 1-bit for binary, else 8-bit values as they are."""
    if levels == 2:
        return Image.fromarray((img[0] * 255).astype(np.uint8)).convert("1")
    return Image.fromarray(img[0] if img.shape[0] == 1 else np.ascontiguousarray(img.transpose(1, 2, 0)))


def from_pil(im: Image.Image, levels: int, channels: int) -> np.ndarray:
    """Back to (C, H, W) levels; WebP always decodes to RGB, so a gray image comes back as R = G = B."""
    arr = np.asarray(im.convert("L") if im.mode == "1" else im)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if channels == 1 and arr.shape[0] == 3 and (arr == arr[:1]).all():
        arr = arr[:1]
    return arr // 255 if levels == 2 else arr


def pillow_codec(fmt: str, **options) -> tuple[Callable, Callable]:
    def encode(img, levels):
        buf = io.BytesIO()
        to_pil(img, levels).save(buf, format=fmt, **options)
        return buf.getvalue()

    def decode(data, levels, channels):
        with Image.open(io.BytesIO(data)) as im:
            return from_pil(im, levels, channels)

    return encode, decode


def imagecodecs_codec(encode_fn, decode_fn, **options) -> tuple[Callable, Callable]:
    def hwc(img, levels):
        a = (img * 255 if levels == 2 else img).astype(np.uint8)
        return a[0] if a.shape[0] == 1 else np.ascontiguousarray(a.transpose(1, 2, 0))

    def decode(data, levels, channels):
        a = decode_fn(data)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        return a // 255 if levels == 2 else a

    return (lambda img, levels: encode_fn(hwc(img, levels), **options)), decode


def image_codecs() -> dict[str, tuple[Callable, Callable]]:
    codecs = {"PNG (Pillow, optimize)": pillow_codec("PNG", optimize=True),
              "WebP lossless (Pillow)": pillow_codec("WEBP", lossless=True, quality=100, method=6)}
    if imagecodecs is not None and imagecodecs.JPEGXL.available:
        codecs["JPEG XL lossless (imagecodecs)"] = imagecodecs_codec(
            imagecodecs.jpegxl_encode, imagecodecs.jpegxl_decode, lossless=True, effort=9)
    if imagecodecs is not None and imagecodecs.JPEG2K.available:
        codecs["JPEG 2000 lossless (imagecodecs)"] = imagecodecs_codec(
            imagecodecs.jpeg2k_encode, imagecodecs.jpeg2k_decode, level=0, reversible=True, codecformat="J2K")
    return codecs


def bench_image_codec(encode, decode, x: np.ndarray, levels: int) -> int:
    """Total bytes of one file per image; every file is decoded and checked."""
    total = 0
    for img in x:
        data = encode(img, levels)
        if not np.array_equal(decode(data, levels, img.shape[0]), img):
            raise SystemExit("a classical codec was not lossless on these images")
        total += len(data)
    return total


def bench_stream_codecs(x: np.ndarray, levels: int) -> dict[str, int]:
    raw = np.packbits(x.reshape(len(x), -1), axis=1).tobytes() if levels == 2 else x.astype(np.uint8).tobytes()
    packers = {"gzip -9 (raw bytes)": (lambda b: gzip.compress(b, 9), gzip.decompress),
               "bz2 -9 (raw bytes)": (lambda b: bz2.compress(b, 9), bz2.decompress),
               "lzma -9e (raw bytes)": (lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME), lzma.decompress)}
    sizes = {}
    for name, (pack, unpack) in packers.items():
        data = pack(raw)
        assert unpack(data) == raw
        sizes[name] = len(data)
    return sizes


# ----- report ---------------------------------------------------------------------------------


def report(results: dict, dims: int, n: int) -> None:
    m = results["model"]
    nll_bpd = m["nll_bits"] / dims
    bpd = 8 * m["bytes"] / dims
    print(f"{results['dataset']} {results['split']}: {n} images, model {results['model_path']} "
          f"({results['model_name']}), coding method {m['method']}, chunk {results['chunk']}, {results['cpu_model']}")
    print(f"model NLL {nll_bpd:.4f} bits/dim; .pxc file {bpd:.4f} bits/dim; overhead {100 * (bpd / nll_bpd - 1):+.3f}%")
    print(f"coded NLL (exact arithmetic) {m['coded_bits'] / dims:.5f} bits/dim, "
          f"{100 * (m['coded_bits'] / m['nll_bits'] - 1):+.4f}% against the float model")
    speed = f"format 3 (exact, {m['threads']} threads): encode {n / m['encode_s']:.2f} images/s"
    if "decode_s" in m:
        speed += f", decode {n / m['decode_s']:.2f} images/s (round trip checked)"
    print(speed)
    f = results.get("float_format")
    if f:
        line = (f"format 2 (float32, 1 thread, chunk {f['chunk']}): payload {8 * f['payload_bytes'] / dims:.4f} bits/dim; "
                f"encode {n / f['encode_s']:.2f} images/s")
        if "decode_s" in f:
            line += f", decode {n / f['decode_s']:.2f} images/s"
        print(line)
    print()
    print("| codec | bytes | bits/dim |")
    print("| --- | ---: | ---: |")
    print(f"| pixelcnn .pxc ({results['model_name']}) | {m['bytes']:,} | {bpd:.4f} |")
    print(f"| (model NLL, ideal) | {m['nll_bits'] / 8:,.0f} | {nll_bpd:.4f} |")
    for name, size in results["classical"].items():
        print(f"| {name} | {size:,} | {8 * size / dims:.4f} |")
    if imagecodecs is None:
        print("\nJPEG XL and JPEG 2000: not measured (pip install imagecodecs)")


def cpu_model() -> str:
    """The CPU's model name (lscpu's "Model name"), which platform.processor() does not give on Linux."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    args = parse_args()
    model = pixelcnn.load(args.model)
    ds = load_dataset(args.dataset, args.split, data_dir=args.data_dir)
    x = torch.as_tensor(ds.images)[: args.limit]
    labels = None
    if model.config.num_classes is not None:
        if ds.labels is None:
            raise SystemExit(f"the model is class-conditional but {args.dataset} has no labels")
        labels = torch.as_tensor(ds.labels)[: args.limit].long()
    n, dims = x.shape[0], x[0].numel() * x.shape[0]
    results = {"dataset": args.dataset, "split": args.split, "images": n, "model_path": str(args.model),
               "model_name": model.name, "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
               "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_model": cpu_model(),
               "chunk": args.chunk_size}
    results["model"] = bench_model(model, x, labels, args)
    if args.float_reference:
        results["float_format"] = {**bench_float_format(model, x, labels, args), "chunk": args.float_chunk_size}
    arr = x.numpy()
    results["classical"] = {name: bench_image_codec(enc, dec, arr, ds.levels)
                            for name, (enc, dec) in image_codecs().items()}
    results["classical"].update(bench_stream_codecs(arr, ds.levels))
    report(results, dims, n)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
