"""Encoder and decoder: the sampling loop, teacher-forced on one side and fed by the bit stream on the other.

Both sides drive the model through :func:`pixelcnn.sampling.make_stepper` and
:func:`pixelcnn.sampling.run`, chunk by chunk, under :func:`deterministic_cpu`. Why the two
sides get bit-identical probabilities is explained in the package docstring
(:mod:`pixelcnn.coding`).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Callable, Iterator

import constriction
import numpy as np
import torch
from torch import Tensor

from pixelcnn.coding import container
from pixelcnn.coding.container import MAX_CHUNK_SIZE, Header
from pixelcnn.coding.quantize import quantized_weights
from pixelcnn.errors import CompressionError, ConfigError, PixelCNNError
from pixelcnn.layers import plain_tanh
from pixelcnn.sampling import NaiveStepper, make_stepper, run
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


# ----- the controlled environment ---------------------------------------------------------------


def coding_model(model):
    """The model as coding runs it: float32 on the CPU (a copy when the model is anywhere else)."""
    params = list(model.parameters()) + list(model.buffers())
    if all(p.device.type == "cpu" and (not p.is_floating_point() or p.dtype == torch.float32) for p in params):
        return model
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float32)


@contextlib.contextmanager
def deterministic_cpu(model) -> Iterator[None]:
    """One CPU thread, oneDNN pinned on, no autograd, eval mode, tanh as ``torch.tanh`` everywhere
    (``layers.plain_tanh``); the caller's settings come back after."""
    threads, onednn, was_training = torch.get_num_threads(), torch.backends.mkldnn.enabled, model.training
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = True
    model.eval()
    try:
        with torch.no_grad(), plain_tanh():
            yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = onednn
        model.train(was_training)


def resolve_method(model, method: str) -> str:
    """"auto" -> "cached" where the family has a cached stepper, else "naive"."""
    METHOD(method, "method")
    if method != "auto":
        return method
    x = torch.zeros((1, *model.image_shape), dtype=torch.long)
    labels = None if model.config.num_classes is None else torch.zeros(1, dtype=torch.long)
    return "naive" if isinstance(make_stepper(model, x, model.condition(labels, None, 1), "auto"), NaiveStepper) else "cached"


# ----- one chunk --------------------------------------------------------------------------------


def _new_stepper(model, batch: int, labels: Tensor | None, method: str, order: str = ""):
    """A stepper over an all-zero chunk: the encoder and the decoder start from the same state.
    ``order``: an any-order model's visiting order by name ("": its default order)."""
    x = torch.zeros((batch, *model.image_shape), dtype=torch.long)
    return make_stepper(model, x, model.condition(labels, None, batch), method, visiting_order(model, order))


def visiting_order(model, order: str) -> Tensor | None:
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


def encode_chunk(model, x: Tensor, labels: Tensor | None, n: int, method: str, order: str = "") -> np.ndarray:
    """Range-code the first ``n`` images of the padded chunk x (B, C, H, W): uint32 words.

    The values are teacher-forced: at each sub-pixel the stepper gives the log-probabilities
    the decoder will see (it has been set to the same values so far), then the true value.
    """
    encoder = constriction.stream.queue.RangeEncoder()
    _code_labels(model, labels, n, lambda symbols, m: encoder.encode(symbols, m))
    family = constriction.stream.model.Categorical(perfect=False)

    def choose(c: int, h: int, w: int, log_probs: Tensor) -> Tensor:
        values = x[:, c, h, w]                                          # (B,)
        weights = quantized_weights(log_probs)                          # (B, L)
        encoder.encode(values[:n].numpy().astype(np.int32), family, weights[:n])
        return values

    run(_new_stepper(model, x.shape[0], labels, method, order), model.image_shape, choose)
    return encoder.get_compressed()


def decode_chunk(model, words: np.ndarray, batch: int, n: int, method: str,
                 order: str = "") -> tuple[Tensor, Tensor | None]:
    """Decode ``n`` images (and labels) from one chunk's words, running a padded batch of ``batch``."""
    decoder = constriction.stream.queue.RangeDecoder(words)
    labels = _decode_labels(model, decoder, batch, n)
    family = constriction.stream.model.Categorical(perfect=False)
    x = torch.zeros((batch, *model.image_shape), dtype=torch.long)

    def choose(c: int, h: int, w: int, log_probs: Tensor) -> Tensor:
        weights = quantized_weights(log_probs)                          # (B, L)
        values = torch.zeros(batch, dtype=torch.long)
        values[:n] = torch.from_numpy(_decoded(decoder, family, weights[:n]).astype(np.int64))
        x[:, c, h, w] = values
        return values

    run(_new_stepper(model, batch, labels, method, order), model.image_shape, choose)
    return x[:n], None if labels is None else labels[:n]


def _code_labels(model, labels: Tensor | None, n: int, encode) -> None:
    """Labels go first in a chunk's stream, uniformly coded (log2 K bits each)."""
    k = model.config.num_classes
    if labels is not None and k > 1:
        encode(labels[:n].numpy().astype(np.int32), constriction.stream.model.Uniform(k))


def _decode_labels(model, decoder, batch: int, n: int) -> Tensor | None:
    k = model.config.num_classes
    if k is None:
        return None
    labels = torch.zeros(batch, dtype=torch.long)
    if k > 1:
        labels[:n] = torch.from_numpy(_decoded(decoder, constriction.stream.model.Uniform(k), n).astype(np.int64))
    return labels


# ----- whole batches ----------------------------------------------------------------------------


def _pad(t: Tensor, size: int) -> Tensor:
    """Zero rows appended so that every chunk has the same shape."""
    if t.shape[0] == size:
        return t
    return torch.cat([t, t.new_zeros((size - t.shape[0], *t.shape[1:]))])


def compress(model, images: Tensor, labels: Tensor | None = None, *, chunk_size: int | None = None,
             method: str = "auto", metadata: bytes = b"", progress: Progress | None = None,
             order: str | None = None) -> bytes:
    """Losslessly compress integer images (N, C, H, W) with ``model``; returns the ``.pxc`` bytes.

    ``labels`` (N,) are required for a class-conditional model and are stored in the file.
    ``chunk_size`` images are coded together (default 64, at most N and 4096); ``method`` picks the
    stepper ("auto": the family's cached one where it has one). Both are recorded in the file,
    and decompression uses them. ``metadata`` is stored verbatim. The model runs in float32 on
    one CPU thread whatever its dtype and device (see :mod:`pixelcnn.coding`). ``order``: for an
    any-order model, the pixel order NAME[:S] to code in (stored in the file; default: the model's
    first training order); other families take only None or "raster".
    """
    if model.config.cond_shape is not None:
        raise CompressionError("models conditioned on an image (cond_shape) cannot compress on their own: the "
                               "decoder would need the conditioning images too; use an unconditional or class-conditional model")
    model = coding_model(model)
    model.check_images(images)
    n = images.shape[0]
    labels = model.check_labels(labels, n)
    images, labels = images.detach().cpu().long(), None if labels is None else labels.cpu()
    chunk = _chunk_size(chunk_size, n)
    order = _order_name(model, order)                                # a bad order fails before any coding
    if not isinstance(metadata, bytes) or len(metadata) > 0xFFFF:
        raise ConfigError(f"expected metadata to be bytes of length at most 65535, got {type(metadata).__name__}"
                          f"{f' of length {len(metadata)}' if isinstance(metadata, bytes) else ''}")
    with deterministic_cpu(model):
        method = resolve_method(model, method)
        streams = list(_encode_all(model, images, labels, chunk, method, progress, order))
    header = Header(method, model.levels, model.image_shape, n, chunk, container.model_fingerprint(model),
                    container.content_digest(images, labels), metadata, order)
    return container.pack(header, streams)


def _chunk_size(chunk_size: int | None, n: int) -> int:
    """The requested size, no larger than the number of images (padding beyond it buys nothing)."""
    if chunk_size is None:
        chunk_size = DEFAULT_CHUNK_SIZE
    Integer(1, MAX_CHUNK_SIZE)(chunk_size, "chunk_size")
    return max(1, min(n, chunk_size))


def _encode_all(model, images, labels, chunk, method, progress, order) -> Iterator[np.ndarray]:
    n = images.shape[0]
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        lab = None if labels is None else _pad(labels[start : start + m], chunk)
        yield encode_chunk(model, _pad(images[start : start + m], chunk), lab, m, method, order)
        if progress:
            progress(start + m)


def decode(model, data: bytes, progress: Progress | None = None) -> Decoded:
    """Decompress ``.pxc`` bytes into images, labels and metadata; see :func:`decompress`."""
    header, streams = container.unpack(data)
    model = coding_model(model)
    check_model(model, header)
    with deterministic_cpu(model):
        parts = list(_decode_all(model, header, streams, progress))
    images = torch.cat([p[0] for p in parts]) if parts else torch.zeros((0, *header.image_shape), dtype=torch.long)
    labels = None
    if model.config.num_classes is not None:
        labels = torch.cat([p[1] for p in parts]) if parts else torch.zeros(0, dtype=torch.long)
    if container.content_digest(images, labels) != header.digest:
        raise CompressionError(f"decoded images do not match the file's content digest: {MISMATCH}")
    return Decoded(images, labels, header.metadata, header)


MISMATCH = ("the decoder's probabilities differed from the encoder's (a different torch build or CPU type?) or "
            "the file was forged; no images returned")


def _decoded(decoder, *args) -> np.ndarray:
    """``decoder.decode(*args)``; constriction's refusal of a stream its model cannot have written (an
    AssertionError or ValueError) as a CompressionError."""
    try:
        return decoder.decode(*args)
    except (AssertionError, ValueError) as e:
        raise CompressionError(f"the payload does not decode with this model's probabilities ({e}): {MISMATCH}") from None


def _decode_all(model, header: Header, streams, progress) -> Iterator[tuple[Tensor, Tensor | None]]:
    done = 0
    for words in streams:
        m = min(header.chunk_size, header.count - done)
        yield decode_chunk(model, words, header.chunk_size, m, header.method, header.order)
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


def decompress(model, data: bytes):
    """Decompress ``.pxc`` bytes made by :func:`compress` with the same ``model``.

    Returns the images (N, C, H, W) int64, bit-identical to those compressed, or
    ``(images, labels)`` when the model is class-conditional. A file that is truncated,
    corrupted, from another format version or compressed with another model raises
    :class:`pixelcnn.errors.CompressionError`; no image is returned unless its digest matches.
    """
    out = decode(model, data)
    return out.images if out.labels is None else (out.images, out.labels)


def nll_bits(model, images: Tensor, labels: Tensor | None = None, batch_size: int = 256) -> float:
    """The model's total -log2 p(images | labels) in bits (what an ideal coder would spend)."""
    total = 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for s in range(0, images.shape[0], batch_size):
                x = images[s : s + batch_size].to(model.device)
                lab = None if labels is None else labels[s : s + batch_size].to(model.device)
                total -= float(model.log_prob(x, lab).double().sum())
    finally:
        model.train(was_training)
    return total / np.log(2.0)
