"""Keeping freed memory (pixelcnn/allocator.py): a freed feature map's pages are reused, not faulted in again."""

import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
from pixelcnn import allocator
applied = allocator.keep_freed_memory(sys.argv[1] == "1")
def faults_of_a_fresh_64_mb_map():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(16 * 2**20)                    # 64 MiB of float32, written once
    t.fill_(1.0)
    del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_a_fresh_64_mb_map()
import pixelcnn
pixelcnn.create("gated_pixelcnn", hidden=8, layers=1)    # building a model keeps an earlier choice
print(applied, faults_of_a_fresh_64_mb_map())
"""

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="the allocator setting is glibc's; elsewhere it does nothing")


def second_allocation(keep: bool) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, "1" if keep else "0"], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@glibc
def test_kept_memory_is_reused_without_page_faults_and_glibcs_defaults_fault_it_in_again():
    applied, kept = second_allocation(True)
    assert applied == "True" and kept < 1000                      # 64 MiB are 16,384 pages of 4 KiB
    applied, default = second_allocation(False)
    assert applied == "True" and default > 10_000                 # unmapped at free, faulted in at first touch


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
