"""The ``.pxc`` container: a checked header, one range-coded stream per chunk, a CRC-32.

Layout (integers big-endian, ``struct`` formats in brackets)::

    magic            4 bytes   b"PXC\\x89"
    format version   [H]       FORMAT_VERSION (or 3, written for comparison); a reader refuses any it does not know
    method           [B]       0 = naive, 1 = cached: the stepper that produced the probabilities
    levels           [H]       values per sub-pixel, 2..256
    C, H, W          [HHH]     image shape
    count            [I]       number of images
    chunk size       [I]       images per coded chunk, 1..min(count, 4096) (the last chunk is padded)
    metadata length  [H]       bytes of free-form metadata that follow the fixed header
    fingerprint      8 bytes   sha256 of the model's config JSON and float32 weights, truncated
    content digest   8 bytes   sha256 of the original images (uint8) and labels, truncated
    metadata         bytes     opaque to the library (the CLI records how to write PNGs)
    order length     [B]       (version 2) bytes of the pixel order's name that follow; 0: the model's default
    order            bytes     (version 2) ASCII NAME:S of an any-order model's visiting order
    writer length    [B]       (version 3 on) bytes of the writer's name that follow
    writer           bytes     (version 3 on) ASCII "pixelcnn X.Y.Z", the release that wrote the file
    per chunk:       [I] word count n, then n little-endian uint32 words of range coder output
    crc32            [I]       zlib.crc32 of every byte before it

Version 3 codes with probabilities computed in exact arithmetic (:mod:`pixelcnn.coding.exact`), so
its files decode on any machine. Version 4 is version 3 but for the order of the coded values inside a
group of pixels that the stepper offers whole (``Stepper.groups``, multiscale): version 3 stores them
pixel by pixel, each pixel's channels in turn; version 4 channel by channel (the group's pixels' first
channel, then their second, ...), so that a decoder reads a whole group's channel after one network
pass. Without groups the two orders coincide (the bytes differ only in the version field).
Versions 1 and 2 (float32 arithmetic, decodable only on the kind of CPU that wrote them) and version
1's missing order fields are still read. The magic and version are read first, so a file from a
future version says so rather than failing its checksum. The CRC-32 then covers everything (it
detects every single-bit error and every burst up to 32 bits); the content digest is checked after
decoding, so even a decoder that computed different probabilities cannot return wrong images silently.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pixelcnn.errors import CompressionError
from pixelcnn.version import __version__

MAGIC = b"PXC\x89"
FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
EXACT_VERSION = 3              # the first version whose probabilities are the same bits on every machine
BY_CHANNEL_VERSION = 4         # the first version that stores a stepper's group channel by channel
WRITABLE_VERSIONS = (EXACT_VERSION, FORMAT_VERSION)   # 3 only to compare with files written before 4
METHODS = ("naive", "cached")
MAX_CHUNK_SIZE = 4096          # bounds the memory a decoder allocates for one chunk

_PREFIX = struct.Struct(">4sH")                     # magic, version
_FIELDS = struct.Struct(">BHHHHIIH8s8s")             # method .. digest
_U32 = struct.Struct(">I")
DIGEST_BYTES = 8                # 64 bits: an accidental match has odds of 1 in 1.8e19


@dataclass(frozen=True)
class Header:
    """What a decoder needs besides the model and the coded streams."""

    method: str
    levels: int
    image_shape: tuple[int, int, int]
    count: int
    chunk_size: int
    fingerprint: bytes
    digest: bytes
    metadata: bytes = b""
    order: str = ""                 # an any-order model's visiting order, NAME:S; "" for its default
    version: int = FORMAT_VERSION   # the format version the file was written in
    writer: str = ""                # the release that wrote it ("" before version 3)

    @property
    def num_chunks(self) -> int:
        return -(-self.count // self.chunk_size) if self.count else 0

    @property
    def dims(self) -> int:
        """Sub-pixels in the whole file: count * C * H * W."""
        c, h, w = self.image_shape
        return self.count * c * h * w


# ----- fingerprints ---------------------------------------------------------------------------


# Config fields added since the fingerprint was defined, with the value every earlier model has: a field
# at that value is left out of the digest, so that files written before it existed still decode.
NEWER_FIELDS = {"inpainting": False}


def model_fingerprint(model) -> bytes:
    """8 bytes identifying a model: its family, config and weights (floats as float32).

    Weights go in sorted key order, each with its name, dtype and shape, so the digest does
    not depend on how the module registers them; floating tensors are hashed as float32 so a
    float64 or GPU copy of the same model has the same fingerprint (coding runs in float32).
    """
    h = hashlib.sha256(b"pixelcnn-model\0")
    fields = {k: v for k, v in model.config.to_dict().items() if NEWER_FIELDS.get(k, object()) != v}
    config = {"model": model.name, "config": fields}
    h.update(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu()
        t = t.float() if t.is_floating_point() else t
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.contiguous().reshape(-1).numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes())
    return h.digest()[:DIGEST_BYTES]


def content_digest(images: Tensor, labels: Tensor | None) -> bytes:
    """8 bytes identifying the images (as uint8) and their labels (as little-endian int64)."""
    h = hashlib.sha256(b"pixelcnn-images\0")
    h.update(images.detach().cpu().to(torch.uint8).contiguous().numpy().tobytes())
    if labels is not None:
        h.update(b"\0labels\0" + labels.detach().cpu().long().numpy().astype("<i8").tobytes())
    return h.digest()[:DIGEST_BYTES]


# ----- writing --------------------------------------------------------------------------------


def pack(header: Header, streams: list[np.ndarray]) -> bytes:
    """Serialise a header and the chunks' uint32 streams into one checked byte string."""
    if header.version not in WRITABLE_VERSIONS:
        raise ValueError(f"expected a format version in {WRITABLE_VERSIONS} to write, got {header.version}")
    if len(streams) != header.num_chunks:
        raise ValueError(f"expected {header.num_chunks} chunk streams, got {len(streams)}")
    c, h, w = header.image_shape
    parts = [
        _PREFIX.pack(MAGIC, header.version),
        _FIELDS.pack(METHODS.index(header.method), header.levels, c, h, w, header.count, header.chunk_size,
                     len(header.metadata), header.fingerprint, header.digest),
        header.metadata,
        _short_field(header.order, "an order name"),
        _short_field(f"pixelcnn {__version__}", "a writer name"),
    ]
    for words in streams:
        parts += [_U32.pack(len(words)), np.asarray(words, dtype="<u4").tobytes()]
    body = b"".join(parts)
    return body + _U32.pack(zlib.crc32(body))


def _short_field(text: str, what: str) -> bytes:
    raw = text.encode("ascii")
    if len(raw) > 255:
        raise ValueError(f"expected {what} of at most 255 ASCII bytes, got {len(raw)}")
    return bytes([len(raw)]) + raw


# ----- reading --------------------------------------------------------------------------------


def unpack(data: bytes) -> tuple[Header, list[np.ndarray]]:
    """Parse and check a ``.pxc`` byte string; anything malformed raises CompressionError."""
    data = _as_bytes(data)
    _check_prefix(data)
    _check_crc(data)
    header, pos = _read_header(data)
    streams = _read_streams(data, pos, header.num_chunks, len(data) - _U32.size)
    return header, streams


def read_header(data: bytes) -> Header:
    """The header of a ``.pxc`` byte string, after the same checks as :func:`unpack`."""
    return unpack(data)[0]


def _as_bytes(data) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise CompressionError(f"expected compressed data as bytes, got {type(data).__name__}")


def _check_prefix(data: bytes) -> None:
    if len(data) < _PREFIX.size or data[:4] != MAGIC:
        got = data[:4].hex() if data else "an empty input"
        raise CompressionError(f"not a pixelcnn compressed file: expected magic {MAGIC.hex()}, got {got}")
    _, version = _PREFIX.unpack_from(data)
    if version not in READABLE_VERSIONS:
        newer = " (written by a newer pixelcnn)" if version > FORMAT_VERSION else ""
        raise CompressionError(f"compressed file has format version {version}{newer}; "
                               f"this pixelcnn reads versions {', '.join(map(str, READABLE_VERSIONS))}")


def _check_crc(data: bytes) -> None:
    minimum = _PREFIX.size + _FIELDS.size + _U32.size
    if len(data) < minimum:
        raise CompressionError(f"compressed file is truncated: expected at least {minimum} bytes, got {len(data)}")
    stored, = _U32.unpack_from(data, len(data) - _U32.size)
    if zlib.crc32(data[: -_U32.size]) != stored:
        raise CompressionError("compressed file is corrupted or truncated: its CRC-32 checksum does not match")


def _read_header(data: bytes) -> tuple[Header, int]:
    pos = _PREFIX.size
    method, levels, c, h, w, count, chunk, meta_len, fingerprint, digest = _FIELDS.unpack_from(data, pos)
    pos += _FIELDS.size
    problems = [
        method >= len(METHODS) and f"method code {method}",
        not 2 <= levels <= 256 and f"levels {levels}",
        min(c, h, w) < 1 and f"image shape ({c}, {h}, {w})",
        not 1 <= chunk <= min(max(count, 1), MAX_CHUNK_SIZE) and f"chunk size {chunk} for {count} images",
        pos + meta_len > len(data) - _U32.size and f"metadata length {meta_len}",
    ]
    bad = [p for p in problems if p]
    if bad:
        raise CompressionError(f"compressed file has an invalid header: {', '.join(bad)}")
    metadata = data[pos : pos + meta_len]
    version = _PREFIX.unpack_from(data)[1]
    order, pos = _read_short(data, pos + meta_len, "order") if version >= 2 else ("", pos + meta_len)
    writer, pos = _read_short(data, pos, "writer") if version >= 3 else ("", pos)
    header = Header(METHODS[method], levels, (c, h, w), count, chunk, fingerprint, digest, metadata, order,
                    version, writer)
    return header, pos


def _read_short(data: bytes, pos: int, what: str) -> tuple[str, int]:
    """The length-prefixed ASCII field at ``pos`` (an order or writer name) and the position after it."""
    end = len(data) - _U32.size
    size = data[pos] if pos < end else None
    if size is None or pos + 1 + size > end:
        raise CompressionError(f"compressed file has an invalid header: {what} field at byte {pos} runs past the end")
    raw = data[pos + 1 : pos + 1 + size]
    if not raw.isascii():
        raise CompressionError(f"compressed file has an invalid header: {what} name {raw!r} is not ASCII")
    return raw.decode("ascii"), pos + 1 + size


def _read_streams(data: bytes, pos: int, num_chunks: int, end: int) -> list[np.ndarray]:
    streams = []
    for i in range(num_chunks):
        if pos + _U32.size > end:
            raise CompressionError(f"compressed file is truncated: chunk {i} of {num_chunks} is missing")
        n, = _U32.unpack_from(data, pos)
        pos += _U32.size
        if pos + 4 * n > end:
            raise CompressionError(f"compressed file is truncated: chunk {i} needs {4 * n} bytes, {end - pos} left")
        streams.append(np.frombuffer(data, dtype="<u4", count=n, offset=pos).astype(np.uint32))
        pos += 4 * n
    if pos != end:
        raise CompressionError(f"compressed file has {end - pos} unexpected bytes after its last chunk")
    return streams
