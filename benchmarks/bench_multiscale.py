"""Coarse-to-fine against raster: seconds to sample and to decode one image as the image grows.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_multiscale.py --sizes 32 64 128 256 \
        --decode-sizes 32 64 --budget 300 --json out.json

For each side S: a raster gated_pixelcnn (cached stepper) and a multiscale model whose base grid
is 8x8 (scales = log2(S / 8)), base gated_pixelcnn, of similar parameter count (printed), both
grayscale with 256 levels and untrained weights (speed does not depend on them), one thread.

* sample: ``model.sample(1)`` with the cached stepper, in full; where the raster model's projected
  time exceeds ``--budget`` seconds it is timed on its first pixels and projected (every pixel of a
  raster cached stepper costs the same), marked "projected" in the table.
* decode: ``pixelcnn.decompress`` of the image ``pixelcnn.compress`` wrote (the codec's exact
  arithmetic), at the sides in ``--decode-sizes``; also the seconds of that ``compress`` (encode),
  and for the multiscale model the decode of the same image in format 3 with the codec held to one
  sub-pixel at a time (``grouped=False``, the loop it used before it coded a group per pass; in
  format 4 a group's values are stored channel by channel, which leaves the decoder no other way).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import platform
import time

import torch

import pixelcnn
from pixelcnn.coding import codec
from pixelcnn.sampling import complete


class Stop(Exception):
    pass


def models(size: int, hidden: int, layers: int) -> dict[str, pixelcnn.AutoregressiveModel]:
    torch.manual_seed(0)
    shape = (1, size, size)
    raster = pixelcnn.create("gated_pixelcnn", image_shape=shape, hidden=hidden, layers=layers).eval()
    scales = int(math.log2(size // 8))
    multi = pixelcnn.create("multiscale", image_shape=shape, hidden=hidden, layers=layers // 2, scales=scales).eval()
    return {"gated_pixelcnn": raster, "multiscale": multi}


def sample_seconds(model, budget: float, repeats: int) -> tuple[float, bool]:
    """Best of ``repeats`` seconds for one cached sample, and whether it ran in full (else projected from its
    first pixels: a raster model's, whose pixels all cost the same; a streaming callback would take the
    multiscale model off its one-group-at-a-time path, so it always runs in full)."""
    if model.generation_order != "raster":
        times = []
        for seed in range(repeats):
            start = time.perf_counter()
            model.sample(1, generator=torch.Generator().manual_seed(seed))
            times.append(time.perf_counter() - start)
        return min(times), True
    x = torch.zeros((1, *model.image_shape), dtype=torch.long)
    known = torch.zeros_like(x, dtype=torch.bool)
    pixels = x[0, 0].numel()
    done = [0]
    start = time.perf_counter()

    def on_pixel(h, w, values):
        done[0] += 1
        if time.perf_counter() - start > budget:
            raise Stop

    try:
        with torch.no_grad():
            complete(model, x, known, generator=torch.Generator().manual_seed(0), on_pixel=on_pixel)
    except Stop:
        return (time.perf_counter() - start) * pixels / done[0], False
    return time.perf_counter() - start, True


@contextlib.contextmanager
def one_sub_pixel_at_a_time():
    """The codec's chunks coded and decoded one sub-pixel at a time, even where the stepper offers groups."""
    encode, decode = codec.encode_chunk, codec.decode_chunk
    codec.encode_chunk = functools.partial(encode, grouped=False)
    codec.decode_chunk = functools.partial(decode, grouped=False)
    try:
        yield
    finally:
        codec.encode_chunk, codec.decode_chunk = encode, decode


def decode_seconds(model, data: bytes, image: torch.Tensor) -> float:
    start = time.perf_counter()
    out = pixelcnn.decompress(model, data).images
    seconds = time.perf_counter() - start
    assert torch.equal(out, image)
    return seconds


def coding_seconds(model) -> dict[str, float | None]:
    """encode_s, decode_s and, where the model's stepper codes groups, decode_one_at_a_time_s of one image."""
    image = model.sample(1, generator=torch.Generator().manual_seed(1))
    start = time.perf_counter()
    data = pixelcnn.compress(model, image)
    out = {"encode_s": time.perf_counter() - start, "decode_s": decode_seconds(model, data, image),
           "decode_one_at_a_time_s": None}
    if model.generation_order != "raster":
        with one_sub_pixel_at_a_time():
            out["decode_one_at_a_time_s"] = decode_seconds(model, pixelcnn.compress(model, image, version=3), image)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--decode-sizes", type=int, nargs="*", default=[32, 64])
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--budget", type=float, default=300.0, help="seconds before a sampling run is projected")
    p.add_argument("--repeats", type=int, default=3, help="best of this many multiscale samples")
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, threads 1")
    rows = []
    models(32, args.hidden, args.layers)["gated_pixelcnn"].sample(1)      # warm-up: one-time set-up costs
    for size in args.sizes:
        for name, model in models(size, args.hidden, args.layers).items():
            seconds, full = sample_seconds(model, args.budget, args.repeats)
            coding = coding_seconds(model) if size in args.decode_sizes else {}
            rows.append({"size": size, "model": name, "parameters": model.num_parameters(), "sample_s": seconds,
                         "sample_measured_in_full": full, "decode_s": coding.get("decode_s"),
                         "encode_s": coding.get("encode_s"),
                         "decode_one_at_a_time_s": coding.get("decode_one_at_a_time_s")})
            print(f"{size:4d} {name:15s} {model.num_parameters():8d} params  sample {seconds:9.2f} s"
                  f"{'' if full else ' (projected)'}  " + "  ".join(f"{k} {v:.2f}" for k, v in coding.items() if v),
                  flush=True)
    print("\n| side | raster sample s | multiscale sample s | speed-up | raster decode s | multiscale decode s | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        r, m = (next(x for x in rows if x["size"] == size and x["model"] == n) for n in ("gated_pixelcnn", "multiscale"))
        proj = "" if r["sample_measured_in_full"] else " (projected)"
        dec = ("- | - | -" if r["decode_s"] is None else
               f"{r['decode_s']:.2f} | {m['decode_s']:.2f} | {r['decode_s'] / m['decode_s']:.1f}x")
        print(f"| {size} | {r['sample_s']:.2f}{proj} | {m['sample_s']:.2f} | {r['sample_s'] / m['sample_s']:.1f}x | {dec} |")
    coding_table(rows, [size for size in args.sizes if size in args.decode_sizes])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


def coding_table(rows: list[dict], sizes: list[int]) -> None:
    """Seconds to encode and decode one image: raster, multiscale one sub-pixel at a time, multiscale by groups."""
    if not sizes:
        return
    print("\n| side | raster encode s | multiscale encode s | raster decode s | multiscale decode s, one sub-pixel "
          "at a time | multiscale decode s, a group per pass | raster / multiscale decode |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        r, m = (next(x for x in rows if x["size"] == size and x["model"] == n) for n in ("gated_pixelcnn", "multiscale"))
        print(f"| {size} | {r['encode_s']:.2f} | {m['encode_s']:.2f} | {r['decode_s']:.2f} | "
              f"{m['decode_one_at_a_time_s']:.2f} | {m['decode_s']:.2f} | {r['decode_s'] / m['decode_s']:.1f}x |")


if __name__ == "__main__":
    main()
