"""GPU training and evaluation throughput (issues 4 and 8): fp32 and bf16 autocast, with and without torch.compile.

Each configuration runs the trainer's own step: the network's forward pass under autocast, the
loss (exact NLL from the network's output) in float32, backward, Adam. Evaluation is
``log_prob`` in float32 with TF32 off, as ``pixelcnn eval`` computes it. Data are random
integers: throughput does not depend on the pixel values. Times are taken after warm-up steps
(which include compilation), with the device synchronised, as the median of ``--repeats``.

    python benchmarks/bench_gpu.py [--device cuda] [--steps 20] [--repeats 5] [--compile CONFIG ...]

Configurations:
* gated_pixelcnn, hidden 64, 7 layers, 1x28x28, 256 levels, batch 128 (issue 2's benchmark model);
* gated_pixelcnn, its defaults, 3x32x32, 256 levels, batch 32 (issue 4);
* pixelcnn_pp small (64 filters, 2 blocks) and at the paper's size, 3x32x32, batch 32 (issue 4).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import pixelcnn
from pixelcnn.evaluation import full_float32

CONFIGS = [
    ("gated_pixelcnn-mnist", "gated_pixelcnn", (1, 28, 28), {"hidden": 64, "layers": 7}, 128),
    ("gated_pixelcnn-rgb", "gated_pixelcnn", (3, 32, 32), {}, 32),
    ("pixelcnn_pp-small", "pixelcnn_pp", (3, 32, 32), {"filters": 64, "resnet_blocks": 2}, 32),
    ("pixelcnn_pp-paper", "pixelcnn_pp", (3, 32, 32), {}, 32),
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step_fn(model, net, opt, x: torch.Tensor, precision: str):
    dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]

    def step() -> None:
        with torch.autocast(device_type=x.device.type, dtype=dtype, enabled=dtype is not None):
            params = net(x)
        loss = model.nll_from_params(params.float(), x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def images_per_s(fn, n: int, device: torch.device, steps: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        sync(device)
        rates.append(steps * n / (time.perf_counter() - start))
    return sorted(rates)[len(rates) // 2]


def bench(name, family, shape, hp, batch, precision, compiled, device, steps, repeats, warmup) -> dict:
    torch.manual_seed(0)
    model = pixelcnn.create(family, image_shape=shape, levels=256, **hp).to(device)
    net = torch.compile(model) if compiled else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randint(0, 256, (batch, *shape), device=device)
    model.train()
    step = train_step_fn(model, net, opt, x, precision)
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    warm_s = time.perf_counter() - start
    train = images_per_s(step, batch, device, steps, repeats)
    row = {"config": name, "params": model.num_parameters(), "batch": batch, "precision": precision,
           "compile": compiled, "warmup_s": round(warm_s, 1), "train_images_per_s": round(train, 1)}
    if precision == "fp32" and not compiled:
        model.eval()
        with torch.no_grad(), full_float32():
            row["eval_images_per_s"] = round(images_per_s(lambda: model.log_prob(x), batch, device, steps, repeats), 1)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", nargs="*", default=["gated_pixelcnn-mnist", "pixelcnn_pp-small"],
                   choices=[c[0] for c in CONFIGS], help="configurations also timed under torch.compile")
    p.add_argument("--only", nargs="*", choices=[c[0] for c in CONFIGS])
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()
    device = torch.device(args.device)
    rows = []
    for name, family, shape, hp, batch in CONFIGS:
        if args.only and name not in args.only:
            continue
        for compiled in (False, True) if name in args.compile else (False,):
            for precision in ("fp32", "bf16"):
                try:
                    row = bench(name, family, shape, hp, batch, precision, compiled, device, args.steps,
                                args.repeats, args.warmup)
                except Exception as e:          # record a failing configuration and go on with the rest
                    row = {"config": name, "precision": precision, "compile": compiled, "error": repr(e)[:300]}
                rows.append(row)
                print(json.dumps(row), flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\n{name}, torch {torch.__version__}; median of {args.repeats} x {args.steps} steps after {args.warmup} warm-up")
    print(f"{'config':<22}{'params':>11}{'batch':>6}{'prec':>6}{'compile':>8}{'train img/s':>13}{'eval img/s':>12}")
    for r in rows:
        if "error" in r:
            print(f"{r['config']:<22}{'':>11}{'':>6}{r['precision']:>6}{str(r['compile']):>8}  error: {r['error'][:60]}")
            continue
        ev = r.get("eval_images_per_s", "")
        print(f"{r['config']:<22}{r['params']:>11}{r['batch']:>6}{r['precision']:>6}{str(r['compile']):>8}"
              f"{r['train_images_per_s']:>13}{ev:>12}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
