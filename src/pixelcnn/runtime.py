"""Where a run executes: the device, the processes under ``torchrun``, the arithmetic precision.

Training and evaluation both run on a :class:`Runtime`; under ``torchrun`` (WORLD_SIZE > 1) each process
holds its rank and the world size, and sums over processes go through :func:`all_reduce_sum`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from pixelcnn.errors import ConfigError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_CHOICES = ("auto", *PRECISIONS)                 # auto: see resolve_precision


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    expected = "a device: auto, cpu, cuda or cuda:N"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"expected {expected}, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for, but torch sees no CUDA device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"expected a CUDA device index below {torch.cuda.device_count()}, got {name!r}")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"expected {expected}, got {name!r}")
    return device


def setup_runtime(device: str) -> Runtime:
    """Pick the device and, under torchrun (WORLD_SIZE > 1), join the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = str(resolve_device(device))
    if world == 1:
        return Runtime(torch.device(device))
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Runtime(torch.device(device), dist.get_rank(), dist.get_world_size())


def leave_process_group() -> None:
    """Under torchrun, leave the process group :func:`setup_runtime` joined, once its collectives are done: a
    process that exits without it can abort in its exit (Gloo's threads still hold tensors while the
    interpreter is torn down: "terminate called without an active exception"). Elsewhere nothing to do."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively, as PyTorch reports it: a CUDA device with bf16, or a CPU
    with AVX512-BF16 or AMX tiles (elsewhere bf16 is emulated and slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 where the device has native bf16 (:func:`native_bf16`), else fp32; any other name as it is."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def autocast(runtime: Runtime, precision: str):
    """Mixed precision for a training step: ``precision`` as :func:`resolve_precision` resolved it. Likelihoods
    stay float32 inside it (``models.base.full_precision``); the loss is computed from float32 parameters."""
    dtype = PRECISIONS[resolve_precision(precision, runtime.device)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=runtime.device.type, dtype=dtype)


def all_reduce_sum(value: Tensor, runtime: Runtime) -> Tensor:
    """``value`` summed over the processes of ``runtime`` (itself when there is one)."""
    if runtime.world == 1:
        return value
    import torch.distributed as dist

    v = value.to(runtime.device)
    dist.all_reduce(v)
    return v.cpu()
