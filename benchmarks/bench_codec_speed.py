"""Speed of the exact coder (formats 3 and 4) with its compiled kernels, beside its references, in one run.

    python benchmarks/bench_codec_speed.py [--batches 1 64] [--large] [--threads 2] [--reference-up-to 64]
        [--format2-up-to 64] [--models mnist colour multiscale] [--isas avx512 avx2] [--json out.json]

For each model, on the same images in the same run: encode and decode seconds (the coding, with the model
loaded, as ``pixelcnn compress`` reports it) and images/s of

* ``compiled``: the exact arithmetic with its compiled kernels (``pixelcnn.coding.fused``), as users get it
  (``--isas``: also with the other variants of the kernels' product that this CPU runs, e.g. ``avx2`` on an
  AVX-512 machine; the same bytes, checked);
* ``reference``: the same arithmetic through the reference rules alone (``fused.reference_only``), which wrote
  every file before the kernels existed; its files must be byte for byte those of ``compiled`` (checked);
* ``format 2``: pixelcnn 0.1.0's float32 coder (one thread, files that decode only on the same kind of CPU);
* ``PNG``: Pillow, optimize=True, one file per image.

Models: ``pretrained:mnist`` (a raster Gated PixelCNN, MNIST test digits), a colour raster Gated PixelCNN
(``gated_pixelcnn`` at its defaults on 3x32x32 emoji glyphs, untrained: coding time does not depend on the
weights) and ``pretrained:emoji-multiscale`` (coarse-to-fine, colour). ``--large`` adds batches of 1,000 (the
reference rules and format 2 code the batches up to ``--reference-up-to`` and ``--format2-up-to``). Also the web
app's Compress button (``POST /api/compress`` in process, ``pretrained:mnist``, one digit) with and without the
kernels.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import time

import numpy as np
import torch
from PIL import Image

import pixelcnn
from pixelcnn.coding import codec, fused
from pixelcnn.data import load_dataset


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--large", action="store_true", help="also batches of 1,000 (compiled and PNG)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads for formats 3/4")
    p.add_argument("--reference-up-to", type=int, default=64, help="largest batch the reference rules code")
    p.add_argument("--format2-up-to", type=int, default=64, help="largest batch the format-2 float coder codes")
    p.add_argument("--models", nargs="+", default=["mnist", "colour", "multiscale"])
    p.add_argument("--isas", nargs="+", default=fused.isas()[:1], choices=fused.isas(),
                   help="variants of the kernels' product to time (fused.isas(); default: the one used)")
    p.add_argument("--json")
    return p.parse_args()


def models() -> dict:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        colour = pixelcnn.create("gated_pixelcnn", image_shape=(3, 32, 32))
    return {
        "mnist": ("pretrained:mnist (gated_pixelcnn, 1x28x28)", pixelcnn.load("pretrained:mnist"), "mnist"),
        "colour": ("gated_pixelcnn defaults, 3x32x32, untrained", colour, "emoji"),
        "multiscale": ("pretrained:emoji-multiscale (3x32x32)", pixelcnn.load("pretrained:emoji-multiscale"), "emoji"),
    }


def images_of(dataset: str, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    ds = load_dataset(dataset, "test")
    items = [ds[i % len(ds)] for i in range(n)]                 # (image, label), or the image where there is no label
    return torch.stack([item[0] if isinstance(item, tuple) else item for item in items]).long(), None


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def exact(model, x, labels, threads: int, reference: bool, isa: str | None = None) -> dict:
    """Encode and decode in formats 3/4 at ``threads`` torch threads (with product variant ``isa``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with fused.reference_only() if reference else fused.product_isa(isa) if isa else contextlib.nullcontext():
            data, enc = timed(lambda: pixelcnn.compress(model, x, labels))
            out, dec = timed(lambda: pixelcnn.decompress(model, data))
    finally:
        torch.set_num_threads(before)
    if not torch.equal(out.images, x):
        raise SystemExit("decoded images differ from the originals")
    return {"encode_s": enc, "decode_s": dec, "bytes": len(data), "data": data}


def format2(model, x, labels) -> dict:
    """pixelcnn 0.1.0's float32 coder on one thread, through the codec's FLOAT arithmetic."""
    float_model, chunk = codec.FLOAT.model(model), codec.DEFAULT_CHUNK_SIZE
    method = codec.resolve_method(float_model, "auto")
    with codec.FLOAT.scope(float_model):
        streams, enc = timed(lambda: list(codec._encode_all(float_model, x, labels, chunk, method, None, "",
                                                            codec.FLOAT, None, 2)))
        header = codec.Header(method, model.levels, model.image_shape, len(x), chunk, b"", b"", version=2)
        parts, dec = timed(lambda: list(codec._decode_all(float_model, header, streams, None, codec.FLOAT, None)))
    if not torch.equal(torch.cat([p[0] for p in parts]), x):
        raise SystemExit("format 2 decoded images differ from the originals")
    return {"encode_s": enc, "decode_s": dec, "bytes": sum(4 * len(s) for s in streams)}


def png(x: torch.Tensor) -> dict:
    arrays = [img.permute(1, 2, 0).numpy().astype(np.uint8) for img in x]
    arrays = [a[..., 0] if a.shape[2] == 1 else a for a in arrays]

    def encode():
        out = []
        for a in arrays:
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="PNG", optimize=True)
            out.append(buf.getvalue())
        return out

    files, enc = timed(encode)
    decoded, dec = timed(lambda: [np.asarray(Image.open(io.BytesIO(f))) for f in files])
    if not all(np.array_equal(a, b) for a, b in zip(arrays, decoded)):
        raise SystemExit("PNG decoded images differ")
    return {"encode_s": enc, "decode_s": dec, "bytes": sum(len(f) for f in files)}


def compress_button(model, x: torch.Tensor, repeats: int = 3) -> dict:
    """Seconds of the web app's Compress button (POST /api/compress), in process, best of ``repeats``."""
    from starlette.testclient import TestClient

    from pixelcnn.serve.app import create_app

    client = TestClient(create_app({"mnist": model}))
    body = {"model": "mnist", "image": x[0].flatten().tolist()}
    out = {}
    for name, scope in (("compiled", contextlib.nullcontext), ("reference", fused.reference_only)):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            with scope():
                client.post("/api/compress", json=body).raise_for_status()
            times.append(time.perf_counter() - start)
        out[name] = min(times)
    return out


def row(name: str, n: int, r: dict) -> str:
    return (f"| {name} | {n} | {r['encode_s']:.3f} | {r['decode_s']:.3f} | {n / r['encode_s']:.2f} | "
            f"{n / r['decode_s']:.2f} | {r['bytes']:,} |")


def main() -> None:
    args = parse_args()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s) for "
          f"formats 3/4; compiled kernels: {fused.available()}")
    results: dict = {"threads": args.threads, "models": {}}
    batches = sorted(set(args.batches + ([1000] if args.large else [])))
    loaded = models()
    for key, (label, model, dataset) in loaded.items():
        if key not in args.models:
            continue
        print(f"\n## {label}\n\n| coder | images | encode s | decode s | encode img/s | decode img/s | bytes |\n"
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        results["models"][key] = per = {}
        for n in batches:
            x, labels = images_of(dataset, n)
            compiled = exact(model, x, labels, args.threads, reference=False)
            lines = [row("compiled (format 4)", n, compiled)]
            per[n] = {"compiled": compiled}
            for isa in args.isas:
                if isa == fused.isas()[0]:
                    continue
                other = exact(model, x, labels, args.threads, reference=False, isa=isa)
                if other["data"] != compiled["data"]:
                    raise SystemExit(f"{key}, {n} images: the {isa} product wrote other bytes")
                per[n][f"compiled_{isa}"] = other
                lines.append(row(f"compiled, {isa} product", n, other))
            if n <= args.reference_up_to:
                reference = exact(model, x, labels, args.threads, reference=True)
                if reference["data"] != compiled["data"]:
                    raise SystemExit(f"{key}, {n} images: the compiled coder wrote other bytes than the reference")
                per[n]["reference"] = reference
                lines.append(row("reference rules (same bytes)", n, reference))
            if n <= args.format2_up_to and key != "multiscale":      # format 2 had no multiscale family
                per[n]["format2"] = format2(model, x, labels)
                lines.append(row("format 2 (float32, 1 thread)", n, per[n]["format2"]))
            per[n]["png"] = png(x)
            lines.append(row("PNG (Pillow)", n, per[n]["png"]))
            print("\n".join(lines), flush=True)
            for r in per[n].values():
                r.pop("data", None)
    if "mnist" in args.models:
        x, _ = images_of("mnist", 1)
        results["compress_button"] = button = compress_button(loaded["mnist"][1], x)
        print(f"\nweb app Compress button, pretrained:mnist, one digit: {button['compiled']:.3f} s compiled, "
              f"{button['reference']:.3f} s reference")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
