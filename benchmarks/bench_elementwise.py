"""The element-wise pieces of a Gated PixelCNN layer on CPU, each against the plain PyTorch it replaces.

On a channels-last (B, 2n, H, W) map the two channel halves of a gate are not contiguous. Timed,
best of ``--repeats``, at ``--batch`` images, 64 channels, 28x28 (the matched configuration of
bench_vs_plain.py):

1. tanh of one half against tanh of a contiguous map of the same size, against sigmoid, and
   against ``layers.map_tanh`` (2 sigmoid(2x) - 1);
2. the plain gate tanh(a) * sigmoid(b) against ``layers.gate(x, overwrite=True)``, the
   evaluation path;
3. the categorical log-likelihood of 256 levels: log_softmax and gather against cross-entropy;
4. the backward pass of a 64 -> 64 1x1 convolution: oneDNN's weight and bias gradients against
   its weight gradient alone plus a plain sum for the bias (``layers.conv2d``).

    OMP_NUM_THREADS=1 python benchmarks/bench_elementwise.py [--repeats 30] [--batch 32]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from pixelcnn import allocator
from pixelcnn.models.layers import channels_last, gate, map_tanh


def best_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def bias_gradient_rows(n: int, r: int) -> dict[str, float]:
    """The backward pass of a 64 -> 64 1x1 convolution of a channels-last (n, 64, 28, 28) map."""
    x = torch.randn(n, 64, 28, 28).contiguous(memory_format=torch.channels_last)
    w = channels_last(torch.randn(64, 64, 1, 1))
    grad = torch.randn(n, 64, 28, 28).contiguous(memory_format=torch.channels_last)

    def onednn(mask):
        return torch.ops.aten.convolution_backward(grad, x, w, [64], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask)

    return {
        "1x1 backward, weight + bias gradients by oneDNN": best_ms(lambda: onednn([False, True, True]), r),
        "1x1 backward, weight gradient by oneDNN": best_ms(lambda: onednn([False, True, False]), r),
        "1x1 backward, bias gradient by oneDNN": best_ms(lambda: onednn([False, False, True]), r),
        "1x1 backward, bias gradient as grad.sum((0, 2, 3))": best_ms(lambda: grad.sum((0, 2, 3)), r),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    allocator.default()                                             # as once a model is built
    torch.manual_seed(0)
    n = args.batch
    pre = torch.randn(n, 128, 28, 28).contiguous(memory_format=torch.channels_last)     # (B, 2n, H, W)
    a, b = pre.chunk(2, dim=1)
    dense = torch.randn(n, 64, 28, 28)
    logits = torch.randn(n, 256, 28, 28).contiguous(memory_format=torch.channels_last)
    x = torch.randint(0, 256, (n, 1, 28, 28))
    levels_last = logits.permute(0, 2, 3, 1).reshape(n, 28, 28, 1, 256)
    r = args.repeats
    with torch.no_grad():
        rows = {
            "tanh, one channel half of a channels-last map": best_ms(lambda: torch.tanh(a), r),
            "tanh, a contiguous map of the same size": best_ms(lambda: torch.tanh(dense), r),
            "sigmoid, one channel half": best_ms(lambda: torch.sigmoid(a), r),
            "layers.map_tanh, one channel half": best_ms(lambda: map_tanh(a), r),
            "gate, plain tanh(a) * sigmoid(b)": best_ms(lambda: torch.tanh(a) * torch.sigmoid(b), r),
            "gate, layers.gate(overwrite=True) on a copy": best_ms(lambda: gate(pre.clone(), overwrite=True), r),
            "copy of the pre-activation (included above)": best_ms(lambda: pre.clone(), r),
            "log-likelihood, log_softmax + gather": best_ms(lambda: F.log_softmax(levels_last, -1).gather(
                -1, x.permute(0, 2, 3, 1).unsqueeze(-1)).flatten(1).sum(1), r),
            "log-likelihood, cross_entropy": best_ms(lambda: -F.cross_entropy(
                levels_last.reshape(-1, 256), x.permute(0, 2, 3, 1).reshape(-1), reduction="none").view(n, -1).sum(1), r),
        }
        rows.update(bias_gradient_rows(n, r))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, best of {r}")
    for name, ms in rows.items():
        print(f"{name:<48} {ms:7.3f} ms")


if __name__ == "__main__":
    main()
