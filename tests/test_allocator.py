"""Keeping freed memory (pixelcnn/allocator.py): a freed feature map stays mapped for reuse instead of going back
to the kernel, to be faulted in again at the next step."""

import platform
import subprocess
import sys

import pytest

# What stays resident after a 64 MiB map is freed: whether glibc kept its pages or unmapped them. Resident
# pages, unlike page-fault counts, do not depend on transparent huge pages or on what else the machine runs.
PROBE = """
import os, sys, torch
from pixelcnn import allocator
applied = allocator.keep_freed_memory(sys.argv[1] == "1")
def resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
def given_back_when_a_64_mib_map_is_freed():
    t = torch.empty(16 * 2**20)                    # 64 MiB of float32, written once
    t.fill_(1.0)
    in_use = resident_mib()
    del t
    return in_use - resident_mib()
given_back_when_a_64_mib_map_is_freed()
import pixelcnn
pixelcnn.create("gated_pixelcnn", hidden=8, layers=1)    # building a model keeps an earlier choice
print(applied, given_back_when_a_64_mib_map_is_freed())
"""

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="the allocator setting is glibc's; elsewhere it does nothing")


def given_back_mib(keep: bool) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, "1" if keep else "0"], capture_output=True, text=True, check=True)
    applied, given_back = out.stdout.split()
    return applied, float(given_back)


@pytest.mark.slow
@glibc
def test_kept_memory_stays_mapped_and_glibcs_defaults_give_it_back():
    applied, given_back = given_back_mib(True)
    assert applied == "True" and given_back < 16                  # the 64 MiB stay resident for the next step
    applied, given_back = given_back_mib(False)
    assert applied == "True" and given_back > 48                  # unmapped at free


def test_building_a_model_keeps_freed_memory_unless_a_choice_was_made(monkeypatch):
    from pixelcnn import allocator

    calls = []
    monkeypatch.setattr(allocator, "_decided", [])
    monkeypatch.setattr(allocator, "_applied", [])
    monkeypatch.setattr(allocator, "_mallopt", lambda: lambda param, value: calls.append((param, value)) or 1)
    assert allocator.keep_freed_memory(False) is True and calls == []   # before anything was applied: untouched
    allocator.default()                                           # a caller's choice is not overridden by a model
    assert calls == []
    allocator._decided.clear()
    allocator.default()                                           # nothing chosen: keep
    assert calls == list(allocator.KEEP.items())
    calls.clear()
    assert allocator.keep_freed_memory(False) is True             # applied before: mmap back on
    assert calls == list(allocator.RETURN.items())
