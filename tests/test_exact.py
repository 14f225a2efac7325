"""The codec's exact arithmetic: every function deterministic by construction, close to float64, and
files that decode under the kernels of other CPUs (simulated in a subprocess), for every generated case."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import pixelcnn
from generated import build, cases
from pixelcnn.coding import blocks, codec, exact

ROOT = Path(__file__).resolve().parents[1]
CODEC_FILES = ROOT / "tests" / "data" / "codec"

# Accuracy each formula is built for (module docstring of pixelcnn.coding.exact), checked against float64.
FUNCTIONS = [  # name, exact, reference, relative bound, absolute bound
    ("exp", exact.exp, torch.exp, 1e-8, 0.0),
    ("sigmoid", exact.sigmoid, torch.sigmoid, 0.0, 2e-8),
    ("tanh", exact.tanh, torch.tanh, 0.0, 4e-8),
    ("elu", exact.elu, F.elu, 1.5e-8, 1e-8),
    ("softplus", exact.softplus, F.softplus, 1e-8, 1e-8),
    ("logsigmoid", exact.logsigmoid, F.logsigmoid, 1e-8, 1e-8),
    ("expm1", exact.expm1, torch.expm1, 1.5e-8, 0.0),
]


def wide_values(seed: int = 0) -> torch.Tensor:
    """Values over the range networks produce and past it, with the edges of every table."""
    g = torch.Generator().manual_seed(seed)
    edges = torch.tensor([0.0, -0.0, 1e-300, -1e-300, 2.0**-30, 1 / 64, -1 / 64, 31.999, 32.0, 32.001, -32.0, 40.0,
                          -40.0, 700.0, -700.0, 708.4, -708.0, 709.4, 2.0**-12, 1 - 2.0**-53], dtype=torch.float64)
    return torch.cat([torch.randn(20000, generator=g, dtype=torch.float64) * 8,
                      torch.rand(2000, generator=g, dtype=torch.float64) * 1400 - 700, edges])


@pytest.mark.parametrize("name,fn,reference,rel,abs_", FUNCTIONS, ids=[f[0] for f in FUNCTIONS])
def test_functions_are_within_their_bounds_of_float64(name, fn, reference, rel, abs_):
    x = wide_values()
    got, want = fn(x), reference(x)
    finite = torch.isfinite(want)
    assert torch.equal(torch.isfinite(got), finite)
    err = (got - want)[finite].abs()
    bound = (want[finite].abs() * rel + abs_) * (1 + 1e-9) + 1e-300
    assert (err <= bound).all(), f"{name}: worst error {err.max().item():.3g} at {x[finite][(err - bound).argmax()].item()}"


def test_log_is_within_1e_14_and_handles_zero_and_infinity():
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.rand(20000, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(-300, 300, (20000,), generator=g).double(),
                   torch.tensor([1.0, 2.0, 0.5, 1 - 2.0**-53, 1 + 2.0**-52], dtype=torch.float64)])
    err = (exact.log(x) - torch.log(x)).abs()
    assert (err <= 1e-14 * torch.log(x).abs().clamp(min=1)).all()
    special = exact.log(torch.tensor([0.0, math.inf, -1.0], dtype=torch.float64))
    assert special[0] == -math.inf and special[1] == math.inf and torch.isnan(special[2])


def test_softmax_family_matches_float64_and_keeps_minus_infinity():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(64, 256, generator=g, dtype=torch.float64) * 6
    z[0, :10] = -math.inf
    assert torch.allclose(exact.log_softmax(z, 1), torch.log_softmax(z, 1), atol=1e-8, rtol=0)
    assert torch.allclose(exact.softmax(z, 1), torch.softmax(z, 1), atol=0, rtol=2e-8)
    assert torch.allclose(exact.logsumexp(z, 1), torch.logsumexp(z, 1), atol=1e-8, rtol=0)
    assert (exact.softmax(z, 1)[0, :10] == 0).all() and (exact.log_softmax(z, 1)[0, :10] == -math.inf).all()


def integer_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The block-floating-point product computed in int64 (exact integers), scaled: what exact.matmul must give."""
    bits = blocks.split_bits(a.shape[-1])
    aq, sa = exact.to_blocks(a, (1,), bits)
    bq, sb = exact.to_blocks(b, (0,), bits)
    return (aq.long() @ bq.long()).double() * sa * sb


def test_matmul_equals_integer_arithmetic_in_any_order_of_summation():
    """The same product through int64, with its sum permuted, and as a 1x1 convolution:
    bit for bit. The plain float64 product of the same operands is not order-independent (the control)."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(37, 1153, generator=g, dtype=torch.float64) * torch.logspace(-3, 3, 1153, dtype=torch.float64)
    b = torch.randn(1153, 29, generator=g, dtype=torch.float64)
    want = exact.matmul(a, b)
    assert torch.equal(want, integer_matmul(a, b))
    perm = torch.randperm(1153, generator=g)
    assert torch.equal(exact.matmul(a[:, perm], b[perm]), want)
    assert not torch.equal(a[:, perm] @ b[perm], a @ b) or not torch.equal(a.flip(1) @ b.flip(0), a @ b)
    as_conv = exact.conv2d(a.view(37, 1153, 1, 1), b.t().reshape(29, 1153, 1, 1)).view(37, 29)
    assert torch.equal(as_conv, want)
    assert torch.allclose(want, a @ b, rtol=1e-5, atol=1e-5 * (a.abs() @ b.abs()).max().item())


def test_convolution_is_the_same_as_its_unfolded_matmul_bit_for_bit():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 5, 7, 6, generator=g, dtype=torch.float64) * 3
    w = torch.randn(4, 5, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    got = exact.conv2d(x, w, bias, 1, 1)
    xq, xs = exact.to_blocks(x, (1, 2, 3), blocks.split_bits(45))
    wq, ws = exact.to_blocks(w, (1, 2, 3), blocks.split_bits(45))
    cols = F.unfold(xq, 3, padding=1).long()                                   # (B, 45, H W)
    integer = (wq.view(4, 45).long() @ cols).double().view(3, 4, 7, 6)
    assert torch.equal(got, integer * xs * ws.view(1, 4, 1, 1) + bias.view(-1, 1, 1))


def test_sums_are_exact_in_any_order():
    g = torch.Generator().manual_seed(5)
    t = torch.randn(6, 5000, generator=g, dtype=torch.float64) * torch.logspace(-8, 8, 5000, dtype=torch.float64)
    perm = torch.randperm(5000, generator=g)
    assert torch.equal(exact.exact_sum(t, 1), exact.exact_sum(t[:, perm], 1))
    assert torch.equal(exact.exact_sum(t, (0, 1)), exact.exact_sum(t.flip(0, 1), (0, 1)))


def test_a_torch_function_without_a_rule_is_refused():
    x = torch.randn(4, dtype=torch.float64)
    with exact.ExactArithmetic(), pytest.raises(exact.UnsupportedOperation, match="no rule for torch function 'cos'"):
        torch.cos(x)
    with exact.ExactArithmetic(), pytest.raises(exact.UnsupportedOperation, match="rounding_mode"):
        torch.div(x, 3.0, rounding_mode="floor")


def test_the_mode_rewrites_in_place_and_out_forms():
    x = torch.randn(5, 7, dtype=torch.float64)
    y, out = x.clone(), torch.empty(5, 7, dtype=torch.float64)
    with exact.ExactArithmetic():
        y.tanh_()
        torch.sigmoid(x, out=out)
        z = F.elu(x.clone(), inplace=True)
        s = x / 3.0
    assert torch.equal(y, exact.tanh(x)) and torch.equal(out, exact.sigmoid(x)) and torch.equal(z, exact.elu(x))
    assert torch.equal(s, x * (1.0 / 3.0))


# ----- files across machines ------------------------------------------------------------------------


def codable_cases():
    """Every generated case of every family that can compress on its own (no conditioning image)."""
    for name in pixelcnn.available_models():
        for case in cases(name):
            if case["cond_shape"] is None:
                yield name, case


OTHER_MACHINES = {  # each takes every other case, and all the committed files
    "scalar kernels, oneDNN at AVX2": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    # and the reference rules of the exact arithmetic (pixelcnn.coding.fused off) where this process compiles them
    "AVX2 kernels, reference rules": {"ATEN_CPU_CAPABILITY": "avx2", "PIXELCNN_EXACT_KERNELS": "0"},
}
# One thread each: beside the suite's other worker, two would fight for the cores. That the caller's thread
# count does not change a byte is tested in this process (test_coding.py, both ways round, and below).


# The whole-network method pays a pass of the network per sub-pixel, and its code paths are the same at any size:
# it codes every other case of at most this many sub-pixels, the family's stepper all the others.
NAIVE_SUBPIXELS = 36


def shares() -> list[list[tuple[int, str, dict, str]]]:
    """Each other machine's cases: (index, family, case, method). The machines alternate over the codable
    cases; the methods alternate over each machine's small cases, so that every family codes with both."""
    split = [[] for _ in OTHER_MACHINES]
    small = [0 for _ in OTHER_MACHINES]
    for i, (name, case) in enumerate(codable_cases()):
        part = i % len(split)
        method = "cached"
        if case["channels"] * math.prod(case["size"]) <= NAIVE_SUBPIXELS:
            method = ("naive", "cached")[small[part] % 2]
            small[part] += 1
        split[part].append((i, name, case, method))
    return split


def write_cases(folder: Path, share) -> list[Path]:
    """A share's cases: each a checkpoint far from init, 2 images (and labels), compressed with its method."""
    written = []
    for i, name, case, method in share:
        model, labels, _ = build(name, case, batch=2, seed=i, scale=1.0)
        g = torch.Generator().manual_seed(i)
        images = torch.randint(0, model.levels, (2, *model.image_shape), generator=g)
        sub = folder / f"{name}-{i}"
        model.save_pretrained(sub / "model")
        chunk = 1 + i // 2 % 2
        torch.save({"images": images, "labels": labels, "chunk_size": chunk}, sub / "images.pt")
        (sub / f"here-{method}.pxc").write_bytes(pixelcnn.compress(model, images, labels, method=method, chunk_size=chunk))
        written.append(sub)
    return written


@pytest.mark.slow
def test_the_other_machines_share_every_family_with_both_methods():
    cases_seen = [(name, method) for share in shares() for _, name, _, method in share]
    assert len(cases_seen) == len(list(codable_cases()))
    assert set(cases_seen) == {(name, m) for name in pixelcnn.available_models() for m in ("naive", "cached")}


@pytest.mark.slow
@pytest.mark.parametrize("machine", OTHER_MACHINES)
def test_files_decode_and_encode_identically_under_the_kernels_of_other_cpus(tmp_path, machine):
    """Another process with other kernels decodes this share's files (and the committed ones) and compresses
    the same images to the same bytes: every family, both methods, every generated configuration (odd and
    non-square sizes, colour, labels, weights far from init) on one of the two."""
    subs = write_cases(tmp_path, shares()[list(OTHER_MACHINES).index(machine)])
    env = {**os.environ, **OTHER_MACHINES[machine], "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "other_machine.py"), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    for sub in subs:
        for here in sub.glob("here-*.pxc"):
            there = sub / here.name.replace("here-", "there-")
            assert there.read_bytes() == here.read_bytes(), sub.name
    assert done.stdout.count("decoded") == len(subs) + len(list(CODEC_FILES.glob("*/images*.pxc")))


def test_coding_does_not_depend_on_threads_memory_format_or_dtype():
    model, labels, _ = build("gated_pixelcnn", next(c for c in cases("gated_pixelcnn") if c["cond_shape"] is None),
                             batch=3, seed=7)
    images = torch.randint(0, model.levels, (3, *model.image_shape), generator=torch.Generator().manual_seed(7))
    reference = pixelcnn.compress(model, images, labels)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert pixelcnn.compress(model.float(), images, labels) == reference
    finally:
        torch.set_num_threads(threads)
    channels_last = model.double().to(memory_format=torch.channels_last)
    assert pixelcnn.compress(channels_last, images.to(torch.uint8), labels) == reference


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_model_on_cuda_writes_the_cpus_bytes_and_reads_them():
    for name in pixelcnn.available_models():
        case = next(c for c in cases(name) if c["cond_shape"] is None)
        model, labels, _ = build(name, case, batch=3, seed=11)
        images = torch.randint(0, model.levels, (3, *model.image_shape), generator=torch.Generator().manual_seed(11))
        on_cpu = pixelcnn.compress(model, images, labels)
        on_cuda = pixelcnn.compress(model.cuda(), images, labels)
        assert on_cuda == on_cpu, name
        assert torch.equal(codec.decode(model.cuda(), on_cpu).images, images), name
