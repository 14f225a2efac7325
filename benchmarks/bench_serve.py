"""Latency of ``pixelcnn serve`` with pretrained:mnist: streamed sampling, completion, 8 clients at once.

Starts ``pixelcnn serve`` in a subprocess on a free loopback port, then measures from this process
over HTTP, beside the same work done by plain library calls in this process (the reference):

1. one streamed 28x28 sample: time to the first pixel and to the finished image (vs ``model.sample(1)``);
2. completion with n = 8 of an MNIST-like image with its bottom half erased (vs ``model.complete``);
3. 8 clients streaming samples at once: all must finish; meanwhile a 9th client keeps asking for
   the page and the model list, and its latency is compared with the same requests on an idle server.

    OMP_NUM_THREADS=1 python benchmarks/bench_serve.py [--repeats 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx
import torch

import pixelcnn

MODEL = "pretrained:mnist"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pixelcnn", "serve", MODEL, "--port", str(port),
                             "--workers", str(workers)], stdout=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/api/models", timeout=1).raise_for_status()
            return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not answer within 120 s")


def stream_sample(base: str, seed: int) -> dict:
    """One streamed sample: seconds to the first pixel and to the finished image."""
    start = time.perf_counter()
    first = None
    with httpx.stream("POST", f"{base}/api/sample", json={"model": MODEL, "seed": seed}, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            msg = json.loads(line)
            if first is None and "h" in msg:
                first = time.perf_counter() - start
            if msg.get("event") == "done":
                return {"first": first, "done": time.perf_counter() - start, "pixels": len(msg["image"])}
    raise RuntimeError("the stream ended without its image")


def light_latency(http: httpx.Client) -> float:
    """Seconds per light request (the page, the model list) on a kept-alive connection."""
    start = time.perf_counter()
    http.get("/").raise_for_status()
    http.get("/api/models").raise_for_status()
    return (time.perf_counter() - start) / 2


def half_erased_image(model) -> tuple[torch.Tensor, torch.Tensor]:
    image = model.sample(1, generator=torch.Generator().manual_seed(0))[0]       # an MNIST-like digit
    known = torch.ones(28, 28, dtype=torch.bool)
    known[14:] = False
    return image, known


def time_call(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def single_client(base: str, model, repeats: int) -> None:
    runs = [stream_sample(base, seed) for seed in range(repeats)]
    library = time_call(lambda: model.sample(1, generator=torch.Generator().manual_seed(0)), repeats)
    first, done = statistics.median(r["first"] for r in runs), statistics.median(r["done"] for r in runs)
    print(f"streamed sample, median of {repeats}: first pixel {first * 1000:.0f} ms, finished 28x28 "
          f"{done:.2f} s; library model.sample(1) {library:.2f} s; HTTP/stream overhead {done / library:.2f}x")


def completion(base: str, model, repeats: int) -> None:
    image, known = half_erased_image(model)
    body = {"model": MODEL, "image": image.flatten().tolist(), "known": known.flatten().int().tolist(), "n": 8, "seed": 0}
    http = time_call(lambda: httpx.post(f"{base}/api/complete", json=body, timeout=600).raise_for_status(), repeats)
    library = time_call(lambda: model.complete(image[None], known[None, None], n=8,
                                               generator=torch.Generator().manual_seed(0)), repeats)
    print(f"complete n=8 (bottom half erased), median of {repeats}: {http:.2f} s over HTTP; library "
          f"model.complete {library:.2f} s; ratio {http / library:.2f}x")


def many_clients(base: str, clients: int, light_repeats: int) -> None:
    http = httpx.Client(base_url=base, timeout=60)
    idle = [light_latency(http) for _ in range(light_repeats)]
    results: list[dict | BaseException] = [None] * clients

    def client(i: int) -> None:
        try:
            results[i] = stream_sample(base, 100 + i)
        except BaseException as e:        # noqa: BLE001 - reported below
            results[i] = e

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    busy = []
    while any(t.is_alive() for t in threads):
        busy.append(light_latency(http))
        time.sleep(0.1)
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    failed = [r for r in results if not isinstance(r, dict) or r["pixels"] != 784]
    ok = [r for r in results if isinstance(r, dict)]
    print(f"{clients} clients streaming at once: {len(ok)} of {clients} finished 28x28 samples, all in {wall:.1f} s; "
          f"first pixel {min(r['first'] for r in ok):.2f}..{max(r['first'] for r in ok):.2f} s, "
          f"finished {min(r['done'] for r in ok):.1f}..{max(r['done'] for r in ok):.1f} s")
    print(f"9th client (GET / and /api/models), {len(busy)} requests during the streams: median "
          f"{statistics.median(busy) * 1000:.1f} ms, max {max(busy) * 1000:.1f} ms; idle server: median "
          f"{statistics.median(idle) * 1000:.1f} ms, max {max(idle) * 1000:.1f} ms")
    if failed:
        raise SystemExit(f"{len(failed)} clients did not finish: {failed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4, help="the server's --workers (jobs per model at once)")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = pixelcnn.load(MODEL)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"server --workers {args.workers}")
    proc, base = start_server(args.workers)
    try:
        single_client(base, model, args.repeats)
        completion(base, model, args.repeats)
        many_clients(base, args.clients, args.repeats * 4)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
