"""The level <-> byte <-> [-1, 1] maps, checked exhaustively against their definitions."""

from fractions import Fraction

import pytest
import torch

import pixelcnn
from pixelcnn.levels import from_bytes, to_bytes, to_unit
from exact import tiny_model

LEVELS = [2, 3, 4, 7, 16, 17, 100, 255, 256]


def round_half_up(q: Fraction) -> int:
    return int(q + Fraction(1, 2)) if q >= 0 else -int(-q + Fraction(1, 2))


@pytest.mark.parametrize("levels", LEVELS)
def test_bytes_are_the_rounded_definitions_and_invert_each_other(levels):
    values, data = torch.arange(levels), torch.arange(256)
    assert to_bytes(values, levels).tolist() == [round_half_up(Fraction(255 * v, levels - 1)) for v in range(levels)]
    assert from_bytes(data, levels).tolist() == [round_half_up(Fraction((levels - 1) * b, 255)) for b in range(256)]
    assert torch.equal(from_bytes(to_bytes(values, levels), levels), values)
    assert to_bytes(values, levels)[[0, -1]].tolist() == [0, 255]


@pytest.mark.parametrize("levels", LEVELS)
def test_unit_scale_spans_minus_one_to_one_evenly(levels):
    for dtype in (torch.float32, torch.float64):
        u = to_unit(torch.arange(levels), levels, dtype)
        assert u.dtype == dtype and u[0].item() == -1.0                # v (2 / (L - 1)) - 1 rounds at the top
        assert abs(u[-1].item() - 1.0) <= torch.finfo(dtype).eps
        step = torch.full((levels - 1,), 2 / (levels - 1), dtype=dtype)
        assert torch.allclose(u.diff(), step, rtol=0, atol=2 * torch.finfo(dtype).eps)   # a difference near 1


def test_network_input_and_bin_centres_are_the_same_floats():
    """The networks' preprocessing and the logistic mixture's bin centres must not drift apart."""
    values = torch.arange(256)
    for name in sorted(pixelcnn.models.REGISTRY):
        model = tiny_model(name, (3, 4, 5), 256)
        assert torch.equal(model.preprocess(values), to_unit(values, 256, torch.float64)), name
    mixture = tiny_model("pixelcnn_pp", (3, 4, 5), 256).distribution
    assert torch.equal(mixture.scale_values(values, torch.float32), to_unit(values, 256, torch.float32))
