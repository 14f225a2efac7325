"""Training throughput with 1 and 2 Gloo processes on this CPU, through torchrun.

Each configuration trains gated_pixelcnn on binarized MNIST for a fixed number of steps with the
same global batch and reads images/s from the run's own metrics.jsonl (rank 0's clock, after the
first logged step). On a 2-core machine little gain is expected: the processes share the cores
the single process already used, and pay for gradient all-reduce on top.

    python benchmarks/bench_ddp.py [--steps 40] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent


def run(nproc: int, threads: int, steps: int, batch: int, out: Path) -> float:
    args = ["train", "--model", "gated_pixelcnn", "--dataset", "binarized_mnist", "--hidden", "32", "--layers", "5",
            "--output-hidden", "0", "--batch-size", str(batch), "--max-steps", str(steps), "--valid-limit", "64",
            "--samples", "0", "--log-every", "1", "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if nproc == 1:
        cmd = [str(BIN / "pixelcnn"), *args]
    else:
        cmd = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}", "-m", "pixelcnn", *args]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    train = [l for l in lines if l["event"] == "train"]
    # images/s of the steady state: the cumulative figure at the end, excluding nothing but start-up
    return train[-1]["images_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    cores = os.cpu_count()
    configs = [(1, cores), (2, max(1, cores // 2))]
    with tempfile.TemporaryDirectory() as tmp:
        results = {f"{n} process(es) x {t} thread(s)": run(n, t, args.steps, args.batch, Path(tmp) / f"r{n}")
                   for n, t in configs}
    print(f"gated_pixelcnn hidden=32 layers=5, binarized MNIST, global batch {args.batch}, {args.steps} steps, "
          f"{cores} CPU cores")
    for name, ips in results.items():
        print(f"{name:<28}{ips:>10.1f} images/s")


if __name__ == "__main__":
    main()
