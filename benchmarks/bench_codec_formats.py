"""Decode seconds of one colour multiscale image in format 3 (one sub-pixel at a time) and format 4
(one pass per group and channel), the same model and image, one run.

Model: benchmarks/bench_multiscale.py's multiscale model at side 32 (hidden 32, 3 blocks, scales 2,
256 levels, untrained, ``torch.manual_seed(0)``), made colour; one thread.

    OMP_NUM_THREADS=1 python benchmarks/bench_codec_formats.py [--side 32]
"""

from __future__ import annotations

import argparse
import time

import torch

import pixelcnn


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    shape = (3, args.side, args.side)
    model = pixelcnn.create("multiscale", image_shape=shape, hidden=32, layers=3, scales=2).eval()
    image = torch.randint(0, 256, (1, *shape), generator=torch.Generator().manual_seed(0))
    seconds = {}
    for version in (4, 3):
        start = time.perf_counter()
        data = pixelcnn.compress(model, image, version=version)
        encode = time.perf_counter() - start
        start = time.perf_counter()
        out = pixelcnn.decompress(model, data).images
        seconds[version] = time.perf_counter() - start
        assert torch.equal(out, image)
        print(f"format {version}: {len(data)} bytes, encode {encode:.2f} s, decode {seconds[version]:.2f} s", flush=True)
    print(f"decode speed-up of format 4 over format 3: {seconds[3] / seconds[4]:.1f}x")


if __name__ == "__main__":
    main()
