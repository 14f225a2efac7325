"""The primitives with hand-written fast paths compute what their plain definitions compute, values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from pixelcnn.layers import add_shifted_down, gate, shift_down

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def plain_gate(x: torch.Tensor, dim: int) -> torch.Tensor:
    a, b = x.chunk(2, dim=dim)
    return torch.tanh(a) * torch.sigmoid(b)


def map_of(shape, layout, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(shape, generator=g, dtype=torch.float64)).contiguous(memory_format=LAYOUTS[layout])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 6, 3, 5), (1, 2, 1, 1), (3, 10, 4, 2)])
def test_gate_gradient_matches_finite_differences(layout, shape):
    x = map_of(shape, layout).requires_grad_()
    assert torch.autograd.gradcheck(gate, (x,))
    g = map_of((shape[0], shape[1] // 2, *shape[2:]), layout, seed=1)
    (ours,) = torch.autograd.grad(gate(x), x, g)
    (plain,) = torch.autograd.grad(plain_gate(x, 1), x, g)
    torch.testing.assert_close(ours, plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dim", [1, -1])
def test_gate_that_overwrites_its_input_gives_the_plain_gate(layout, dim):
    x = map_of((2, 8, 3, 8), layout)
    expected = plain_gate(x, dim)
    with torch.no_grad():
        out = gate(x.clone(memory_format=torch.preserve_format), dim, overwrite=True)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_gate_keeps_its_input_unless_told_and_outside_autograd():
    x = map_of((2, 4, 3, 3), "channels_last")
    kept = x.clone()
    gate(x, 1)                                                      # no overwrite asked
    with torch.no_grad():
        gate(x, -1)
    x.requires_grad_()
    gate(x, 1, overwrite=True).sum().backward()                     # autograd: never in place
    assert torch.equal(x.detach(), kept)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 1, 3), (2, 1, 2, 1)])
def test_add_shifted_down_is_the_shifted_sum_with_its_gradient(layout, shape):
    out, y = map_of(shape, layout), map_of(shape, layout, seed=1)
    fill = torch.randn(shape[1], dtype=torch.float64)
    expected = out + shift_down(y)
    expected[:, :, 0] += fill[:, None]
    torch.testing.assert_close(add_shifted_down(out.clone(), y, fill), expected, rtol=1e-12, atol=1e-12)

    def fresh(o, y, f):                                             # it writes into its first argument
        return add_shifted_down(o.clone(), y, f)

    args = (out.requires_grad_(), y.requires_grad_(), fill.requires_grad_())
    assert torch.autograd.gradcheck(fresh, args)


def test_a_one_by_one_convolution_commutes_with_the_shift_as_add_shifted_down_assumes():
    x = map_of((2, 3, 4, 5), "channels_last")
    w, b = torch.randn(6, 3, 1, 1, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    base = map_of((2, 6, 4, 5), "channels_last", seed=2)
    torch.testing.assert_close(add_shifted_down(base.clone(), F.conv2d(x, w, b), b),
                               base + F.conv2d(shift_down(x), w, b), rtol=1e-12, atol=1e-12)
