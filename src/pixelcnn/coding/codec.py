"""Encoder and decoder: the sampling loop, teacher-forced on one side and fed by the bit stream on the other.

Both sides drive the model through :func:`pixelcnn.sampling.make_stepper` and
:func:`pixelcnn.sampling.run` (or :func:`pixelcnn.sampling.run_groups`, a group of pixels per
pass, where the stepper offers groups: :func:`coded_in_groups`; in format 3 the stream is the same either
way, format 4 stores a group's values channel by channel: :func:`by_channel`),
chunk by chunk, in the arithmetic of the file's format version (:mod:`pixelcnn.coding.arithmetic`:
``EXACT`` for files written now, ``FLOAT`` to read those of earlier releases). Why the
two sides get bit-identical probabilities is explained in the package docstring
(:mod:`pixelcnn.coding`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

import constriction
import numpy as np
import torch
from torch import Tensor

from pixelcnn.coding import container, fused
from pixelcnn.coding.arithmetic import EXACT, FLOAT, Arithmetic, arithmetic_of  # noqa: F401 (callers read codec.FLOAT)
from pixelcnn.coding.container import BY_CHANNEL_VERSION, EXACT_VERSION, FORMAT_VERSION, MAX_CHUNK_SIZE, Header
from pixelcnn.coding.quantize import PRECISION
from pixelcnn.errors import CompressionError, ConfigError, PixelCNNError
from pixelcnn.models.order import Order
from pixelcnn.sampling import in_visiting_order, make_stepper, run, run_groups
from pixelcnn.validation import METHOD, Integer

DEFAULT_CHUNK_SIZE = 64
Progress = Callable[[int], None]          # called with the number of images done so far


@dataclass(frozen=True)
class Decoded:
    """Everything a compressed file holds: images (N, C, H, W) int64, labels (N,) or None, metadata."""

    images: Tensor
    labels: Tensor | None
    metadata: bytes
    header: Header


@dataclass
class CodeLength:
    """Bits the range coder's integer distributions give the coded values (-log2 of each weight / 2**24):
    the exact negative log-likelihood of the model as it codes, labels excluded."""

    bits: float = 0.0

    def add(self, weights: np.ndarray, values: np.ndarray) -> None:
        picked = weights[np.arange(len(values)), values] + 1.0
        self.bits += float(np.sum(PRECISION - np.log2(picked)))


def resolve_method(model, method: str) -> str:
    """"auto" -> "cached" where the family has a cached stepper, else "naive"."""
    METHOD(method, "method")
    if method != "auto":
        return method
    return "cached" if model.cached else "naive"


# ----- one chunk --------------------------------------------------------------------------------


def _new_stepper(model, batch: int, labels: Tensor | None, method: str, order: str = "", exact: bool = True):
    """A stepper over an all-zero chunk: the encoder and the decoder start from the same state.
    ``order``: an any-order model's visiting order by name ("": its default order). ``exact``: the chunk is
    coded in exact arithmetic, where the stepper may take compiled kernels (:func:`fused.accelerate`)."""
    x = torch.zeros((batch, *model.image_shape), dtype=torch.long, device=model.device)
    labels = None if labels is None else labels.to(model.device)
    stepper = make_stepper(model, x, model.condition(labels, None, batch), method, visiting_order(model, order))
    if exact:
        fused.accelerate(stepper)
    return stepper


def visiting_order(model, order: str) -> Order | None:
    """The order a file names, as the stepper takes it; "auto" has no meaning without a mask."""
    if not order:
        return None
    if order == "auto":
        raise ConfigError("compression codes whole images: expected a pixel order NAME[:S], got 'auto'")
    return model.visiting_order(order)


def _order_name(model, order: str | None) -> str:
    """The order a file stores: "" for the model's default (raster in a raster family), else the checked name."""
    if not order:
        return ""
    if not isinstance(order, str):
        raise ConfigError(f"expected a pixel order name NAME[:S] (a file stores names), got {type(order).__name__}")
    return order if visiting_order(model, order) is not None else ""


def encode_chunk(model, x: Tensor, labels: Tensor | None, n: int, method: str, order: str = "",
                 arithmetic: Arithmetic = EXACT, length: CodeLength | None = None, grouped: bool = True,
                 version: int = FORMAT_VERSION) -> np.ndarray:
    """Range-code the first ``n`` images of the padded chunk x (B, C, H, W): uint32 words.

    The values are teacher-forced: at each sub-pixel the stepper gives the log-probabilities
    the decoder will see (it has been set to the same values so far), then the true value.
    Where the stepper offers groups (:func:`coded_in_groups`) each channel of a group is one
    pass; in format 3 the stream is the same either way. ``grouped=False``: one sub-pixel at a time
    wherever the stream's order allows it (not where format ``version`` stores groups by channel).
    """
    encoder = constriction.stream.queue.RangeEncoder()
    _code_labels(model, labels, n, lambda symbols, m: encoder.encode(symbols, m))
    family = constriction.stream.model.Categorical(perfect=False)

    def code(symbols: np.ndarray, weights: np.ndarray) -> None:
        weights = np.ascontiguousarray(weights)                         # constriction reads C-ordered arrays
        encoder.encode(symbols, family, weights)
        if length is not None:
            length.add(weights, symbols)

    stepper = _new_stepper(model, x.shape[0], labels, method, order, arithmetic is EXACT)
    apart = by_channel(stepper, version)
    if apart or (grouped and coded_in_groups(stepper, arithmetic)):
        _encode_groups(stepper, x, n, arithmetic, code, apart)
    else:
        _encode_pixels(stepper, x, n, arithmetic, code)
    return encoder.get_compressed()


def coded_in_groups(stepper, arithmetic: Arithmetic) -> bool:
    """Whether a chunk is coded a group of pixels per pass (:func:`pixelcnn.sampling.run_groups`): where the
    stepper offers groups whose rows have the bits of its one-pixel answers, which it promises in exact
    arithmetic (formats 3 and 4). In format 3 the stream holds the values in the stepper's order either way,
    pixel by pixel, each pixel's channels in turn, the chunk's images of each sub-pixel in turn."""
    return stepper.groups is not None and arithmetic is EXACT


def by_channel(stepper, version: int) -> bool:
    """Whether the stream stores each group's values channel by channel (format 4, where the stepper offers
    groups: the group's pixels' first channel in the group's order, then their second, ..., the chunk's
    images of each sub-pixel in turn), so that a colour chunk decodes a group's channel per pass too.
    Otherwise (format 3, or no groups) pixel by pixel, each pixel's channels in turn."""
    return stepper.groups is not None and version >= BY_CHANNEL_VERSION


def _encode_pixels(stepper, x: Tensor, n: int, arithmetic: Arithmetic, code) -> None:
    """Code every sub-pixel of the chunk x (B, C, H, W) as :func:`pixelcnn.sampling.run` visits it."""

    def choose(c: int, h: int, w: int, log_probs: Tensor) -> Tensor:
        values = x[:, c, h, w]                                          # (B,)
        code(values[:n].numpy().astype(np.int32), arithmetic.weights(log_probs)[:n])
        return values.to(log_probs.device)

    run(stepper, tuple(x.shape[1:]), choose)


def _encode_groups(stepper, x: Tensor, n: int, arithmetic: Arithmetic, code, apart: bool = False) -> None:
    """Code the chunk x (B, C, H, W) as :func:`pixelcnn.sampling.run_groups` visits it, in the stream's order:
    ``apart`` (:func:`by_channel`), each channel of a group after its pass (pixel, image); else once a
    group's every channel has had its pass (pixel, channel, image)."""
    channels = x.shape[1]
    steps = in_visiting_order(x)                                        # (H W C, B)
    weights: list[np.ndarray] = []                                      # channels not yet coded, (n_pix, B, L)

    def choose(c: int, pixels: Tensor, log_probs: Tensor) -> Tensor:
        row0 = pixels.cpu() * channels                                  # (n_pix,) rows of their channel 0 in steps
        weights.append(_weights(log_probs, arithmetic))
        if apart or c == channels - 1:
            coded = np.stack(weights, axis=1)[:, :, :n]                 # (n_pix, k, n, L), channels c - k + 1 .. c
            first = c + 1 - len(weights)
            rows = (row0[:, None] + torch.arange(first, c + 1)).flatten()   # pixel by pixel, each one's channels
            code(steps[rows, :n].flatten().numpy().astype(np.int32), coded.reshape(-1, coded.shape[-1]))
            weights.clear()
        return steps[row0 + c].to(log_probs.device)                     # (n_pix, B)

    run_groups(stepper, channels, x.shape[3], choose)


def _weights(log_probs: Tensor, arithmetic: Arithmetic) -> np.ndarray:
    """(n_pix, B, L) log-probabilities of a group's channel -> their (n_pix, B, L) integer weights."""
    return arithmetic.weights(log_probs.flatten(0, 1)).reshape(log_probs.shape)


def decode_chunk(model, words: np.ndarray, header: Header, n: int, arithmetic: Arithmetic = EXACT,
                 length: CodeLength | None = None, grouped: bool = True) -> tuple[Tensor, Tensor | None]:
    """Decode ``n`` images (and labels) from one chunk's words, running a padded batch of the file's chunk size.

    Grayscale images are decoded a group per pass where the stepper offers groups, and so are colour
    images of format 4, which stores a group's values channel by channel (:func:`by_channel`; there
    ``grouped=False`` changes nothing). In a format-3 stream a pixel's channels follow one another, and
    a later channel's probabilities need the pixel's earlier values, so format-3 colour images are
    decoded one sub-pixel at a time, as with ``grouped=False``.
    """
    batch = header.chunk_size
    decoder = constriction.stream.queue.RangeDecoder(words)
    labels = _decode_labels(model, decoder, header, n)
    family = constriction.stream.model.Categorical(perfect=False)
    x = torch.zeros((batch, *model.image_shape), dtype=torch.long)

    def decode(weights: np.ndarray) -> Tensor:
        """The next len(weights) values of the stream, (len(weights),) int64."""
        weights = np.ascontiguousarray(weights)                         # constriction reads C-ordered arrays
        symbols = _decoded(decoder, header, family, weights)
        if length is not None:
            length.add(weights, symbols)
        return torch.from_numpy(symbols.astype(np.int64))

    stepper = _new_stepper(model, batch, labels, header.method, header.order, arithmetic is EXACT)
    if by_channel(stepper, header.version) or (grouped and coded_in_groups(stepper, arithmetic) and x.shape[1] == 1):
        _decode_groups(stepper, x, n, arithmetic, decode)
    else:
        _decode_pixels(stepper, x, n, arithmetic, decode)
    return x[:n], None if labels is None else labels[:n]


def _decode_pixels(stepper, x: Tensor, n: int, arithmetic: Arithmetic, decode) -> None:
    """Fill the first n images of the all-zero chunk x (B, C, H, W) as :func:`pixelcnn.sampling.run` visits it."""

    def choose(c: int, h: int, w: int, log_probs: Tensor) -> Tensor:
        x[:n, c, h, w] = decode(arithmetic.weights(log_probs)[:n])
        return x[:, c, h, w].to(log_probs.device)

    run(stepper, tuple(x.shape[1:]), choose)


def _decode_groups(stepper, x: Tensor, n: int, arithmetic: Arithmetic, decode) -> None:
    """Fill the first n images of the all-zero chunk x (B, C, H, W) as :func:`pixelcnn.sampling.run_groups`
    visits it, where a group's channel is consecutive in the stream (grayscale, or format 4)."""
    pixels_of = x.view(*x.shape[:2], -1)                                # (B, C, H W), a view of x

    def choose(c: int, pixels: Tensor, log_probs: Tensor) -> Tensor:
        weights = _weights(log_probs, arithmetic)[:, :n]                # (n_pix, n, L)
        values = torch.zeros(log_probs.shape[:2], dtype=torch.long)     # (n_pix, B); padding images stay 0
        values[:, :n] = decode(weights.reshape(-1, weights.shape[-1])).view(-1, n)
        pixels_of[:, c, pixels.cpu()] = values.T
        return values.to(log_probs.device)

    run_groups(stepper, x.shape[1], x.shape[3], choose)


def _code_labels(model, labels: Tensor | None, n: int, encode) -> None:
    """Labels go first in a chunk's stream, uniformly coded (log2 K bits each)."""
    k = model.config.num_classes
    if labels is not None and k > 1:
        encode(labels[:n].numpy().astype(np.int32), constriction.stream.model.Uniform(k))


def _decode_labels(model, decoder, header: Header, n: int) -> Tensor | None:
    k = model.config.num_classes
    if k is None:
        return None
    labels = torch.zeros(header.chunk_size, dtype=torch.long)
    if k > 1:
        uniform = constriction.stream.model.Uniform(k)
        labels[:n] = torch.from_numpy(_decoded(decoder, header, uniform, n).astype(np.int64))
    return labels


# ----- whole batches ----------------------------------------------------------------------------


def _pad(t: Tensor, size: int) -> Tensor:
    """Zero rows appended so that every chunk has the same shape."""
    if t.shape[0] == size:
        return t
    return torch.cat([t, t.new_zeros((size - t.shape[0], *t.shape[1:]))])


def compress(model, images: Tensor, labels: Tensor | None = None, *, chunk_size: int | None = None,
             method: str = "auto", metadata: bytes = b"", progress: Progress | None = None,
             order: str | None = None, length: CodeLength | None = None, version: int = FORMAT_VERSION) -> bytes:
    """Losslessly compress integer images (N, C, H, W) with ``model``; returns the ``.pxc`` bytes.

    ``labels`` (N,) are required for a class-conditional model and are stored in the file.
    ``chunk_size`` images are coded together (default 64, at most N and 4096); ``method`` picks the
    stepper ("auto": the family's cached one where it has one). Both are recorded in the file,
    and decompression uses them. ``metadata`` is stored verbatim. The model runs as a float64 copy
    in exact arithmetic on its own device (CUDA or the CPU), so the file decodes on any machine
    (see :mod:`pixelcnn.coding`). ``order``: for an any-order model, the pixel order NAME[:S] to
    code in (stored in the file; default: the model's first training order); other families take
    only None or "raster". ``length``, if given, gets the bits the coded values cost. ``version``: the
    format to write, the newest (4) unless 3 is asked for to compare with files written before 4.
    """
    if model.config.cond_shape is not None:
        raise CompressionError("models conditioned on an image (cond_shape) cannot compress on their own: the "
                               "decoder would need the conditioning images too; use an unconditional or class-conditional model")
    model.check_images(images)
    n = images.shape[0]
    labels = model.check_labels(labels, n)
    images, labels = images.detach().cpu().long(), None if labels is None else labels.cpu()
    chunk = _chunk_size(chunk_size, n)
    order = _order_name(model, order)                                # a bad order fails before any coding
    _check_length(length)
    if not isinstance(version, int) or version not in container.WRITABLE_VERSIONS:
        raise ConfigError(f"expected a format version to write in {container.WRITABLE_VERSIONS}, got {version!r}")
    if not isinstance(metadata, bytes) or len(metadata) > 0xFFFF:
        raise ConfigError(f"expected metadata to be bytes of length at most 65535, got {type(metadata).__name__}"
                          f"{f' of length {len(metadata)}' if isinstance(metadata, bytes) else ''}")
    fingerprint = container.model_fingerprint(model)
    model = EXACT.model(model)
    with EXACT.scope(model):
        method = resolve_method(model, method)
        streams = list(_encode_all(model, images, labels, chunk, method, progress, order, EXACT, length, version))
    header = Header(method, model.levels, model.image_shape, n, chunk, fingerprint,
                    container.content_digest(images, labels), metadata, order, version)
    return container.pack(header, streams)


def _check_length(length) -> None:
    if length is not None and not isinstance(length, CodeLength):
        raise ConfigError(f"expected length to be None or a codec.CodeLength, got {type(length).__name__}")


def _chunk_size(chunk_size: int | None, n: int) -> int:
    """The requested size, no larger than the number of images (padding beyond it buys nothing)."""
    if chunk_size is None:
        chunk_size = DEFAULT_CHUNK_SIZE
    Integer(1, MAX_CHUNK_SIZE)(chunk_size, "chunk_size")
    return max(1, min(n, chunk_size))


def _encode_all(model, images, labels, chunk, method, progress, order, arithmetic, length,
                version) -> Iterator[np.ndarray]:
    n = images.shape[0]
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        lab = None if labels is None else _pad(labels[start : start + m], chunk)
        yield encode_chunk(model, _pad(images[start : start + m], chunk), lab, m, method, order, arithmetic, length,
                           version=version)
        if progress:
            progress(start + m)


def decode(model, data: bytes, progress: Progress | None = None, length: CodeLength | None = None) -> Decoded:
    """Decompress ``.pxc`` bytes into images, labels and metadata; see :func:`decompress`.
    ``length``, if given, gets the bits the decoded values cost."""
    _check_length(length)
    header, streams = container.unpack(data)
    check_model(model, header)
    arithmetic = arithmetic_of(header.version)
    model = arithmetic.model(model)
    with arithmetic.scope(model):
        parts = list(_decode_all(model, header, streams, progress, arithmetic, length))
    images = torch.cat([p[0] for p in parts]) if parts else torch.zeros((0, *header.image_shape), dtype=torch.long)
    labels = None
    if model.config.num_classes is not None:
        labels = torch.cat([p[1] for p in parts]) if parts else torch.zeros(0, dtype=torch.long)
    if container.content_digest(images, labels) != header.digest:
        raise CompressionError(f"decoded images do not match the file's content digest: {mismatch(header)}")
    return Decoded(images, labels, header.metadata, header)


def mismatch(header: Header) -> str:
    """Why a decoder's probabilities could differ from its encoder's, for this file."""
    if header.version < EXACT_VERSION:
        return (f"the file was written in format version {header.version} by pixelcnn 0.1.0, whose float32 "
                f"probabilities depend on the kind of CPU (and torch build) that computed them; decode it on the "
                f"kind of machine that wrote it (this release can), then compress it again to get a file any "
                f"machine decodes (or the file is corrupt); no images returned")
    return (f"the file (format version {header.version}, written by {header.writer or 'an unknown release'}) was "
            f"forged or corrupted, or its writer computed other probabilities; no images returned")


def _decoded(decoder, header: Header, *args) -> np.ndarray:
    """``decoder.decode(*args)``; constriction's refusal of a stream its model cannot have written (an
    AssertionError or ValueError) as a CompressionError."""
    try:
        return decoder.decode(*args)
    except (AssertionError, ValueError) as e:
        raise CompressionError(f"the payload does not decode with this model's probabilities ({e}): "
                               f"{mismatch(header)}") from None


def _decode_all(model, header: Header, streams, progress, arithmetic, length) -> Iterator[tuple[Tensor, Tensor | None]]:
    done = 0
    for words in streams:
        m = min(header.chunk_size, header.count - done)
        yield decode_chunk(model, words, header, m, arithmetic, length)
        done += m
        if progress:
            progress(done)


def check_model(model, header: Header) -> None:
    """Raise CompressionError unless ``model`` is the one the file was compressed with."""
    if tuple(model.image_shape) != header.image_shape or model.levels != header.levels:
        raise CompressionError(
            f"the file holds images of shape {header.image_shape} with {header.levels} levels, but the model is "
            f"for shape {tuple(model.image_shape)} with {model.levels} levels: "
            f"decompress with the model that compressed it")
    if container.model_fingerprint(model) != header.fingerprint:
        raise CompressionError("the file was compressed with a different model (its fingerprint of config and "
                               "weights does not match this model's): decompress with the model that compressed it")
    try:
        visiting_order(model, header.order)
    except (PixelCNNError, ValueError) as e:
        raise CompressionError(f"the file was coded in pixel order {header.order!r}, which this model cannot "
                               f"follow: {e}") from None
    if header.method == "cached" and resolve_method(model, "auto") != "cached":
        raise CompressionError(f"the file was coded with the cached stepper, which model {model.name!r} does not offer")


class Decompressed(NamedTuple):
    """What :func:`decompress` returns, whatever the model: ``images, labels = decompress(...)``."""

    images: Tensor                  # (N, C, H, W) int64, bit-identical to those compressed
    labels: Tensor | None           # (N,) int64 for a class-conditional model, else None


def decompress(model, data: bytes) -> Decompressed:
    """Decompress ``.pxc`` bytes made by :func:`compress` with the same ``model``: the images and,
    for a class-conditional model, their labels (None otherwise). A file that is truncated,
    corrupted, from another format version or compressed with another model raises
    :class:`pixelcnn.errors.CompressionError`; no image is returned unless its digest matches.
    (:func:`decode` also gives the metadata and the header.)
    """
    out = decode(model, data)
    return Decompressed(out.images, out.labels)


def nll_bits(model, images: Tensor, labels: Tensor | None = None, batch_size: int = 256) -> float:
    """The model's total -log2 p(images | labels) in bits (what an ideal coder would spend)."""
    total = 0.0
    with model.evaluating(), torch.no_grad():
        for s in range(0, images.shape[0], batch_size):
            x = images[s : s + batch_size].to(model.device)
            lab = None if labels is None else labels[s : s + batch_size].to(model.device)
            total -= float(model.log_prob(x, lab).double().sum())
    return total / np.log(2.0)
