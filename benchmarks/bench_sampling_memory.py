"""Peak memory of cached sampling per image, every family at its defaults (issue 35).

Each measurement runs in a fresh process: the model is built (default hyperparameters, eval mode), then the
sampling loop (``pixelcnn.sampling.complete`` with nothing known, the family's cached stepper) runs over
``--pixels`` pixels (all of them by default; the caches are allocated when the stepper is built, so the peak
comes early) and stops. Reported: the process's peak resident memory (``ru_maxrss``) above its peak before
the loop (model built, batch allocated), per image, and the loop's seconds per pixel. The same process then
samples again and reports the growth of the peak: a stepper that lets go of its memory when the call returns
leaves the second call at the first one's peak.

    OMP_NUM_THREADS=1 python benchmarks/bench_sampling_memory.py [--families F ...] [--json FILE]
        [--small 1x3x3 --small-batch 1000] [--large 3x32x32 --large-batch 16 --large-pixels 64] [--calls 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

FAMILIES = ["pixelcnn", "gated_pixelcnn", "pixelcnn_pp", "row_lstm", "diagonal_bilstm", "lmconv", "multiscale",
            "pixelsnail"]


class Stop(Exception):
    pass


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024          # Linux: kilobytes


def measure(family: str, shape: tuple[int, int, int], batch: int, pixels: int | None, calls: int = 2) -> dict:
    """In this process: the peak above the model's, per image, for one sampling call, then the process's peak
    after each of ``calls`` calls in a row."""
    import torch

    import pixelcnn
    from pixelcnn import sampling

    torch.set_num_threads(1)
    model = pixelcnn.create(family, image_shape=shape, levels=256).eval()
    x = torch.zeros((batch, *shape), dtype=torch.long)
    known = torch.zeros_like(x, dtype=torch.bool)
    limit = pixels or shape[1] * shape[2]

    def run() -> float:
        done = [0]

        def on_pixel(h, w, values):
            done[0] += 1
            if done[0] >= limit:
                raise Stop

        start = time.perf_counter()
        with torch.no_grad():
            try:
                sampling.complete(model, x, known, generator=torch.Generator().manual_seed(0), on_pixel=on_pixel)
            except Stop:
                pass
        return (time.perf_counter() - start) / limit

    before = peak_mb()
    seconds = run()
    peaks = [peak_mb()]
    for _ in range(calls - 1):
        run()
        peaks.append(peak_mb())
    first = peaks[0]
    return {"family": family, "shape": list(shape), "batch": batch, "pixels": limit,
            "model_mb": round(before, 1), "per_image_kb": round((first - before) * 1024 / batch, 2),
            "peak_above_model_mb": round(first - before, 1), "second_call_growth_mb": round(peaks[1] - first, 1),
            "process_peaks_mb": [round(p) for p in peaks], "seconds_per_pixel": round(seconds, 5)}


def shape_of(text: str) -> tuple[int, int, int]:
    c, h, w = (int(v) for v in text.split("x"))
    return c, h, w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=FAMILIES)
    parser.add_argument("--small", type=shape_of, default=(1, 3, 3))
    parser.add_argument("--small-batch", type=int, default=1000)
    parser.add_argument("--large", type=shape_of, default=(3, 32, 32))
    parser.add_argument("--large-batch", type=int, default=16)
    parser.add_argument("--large-pixels", type=int, default=64, help="pixels sampled at the large size (two rows)")
    parser.add_argument("--calls", type=int, default=2, help="sampling calls in a row in each process (at least 2)")
    parser.add_argument("--json")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        family, shape, batch, pixels, calls = args.child
        print(json.dumps(measure(family, shape_of(shape), int(batch), int(pixels) or None, int(calls))))
        return
    if args.calls < 2:
        parser.error(f"argument --calls: expected at least 2, got {args.calls}")
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for family in args.families:
        for shape, batch, pixels in ((args.small, args.small_batch, 0), (args.large, args.large_batch, args.large_pixels)):
            child = [sys.executable, __file__, "--child", family, "x".join(map(str, shape)), str(batch), str(pixels),
                     str(args.calls)]
            done = subprocess.run(child, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise SystemExit(f"{family} {shape}: {done.stderr[-2000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{family:16s} {'x'.join(map(str, shape)):8s} batch {batch:5d}: {row['per_image_kb']:9.1f} KB/image "
                  f"({row['peak_above_model_mb']:7.1f} MB above the model's {row['model_mb']:7.1f}); second call "
                  f"+{row['second_call_growth_mb']:.1f} MB; {1000 * row['seconds_per_pixel']:.2f} ms/pixel; process peak "
                  f"after each call {row['process_peaks_mb']} MB", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
