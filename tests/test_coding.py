"""Lossless compression: exact round trips, size close to -log2 p, every bad file refused."""

from __future__ import annotations

import copy
import dataclasses
import functools
import gzip
import json
import os
import struct
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import pixelcnn
import pixelcnn.data
from conftest import needs_mnist
from exact import randomise, tiny_model
from pixelcnn.cli import main as cli_main
from pixelcnn.coding import arithmetic, codec, container
from pixelcnn.coding.quantize import TOTAL, quantized_weights
from pixelcnn.errors import CompressionError, ConfigError

MODELS = pixelcnn.available_models()
SHAPES = [((1, 4, 5), 256), ((3, 3, 4), 2), ((1, 3, 3), 4)]


CODEC_HP = {"hidden": 12, "layers": 2, "output_hidden": 12}          # where a family has these fields


def model32(name, shape, levels, seed=0, **hp):
    """A small randomised float32 model of family ``name``."""
    fields = {f.name for f in dataclasses.fields(pixelcnn.models.get(name).config_class)}
    small = {k: v for k, v in CODEC_HP.items() if k in fields}
    return tiny_model(name, shape, levels, seed=seed, **{**small, **hp}).float()


def random_images(n, shape, levels, seed=0):
    return torch.randint(0, levels, (n, *shape), generator=torch.Generator().manual_seed(seed))


def methods_of(model):
    return ["naive"] + (["cached"] if codec.resolve_method(model, "auto") == "cached" else [])


@pytest.fixture(scope="module")
def small_file():
    """A small compressed file and what it holds, for the corruption tests."""
    model = model32("pixelcnn", (1, 3, 3), 4)
    x = random_images(3, (1, 3, 3), 4, seed=1)
    return model, x, pixelcnn.compress(model, x, chunk_size=2)


# ----- quantisation ---------------------------------------------------------------------------


def test_quantized_weights_sum_to_total_and_give_every_value_mass():
    logits = torch.tensor([[0.0, -1e4, 5.0, float("-inf")], [1.0, 1.0, 1.0, 1.0], [80.0, -80.0, 0.0, 3.0]])
    q = quantized_weights(torch.log_softmax(logits, dim=1))
    weights = q + 1
    assert np.all(q == np.floor(q)) and np.all(weights >= 1)
    assert np.all(weights.sum(1) == TOTAL)


def test_quantized_weights_refuse_nan():
    with pytest.raises(CompressionError, match="non-finite"):
        quantized_weights(torch.tensor([[float("nan"), 0.0]]))


# ----- round trips ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape,levels", SHAPES)
def test_round_trip_is_bit_exact_for_every_family(name, shape, levels):
    model = model32(name, shape, levels)
    x = random_images(3, shape, levels)                     # a whole chunk of 2 and a partial one
    for method in methods_of(model):
        data = pixelcnn.compress(model, x, chunk_size=2, method=method)
        y = pixelcnn.decompress(model, data).images
        assert y.dtype == torch.long and torch.equal(y, x)
        assert container.read_header(data).method == method


@pytest.mark.parametrize("n,chunk", [(0, None), (1, None), (2, 4), (5, 4), (8, 4), (7, 3), (6, 1)])
def test_round_trip_for_any_count_and_chunk_size(n, chunk):
    model = model32("gated_pixelcnn", (1, 3, 4), 16)
    x = random_images(n, (1, 3, 4), 16, seed=n)
    data = pixelcnn.compress(model, x, chunk_size=chunk)
    assert torch.equal(pixelcnn.decompress(model, data).images, x)


@pytest.mark.parametrize("encode_threads,decode_threads", [(1, 2), (2, 1)])
def test_thread_count_of_the_caller_does_not_matter(encode_threads, decode_threads):
    before = torch.get_num_threads()
    model = model32("gated_pixelcnn", (3, 4, 4), 256)
    x = random_images(5, (3, 4, 4), 256)
    try:
        torch.set_num_threads(decode_threads)
        other = pixelcnn.compress(model, x, chunk_size=3)
        torch.set_num_threads(encode_threads)
        data = pixelcnn.compress(model, x, chunk_size=3)
        assert data == other                                         # every probability was the same
        assert torch.get_num_threads() == encode_threads            # the caller's setting is restored
        torch.set_num_threads(decode_threads)
        assert torch.equal(pixelcnn.decompress(model, data).images, x)
        assert torch.get_num_threads() == decode_threads
    finally:
        torch.set_num_threads(before)


def test_a_float64_model_codes_like_its_float32_copy():
    """Coding runs on the float32 weights (those the fingerprint names): a float64 model gives the same
    bytes and is left as it was."""
    model64 = tiny_model("pixelcnn", (1, 4, 4), 8, **CODEC_HP)
    x = random_images(6, (1, 4, 4), 8)
    a = pixelcnn.compress(model64, x, chunk_size=4)
    b = pixelcnn.compress(copy.deepcopy(model64).float(), x.to(torch.uint8), chunk_size=4)
    assert a == b
    assert next(model64.parameters()).dtype == torch.float64
    assert torch.equal(pixelcnn.decompress(model64, b).images, x)


def test_training_mode_is_restored_and_eval_is_used():
    model = model32("pixelcnn", (1, 3, 3), 4).train()
    x = random_images(2, (1, 3, 3), 4)
    data = pixelcnn.compress(model, x)
    assert model.training
    assert torch.equal(pixelcnn.decompress(model, data).images, x) and model.training


@pytest.mark.parametrize("name", MODELS)
def test_conditional_model_round_trips_labels(name):
    model = model32(name, (1, 3, 3), 4, num_classes=3)
    x = random_images(5, (1, 3, 3), 4)
    labels = torch.tensor([2, 0, 1, 1, 2])
    images, out_labels = pixelcnn.decompress(model, pixelcnn.compress(model, x, labels, chunk_size=2))
    assert torch.equal(images, x) and torch.equal(out_labels, labels)


def test_decompress_returns_images_and_labels_for_every_model():
    """One return type: an unconditional model's file gives labels None, not a bare tensor."""
    model = model32("gated_pixelcnn", (1, 3, 3), 4)
    x = random_images(2, (1, 3, 3), 4)
    out = pixelcnn.decompress(model, pixelcnn.compress(model, x))
    images, labels = out
    assert isinstance(out, tuple) and torch.equal(images, x) and labels is None


@pytest.mark.slow
@needs_mnist
def test_real_mnist_images_round_trip():
    path = Path(os.environ["PIXELCNN_DATA"]) / "mnist" / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as f:
        raw = f.read(16 + 3 * 784)
    x = torch.from_numpy(np.frombuffer(raw, np.uint8, offset=16).copy()).view(3, 1, 28, 28)
    model = model32("gated_pixelcnn", (1, 28, 28), 256, hidden=8, layers=1, output_hidden=8)
    data = pixelcnn.compress(model, x, chunk_size=2)
    assert torch.equal(pixelcnn.decompress(model, data).images, x.long())


# ----- a group of pixels at a time -------------------------------------------------------------

# Grayscale and colour, categorical and Bernoulli outputs, on odd and non-square images.
GROUP_CASES = [((1, 7, 5), 256), ((3, 5, 7), 16), ((3, 3, 5), 2)]


def multiscale32(shape, levels, within_group, seed=0):
    """A small multiscale model with weights far from their initialisation."""
    model = model32("multiscale", shape, levels, seed=seed, hidden=8, layers=2, output_hidden=8, scales=2,
                    within_group=within_group)
    return randomise(model, seed + 100, scale=2.0)


def group_passes(monkeypatch) -> list:
    """A list that gets an entry each time a multiscale stepper computes a group's channel in one pass."""
    from pixelcnn.models.multiscale import MultiscaleStepper

    passes, real = [], MultiscaleStepper.group_log_probs

    def counted(self, c, group):
        passes.append((c, len(group)))
        return real(self, c, group)

    monkeypatch.setattr(MultiscaleStepper, "group_log_probs", counted)
    return passes


def coded_values(model, x, chunk, grouped, monkeypatch, version=3, method="auto"):
    """What ``compress`` handed the range coder: the values (symbols) and their integer distributions
    (weights) in the order the coder got them; and the file (data) and the group passes it took."""
    import constriction

    real, calls = constriction.stream.queue.RangeEncoder, []

    class Recording:
        def __init__(self):
            self.inner = real()

        def encode(self, symbols, family, weights=None):
            if weights is None:                                       # labels: none in these files
                return self.inner.encode(symbols, family)
            calls.append((np.array(symbols), np.array(weights)))
            return self.inner.encode(symbols, family, weights)

        def get_compressed(self):
            return self.inner.get_compressed()

    monkeypatch.setattr(constriction.stream.queue, "RangeEncoder", Recording)
    monkeypatch.setattr(codec, "encode_chunk", functools.partial(ENCODE_CHUNK, grouped=grouped))
    passes = group_passes(monkeypatch)
    data = pixelcnn.compress(model, x, chunk_size=chunk, version=version, method=method)
    monkeypatch.undo()
    return types.SimpleNamespace(symbols=np.concatenate([s for s, _ in calls]),
                                 weights=np.concatenate([w for _, w in calls]), data=data, passes=passes)


ENCODE_CHUNK = codec.encode_chunk


@pytest.mark.slow
@pytest.mark.parametrize("within_group", ["independent", "raster"])
@pytest.mark.parametrize("shape,levels", GROUP_CASES)
def test_a_group_at_a_time_codes_the_values_and_distributions_of_one_sub_pixel_at_a_time(shape, levels, within_group,
                                                                                        monkeypatch):
    """Where the stepper offers groups (within_group="independent") the encoder asks for a group's channel in
    one pass: in format 3 the range coder gets the same values in the same order with the same integer
    distributions as one sub-pixel at a time, so the bytes are the same (chunks of 3 images, the last one padded).
    "raster" within a group is autoregressive: no groups, one sub-pixel at a time."""
    model = multiscale32(shape, levels, within_group)
    x = random_images(5, shape, levels, seed=3)
    grouped = coded_values(model, x, 3, True, monkeypatch)
    single = coded_values(model, x, 3, False, monkeypatch)
    assert grouped.symbols.shape == (x.numel(),)                      # every sub-pixel once
    assert np.array_equal(grouped.symbols, single.symbols) and np.array_equal(grouped.weights, single.weights)
    assert grouped.data == single.data
    assert not single.passes and bool(grouped.passes) == (within_group == "independent")
    assert max((size for _, size in grouped.passes), default=0) >= (4 if within_group == "independent" else 0)


@pytest.mark.slow
@pytest.mark.parametrize("within_group", ["independent", "raster"])
@pytest.mark.parametrize("shape,levels", GROUP_CASES)
def test_a_group_at_a_time_decodes_the_stream_of_one_sub_pixel_at_a_time(shape, levels, within_group, monkeypatch):
    """Both decoding loops read the same format-3 file, with a padded chunk. Grayscale images with independent
    groups are decoded a group per pass; in colour a pixel's later channels need its earlier values, which the
    format-3 stream gives one pixel at a time, and "raster" groups are autoregressive: one sub-pixel at a time."""
    model = multiscale32(shape, levels, within_group, seed=1)
    x = random_images(3, shape, levels, seed=4)
    header, streams = container.unpack(pixelcnn.compress(model, x, chunk_size=4, version=3))
    coding = codec.EXACT.model(model)
    passes = group_passes(monkeypatch)
    with codec.EXACT.scope(coding):
        grouped = codec.decode_chunk(coding, streams[0], header, 3)[0]
        grouped_passes = len(passes)
        single = codec.decode_chunk(coding, streams[0], header, 3, grouped=False)[0]
    assert torch.equal(grouped, x) and torch.equal(single, x)
    assert (grouped_passes > 0) == (within_group == "independent" and shape[0] == 1)
    assert len(passes) == grouped_passes                               # grouped=False: no pass of a group


@pytest.mark.slow
@pytest.mark.parametrize("within_group", ["independent", "raster"])
@pytest.mark.parametrize("shape,levels", GROUP_CASES)
def test_format_4_decodes_a_pass_per_group_and_channel(shape, levels, within_group, monkeypatch):
    """Format 4 stores a group's values channel by channel, so grayscale and colour files alike decode bit for
    bit with one pass of the stepper per (group, channel) where it offers groups ("independent"; chunks of 2,
    the last one padded), and whatever ``grouped`` says: the stream's order leaves no other way."""
    model = multiscale32(shape, levels, within_group, seed=2)
    x = random_images(3, shape, levels, seed=5)
    data = pixelcnn.compress(model, x, chunk_size=2)
    header, streams = container.unpack(data)
    assert header.version == 4
    coding = codec.EXACT.model(model)
    with codec.EXACT.scope(coding):
        groups = codec._new_stepper(coding, 2, None, "cached").groups
    assert (groups is not None) == (within_group == "independent")
    passes = group_passes(monkeypatch)
    assert torch.equal(pixelcnn.decompress(model, data).images, x)
    per_chunk = [(c, len(group)) for group in groups or [] for c in range(shape[0])]
    assert passes == per_chunk * 2
    with codec.EXACT.scope(coding):
        first = codec.decode_chunk(coding, streams[0], header, 2, grouped=False)[0]
    assert torch.equal(first, x[:2])


@pytest.mark.slow
@pytest.mark.parametrize("within_group", ["independent", "raster"])
@pytest.mark.parametrize("shape,levels", GROUP_CASES)
def test_format_4_codes_the_values_of_format_3_in_another_order_only_inside_colour_groups(shape, levels, within_group,
                                                                                          monkeypatch):
    """The same values with the same integer distributions; the order differs only where a stepper's groups
    hold colour pixels, elsewhere the bytes are those of format 3 but for the version field (and the CRC)."""
    model = multiscale32(shape, levels, within_group)
    x = random_images(5, shape, levels, seed=3)
    for method in ("cached", "naive"):
        old = coded_values(model, x, 3, True, monkeypatch, version=3, method=method)
        new = coded_values(model, x, 3, True, monkeypatch, version=4, method=method)
        assert new.data[:4] == old.data[:4] and new.data[4:6] == b"\0\4" and old.data[4:6] == b"\0\3"
        reordered = method == "cached" and within_group == "independent" and shape[0] > 1
        assert (new.data[6:-4] != old.data[6:-4]) == reordered
        rows = [sorted(map(tuple, np.column_stack([v.symbols, v.weights]).tolist())) for v in (old, new)]
        assert rows[0] == rows[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pixelcnn", "row_lstm", "diagonal_bilstm", "pixelcnn_pp", "gated_pixelcnn", "lmconv",
                                  "multiscale", "multiscale-independent"])
def test_format_4_files_of_families_without_groups_are_format_3_but_for_the_version(name):
    """Every family of tests/data/codec: format 4 differs from format 3 only where the stepper offers groups of
    colour pixels (multiscale-independent); elsewhere the bytes are the same but for the version and the CRC.
    Where they differ both files decode; elsewhere they are one stream, which the round trips above decode in
    format 4 and test_files_of_an_earlier_release_decode_bit_for_bit in format 3, for every family."""
    model = codec_file_model(CODEC_FILES / name)
    x = random_images(2, model.image_shape, model.levels, seed=6)
    for method in ("auto", "naive"):
        old, new = (pixelcnn.compress(model, x, method=method, version=v) for v in (3, 4))
        assert new[:4] == old[:4] and (new[4:6], old[4:6]) == (b"\0\4", b"\0\3")
        differ = (name, method) == ("multiscale-independent", "auto")
        assert (new[6:-4] != old[6:-4]) == differ
        if differ:
            assert torch.equal(pixelcnn.decompress(model, new).images, x)
            assert torch.equal(pixelcnn.decompress(model, old).images, x)


def test_a_colour_file_of_format_3_decodes_one_sub_pixel_at_a_time(monkeypatch):
    """tests/data/codec/multiscale-independent/images.pxc (format 3, colour, the cached stepper's groups) stores a
    pixel's channels one after another: it decodes through the one-sub-pixel loop, no pass of a group."""
    folder = CODEC_FILES / "multiscale-independent"
    data = (folder / "images.pxc").read_bytes()
    header = container.read_header(data)
    assert header.version == 3 and header.image_shape[0] == 3 and header.method == "cached"
    passes = group_passes(monkeypatch)
    assert len(pixelcnn.decompress(codec_file_model(folder), data).images) == 3     # the digest matches
    assert passes == []


@pytest.mark.parametrize("version", [1, 2, 5, 3.0, "4", True])
def test_compress_writes_only_formats_3_and_4(small_file, version):
    model, x, _ = small_file
    with pytest.raises(ConfigError, match="format version") as e:
        pixelcnn.compress(model, x, version=version)
    assert "\n" not in str(e.value)


def test_files_of_format_2_are_coded_one_sub_pixel_at_a_time():
    """Float arithmetic (format 2) does not promise a row the same bits computed with others: no groups there."""
    coding = codec.EXACT.model(multiscale32((1, 5, 5), 4, "independent"))
    with codec.EXACT.scope(coding):
        stepper = codec._new_stepper(coding, 2, None, "cached")
    assert stepper.groups is not None
    assert codec.coded_in_groups(stepper, codec.EXACT) and not codec.coded_in_groups(stepper, codec.FLOAT)


# ----- size -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,levels", [((1, 8, 8), 256), ((1, 8, 8), 2)])
def test_size_is_within_one_percent_and_80_bytes_of_the_nll(shape, levels):
    """Images drawn from the model, so -log2 p is what a good coder should spend on them."""
    model = model32("gated_pixelcnn", shape, levels, seed=3)
    x = model.sample(96, generator=torch.Generator().manual_seed(0))
    nll_bytes = codec.nll_bits(model, x) / 8
    coded = codec.CodeLength()
    data = pixelcnn.compress(model, x, length=coded)
    # + 80 bytes: the header (60 with the writer's name) and a few words per chunk
    assert len(data) <= 1.01 * nll_bytes + 80, (len(data), nll_bytes)
    assert len(data) >= nll_bytes - 16                # no coder beats the model's own likelihood
    # the coded distributions (exact arithmetic, 2^-24 integer weights) are the float model's to 1e-4
    assert coded.bits / 8 == pytest.approx(nll_bytes, rel=1e-4)
    assert coded.bits / 8 <= len(data) <= coded.bits / 8 + 80


# ----- refusing bad input ---------------------------------------------------------------------


def assert_refused_or_exact(model, data, x):
    """Decoding must raise CompressionError or give back exactly x: never other images."""
    try:
        y = pixelcnn.decompress(model, data).images
    except CompressionError:
        return
    assert torch.equal(y, x)


def test_every_truncation_is_refused(small_file):
    model, _, data = small_file
    for n in range(len(data)):
        with pytest.raises(CompressionError):
            pixelcnn.decompress(model, data[:n])


def test_every_single_bit_flip_is_refused(small_file):
    model, _, data = small_file
    for i in range(8 * len(data)):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(CompressionError):
            pixelcnn.decompress(model, bytes(bad))


def test_appended_bytes_are_refused(small_file):
    model, _, data = small_file
    with pytest.raises(CompressionError):
        pixelcnn.decompress(model, data + b"\0")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_random_bytes_are_refused(small_file, blob):
    model, _, _ = small_file
    for data in (blob, container.MAGIC + struct.pack(">H", container.FORMAT_VERSION) + blob):
        with pytest.raises(CompressionError):
            pixelcnn.decompress(model, data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_forged_files_with_a_valid_checksum_never_decode_to_wrong_images(small_file, data):
    """Corruption that also fixes the CRC: the header checks and the content digest still hold."""
    model, x, good = small_file
    body = bytearray(good[:-4])
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(6, len(body) - 1))                     # past magic and version
        body[i] ^= data.draw(st.integers(1, 255))
    forged = bytes(body) + struct.pack(">I", zlib.crc32(bytes(body)))
    assert_refused_or_exact(model, forged, x)


def test_wrong_model_is_refused(small_file):
    _, _, data = small_file
    other_weights = model32("pixelcnn", (1, 3, 3), 4, seed=1)
    with pytest.raises(CompressionError, match="different model"):
        pixelcnn.decompress(other_weights, data)
    other_shape = model32("pixelcnn", (1, 3, 4), 4)
    with pytest.raises(CompressionError, match="shape"):
        pixelcnn.decompress(other_shape, data)
    other_family = model32("gated_pixelcnn", (1, 3, 3), 4)
    with pytest.raises(CompressionError, match="different model"):
        pixelcnn.decompress(other_family, data)


def test_future_version_is_refused(small_file):
    model, _, data = small_file
    body = bytearray(data[:-4])
    body[4:6] = struct.pack(">H", container.FORMAT_VERSION + 1)
    future = bytes(body) + struct.pack(">I", zlib.crc32(bytes(body)))
    with pytest.raises(CompressionError, match="version"):
        pixelcnn.decompress(model, future)


def test_a_decoder_with_different_probabilities_raises_instead_of_returning_images(small_file, monkeypatch):
    """Simulate a machine whose floats differ: the content digest turns it into an error."""
    model, _, data = small_file
    original = arithmetic.EXACT.quantize

    def perturbed(log_probs):
        w = original(log_probs)
        w[:, 0] += 5000.0
        w[np.arange(len(w)), w.argmax(1)] -= 5000.0
        return w

    monkeypatch.setattr(arithmetic, "EXACT", dataclasses.replace(arithmetic.EXACT, quantize=perturbed))
    with pytest.raises(CompressionError, match="digest"):
        pixelcnn.decompress(model, data)


def test_not_bytes_is_refused(small_file):
    model, _, _ = small_file
    with pytest.raises(CompressionError):
        pixelcnn.decompress(model, "PXC")


# ----- command line ---------------------------------------------------------------------------


def write_png(path: Path, arr: np.ndarray, mode: str) -> None:
    img = Image.fromarray(arr.astype(np.uint8))
    (img.convert("1") if mode == "1" else img).save(path)


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("L") if img.mode == "1" else img)


@pytest.mark.parametrize("shape,levels,mode,values", [
    ((1, 5, 4), 256, "L", range(256)),
    ((3, 4, 5), 256, "RGB", range(256)),
    ((1, 4, 4), 2, "L", (0, 255)),
    ((1, 4, 4), 2, "L", (0, 1)),
    ((1, 4, 4), 2, "1", (0, 255)),
    ((1, 4, 4), 4, "L", (0, 85, 170, 255)),
])
def test_cli_round_trip_writes_the_same_pixels(tmp_path, capsys, shape, levels, mode, values):
    model_dir = tmp_path / "model"
    model32("gated_pixelcnn", shape, levels).save_pretrained(model_dir)
    rng = np.random.default_rng(0)
    c, h, w = shape
    inputs = []
    for i in range(3):
        arr = rng.choice(np.array(list(values)), size=(h, w, c) if c == 3 else (h, w))
        inputs.append(tmp_path / f"in{i}.png")
        write_png(inputs[-1], arr, mode)
    out = tmp_path / "out.pxc"
    assert cli_main(["compress", str(model_dir), *map(str, inputs), "-o", str(out), "--nll"]) == 0
    printed = capsys.readouterr().out
    assert "bits/dim" in printed and "model NLL" in printed and "coded NLL" in printed
    assert cli_main(["decompress", str(model_dir), str(out), "-o", str(tmp_path / "dec")]) == 0
    written = sorted((tmp_path / "dec").glob("*.png"))
    assert [p.name for p in written] == ["00000.png", "00001.png", "00002.png"]
    for src, dst in zip(inputs, written):
        assert np.array_equal(read_png(src), read_png(dst))


def test_cli_refuses_png_values_it_cannot_code_losslessly(tmp_path, capsys):
    model_dir = tmp_path / "model"
    model32("pixelcnn", (1, 4, 4), 2).save_pretrained(model_dir)
    write_png(tmp_path / "a.png", np.full((4, 4), 128), "L")
    assert cli_main(["compress", str(model_dir), str(tmp_path / "a.png"), "-o", str(tmp_path / "o.pxc")]) == 2
    assert "losslessly" in capsys.readouterr().err


def test_cli_decompress_with_the_wrong_model_is_one_line_error(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    model32("pixelcnn", (1, 3, 3), 256).save_pretrained(a)
    model32("pixelcnn", (1, 3, 3), 256, seed=5).save_pretrained(b)
    write_png(tmp_path / "x.png", np.arange(9).reshape(3, 3), "L")
    assert cli_main(["compress", str(a), str(tmp_path / "x.png"), "-o", str(tmp_path / "x.pxc")]) == 0
    assert cli_main(["decompress", str(b), str(tmp_path / "x.pxc"), "-o", str(tmp_path / "d")]) == 2
    assert "different model" in capsys.readouterr().err


def test_cli_from_dataset_with_labels(tmp_path, capsys, monkeypatch):
    images = random_images(5, (1, 3, 3), 2, seed=4).to(torch.uint8)
    dataset = types.SimpleNamespace(images=images, labels=torch.tensor([0, 1, 2, 1, 0]), levels=2)
    monkeypatch.setattr(pixelcnn.data, "load_dataset", lambda name, split, data_dir=None: dataset)
    model_dir = tmp_path / "model"
    model32("pixelcnn", (1, 3, 3), 2, num_classes=3).save_pretrained(model_dir)
    out = tmp_path / "d.pxc"
    args = ["compress", str(model_dir), "--from-dataset", "fake", "--split", "test", "--limit", "4", "-o", str(out)]
    assert cli_main(args) == 0
    assert cli_main(["decompress", str(model_dir), str(out), "-o", str(tmp_path / "dec")]) == 0
    pngs = sorted((tmp_path / "dec").glob("*.png"))
    decoded = np.stack([read_png(p) for p in pngs])
    assert np.array_equal(decoded, images[:4, 0].numpy() * 255)          # binary written as 0/255
    assert (tmp_path / "dec" / "labels.txt").read_text().split() == ["0", "1", "2", "1"]

    picked = tmp_path / "picked.pxc"                                      # --index, then --limit
    assert cli_main(args[:-4] + ["--index", "4,0,2,3", "--limit", "3", "--out", str(picked)]) == 0
    assert cli_main(["decompress", str(model_dir), str(picked), "--output", str(tmp_path / "dec2")]) == 0   # the old spelling
    decoded = np.stack([read_png(p) for p in sorted((tmp_path / "dec2").glob("*.png"))])
    assert np.array_equal(decoded, images[[4, 0, 2], 0].numpy() * 255)
    assert (tmp_path / "dec2" / "labels.txt").read_text().split() == ["0", "0", "2"]


@pytest.mark.slow
@needs_mnist
def test_cli_compresses_real_mnist_from_the_dataset(tmp_path, capsys):
    model_dir = tmp_path / "model"
    model32("gated_pixelcnn", (1, 28, 28), 256, hidden=8, layers=1, output_hidden=8).save_pretrained(model_dir)
    out = tmp_path / "m.pxc"
    args = ["compress", str(model_dir), "--from-dataset", "mnist", "--split", "test", "--limit", "2", "-o", str(out)]
    assert cli_main(args) == 0
    assert cli_main(["decompress", str(model_dir), str(out), "-o", str(tmp_path / "dec"), "--nll"]) == 0
    assert "model NLL" in capsys.readouterr().out
    expected = pixelcnn.data.load_dataset("mnist", "test").images[:2, 0].numpy()
    decoded = np.stack([read_png(p) for p in sorted((tmp_path / "dec").glob("*.png"))])
    assert np.array_equal(decoded, expected)


CODEC_FILES = Path(__file__).resolve().parent / "data" / "codec"
LATER_FAMILIES = {"pixelsnail"}             # families added after 0.2.0: their files are format 4


def test_files_of_an_earlier_release_cover_every_family_with_a_cached_stepper():
    from generated import CACHED_FAMILIES

    written = {p.name for p in CODEC_FILES.iterdir() if (p / "model").is_dir()}
    assert CACHED_FAMILIES <= written, f"no file of an earlier release for {sorted(CACHED_FAMILIES - written)}"


def codec_file_model(folder: Path):
    source = json.loads((folder / "source.json").read_text())
    return pixelcnn.load(folder / source["model"] if (folder / source["model"]).is_dir() else source["model"])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.name for p in CODEC_FILES.iterdir()))
def test_files_of_an_earlier_release_decode_bit_for_bit(name):
    """tests/data/make_codec_files.py wrote these with pixelcnn 0.2.0 (format 3), or with the release that added the
    family (format 4: pixelsnail): the decoder must rebuild the
    probabilities that encoder used, or users' files no longer decode (the digest says which). Both steppers:
    the whole-network one runs the paths that training and evaluation speed up. The same files under the
    kernels of other CPUs: test_files_decode_under_the_kernels_of_other_cpus."""
    folder = CODEC_FILES / name
    model = codec_file_model(folder)
    files = sorted(folder.glob("images*.pxc"))                      # the family's stepper, and the naive one
    written_by = 4 if name in LATER_FAMILIES else 3
    assert files and all(container.read_header(f.read_bytes()).version == written_by for f in files)
    for file in files:
        images = pixelcnn.decompress(model, file.read_bytes()).images     # CompressionError unless the digest matches
        assert images.shape[1:] == model.image_shape and len(images) in (2, 3)


FORMAT_2_FOLDERS = sorted(p.parent.name for p in CODEC_FILES.glob("*/format2*.pxc"))   # the families of 0.1.0


def test_format_2_files_are_kept_for_the_families_of_that_release():
    assert set(FORMAT_2_FOLDERS) == {"pixelcnn", "gated_pixelcnn", "pixelcnn_pp", "row_lstm", "diagonal_bilstm", "lmconv",
                                     "mnist", "mnist-lmconv"}


@pytest.mark.slow
@pytest.mark.parametrize("name", FORMAT_2_FOLDERS)
def test_format_2_files_decode_on_their_kind_of_cpu_or_say_why_not(name):
    """pixelcnn 0.1.0 wrote format2*.pxc in float32 arithmetic on an AMD EPYC: where this machine computes
    the same floats they decode bit for bit; where it does not, the one error names the format, the release
    and what to do, never wrong images."""
    folder = CODEC_FILES / name
    model = codec_file_model(folder)
    files = sorted(folder.glob("format2*.pxc"))
    assert files and all(container.read_header(f.read_bytes()).version == 2 for f in files)
    for file in files:
        try:
            images = pixelcnn.decompress(model, file.read_bytes()).images
        except CompressionError as e:
            assert "format version 2 by pixelcnn 0.1" in str(e) and "kind of CPU" in str(e), str(e)
        else:
            assert images.shape[1:] == model.image_shape and len(images) in (2, 3)


def test_a_stream_the_decoders_probabilities_cannot_have_written_raises_a_compression_error(small_file, monkeypatch):
    """Where the probabilities differ enough, constriction itself refuses the stream midway (an AssertionError,
    seen decoding a 28x28 file with a tanh that differed in its last bits): that is a CompressionError too."""
    import constriction

    model, _, data = small_file
    real = constriction.stream.queue.RangeDecoder

    class Refusing:
        def __init__(self, words):
            self.inner, self.calls = real(words), 0

        def decode(self, *args):
            self.calls += 1
            if self.calls == 4:
                raise AssertionError("Tried to decode from compressed data that is invalid for the employed entropy model.")
            return self.inner.decode(*args)

    monkeypatch.setattr(constriction.stream.queue, "RangeDecoder", Refusing)
    with pytest.raises(CompressionError, match="does not decode with this model's probabilities"):
        pixelcnn.decompress(model, data)


@pytest.mark.parametrize("scope", [arithmetic.deterministic_cpu, arithmetic.exact_arithmetic])
def test_both_arithmetics_code_with_the_layers_released_forms(scope):
    """The committed files are too small for the faster forms to be taken, so the scope is checked itself: inside
    each arithmetic, whole maps take torch.tanh and lmconv convolves by unfold, whatever the size; outside, the
    faster forms come back."""
    from pixelcnn.models.layers import tanh_takes_sigmoid_form
    from pixelcnn.models.lmconv.local_conv import LocallyMaskedConv2d

    big = torch.zeros(1, 64, 64, 64)
    conv = LocallyMaskedConv2d(64, 8, 3, torch.zeros(64, dtype=torch.long), torch.zeros(8, dtype=torch.long), "B")
    assert tanh_takes_sigmoid_form(big) and conv.takes_split_form(big)
    with scope(tiny_model("gated_pixelcnn", (1, 4, 4), 4)):
        assert not tanh_takes_sigmoid_form(big) and not conv.takes_split_form(big)
    assert tanh_takes_sigmoid_form(big) and conv.takes_split_form(big)
