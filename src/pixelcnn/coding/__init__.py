"""Lossless compression with any model: an entropy coder driven by the model's probabilities.

    data = pixelcnn.compress(model, images)            # bytes; about -log2 p(images) / 8 of them
    images = pixelcnn.decompress(model, data)          # bit-identical (N, C, H, W) int64
    images, labels = pixelcnn.decompress(cond_model, pixelcnn.compress(cond_model, images, labels))

An autoregressive model gives every sub-pixel a distribution given the ones before it; a range
coder (constriction's ``RangeEncoder``/``RangeDecoder``) spends -log2 p bits on each value, so
a file costs the model's negative log-likelihood plus a small, bounded overhead: the 2**-24
quantisation of probabilities, a few words per chunk, and a header of 45 bytes.

Why the decoder's probabilities are bit-identical to the encoder's
------------------------------------------------------------------
A decoder must rebuild exactly the distribution the encoder used for every value; one differing
bit in one probability can send it down another path and corrupt everything after it. Floating
point results depend on the operations, the shapes (which pick kernels and summation orders),
the number of threads (which splits reductions) and the inputs. So encoder and decoder run the
*same* computation rather than two that are merely equal in exact arithmetic:

* both drive the model through :func:`pixelcnn.sampling.make_stepper` and
  :func:`pixelcnn.sampling.run`, the loop sampling uses, with the same stepper (naive or the
  family's cached one; the file records which, and decoding uses it);
* both code images in chunks of a fixed size recorded in the file; the last chunk is padded
  with all-zero images (not coded), so every network call has the same shape on both sides;
* both start each chunk from an all-zero batch; the encoder teacher-forces, setting each true
  value only after reading the log-probabilities for it, exactly when the decoder sets the
  value it decoded. At every step the stepper holds the same tensor on both sides;
* both run a float32 CPU copy of the model (:func:`codec.coding_model`), in eval mode, with tanh
  as ``torch.tanh`` on every path (``layers.plain_tanh``),
  without autograd, on one thread (``torch.set_num_threads(1)``) with oneDNN pinned on, inside
  a context manager that restores the caller's settings;
* both turn log-probabilities into integer weights with the one function
  :func:`quantize.quantized_weights` (float64, fixed precision 2**24, every value at least one
  unit), which constriction then uses exactly (see :mod:`pixelcnn.coding.quantize`).

Same ops, same shapes, same thread count, same inputs at every step: the same bits come out.
What this assumes: the same torch build and the same CPU type (instruction set) on both sides,
and no process-wide switch flipped in between that changes kernels (for example
``torch.set_flush_denormal``). Across machines that differ there, the results usually still
agree but are not guaranteed to; the file then carries a digest of the original images that is
checked after decoding, so a mismatch raises :class:`~pixelcnn.errors.CompressionError`
instead of returning wrong images. The model fingerprint in the header (sha256 of config and
float32 weights) catches the common mistake of decoding with another model before any work.

Dtype and device: coding always runs the model in float32 on the CPU; a float64 or GPU model
is copied for the purpose (its fingerprint is taken of the float32 weights, so the copy and a
float32 checkpoint of the same weights are interchangeable).

The file format is described in :mod:`pixelcnn.coding.container`.
"""

from pixelcnn.coding.codec import DEFAULT_CHUNK_SIZE, Decoded, compress, decode, decompress, nll_bits
from pixelcnn.coding.container import FORMAT_VERSION, Header, read_header

__all__ = ["compress", "decompress", "decode", "Decoded", "Header", "read_header", "nll_bits",
           "FORMAT_VERSION", "DEFAULT_CHUNK_SIZE"]
