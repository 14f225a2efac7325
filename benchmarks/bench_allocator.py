"""What keeping freed memory (pixelcnn/allocator.py) is worth: training steps with glibc's default malloc and with it.

Each measurement runs in a fresh process, as a user's script would: the library's matched Gated
PixelCNN and the plain reference of bench_vs_plain.py, each with glibc's defaults
(``keep_freed_memory(False)`` before any model is built) and with freed memory kept (the
library's default). A process warms up with two steps, then times ``--steps`` steps; the figure
is the median seconds per step over ``--repeats`` processes, the four kinds alternating, with the
minor page faults and system time per step.

    OMP_NUM_THREADS=1 python benchmarks/bench_allocator.py [--repeats 3] [--steps 3] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

KINDS = [("library", True), ("plain", True), ("library", False), ("plain", False)]


def worker(model_kind: str, keep: bool, steps: int, batch: int) -> dict:
    from pixelcnn import allocator

    allocator.keep_freed_memory(keep)                                # before any model is built
    import torch

    import pixelcnn
    from bench_vs_plain import CONFIGS
    from plain_gated_pixelcnn import PlainGatedPixelCNN
    from timing import train_seconds

    torch.manual_seed(0)
    model = (pixelcnn.create("gated_pixelcnn", image_shape=(1, 28, 28), levels=256, **CONFIGS["matched"])
             if model_kind == "library" else PlainGatedPixelCNN())
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randint(0, 256, (batch, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    train_seconds(model, x, 2, opt)                                     # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF)
    seconds, _ = train_seconds(model, x, steps, opt)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"s_per_step": seconds / steps, "faults_per_step": (after.ru_minflt - before.ru_minflt) / steps,
            "sys_s_per_step": (after.ru_stime - before.ru_stime) / steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--worker", nargs=2, metavar=("MODEL", "KEEP"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1] == "1", args.steps, args.batch)))
        return
    runs: dict[tuple[str, bool], list[dict]] = {kind: [] for kind in KINDS}
    for r in range(args.repeats):
        for model_kind, keep in (KINDS if r % 2 == 0 else KINDS[::-1]):
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", model_kind, str(int(keep)),
                                  "--steps", str(args.steps), "--batch", str(args.batch)],
                                 capture_output=True, text=True, check=True).stdout
            runs[(model_kind, keep)].append(json.loads(out.strip().splitlines()[-1]))
    print(f"batch {args.batch}, {args.repeats} processes of {args.steps} steps each, medians")
    for (model_kind, keep), rows in runs.items():
        med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
        print(f"{model_kind:<8} {'kept' if keep else 'glibc default':<14} {med['s_per_step']:.3f} s/step, "
              f"{med['faults_per_step']:9.0f} page faults/step, {med['sys_s_per_step']:.3f} s system/step")


if __name__ == "__main__":
    main()
