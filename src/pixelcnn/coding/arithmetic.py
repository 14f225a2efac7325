"""The arithmetic of a format version: how the codec evaluates the model and turns its log-probabilities into integers.

:data:`EXACT` (formats 3 and 4, files written now) gives the same bits on every machine (see
:mod:`pixelcnn.coding.exact`); :data:`FLOAT` (formats 1 and 2) is the float32 arithmetic of
pixelcnn 0.1.0, repeated only by the kind of CPU that wrote a file. Used by :mod:`pixelcnn.coding.codec`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from pixelcnn.coding.container import EXACT_VERSION
from pixelcnn.coding import fused
from pixelcnn.coding.exact import ExactArithmetic
from pixelcnn.coding.quantize import quantized_weights
from pixelcnn.models.layers import tanh_takes_sigmoid_form
from pixelcnn.models.lmconv.local_conv import LocallyMaskedConv2d
from pixelcnn.models.replaceable import never, replaced


def coding_model(model):
    """The model as format 2 codes with it: float32 on the CPU (a copy when the model is anywhere else)."""
    params = list(model.parameters()) + list(model.buffers())
    if all(p.device.type == "cpu" and (not p.is_floating_point() or p.dtype == torch.float32) for p in params):
        return model
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float32)


def exact_model(model):
    """The model as format 3 codes with it: a float64 copy of its float32 weights (those the file's
    fingerprint names, so a float64 model codes like its float32 copy) on its own device (CUDA stays
    on CUDA, anything else goes to the CPU)."""
    device = model.device if model.device.type == "cuda" else torch.device("cpu")
    return copy.deepcopy(model).to(device=device, dtype=torch.float32).to(dtype=torch.float64)


# Compatibility with files already written: the whole-network stepper of every release that wrote formats 2 and 3
# computed each layer's reference form, which faster forms have replaced since. Every arithmetic below codes with
# the released forms, so those files decode bit for bit and new ones are written the same way:
RELEASED_FORMS = {
    tanh_takes_sigmoid_form: never,                 # tanh of a whole map: torch.tanh, not 2 sigmoid(2x) - 1
    LocallyMaskedConv2d.takes_split_form: never,    # lmconv's convolution: unfold every tap, not split the taps
}


def released_forms():
    """The scope in which the layers compute the forms of :data:`RELEASED_FORMS`."""
    return replaced(RELEASED_FORMS)


@contextlib.contextmanager
def deterministic_cpu(model) -> Iterator[None]:
    """Format 2: one CPU thread, oneDNN pinned on, no autograd, eval mode, the released forms of the layers
    (:func:`released_forms`); the caller's settings come back after."""
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = True
    try:
        with model.evaluating(), torch.no_grad(), released_forms():
            yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = onednn


@contextlib.contextmanager
def exact_arithmetic(model) -> Iterator[None]:
    """Format 3: eval mode, no autograd, every torch function exact or correctly rounded
    (:class:`~pixelcnn.coding.exact.ExactArithmetic`), the released forms of the layers (:func:`released_forms`),
    cuDNN off (its transforms would round); any thread count."""
    with model.evaluating(), torch.no_grad(), released_forms(), torch.backends.cudnn.flags(enabled=False), ExactArithmetic():
        yield


@dataclass(frozen=True)
class Arithmetic:
    """How a format version evaluates the model and turns its log-probabilities into integers."""

    model: Callable                 # model -> the copy that codes
    scope: Callable                 # coding model -> context manager around every chunk
    quantize: Callable              # (B, L) log-probabilities -> quantize.quantized_weights with this format's softmax

    def weights(self, log_probs: Tensor) -> np.ndarray:
        """(B, L) integer weights; called inside ``scope``, computed outside any torch function mode
        (the exact softmax is written in plain torch operations)."""
        with torch._C.DisableTorchFunction():
            return self.quantize(log_probs)


EXACT = Arithmetic(exact_model, exact_arithmetic, fused.quantized_weights)     # formats 3 and 4: the same everywhere
FLOAT = Arithmetic(coding_model, deterministic_cpu, functools.partial(quantized_weights, softmax=torch.softmax))   # 1, 2


def arithmetic_of(version: int) -> Arithmetic:
    return EXACT if version >= EXACT_VERSION else FLOAT
