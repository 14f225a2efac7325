"""The codec's compiled kernels (pixelcnn.coding.fused, _kernels.c) against the reference rules: the same bits.

Every compiled rule is compared with its reference (ExactArithmetic(compiled=False)) on generated operands, bit for
bit (a zero's sign aside, :func:`same_bits`): values from subnormal to overflow, signed zeros, inf and NaN, strided
and broadcast operands, row and column counts on both sides of every tile, panel and chunk size of the product, on
one thread and split over three, with every variant of the product this CPU runs (fused.isas). The fused Gated
PixelCNN column and row starts are compared, log-probability by log-probability, with the reference stepper over
every branch of the family's configs (pairwise), at odd sizes, with weights far from their initial values. Files:
every family's bytes with and without the kernels, and the committed files of earlier releases encoded again to the
same payload.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pixelcnn
from generated import build, case_id, cases
from pixelcnn.coding import codec, container, fused, quantize
from pixelcnn.coding.arithmetic import exact_arithmetic, exact_model
from pixelcnn.coding.exact import ExactArithmetic
from pixelcnn.errors import CompressionError, ConfigError
from pixelcnn.models.gated_pixelcnn import CachedGatedPixelCNN
from pixelcnn.sampling import make_stepper

CODEC_FILES = Path(__file__).parent / "data" / "codec"
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes and bit patterns, NaN matching NaN whatever its payload and a zero matching a zero of either sign:
    the sign of an exact zero sum is the summation order's (the BLAS's too), and no rule after a product reads it
    (a sum, a table, a comparison or a product gives the same value for either)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    nan = torch.isnan(a)
    if not torch.equal(nan, torch.isnan(b)):
        return False
    a, b = a.masked_fill(nan, 0.0) + 0.0, b.masked_fill(nan, 0.0) + 0.0            # -0.0 + 0.0 is +0.0
    return torch.equal(a.view(torch.int64), b.view(torch.int64))


def both(fn, *args):
    """fn(*args) under the compiled rules and under the reference rules."""
    with torch.no_grad():
        with ExactArithmetic(compiled=True):
            fast = fn(*args)
        with ExactArithmetic(compiled=False):
            slow = fn(*args)
    return fast, slow


def test_the_kernels_are_built_and_used():
    """The package's install compiles them (pyproject.toml); a failed build would leave every comparison below
    comparing the reference with itself."""
    assert fused.available(), ("pixelcnn.coding._kernels is not built, or stale (its VERSION is not fused.py's): "
                               "pip install -e . (make install) builds it, with a C compiler")
    assert ExactArithmetic().rules["addmm"].func is fused.addmm
    assert ExactArithmetic(compiled=False).rules["addmm"].func is not fused.addmm


def test_the_switches_turn_the_kernels_off(monkeypatch):
    with fused.reference_only():
        assert not fused.available()
    assert fused.available()
    monkeypatch.setenv(fused.ENV_VAR, "0")
    assert not fused.available()
    monkeypatch.setenv(fused.ENV_VAR, "off")
    assert not fused.available()
    monkeypatch.setenv(fused.ENV_VAR, "1")
    assert fused.available()


@pytest.mark.parametrize("value", ["2", "maybe", "-1", "0.0"])
def test_a_switch_that_says_neither_is_refused_in_one_line(value, monkeypatch):
    monkeypatch.setenv(fused.ENV_VAR, value)
    with pytest.raises(ConfigError, match=f"expected {fused.ENV_VAR} to be 1 .* or 0 .*, got '{value}'"):
        fused.available()


# ----- the rules -----------------------------------------------------------------------------------------------

EDGES = [0.0, -0.0, 5e-324, -2.2e-308, 1e-300, 1.0, -1.0, 0.5, 31.999, 32.0, -32.0, 33.0, -708.0, -708.5, 709.0,
         709.5, 709.6, 1e300, -1e300, math.inf, -math.inf, math.nan]
values = st.one_of(st.sampled_from(EDGES), st.floats(-40, 40), st.floats(allow_nan=True, allow_infinity=True),
                   st.floats(-1.2, 1.2))


@SETTINGS
@given(data=st.lists(values, min_size=1, max_size=40), rows=st.integers(1, 3),
       fn=st.sampled_from(["sigmoid", "tanh", "exp", "expm1", "elu", "glu", "log_softmax", "softmax"]),
       threads=st.sampled_from([1, 3]))
def test_elementwise_and_softmax_rules_give_the_reference_bits(data, rows, fn, threads):
    cols = 2 * len(data)
    x = torch.tensor(data * (2 * rows), dtype=torch.float64).view(rows, cols)
    x = x[:, ::2] if fn != "glu" else x                                         # a strided operand too
    call = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "exp": torch.exp, "expm1": torch.expm1, "elu": F.elu,
            "glu": lambda t: F.glu(t, -1), "log_softmax": lambda t: F.log_softmax(t, -1),
            "softmax": lambda t: torch.softmax(t, -1)}[fn]
    with split_over(threads):                                                   # softmax rows split over threads
        fast, slow = both(call, x)
    assert same_bits(fast, slow), (fn, x, fast, slow)


scales = st.sampled_from([1.0, 1e-200, 1e200, 2.0**-1030, 3.0])


@contextlib.contextmanager
def split_over(threads: int):
    """Inside, torch has ``threads`` threads and the kernels split every call with two rows or more over them."""
    before, work = torch.get_num_threads(), fused.SPLIT_WORK
    torch.set_num_threads(threads)
    fused.SPLIT_WORK = 1
    try:
        yield
    finally:
        fused.SPLIT_WORK = work
        torch.set_num_threads(before)


def test_the_product_variants_are_those_the_cpu_runs_and_one_it_lacks_is_refused_in_one_line():
    names = fused.isas()
    assert names and names[-1] in ("sse2", "baseline") and set(names) <= {"avx512", "avx2", "sse2", "baseline"}
    assert fused._kernels.isa() == names[0]
    with fused.product_isa(names[-1]):
        assert fused._kernels.isa() == names[-1]
    assert fused._kernels.isa() == names[0]
    with pytest.raises(ConfigError, match=r"expected one of the product variants this CPU runs .*, got 'avx1024'"), \
            fused.product_isa("avx1024"):
        pass


# Rows and columns on both sides of the product's tiles (8, 6, 4, 2, 1 rows; 16, 8, 4 columns), of its chunks of 48
# rows, and of the direct path of fewer than 3 rows (32, 16, 8 columns at a time).
@pytest.mark.parametrize("isa", fused.isas())
@SETTINGS
@given(rows=st.sampled_from([1, 2, 3, 5, 7, 8, 9, 13, 20, 47, 48, 49, 100]), k=st.integers(1, 40),
       n=st.integers(1, 40), bias=st.sampled_from(["none", "vector", "rows", "one row", "expanded"]), scale=scales,
       strided=st.booleans(), zeros=st.booleans(), seed=st.integers(0, 2**16),
       op=st.sampled_from(["addmm", "mm", "matmul", "linear"]), threads=st.sampled_from([1, 3]))
def test_linear_rules_give_the_reference_bits(isa, rows, k, n, bias, scale, strided, zeros, seed, op, threads):
    with fused.product_isa(isa), split_over(threads):
        linear_rule_against_the_reference(rows, k, n, bias, scale, strided, zeros, seed, op)


def linear_rule_against_the_reference(rows, k, n, bias, scale, strided, zeros, seed, op) -> None:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(rows, 2 * k if strided else k, generator=g, dtype=torch.float64) * scale
    a = a[:, ::2] if strided else a
    if zeros:
        a[0] = 0.0                                                              # a row with no nonzero value
    w = torch.randn(k, n, generator=g, dtype=torch.float64)
    c = {"none": None, "vector": torch.randn(n, generator=g, dtype=torch.float64),
         "rows": torch.randn(rows, n, generator=g, dtype=torch.float64),
         "one row": torch.randn(1, n, generator=g, dtype=torch.float64),
         "expanded": torch.randn(n, generator=g, dtype=torch.float64).expand(rows, n)}[bias]
    if op == "addmm":
        c = torch.zeros(n, dtype=torch.float64) if c is None else c
        fast, slow = both(torch.addmm, c, a, w)
    elif op == "linear":
        fast, slow = both(F.linear, a, w.t(), None if c is None or c.dim() == 2 else c)
    else:
        fast, slow = both(torch.mm if op == "mm" else torch.matmul, a, w)
    assert same_bits(fast, slow)


def test_a_weight_seen_again_is_rounded_once_and_gives_the_same_bits():
    w = torch.randn(30, 12, dtype=torch.float64)
    a = torch.randn(9, 30, dtype=torch.float64)
    with torch.no_grad(), ExactArithmetic(compiled=True):
        first, again = a @ w, a @ w                                             # the second read from the cache
    with torch.no_grad(), ExactArithmetic(compiled=False):
        reference = a @ w
    assert same_bits(first, reference) and same_bits(again, reference)


@SETTINGS
@given(rows=st.integers(1, 6), levels=st.sampled_from([2, 5, 17, 256]),
       spread=st.sampled_from([0.0, 0.1, 10.0, 800.0]), seed=st.integers(0, 2**16), minus_inf=st.booleans(),
       threads=st.sampled_from([1, 3]))
def test_quantized_weights_are_the_reference_integers(rows, levels, spread, seed, minus_inf, threads):
    """Spread 0: a few distinct values, so that the most likely symbol is tied (the first one takes the excess)."""
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(rows, levels, generator=g, dtype=torch.float64) * spread if spread else \
        torch.randint(0, 3, (rows, levels), generator=g).double()
    if minus_inf:
        log_probs[:, 0] = -math.inf
    with split_over(threads):
        fast = fused.quantized_weights(log_probs)
    with fused.reference_only():
        slow = fused.quantized_weights(log_probs)
    assert np.array_equal(fast, slow)
    assert np.array_equal(slow, quantize.quantized_weights(log_probs, fused.elementary.softmax))


def test_quantized_weights_refuse_nan_as_the_reference_does():
    log_probs = torch.zeros(2, 4, dtype=torch.float64)
    log_probs[1, 2] = math.nan
    with pytest.raises(CompressionError, match="non-finite"):
        fused.quantized_weights(log_probs)


# ----- the fused Gated PixelCNN column ----------------------------------------------------------------------------

GATED = cases("gated_pixelcnn")


# One thread; more threads: each step's images split in two (9 over 2 threads) and unevenly in three (13 over 3),
# every row start's rows too; the other variants of the product once each.
BEST = (fused.isas() or ["not built"])[0]
SPLITS = [(BEST, 2, 1, 1), (BEST, 9, 1, 1), (BEST, 9, 2, 2), (BEST, 13, 3, 3)]
SPLITS += [(isa, 9, 2, 2) for isa in fused.isas()[1:]]


@pytest.mark.parametrize("isa,batch,threads,parts", SPLITS)
@pytest.mark.parametrize("case", GATED, ids=case_id)
def test_the_fused_gated_column_gives_the_reference_bits(case, isa, batch, threads, parts):
    """Teacher-forced, every sub-pixel's log-probabilities of the fused stepper and of the reference stepper."""
    with fused.product_isa(isa), split_over(threads):
        fused_column_against_the_reference(case, batch)
        assert fused._threads(batch) == parts                             # the images were split in that many


def test_threads_give_the_bytes_of_one_in_this_process_and_in_a_forked_child():
    """The kernels' worker threads are started on first use and kept; a child forked after that has none and starts
    its own (or it would wait on workers that do not exist); both write the bytes of one thread."""
    import multiprocessing

    model = pixelcnn.create("gated_pixelcnn", image_shape=(1, 5, 4), levels=4, hidden=8, layers=2, output_hidden=8)
    x = torch.randint(0, 4, (13, 1, 5, 4), generator=torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = pixelcnn.compress(model, x)
        torch.set_num_threads(3)
        assert pixelcnn.compress(model, x) == one
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=lambda: queue.put(pixelcnn.compress(model, x)))
        child.start()
        child.join(60)
        if child.is_alive():
            child.kill()
        assert child.exitcode == 0, "the forked child did not finish coding"
        assert queue.get(timeout=10) == one
    finally:
        torch.set_num_threads(before)


def fused_column_against_the_reference(case, batch: int) -> None:
    model, labels, cond_image = build("gated_pixelcnn", case, batch, seed=3, scale=3.0)
    model = exact_model(model)
    x = torch.randint(0, model.levels, (batch, *model.image_shape), generator=torch.Generator().manual_seed(4))
    known = torch.rand(x.shape, generator=torch.Generator().manual_seed(5)) < 0.5
    start = torch.zeros_like(x)
    with torch.no_grad():                       # outside the exact rules: a conditioning image's upsampling has none
        cond = model.condition(labels, cond_image, batch, x, known) if model.config.inpainting else \
            model.condition(labels, cond_image, batch)
    with exact_arithmetic(model):
        reference, compiled = make_stepper(model, start, cond, "cached"), make_stepper(model, start, cond, "cached")
        fused.accelerate(compiled)
        assert isinstance(compiled, CachedGatedPixelCNN) and compiled.kernel is not None
        for h, w in reference.order:
            for c in range(model.image_shape[0]):
                fast, slow = compiled.log_probs(c, h, w), reference.log_probs(c, h, w)
                assert same_bits(fast, slow), (h, w, c)
                compiled.set(c, h, w, x[:, c, h, w])
                reference.set(c, h, w, x[:, c, h, w])


# ----- files ---------------------------------------------------------------------------------------------------

FAMILIES = sorted(pixelcnn.available_models())


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_writes_the_same_bytes_with_and_without_the_kernels(name):
    case = next(c for c in cases(name) if c["cond_shape"] is None and c["channels"] == 3) | {"size": (4, 5)}
    model, labels, _ = build(name, case, 9, seed=6, scale=2.0)
    images = torch.randint(0, model.levels, (9, *model.image_shape), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        fast = pixelcnn.compress(model, images, labels)
        with fused.reference_only():
            slow = pixelcnn.compress(model, images, labels)
    assert fast == slow
    assert torch.equal(pixelcnn.decompress(model, fast).images, images)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.name for p in CODEC_FILES.iterdir()))
def test_the_files_of_earlier_releases_are_encoded_again_to_the_same_payload(name):
    """Encoding the same images with the same model writes the streams of the committed files, which the reference
    rules wrote (tests/data/make_codec_files.py)."""
    folder = CODEC_FILES / name
    source = json.loads((folder / "source.json").read_text())
    model = pixelcnn.load(folder / source["model"] if (folder / source["model"]).is_dir() else source["model"])
    for file in sorted(folder.glob("images*.pxc")):
        data = file.read_bytes()
        header, streams = container.unpack(data)
        decoded = codec.decode(model, data)
        again = pixelcnn.compress(model, decoded.images, decoded.labels, chunk_size=header.chunk_size,
                                  method=header.method, order=header.order or None, metadata=header.metadata,
                                  version=header.version)
        _, again_streams = container.unpack(again)
        assert len(again_streams) == len(streams)
        assert all(np.array_equal(a, b) for a, b in zip(again_streams, streams)), file.name
