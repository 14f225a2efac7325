"""Training memory at larger images (issue 27): peak memory of one training step, with and without
activation checkpointing (``model.checkpoint_activations()``, ``pixelcnn train --checkpoint-activations``).

A step is the trainer's: forward, the mean NLL, backward, one Adam step (its first, so its moments
are allocated inside the step), on a batch of random colour images (3 channels, 256 levels; memory
does not depend on the values). Each measurement runs in a fresh process and gives:

* saved: the bytes of the tensors (not parameters) the forward keeps for backward, counted by
  ``torch.autograd.graph.saved_tensors_hooks`` over distinct storages: exact, and what
  checkpointing changes;
* RSS: the process's peak resident memory during the step (``ru_maxrss``) above its resident
  memory before it (model, optimizer and batch built): measured, and what a user sees on a CPU;
* CUDA: ``torch.cuda.max_memory_allocated`` above the memory allocated before the step (on a GPU);
* the step's seconds (one step: a rough figure of what recomputation costs).

    OMP_NUM_THREADS=1 python benchmarks/bench_memory.py [--families F ...] [--sizes 32 64 128 256]
        [--batch 8] [--width small|default] [--largest FAMILY=SIZE ...] [--device auto] [--json FILE]

``--width small`` gives every family 32 feature maps and 4 layers (PixelCNN++: 32 filters, 2 blocks
a stage) so that 256 x 256 runs on a CPU; ``default`` keeps the families' own defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


FAMILIES = ["gated_pixelcnn", "pixelcnn_pp", "multiscale", "lmconv", "row_lstm", "pixelsnail"]
SMALL = {
    "gated_pixelcnn": {"hidden": 32, "layers": 4, "output_hidden": 64},
    "pixelcnn_pp": {"filters": 32, "resnet_blocks": 2, "mixtures": 5},
    "multiscale": {"hidden": 32, "layers": 4, "output_hidden": 64},
    "lmconv": {"hidden": 32, "layers": 4, "output_hidden": 64},
    "row_lstm": {"hidden": 32, "layers": 4, "output_hidden": 64},
    "diagonal_bilstm": {"hidden": 32, "layers": 4, "output_hidden": 64},
    "pixelcnn": {"hidden": 32, "layers": 4, "output_hidden": 64},
    "pixelsnail": {"hidden": 32, "layers": 2, "residual_blocks": 2, "output_hidden": 64},
}
MB = 2**20


def resident_bytes() -> int:
    """The process's resident memory now (Linux), or its peak so far elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_resident_bytes()


def peak_resident_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024             # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def build(family: str, size: int, width: str, device, checkpointed: bool):
    """The model (with checkpointing as asked), its optimizer and nothing else, on ``device``."""
    import torch

    import pixelcnn

    torch.manual_seed(0)
    hp = SMALL.get(family, {}) if width == "small" else {}
    model = pixelcnn.create(family, image_shape=(3, size, size), levels=256, **hp).to(device)
    model.checkpoint_activations(checkpointed).train()
    return model, torch.optim.Adam(model.parameters(), lr=1e-4)


def train_step(model, opt, x, inputs: dict) -> int:
    """One training step; returns the bytes its forward kept for backward (distinct storages, not parameters)."""
    from pixelcnn.models.activation_checkpointing import saved_bytes

    with saved_bytes(model) as kept:
        loss = model.nll_from_params(model(x, **inputs).float(), x).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return kept()


def worker(family: str, size: int, batch: int, width: str, device_name: str, checkpointed: bool) -> dict:
    """One measurement, in this process (run fresh for each)."""
    import torch

    device = torch.device(device_name)
    model, opt = build(family, size, width, device, checkpointed)
    x = torch.randint(0, 256, (batch, 3, size, size), generator=torch.Generator().manual_seed(0)).to(device)
    inputs = model.step_inputs(0, 0)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        cuda_before = torch.cuda.memory_allocated(device)
    rss_before = resident_bytes()
    start = time.perf_counter()
    saved = train_step(model, opt, x, inputs)
    if cuda:
        torch.cuda.synchronize(device)
    row = {"family": family, "size": size, "batch": batch, "checkpointed": checkpointed,
           "params": model.num_parameters(), "units": len(model.checkpoint_units()), "saved_mb": saved / MB,
           "rss_mb": (peak_resident_bytes() - rss_before) / MB, "step_s": time.perf_counter() - start}
    if cuda:
        row["cuda_mb"] = (torch.cuda.max_memory_allocated(device) - cuda_before) / MB
    return row


def measure(family: str, size: int, checkpointed: bool, args) -> dict:
    """A worker's row, from a fresh process; an error (out of memory, a timeout) becomes the row's ``error``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", family, str(size), str(int(checkpointed)),
           "--batch", str(args.batch), "--width", args.width, "--device", args.device]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"family": family, "size": size, "checkpointed": checkpointed, "error": f"over {args.timeout} s"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {"family": family, "size": size, "checkpointed": checkpointed, "error": tail[:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def largest_sizes(pairs: list[str]) -> dict[str, int]:
    """FAMILY=SIZE items -> {family: the largest size measured for it}."""
    out = {}
    for pair in pairs:
        family, _, size = pair.partition("=")
        out[family] = int(size)
    return out


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table: each (family, size) with checkpointing off and on."""
    cuda = any("cuda_mb" in r for r in rows)
    head = "| family | size | params | saved MB | saved MB, ckpt | ratio | peak RSS MB | peak RSS MB, ckpt |"
    head += " CUDA MB | CUDA MB, ckpt |" if cuda else ""
    head += " step s | step s, ckpt |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    pairs: dict[tuple[str, int], dict[bool, dict]] = {}
    for r in rows:
        pairs.setdefault((r["family"], r["size"]), {})[r["checkpointed"]] = r
    for (family, size), pair in pairs.items():
        off, on = pair.get(False, {}), pair.get(True, {})
        if "error" in off or "error" in on:
            lines.append(f"| {family} | {size} | error: {(off.get('error') or on.get('error'))[:80]} |")
            continue
        cells = [family, size, f"{off['params']:,}", f"{off['saved_mb']:.0f}", f"{on['saved_mb']:.0f}",
                 f"{on['saved_mb'] / off['saved_mb']:.2f}", f"{off['rss_mb']:.0f}", f"{on['rss_mb']:.0f}"]
        cells += [f"{off['cuda_mb']:.0f}", f"{on['cuda_mb']:.0f}"] if cuda else []
        cells += [f"{off['step_s']:.2f}", f"{on['step_s']:.2f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=FAMILIES)
    p.add_argument("--sizes", nargs="+", type=int, default=[32, 64, 128, 256])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--width", choices=["small", "default"], default="small")
    p.add_argument("--largest", nargs="*", default=[], metavar="FAMILY=SIZE",
                   help="measure FAMILY at sizes up to SIZE only")
    p.add_argument("--device", default="auto", help="auto (cuda where there is one), cpu or cuda")
    p.add_argument("--timeout", type=float, default=600, help="seconds a measurement may take")
    p.add_argument("--json", help="also write the rows and the machine to this file")
    p.add_argument("--worker", nargs=3, metavar=("FAMILY", "SIZE", "CHECKPOINTED"), help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        family, size, checkpointed = args.worker
        print(json.dumps(worker(family, int(size), args.batch, args.width, args.device, checkpointed == "1")))
        return
    import torch
    from bench_compression import cpu_model           # the CPU's model name

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    largest, rows = largest_sizes(args.largest), []
    for family in args.families:
        for size in args.sizes:
            if size > largest.get(family, size):
                continue
            for checkpointed in (False, True):
                rows.append(measure(family, size, checkpointed, args))
                print(json.dumps(rows[-1]), flush=True)
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else cpu_model()
    print(f"\n{device}, torch {torch.__version__}, {os.environ.get('OMP_NUM_THREADS', 'default')} threads; "
          f"batch {args.batch} of 3 x size x size images, 256 levels, width {args.width}; one step per process\n")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "torch": torch.__version__, "batch": args.batch, "width": args.width,
                       "threads": os.environ.get("OMP_NUM_THREADS"), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
