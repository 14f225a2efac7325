"""Is bf16 native here? One 3x3 convolution (64 -> 128 channels, 28x28, batch 32), forward and backward
of its sum, in fp32 and under CPU bf16 autocast; the second of two runs of each.

    OMP_NUM_THREADS=1 python benchmarks/bench_bf16_conv.py

Where the CPU has no native bf16 (no AVX512-BF16, no AMX) PyTorch emulates it and bf16 is slower.
"""

from __future__ import annotations

import time

import torch


def seconds(conv: torch.nn.Module, x: torch.Tensor, bf16: bool) -> float:
    for _ in range(2):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            conv(x).float().sum().backward()
        elapsed = time.perf_counter() - start
    return elapsed


def main() -> None:
    torch.manual_seed(0)
    conv, x = torch.nn.Conv2d(64, 128, 3, padding=1), torch.randn(32, 64, 28, 28)
    fp32, bf16 = seconds(conv, x, False), seconds(conv, x, True)
    native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    print(f"fp32 {fp32:.2f} s, bf16 autocast {bf16:.2f} s ({bf16 / fp32:.1f}x); native bf16 reported: {native}")


if __name__ == "__main__":
    main()
