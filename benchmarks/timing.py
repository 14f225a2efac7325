"""Timing loops shared by the benchmark scripts (run them from the repository root)."""

from __future__ import annotations

import time

import torch


def train_seconds(model, x: torch.Tensor, steps: int, opt: torch.optim.Optimizer | None = None) -> tuple[float, torch.Tensor]:
    """Seconds for ``steps`` Adam steps on the mean NLL of batch x, and the last loss (nats per image)."""
    opt = opt or torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        loss = model.nll(x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start, loss.detach()


def train_images_per_s(model, x: torch.Tensor, steps: int) -> float:
    seconds, _ = train_seconds(model, x, steps)
    return steps * x.shape[0] / seconds


@torch.no_grad()
def eval_images_per_s(model, x: torch.Tensor, steps: int) -> float:
    model.eval()
    start = time.perf_counter()
    for _ in range(steps):
        model.log_prob(x)
    return steps * x.shape[0] / (time.perf_counter() - start)
