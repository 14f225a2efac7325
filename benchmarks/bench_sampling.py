"""Sampling speed (issue 6): naive sampling, cached sampling and ONE forward pass over the same batch.

    .venv/bin/python benchmarks/bench_sampling.py                   # CPU, and CUDA when available
    .venv/bin/python benchmarks/bench_sampling.py --threads 1 --naive-budget 180 --breakdown

Models (untrained weights: speed does not depend on them):
* gated_pixelcnn, hidden 64, 7 layers, 1x28x28, 256 levels, n = 1, 16, 64;
* diagonal_bilstm (registry defaults), 1x28x28, 256 levels, n = 1, 16, if registered;
* pixelsnail (registry defaults), 1x28x28 (n = 1, 16) and 1x64x64 (n = 1), 256 levels, if registered;
* pixelcnn_pp at two small sizes, 3x32x32, 256 levels, n = 16, if registered: issue 4's "small"
  (filters 64, 2 blocks, 3 stages, 10 mixtures) and a tinier one (filters 32, 5 mixtures), where
  the output distribution's share of the cost is largest.

Naive sampling runs the whole network once per sub-pixel (once per pixel for a pixel-level
network), and every such pass costs the same wherever it is in the image. So the script times
it on the first rows and, when the projected total is within ``--naive-budget`` seconds, runs
it fully; otherwise it reports the projection, marked "extrapolated" in the table. Cached
sampling and the forward pass are always measured in full (best of ``--repeats``).
"""

from __future__ import annotations

import argparse
import cProfile
import platform
import pstats
import sys
import time
from dataclasses import dataclass

import torch

import pixelcnn
from pixelcnn.distributions import sample_inverse_cdf
from pixelcnn.sampling import NaiveStepper, run

SPECS = [
    ("gated_pixelcnn", (1, 28, 28), {"hidden": 64, "layers": 7}, (1, 16, 64)),
    ("diagonal_bilstm", (1, 28, 28), {}, (1, 16)),
    ("pixelcnn_pp", (3, 32, 32), {"filters": 64, "resnet_blocks": 2, "stages": 3, "mixtures": 10}, (16,)),
    ("pixelcnn_pp", (3, 32, 32), {"filters": 32, "resnet_blocks": 2, "stages": 3, "mixtures": 5}, (16,)),
    ("pixelsnail", (1, 28, 28), {}, (1, 16)),
    ("pixelsnail", (1, 64, 64), {}, (1,)),
]


@dataclass
class Row:
    model: str
    hyperparameters: dict
    shape: tuple[int, int, int]
    device: str
    n: int
    forward: float
    cached: float | None
    naive: float
    naive_measured: bool


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int = 1) -> float:
    """Best wall time of ``repeats`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def forward_time(model, n: int, repeats: int) -> float:
    x = torch.randint(0, model.levels, (n, *model.image_shape), device=model.device)
    with torch.inference_mode():
        model(x)                                                     # warm-up
        return timed(lambda: model(x), model.device, repeats)


def cached_time(model, n: int, repeats: int) -> float | None:
    probe = torch.zeros((1, *model.image_shape), dtype=torch.long, device=model.device)
    if model.cached_stepper(probe, None) is None:
        return None
    gen = torch.Generator(device=model.device).manual_seed(0)
    return timed(lambda: model.sample(n, generator=gen, method="cached"), model.device, repeats)


def naive_rows(model, n: int, rows: int) -> float:
    """Seconds to sample the first ``rows`` rows naively (the full network runs at every step)."""
    c, _, w = model.image_shape
    x = torch.zeros((n, *model.image_shape), dtype=torch.long, device=model.device)
    stepper = NaiveStepper(model, x, None)
    stepper.order = stepper.order[: rows * w]                               # the first rows only
    u = torch.rand((n, c, rows, w), device=model.device, dtype=torch.float64)

    def choose(ci, hi, wi, log_probs):
        return sample_inverse_cdf(log_probs, u[:, ci, hi, wi])

    with torch.no_grad():
        return timed(lambda: run(stepper, (c, rows, w), choose), model.device)


def naive_time(model, n: int, budget: float) -> tuple[float, bool]:
    """(seconds, measured): a full naive run if its projection fits ``budget``, else the projection."""
    height = model.image_shape[1]
    probe_rows = 1
    projected = naive_rows(model, n, probe_rows) * height / probe_rows
    if projected <= budget:
        gen = torch.Generator(device=model.device).manual_seed(0)
        return timed(lambda: model.sample(n, generator=gen, method="naive"), model.device), True
    return projected, False


def build(name: str, shape, hp: dict, device: str):
    model = pixelcnn.create(name, image_shape=shape, levels=256, **hp)
    return model.to(device).eval()


def bench_model(name, shape, hp, ns, device, args) -> list[Row]:
    model = build(name, shape, hp, device)
    rows = []
    for n in ns:
        forward = forward_time(model, n, args.repeats)
        cached = cached_time(model, n, args.repeats)
        naive, measured = naive_time(model, n, args.naive_budget)
        rows.append(Row(name, hp, shape, device, n, forward, cached, naive, measured))
        print(format_row(rows[-1]), flush=True)
    return rows


def format_row(r: Row) -> str:
    shape = "x".join(map(str, r.shape))
    naive = f"{r.naive:.1f}" + ("" if r.naive_measured else " (extrapolated)")
    hp = ", ".join(f"{k} {v}" for k, v in r.hyperparameters.items()) or "defaults"
    if r.cached is None:
        return f"| {r.model} | {hp} | {shape} | {r.device} | {r.n} | {naive} | no cached path | {r.forward:.3f} | - | - |"
    return (f"| {r.model} | {hp} | {shape} | {r.device} | {r.n} | {naive} | {r.cached:.2f} | {r.forward:.3f} | "
            f"{r.naive / r.cached:.0f}x | {r.cached / r.forward:.1f}x |")


HEADER = ("| model | hyperparameters | image | device | n | naive (s) | cached (s) | one forward pass (s) | "
          "naive / cached | cached / forward |\n|---|---|---|---|---|---|---|---|---|---|")


def breakdown(device: str, n: int, top: int) -> None:
    """Where a cached gated_pixelcnn sample spends its time: per-row work, per-step work, the loop."""
    model = build("gated_pixelcnn", (1, 28, 28), {"hidden": 64, "layers": 7}, device)
    x = torch.zeros((n, 1, 28, 28), dtype=torch.long, device=model.device)
    totals: dict[str, float] = {}
    original = model.cached_stepper

    def instrumented(x, labels):
        stepper = original(x, labels)
        for layer in stepper.layers:
            layer.start_row = _timed_method(layer.start_row, totals, "rows (vertical stack, once per row)")
            layer.step = _timed_method(layer.step, totals, "steps (horizontal stack, per pixel)")
        stepper.head = _timed_method(stepper.head, totals, "output head (per pixel)")
        return stepper

    model.cached_stepper = instrumented
    total = timed(lambda: model.sample(n, method="cached"), model.device)
    print(f"\nBreakdown of one cached sample, gated_pixelcnn 1x28x28, n = {n}, {device}: {total:.3f} s")
    for key, value in totals.items():
        print(f"  {key:40s} {value:7.3f} s  {100 * value / total:5.1f} %")
    rest = total - sum(totals.values())
    print(f"  {'loop: sampling, set, log-softmax':40s} {rest:7.3f} s  {100 * rest / total:5.1f} %")
    count_ops(original, x, top)
    profile_python(model, n, top)


def _timed_method(fn, totals: dict, key: str):
    def wrapper(*args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - start
    return wrapper


def count_ops(make_stepper, x: torch.Tensor, top: int) -> None:
    """Tensor operations of the cached steps of one image row (log_probs and set of 28 pixels)."""
    from torch.profiler import ProfilerActivity, profile

    stepper = make_stepper(x, None)
    zeros = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)

    def fill_row(h: int) -> None:
        for w in range(x.shape[3]):
            stepper.log_probs(0, h, w)
            stepper.set(0, h, w, zeros)

    with torch.no_grad():
        fill_row(0)
        fill_row(1)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fill_row(2)
    top_level = [e for e in prof.events() if e.cpu_parent is None]
    print(f"\nOne row of cached steps, batch {x.shape[0]}: {len(top_level) / x.shape[3]:.0f} top-level tensor "
          f"ops per pixel (the row's vertical-stack work included)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def profile_python(model, n: int, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    model.sample(n, method="cached")
    profiler.disable()
    print("\ncProfile of the same sample (its overhead inflates Python's share):")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(top)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (torch.set_num_threads)")
    parser.add_argument("--naive-budget", type=float, default=180.0, help="run naive fully when projected under this")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs for cached and forward")
    parser.add_argument("--models", nargs="+", default=[s[0] for s in SPECS])
    parser.add_argument("--ns", nargs="+", type=int, help="batch sizes for every model (default: per model, above)")
    parser.add_argument("--breakdown", action="store_true", help="profile cached gated_pixelcnn sampling at n = 16")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} CPU thread(s), devices {args.devices}\n\n{HEADER}")
    available = pixelcnn.available_models()
    for device in args.devices:
        for name, shape, hp, ns in SPECS:
            if name in args.models and name in available:
                bench_model(name, shape, hp, args.ns or ns, device, args)
    skipped = [s[0] for s in SPECS if s[0] in args.models and s[0] not in available]
    if skipped:
        print(f"\nnot registered, skipped: {', '.join(skipped)}")
    if args.breakdown:
        for device in args.devices:
            breakdown(device, 16, args.top)


if __name__ == "__main__":
    main()
