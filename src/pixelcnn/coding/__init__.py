"""Lossless compression with any model: an entropy coder driven by the model's probabilities.

    data = pixelcnn.compress(model, images)            # bytes; about -log2 p(images) / 8 of them
    images, _ = pixelcnn.decompress(model, data)       # bit-identical (N, C, H, W) int64
    images, labels = pixelcnn.decompress(cond_model, pixelcnn.compress(cond_model, images, labels))

An autoregressive model gives every sub-pixel a distribution given the ones before it; a range
coder (constriction's ``RangeEncoder``/``RangeDecoder``) spends -log2 p bits on each value, so
a file costs the model's negative log-likelihood plus a small, bounded overhead: the 2**-24
quantisation of probabilities, a few words per chunk, and about 60 bytes of header and checksum.

Why the decoder's probabilities are bit-identical, on any machine
------------------------------------------------------------------
A decoder must rebuild exactly the distribution the encoder used for every value; one differing
bit in one probability can send it down another path and corrupt everything after it. Floating
point results depend on the kernels (vector width, CPU type, CUDA), the order of summation and the
number of threads, so the same float network gives other bits elsewhere. Two things make them equal:

* **the same computation**: both sides drive the model through
  :func:`pixelcnn.sampling.make_stepper` and :func:`pixelcnn.sampling.run`, the loop sampling uses,
  with the same stepper (naive or the family's cached one; the file records which), or where the
  stepper offers groups of conditionally independent pixels (multiscale) through
  :func:`pixelcnn.sampling.run_groups`, a pass per channel of a group, whose rows have the bits of
  the stepper's one-pixel answers; inside such a group format 4 stores the values channel by channel
  (the group's pixels' first channel, then their second, ...), so colour images too are decoded a
  group's channel per pass (format 3 stored them pixel by pixel, each pixel's channels in turn: its
  colour files are decoded one sub-pixel at a time, as they always were); both code
  images in chunks of a fixed size recorded in the file (the last chunk padded with all-zero
  images, not coded); both start each chunk from an all-zero batch, the encoder teacher-forcing
  each true value only after reading the log-probabilities for it, exactly when the decoder sets
  the value it decoded;
* **arithmetic whose results do not depend on the machine** (format versions 3 and 4): the model runs as
  a float64 copy of its float32 weights under :class:`pixelcnn.coding.exact.ExactArithmetic`.
  Every linear map and sum is computed exactly (block floating point whose products and partial
  sums float64 holds without rounding), every transcendental function from tables and correctly
  rounded IEEE operations, so any CPU, thread count or GPU gives the same bits (see
  :mod:`pixelcnn.coding.exact`). Log-probabilities become integer weights out of 2**24 in one
  function, :func:`quantize.quantized_weights` (every value at least one unit), which
  constriction then uses exactly (see :mod:`pixelcnn.coding.quantize`).

The price is the rounding of each operand to about 20 significant bits: the coded distributions'
negative log-likelihood is within 0.01% of the float model's (``pixelcnn compress --nll`` prints
both; benchmarks/RESULTS.md has the measurements). The file also carries a digest of the original
images, checked after decoding, so a decoder that computed other probabilities (a forged file, or
a format-2 file on another kind of CPU) raises :class:`~pixelcnn.errors.CompressionError` instead
of returning wrong images. The model fingerprint in the header (sha256 of config and float32
weights) catches the common mistake of decoding with another model before any work.

Files of format versions 1 and 2 (pixelcnn 0.1.0) were coded in float32 on one CPU thread; they
still decode with that arithmetic (:data:`arithmetic.FLOAT`) where the machine repeats its floats (the
same kind of CPU and torch build), and otherwise raise an error that says so.

Dtype and device: a float64 model codes like its float32 copy (its fingerprint is taken of the
float32 weights); a model on CUDA codes on CUDA (cuDNN off), any other one on the CPU, and the
files are interchangeable.

The file format is described in :mod:`pixelcnn.coding.container`.
"""

from pixelcnn.coding.codec import DEFAULT_CHUNK_SIZE, Decoded, compress, decode, decompress, nll_bits
from pixelcnn.coding.container import FORMAT_VERSION, Header, read_header

__all__ = ["compress", "decompress", "decode", "Decoded", "Header", "read_header", "nll_bits",
           "FORMAT_VERSION", "DEFAULT_CHUNK_SIZE"]
