"""The process's CPU memory allocator: keep the memory of freed feature maps for the next step.

A training step or an evaluation batch on the CPU allocates and frees the same large feature maps
every time (64 x 128 x 28 x 28 floats are 26 MB; a batch's logits, 51 MB). glibc's malloc hands
blocks above its mmap threshold back to the kernel when they are freed and maps fresh pages at the
next allocation, which the kernel zeroes at their first touch: for the matched Gated PixelCNN at
batch 64 that was about 75,000 page faults and 0.13 s of system time per training step of 1.7 s
(benchmarks/bench_allocator.py, benchmarks/RESULTS.md). With mmap off for malloc and a trim
threshold of 2 GiB, freed blocks stay in the heap and are reused, as PyTorch's CUDA caching
allocator does on a GPU.

:func:`keep_freed_memory` is called when the first model is built (nothing changes before that),
once per process. It changes no result, only where memory comes from: the price is that memory
freed by PyTorch is kept by the process for reuse instead of going back to the operating system.
``keep_freed_memory(False)`` before the first model is built leaves glibc as it is; after, it
turns mmap back on with the largest thresholds glibc's own adaptive rule reaches (32 MiB, and
twice that for trimming): glibc cannot be put back into its adaptive state once told a value.
Elsewhere than glibc (macOS, musl) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
KEEP = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}                  # no mmap for malloc; trim above 2 GiB only
RETURN = {M_MMAP_MAX: 65536, M_MMAP_THRESHOLD: 32 * 2**20, M_TRIM_THRESHOLD: 64 * 2**20}   # adaptive rule's ceiling

_decided: list[bool] = []                                             # the choice made, once a call made one
_applied: list[bool] = []                                             # True once KEEP was given to glibc


def _mallopt():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None


def keep_freed_memory(keep: bool = True) -> bool:
    """Let glibc's malloc keep freed memory for reuse (``keep``), or not; True where glibc does as asked."""
    _decided[:] = [keep]
    mallopt = _mallopt()
    if mallopt is None:
        return False
    if not keep and not _applied:                                     # glibc untouched: leave it so
        return True
    ok = all(mallopt(param, value) == 1 for param, value in (KEEP if keep else RETURN).items())
    _applied[:] = [keep]
    log.debug("glibc malloc %s freed memory", "keeps" if keep else "returns")
    return ok


def default() -> None:
    """Keep freed memory unless a caller already chose (called when a model is built)."""
    if not _decided:
        keep_freed_memory(True)
